"""The per-token path of the generator held to plain NumPy references: the reported logprob
(one float32 logsumexp, not a float64 log_softmax of the vocabulary), top_logprobs, and the
sampler's draws for a fixed seed (its fast paths must pick exactly what the straightforward
chain picks)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from llamalab.api import LLM
from llamalab.generate import stream_generate
from llamalab.lab.synth import PRESETS, tiny_spm_tokenizer, write_gguf
from llamalab.sampling import SamplingParams, log_softmax, logsumexp, make_sampler, top_logprobs


def reference_logprobs(logits: np.ndarray) -> np.ndarray:
    """float64 log_softmax written out (not the library's)."""
    x = logits.astype(np.float64)
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def reference_sampler(p: SamplingParams):
    """The chain as it was written before the fast paths: penalties -> top-k -> top-p -> min-p
    -> temperature -> draw, over an explicit index array of the vocabulary (same RNG calls); top-k's
    survivors in ascending id order, so the draw does not depend on how a partition orders them."""
    rng = np.random.default_rng(p.seed)

    def sample(logits, history):
        logits = np.asarray(logits, np.float32).copy()
        recent = Counter(history[-p.repeat_last_n:] if p.repeat_last_n else [])
        for t, n in recent.items():
            v = logits[t]
            if p.repeat_penalty != 1.0:
                v = v / p.repeat_penalty if v > 0 else v * p.repeat_penalty
            logits[t] = v - n * p.frequency_penalty - p.presence_penalty
        if p.temperature <= 0:
            return int(np.argmax(logits))
        ids = np.arange(logits.size)
        if np.isneginf(logits).any():
            ids = np.flatnonzero(logits > -np.inf)
        if 0 < p.top_k < ids.size:
            ids = np.sort(ids[np.argpartition(logits[ids], -p.top_k)[-p.top_k:]])
        sub = logits[ids]
        if p.top_p < 1.0:
            order = np.argsort(-sub, kind="stable")
            cum = np.cumsum(np.exp(reference_logprobs(sub[order])))
            keep = min(int(np.searchsorted(cum, p.top_p)) + 1, len(order))
            cut = np.full_like(sub, -np.inf)
            cut[order[:keep]] = sub[order[:keep]]
            sub = cut
        if p.min_p > 0:
            sub = np.where(sub < sub.max() + np.log(p.min_p), -np.inf, sub)
        cdf = np.cumsum(np.exp(reference_logprobs(sub / p.temperature)))
        return int(ids[min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(ids) - 1)])

    return sample


@pytest.mark.parametrize("vocab", [3, 384, 1000, 32000, 49153, 262144])  # whole vectors, blocks and tails
@pytest.mark.parametrize("scale", [0.01, 1.0, 30.0])
def test_logsumexp_matches_float64_log_softmax(vocab, scale):
    rng = np.random.default_rng(vocab)
    for _ in range(3):
        logits = (rng.standard_normal(vocab) * scale + rng.uniform(-50, 50)).astype(np.float32)
        lse = logsumexp(logits)
        ref = reference_logprobs(logits)
        t = int(np.argmax(logits))
        assert abs((float(logits[t]) - lse) - ref[t]) <= 3e-7
        assert np.max(np.abs((logits.astype(np.float64) - lse) - ref)) <= 3e-7


def test_logsumexp_with_banned_tokens():
    logits = np.array([-np.inf, 0.0, np.log(3.0), -np.inf], np.float32)  # probabilities 1/4, 3/4
    assert logsumexp(logits) == pytest.approx(np.log(4.0), abs=1e-7)
    wide = np.full(1000, -np.inf, np.float32)  # the same in whole vectors and blocks
    wide[[4, 700]] = [0.0, np.log(3.0)]
    assert logsumexp(wide) == pytest.approx(np.log(4.0), abs=1e-7)
    assert logsumexp(wide[::2]) == pytest.approx(np.log(4.0), abs=1e-7)  # strided: read as a copy
    for bad in ([-np.inf, -np.inf], [0.0, np.inf], [0.0, np.nan], [0.0] * 99 + [np.nan] + [1.0] * 900,
                [1.0] * 640 + [np.inf] * 3):  # no distribution: NaN, as log_softmax
        assert np.isnan(logsumexp(np.array(bad, np.float32)))
        with np.errstate(invalid="ignore"):
            assert np.isnan(reference_logprobs(np.array(bad, np.float32))).any()


def test_top_logprobs_are_the_n_most_likely_in_order():
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal(32000) * 3).astype(np.float32)
    ref = reference_logprobs(logits)
    want = np.argsort(-ref, kind="stable")
    for n in (1, 5, 20):
        got = top_logprobs(logits, n, logsumexp(logits))
        assert list(got) == want[:n].tolist()
        np.testing.assert_allclose(list(got.values()), ref[want[:n]], atol=1e-6)
    small = np.array([0.5, 2.0, 2.0, -1.0], np.float32)  # n >= vocabulary; a tie: lower id first
    assert list(top_logprobs(small, 10, logsumexp(small))) == [1, 2, 0, 3]


SAMPLERS = [
    dict(temperature=0.0),
    dict(temperature=0.0, repeat_penalty=1.3),
    dict(temperature=0.8, seed=7),  # the defaults: top-k 40, top-p 0.95, min-p 0.05
    dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=1),
    dict(temperature=1.2, top_k=0, top_p=0.9, min_p=0.0, seed=2),
    dict(temperature=0.7, top_k=5, top_p=1.0, min_p=0.1, seed=3, frequency_penalty=0.5, presence_penalty=0.2),
    dict(temperature=1.5, top_k=400, top_p=0.8, min_p=0.02, seed=4, repeat_penalty=1.1, repeat_last_n=8),
]


@pytest.mark.parametrize("kw", SAMPLERS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("banned", [False, True], ids=["open", "banned"])
def test_sampler_draws_what_the_reference_chain_draws(kw, banned):
    p = SamplingParams(**kw)
    fast, ref = make_sampler(p), reference_sampler(p)
    rng = np.random.default_rng(11)
    history = [1]
    for _ in range(60):
        logits = (rng.standard_normal(2000) * 2.5).astype(np.float32)
        if banned:  # what logit_bias -100 or a grammar's mask leaves
            logits[rng.integers(0, 2000, 1500)] = -np.inf
        a, b = fast(logits.copy(), history), ref(logits.copy(), history)
        assert a == b
        history.append(a)


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    path = write_gguf(tmp_path_factory.mktemp("lp") / "tiny.gguf", PRESETS["tiny"], Q.F32,
                      tokenizer=tiny_spm_tokenizer(), seed=3)
    return LLM(str(path), threads=1, progress=False)


def _capture():
    """A logits processor that records the model's logits of each step and changes nothing."""
    seen = []

    def proc(logits, generated):
        seen.append(np.array(logits, np.float32))
        return logits

    return seen, proc


@pytest.mark.parametrize("kw", [dict(temperature=0.0), dict(temperature=0.9, seed=42)], ids=["greedy", "seeded"])
def test_generate_reports_reference_logprobs_and_reference_tokens(tiny_llm, kw):
    """Through the generator users call: every chunk's token is what the reference sampler
    draws from the model's logits of that step, its logprob and top_logprobs are those of
    the float64 log_softmax of those logits (within 1e-6)."""
    seen, proc = _capture()
    prompt = tiny_llm.tokenize("Once upon a time")
    chunks = list(stream_generate(tiny_llm.model, tiny_llm.tokenizer, tiny_llm.cache, prompt,
                                  make_sampler(SamplingParams(**kw)), max_tokens=24, ignore_eos=True, top_logprobs=3,
                                  logits_processor=proc))
    assert len(chunks) == len(seen) == 24
    ref = reference_sampler(SamplingParams(**kw))
    history = list(prompt)
    for c, logits in zip(chunks, seen):
        assert c.token == ref(logits, history)
        history.append(c.token)
        lp = reference_logprobs(logits)
        assert abs(c.logprob - lp[c.token]) <= 1e-6
        want = np.argsort(-lp, kind="stable")[:3]
        assert list(c.top_logprobs) == want.tolist()
        np.testing.assert_allclose(list(c.top_logprobs.values()), lp[want], atol=1e-6)
    assert isinstance(chunks[0].logprob, float)


def test_llm_generate_logprob_without_top_logprobs(tiny_llm):
    """LLM.generate (no logprobs requested) still reports each token's logprob, and greedy
    tokens are the argmax of the model's logits."""
    seen, proc = _capture()
    ids = tiny_llm.tokenize("the dog")
    chunks = list(tiny_llm.generate(ids, max_tokens=10, temperature=0, ignore_eos=True))
    assert all(c.top_logprobs is None for c in chunks)
    again = list(stream_generate(tiny_llm.model, tiny_llm.tokenizer, tiny_llm.cache, ids,
                                 make_sampler(SamplingParams(temperature=0)), max_tokens=10, ignore_eos=True,
                                 logits_processor=proc))
    assert [c.token for c in chunks] == [c.token for c in again] == [int(np.argmax(x)) for x in seen]
    for c, logits in zip(chunks, seen):
        assert abs(c.logprob - reference_logprobs(logits)[c.token]) <= 1e-6
    assert np.allclose(log_softmax(seen[0]), reference_logprobs(seen[0]))
