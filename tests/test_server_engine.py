"""The server's engine without HTTP: prompt store (LRU in bytes), slot choice, prefix reuse,
cancellation, and a failing step that must not take other requests down."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
from gguf import GGMLQuantizationType

from llamalab import LLM
from llamalab.errors import LlamalabError
from llamalab.runtime.kv_cache import KVCache
from llamalab.sampling import SamplingParams
from llamalab.server.engine import Engine, Job
from llamalab.server.prompt_store import PromptStore
from llamalab.lab.synth import PRESETS, tiny_bpe_tokenizer, write_gguf

CFG = dataclasses.replace(PRESETS["tiny"], context_length=256)


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    path = write_gguf(tmp_path_factory.mktemp("eng") / "tiny.gguf", CFG, GGMLQuantizationType.Q8_0,
                      tokenizer=tiny_bpe_tokenizer(), seed=5)
    return LLM(path, backend="reference", progress=False)  # engine logic; kernels are tested elsewhere


def filled_cache(tokens, seed=0) -> KVCache:
    c = KVCache(CFG, 64)
    rng = np.random.default_rng(seed)
    n = len(tokens)
    c.k[:, :, :n] = rng.standard_normal(c.k[:, :, :n].shape)
    c.v[:, :, :n] = rng.standard_normal(c.v[:, :, :n].shape)
    c.pos, c.tokens = n, list(tokens)
    return c


def per_token_bytes() -> int:
    return 2 * CFG.n_layers * CFG.n_kv_heads * CFG.head_dim * 4


# ---- PromptStore -------------------------------------------------------------------------------------


def test_store_restores_longest_prefix_exactly():
    store = PromptStore(10**7)
    a = filled_cache(range(1, 21), seed=1)
    b = filled_cache([1, 2, 3, 50, 51], seed=2)
    store.save(a)
    store.save(b)
    target = KVCache(CFG, 64)
    n = store.restore(target, list(range(1, 16)) + [99])
    assert n == 15
    assert target.pos == 15 and target.tokens == list(range(1, 16))
    np.testing.assert_array_equal(target.k[:, :, :15], a.k[:, :, :15])
    np.testing.assert_array_equal(target.v[:, :, :15], a.v[:, :, :15])


def test_store_keeps_what_the_cache_already_has():
    store = PromptStore(10**7)
    store.save(filled_cache([1, 2, 3], seed=1))
    mine = filled_cache([1, 2, 3, 4, 5], seed=2)
    before = mine.k.copy()
    assert store.restore(mine, [1, 2, 3, 4, 6]) == 4  # own prefix (4) beats the store's (3)
    np.testing.assert_array_equal(mine.k, before)


def test_store_is_lru_bounded_in_bytes():
    budget = 25 * per_token_bytes()  # room for two 10-token entries, not three
    store = PromptStore(budget)
    for first in (100, 200, 300):
        store.save(filled_cache(range(first, first + 10)))
        assert store.nbytes <= budget
    assert [k[0] for k in store.entries] == [200, 300]  # the oldest went first
    store.restore(KVCache(CFG, 64), list(range(200, 205)))  # touching 200 makes it the newest
    store.save(filled_cache(range(400, 410)))
    assert [k[0] for k in store.entries] == [200, 400]
    assert store.nbytes == 20 * per_token_bytes()
    store.save(filled_cache(range(500, 540)))  # larger than the whole budget: not kept
    assert [k[0] for k in store.entries] == [200, 400]


def test_store_prefixes_supersede():
    store = PromptStore(10**7)
    store.save(filled_cache([1, 2, 3]))
    store.save(filled_cache([1, 2, 3, 4, 5]))
    assert list(store.entries) == [(1, 2, 3, 4, 5)]
    store.save(filled_cache([1, 2]))  # already held inside the longer one
    assert list(store.entries) == [(1, 2, 3, 4, 5)]
    assert store.nbytes == 5 * per_token_bytes()


# ---- Engine ------------------------------------------------------------------------------------------


class Collector:
    """A job's emit target: chunks, then None or an error."""

    def __init__(self):
        self.chunks, self.error, self.done = [], None, threading.Event()

    def __call__(self, item):
        if item is None:
            self.done.set()
        elif isinstance(item, BaseException):
            self.error = item
            self.done.set()
        else:
            self.chunks.append(item)

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.chunks)


def run(engine, prompt, max_tokens=8, **params) -> Collector:
    out = Collector()
    engine.submit(Job(prompt=prompt, params=SamplingParams(temperature=0, **params), emit=out,
                      max_tokens=max_tokens, ignore_eos=True))
    assert out.done.wait(60)
    return out


def test_prefix_reuse_through_slot_and_store(llm):
    engine = Engine(llm.model, llm.tokenizer, 256, parallel=1, cache_bytes=10**7).start()
    try:
        a = llm.tokenize("Once upon a time there was a little girl")
        b = llm.tokenize("the big dog and the cat")
        first = run(engine, a)
        assert first.chunks[-1].n_cached == 0
        again = run(engine, a + [5, 6])  # same slot still holds `a`
        assert again.chunks[-1].n_cached == len(a)
        run(engine, b)  # overwrites the only slot: `a` goes to the store
        assert engine.store.entries
        back = run(engine, a)
        assert back.chunks[-1].n_cached == len(a) - 1  # restored from the store (the last token is recomputed)
        assert back.text == first.text  # and the restored cache gives the same tokens
    finally:
        engine.stop()


def test_idle_slot_with_longest_prefix_is_chosen(llm):
    engine = Engine(llm.model, llm.tokenizer, 256, parallel=3, cache_bytes=0).start()
    try:
        prompts = [llm.tokenize(t) for t in ("the sun and the tree", "Lily said to mom", "a red ball and a blue toy")]
        for p in prompts:
            run(engine, p)
        r = run(engine, prompts[1] + [42])
        assert r.chunks[-1].n_cached == len(prompts[1])
    finally:
        engine.stop()


def test_cancel_stops_generation_and_frees_slot(llm):
    engine = Engine(llm.model, llm.tokenizer, 256, parallel=1, queue_size=0).start()
    try:
        out = Collector()
        started = threading.Event()

        def emit(item):
            out(item)
            started.set()

        job = Job(prompt=llm.tokenize("hi"), params=SamplingParams(temperature=0), emit=emit, max_tokens=250,
                  ignore_eos=True)
        engine.submit(job)
        assert started.wait(30)
        job.cancel()
        assert out.done.wait(30) and out.error is None
        assert len(out.chunks) < 250
        assert run(engine, llm.tokenize("hi"), max_tokens=2).chunks[-1].finish_reason == "length"
    finally:
        engine.stop()


def test_refuses_caches_that_cannot_fit(llm):
    with pytest.raises(LlamalabError, match="lower --parallel"):
        Engine(llm.model, llm.tokenizer, 256, parallel=10**7)


def test_failing_step_fails_only_its_request(llm):
    """A model error during one request reaches that request; the others and the engine carry on."""

    class Flaky:
        def __init__(self, model):
            self.model, self.fail_on = model, 7

        def __getattr__(self, name):  # config, new_cache, ...
            return getattr(self.model, name)

        def forward(self, tokens, cache, all_logits=False):
            if self.fail_on in np.asarray(tokens).tolist():
                raise RuntimeError("boom")
            return self.model.forward(tokens, cache, all_logits)

        def decode_batch(self, tokens, caches):
            if self.fail_on in np.asarray(tokens).tolist():
                raise RuntimeError("boom")
            return self.model.decode_batch(tokens, caches)

    engine = Engine(Flaky(llm.model), llm.tokenizer, 256, parallel=2).start()
    try:
        bad = run(engine, [7, 8, 9])
        assert isinstance(bad.error, RuntimeError)
        good = run(engine, llm.tokenize("the dog"))
        assert good.error is None and len(good.chunks) == 8
    finally:
        engine.stop()


def test_scheduler_follows_the_load_between_steps(llm, monkeypatch):
    """The server runs its steps on the cores other processes leave (LLM.follow_load), re-read
    on the scheduler thread (the one whose thread count the kernels use), not at every step."""
    from llamalab.server import engine as engine_mod

    calls = []

    def follow_load():
        calls.append((threading.current_thread(), time.monotonic()))
        return 1

    monkeypatch.setattr(engine_mod, "FOLLOW_LOAD_S", 0.2)
    engine = Engine(llm.model, llm.tokenizer, 256, parallel=1, follow_load=follow_load).start()
    try:
        for _ in range(3):
            run(engine, llm.tokenize("Once upon a time"), max_tokens=16)
            time.sleep(0.25)
            run(engine, llm.tokenize("the big dog"), max_tokens=16)
    finally:
        engine.stop()
    assert len(calls) >= 3 and all(t is engine.scheduler for t, _ in calls)
    gaps = [b - a for (_, a), (_, b) in zip(calls, calls[1:])]
    assert min(gaps) >= 0.2 and engine.stats["steps"] > 2 * len(calls)
    assert engine.stats["threads"] == 1


def test_follow_load_sets_the_free_cores_and_keeps_a_given_count(llm, monkeypatch):
    from llamalab import kernels
    from llamalab.kernels import threads

    monkeypatch.setattr(threads, "default_threads", lambda: 2)
    fast = LLM(llm.path, progress=False)  # no thread count: follows the load
    readings = iter([1.0, None, 0.0])
    monkeypatch.setattr(fast, "_busy", lambda: next(readings))
    try:
        assert fast.follow_load() == 1 and kernels.get_threads() == 1  # one of two cores busy elsewhere
        assert fast.follow_load() == 1  # too soon to tell: the count stays
        assert fast.follow_load() == 2  # the machine is free again
        fixed = LLM(llm.path, threads=2, progress=False)
        assert fixed._busy is None and fixed.follow_load() == 2
    finally:
        kernels.set_threads(kernels.default_threads())
