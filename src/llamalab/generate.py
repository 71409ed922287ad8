"""Generation: one generator that the CLI, the Python API, the server and the bench consume.

``generate_step`` is the bare loop (prefill, then decode one token at a time);
``stream_generate`` adds text, stop strings and timing, yielding a ``Chunk`` per token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .errors import ContextOverflowError, InvalidArgumentError
from .runtime.kv_cache import KVCache
from .sampling import LogitsProcessor, Sampler, logsumexp, top_logprobs as top_logprobs_of


@dataclass
class Chunk:
    """One generated token and the state of the run after it."""

    token: int
    text: str  # the new text this token completes (may be "" while a character or a stop string is pending)
    logprob: float  # log-probability of `token` under the model (before sampling filters)
    finish_reason: str | None = None  # None while running, then "stop" or "length"
    top_logprobs: dict[int, float] | None = None
    n_prompt: int = 0  # prompt tokens
    n_cached: int = 0  # prompt tokens reused from the cache (not recomputed)
    n_generated: int = 0
    prompt_s: float = 0.0  # prefill time (time to first token minus sampling)
    decode_s: float = 0.0  # time spent decoding after the first token

    @property
    def prompt_tps(self) -> float:
        n = self.n_prompt - self.n_cached
        return n / self.prompt_s if self.prompt_s > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        return (self.n_generated - 1) / self.decode_s if self.decode_s > 0 and self.n_generated > 1 else 0.0


def prefill(model, cache: KVCache, prompt: Sequence[int]) -> tuple[np.ndarray, int]:
    """Feed the prompt, reusing whatever prefix the cache already holds.

    Returns the last position's logits (vocab,) and how many prompt tokens were reused.
    """
    if len(prompt) == 0:
        raise InvalidArgumentError("prompt is empty: give at least one token")
    if len(prompt) > cache.n_ctx:
        raise ContextOverflowError(len(prompt), cache.n_ctx)
    reused = min(cache.common_prefix(prompt), len(prompt) - 1)  # recompute >= 1 token for its logits
    cache.truncate(reused)
    logits = model.forward(np.asarray(prompt[reused:]), cache)
    return logits[-1], reused


def generate_step(model, cache: KVCache, prompt: Sequence[int], sampler: Sampler,
                  processor: LogitsProcessor | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (token, the model's logits it was drawn from) forever; the caller decides when
    to stop. `processor` (logit bias, a grammar) reshapes the logits before each draw."""
    logits, _ = prefill(model, cache, prompt)
    history = list(prompt)
    n_prompt = len(history)
    while True:
        token = sampler(logits if processor is None else processor(logits, history[n_prompt:]), history)
        yield token, logits
        history.append(token)
        logits = model.forward(np.array([token]), cache)[-1]


class StopMatcher:
    """Holds back text that might be the start of a stop string; cuts at the first match."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to emit, whether a stop string was hit)."""
        if not self.stops:  # nothing to hold back (pending stays empty): the usual case, once a token
            return text, False
        self.pending += text
        for s in self.stops:
            i = self.pending.find(s)
            if i >= 0:
                out, self.pending = self.pending[:i], ""
                return out, True
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0)
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def stream_generate(
    model,
    tokenizer,
    cache: KVCache,
    prompt: Sequence[int],
    sampler: Sampler,
    max_tokens: int = 256,
    stop: Sequence[str] = (),
    ignore_eos: bool = False,
    top_logprobs: int = 0,
    logits_processor: LogitsProcessor | None = None,
) -> Iterator[Chunk]:
    """Generate up to max_tokens after the prompt, one Chunk per token.

    Ends with finish_reason "stop" (end-of-sequence token or stop string) or "length"
    (max_tokens reached, or the context is full). `logits_processor` runs before each
    draw (see sampling.LogitsProcessor); logprobs stay those of the model itself.
    """
    if max_tokens < 0:
        raise InvalidArgumentError(f"max_tokens must be >= 0, got {max_tokens}")
    if len(prompt) > cache.n_ctx:
        raise ContextOverflowError(len(prompt), cache.n_ctx)
    if max_tokens == 0:
        return
    stops = StopMatcher(stop)
    decoder = tokenizer.incremental_decoder()
    stop_ids = frozenset() if ignore_eos else tokenizer.stop_ids
    n_cached = min(cache.common_prefix(prompt), len(prompt) - 1)
    t0 = time.perf_counter()
    t_first = None
    steps = generate_step(model, cache, prompt, sampler, logits_processor)
    for n, (token, logits) in enumerate(steps, start=1):
        now = time.perf_counter()
        if t_first is None:
            t_first = now
        lse = logsumexp(logits)  # one compiled call: the reported logprob, not a float64 softmax
        top = top_logprobs_of(logits, top_logprobs, lse) if top_logprobs else None
        finish = None
        if token in stop_ids:
            text, finish = stops.flush() + decoder.flush(), "stop"
        else:
            text, hit = stops.push(decoder.feed(token))
            if hit:
                finish = "stop"
            elif n >= max_tokens or cache.pos >= cache.n_ctx:
                text += stops.push(decoder.flush())[0] + stops.flush()
                finish = "length"
        yield Chunk(
            token=token,
            text=text,
            logprob=float(logits[token]) - lse,
            finish_reason=finish,
            top_logprobs=top,
            n_prompt=len(prompt),
            n_cached=n_cached,
            n_generated=n,
            prompt_s=t_first - t0,
            decode_s=now - t_first,
        )
        if finish:
            steps.close()
            return
