"""Sampling: small pure functions over a logits vector, composed by ``make_sampler``.

Order (as llama.cpp's default chain): penalties → top-k → top-p → min-p → temperature →
draw. Temperature 0 is greedy. The RNG is explicit, so a seed reproduces the text.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .errors import InvalidArgumentError
from .kernels.ops import logsumexp_row


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40  # 0 = off
    top_p: float = 0.95  # 1.0 = off
    min_p: float = 0.05  # 0.0 = off
    repeat_penalty: float = 1.0  # 1.0 = off
    repeat_last_n: int = 64
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None

    def __post_init__(self):
        checks = [
            ("temperature", self.temperature >= 0, "must be >= 0"),
            ("top_k", self.top_k >= 0, "must be >= 0"),
            ("top_p", 0.0 < self.top_p <= 1.0, "must be in (0, 1]"),
            ("min_p", 0.0 <= self.min_p <= 1.0, "must be in [0, 1]"),
            ("repeat_penalty", self.repeat_penalty > 0, "must be > 0"),
            ("repeat_last_n", self.repeat_last_n >= 0, "must be >= 0"),
            ("frequency_penalty", -2.0 <= self.frequency_penalty <= 2.0, "must be in [-2, 2]"),
            ("presence_penalty", -2.0 <= self.presence_penalty <= 2.0, "must be in [-2, 2]"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise InvalidArgumentError(f"{name} {what}, got {getattr(self, name)!r}")
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise InvalidArgumentError(f"seed must be in [0, 2**64), got {self.seed!r}")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """The float64 reference over the whole vector (the per-token path uses ``logsumexp``)."""
    x = logits.astype(np.float64) - logits.max()
    return x - np.log(np.exp(x).sum())


def logsumexp(logits: np.ndarray) -> float:
    """log(sum(exp(logits))): the normalizer of the model's distribution, so a token's logprob
    is ``logits[t] - logsumexp(logits)``; NaN when the logits hold no distribution (all -inf, a
    +inf or a NaN, as log_softmax gives).

    Why not log_softmax: a float64 copy, exp and subtract over the whole vocabulary cost
    ~0.15 ms a token (7% of a stories15M token) for the one value a Chunk reports; NumPy's four
    float32 passes still took 58-92 us right after a decode step. One compiled call
    (``kernels.ops.logsumexp_row``) is within ~3e-7 of the float64 reference at vocabularies up
    to 262k (tests/test_generate_logprobs.py).
    """
    return logsumexp_row(np.ascontiguousarray(logits, dtype=np.float32).reshape(-1))


def top_logprobs(logits: np.ndarray, n: int, lse: float) -> dict[int, float]:
    """The n most likely tokens {id: logprob}, most likely first (ties: lower id first);
    lse is logsumexp(logits). Partitions the vocabulary once, sorts only the n."""
    n = min(n, logits.size)
    ids = np.argpartition(logits, -n)[-n:] if n < logits.size else np.arange(logits.size)
    ids = ids[np.lexsort((ids, -logits[ids]))]
    return {int(i): float(logits[i]) - lse for i in ids}


def apply_penalties(logits: np.ndarray, history: Sequence[int], p: SamplingParams) -> np.ndarray:
    """Repeat penalty (llama.cpp: divide positive logits, multiply negative) over the last
    repeat_last_n tokens, then OpenAI frequency/presence penalties. Returns a new array."""
    if not history or (p.repeat_penalty == 1.0 and p.frequency_penalty == 0.0 and p.presence_penalty == 0.0):
        return logits
    recent = history[-p.repeat_last_n :] if p.repeat_last_n else []
    counts = Counter(recent)
    if not counts:
        return logits
    ids = np.fromiter(counts.keys(), dtype=np.int64)
    n = np.fromiter(counts.values(), dtype=np.float32)
    out = logits.copy()
    sel = out[ids]
    if p.repeat_penalty != 1.0:
        sel = np.where(sel > 0, sel / p.repeat_penalty, sel * p.repeat_penalty)
    sel = sel - n * p.frequency_penalty - p.presence_penalty
    out[ids] = sel
    return out


def apply_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    if k <= 0 or k >= logits.size:
        return logits
    kth = np.partition(logits, -k)[-k]
    return np.where(logits < kth, -np.inf, logits)


def apply_top_p(logits: np.ndarray, top_p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose probability reaches top_p."""
    if top_p >= 1.0:
        return logits
    alive = np.flatnonzero(np.isfinite(logits))  # after top-k only k survive: sort those, not the vocabulary
    order = alive[np.argsort(-logits[alive], kind="stable")]
    probs = np.exp(log_softmax(logits[order]))
    cum = np.cumsum(probs)
    keep = min(int(np.searchsorted(cum, top_p)) + 1, len(order))  # include the token that crosses top_p
    out = np.full_like(logits, -np.inf)
    out[order[:keep]] = logits[order[:keep]]
    return out


def apply_min_p(logits: np.ndarray, min_p: float) -> np.ndarray:
    """Drop tokens whose probability is below min_p times the top token's."""
    if min_p <= 0.0:
        return logits
    threshold = logits.max() + np.log(min_p)
    return np.where(logits < threshold, -np.inf, logits)


_GROUP = 64  # logits per group whose maximum top_k_ids takes


def top_k_ids(logits: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest logits, ascending (the ids np.argpartition(logits, -k)[-k:] gives, up to
    ties), without partitioning the whole vocabulary: the logits fall into groups of 64 (every
    (n // 64)-th one: an elementwise maximum of 64 rows, which NumPy vectorizes); at least k groups
    have their maximum at or above the k-th largest maximum, so the k largest logits are at or above
    it too, and only those (a few hundred) are partitioned. benchmarks/sampling_bench.py has the times."""
    n = logits.size
    if n <= 4 * _GROUP * k:  # small vocabulary: partitioning it all is as fast
        return np.sort(np.argpartition(logits, -k)[-k:])
    full = n - n % _GROUP
    maxima = logits[:full].reshape(_GROUP, -1).max(axis=0)  # (n // 64,)
    if full < n:
        maxima = np.append(maxima, logits[full:].max())
    candidates = np.flatnonzero(logits >= np.partition(maxima, -k)[-k])
    if candidates.size < k:  # NaN among the logits: no bound holds
        return np.sort(np.argpartition(logits, -k)[-k:])
    return np.sort(candidates[np.argpartition(logits[candidates], -k)[-k:]])


Sampler = Callable[[np.ndarray, Sequence[int]], int]

# (logits (vocab,), tokens generated so far) -> logits: run before the sampler at each step
# (logit_bias, a grammar's mask). May keep state (a grammar does), so one per generation.
LogitsProcessor = Callable[[np.ndarray, Sequence[int]], np.ndarray]


def apply_logit_bias(logits: np.ndarray, bias: dict[int, float]) -> np.ndarray:
    """OpenAI's logit_bias: add each value to its token's logit; -100 bans the token
    (as llama.cpp and vLLM do: a bias of -100 or less sets it to -inf). Returns a new array."""
    out = np.array(logits, dtype=np.float32)
    for t, b in bias.items():
        out[t] = -np.inf if b <= -100 else out[t] + b
    return out


def check_logit_bias(bias, n_vocab: int, field: str = "logit_bias") -> dict[int, float]:
    """{token id (int or its decimal string): bias in [-100, 100]} -> {int: float}."""
    if not isinstance(bias, dict):
        raise InvalidArgumentError(f"{field} must be an object mapping token ids to biases, got {type(bias).__name__}")
    out = {}
    for k, v in bias.items():
        try:
            t = int(k)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"{field}: key {k!r} is not a token id") from None
        if not 0 <= t < n_vocab:
            raise InvalidArgumentError(f"{field}: token id {t} is out of range [0, {n_vocab})")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not -100 <= v <= 100:
            raise InvalidArgumentError(f"{field}[{k}]: bias must be a number in [-100, 100], got {v!r}")
        out[t] = float(v)
    return out


def chain(*processors: LogitsProcessor | None) -> LogitsProcessor | None:
    """The processors applied in order (None entries skipped); None when there are none."""
    procs = [p for p in processors if p is not None]
    if not procs:
        return None
    if len(procs) == 1:
        return procs[0]

    def run(logits: np.ndarray, generated: Sequence[int]) -> np.ndarray:
        for p in procs:
            logits = p(logits, generated)
        return logits

    return run


def logit_bias_processor(bias: dict[int, float] | None) -> LogitsProcessor | None:
    return (lambda logits, generated: apply_logit_bias(logits, bias)) if bias else None


def make_sampler(p: SamplingParams) -> Sampler:
    """A closure (logits (vocab,), history) -> token id, with its own seeded RNG."""
    rng = np.random.default_rng(p.seed)

    def sample(logits: np.ndarray, history: Sequence[int] = ()) -> int:
        logits = apply_penalties(np.asarray(logits, dtype=np.float32), history, p)
        if p.temperature <= 0.0:
            return int(np.argmax(logits))
        ids = None  # None: every token (no arange and no gather of the whole vocabulary per token)
        if logits.size and not np.isfinite(logits.min()) and np.isneginf(logits).any():  # banned or masked
            ids = np.flatnonzero(logits > -np.inf)  # partitioning thousands of tied -inf is slow (6 ms at 49k)
        n = logits.size if ids is None else ids.size
        if 0 < p.top_k < n:  # filter on the k survivors, not the whole vocabulary
            ids = top_k_ids(logits, p.top_k) if ids is None else ids[top_k_ids(logits[ids], p.top_k)]
        elif ids is None:
            ids = np.arange(logits.size)
        sub = apply_min_p(apply_top_p(logits[ids], p.top_p), p.min_p)
        cdf = np.cumsum(np.exp(log_softmax(sub / p.temperature)))
        return int(ids[min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(ids) - 1)])

    return sample
