"""Resource limits: n_ctx bounds the KV cache, no request grows past it, and a model that cannot
fit in memory is refused up front with a clear error instead of being OOM-killed half-way."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import psutil
import pytest
from fuzz_harness import load_fuzz
from gguf import GGMLQuantizationType, GGUFValueType

from llamalab.lab import synth
from llamalab.api import LLM, _check_memory
from llamalab.errors import ContextOverflowError, InvalidArgumentError, LlamalabError

TINY = synth.PRESETS["tiny"]  # 2 layers, 2 kv heads of 16, context 128, vocab 384
N_CTX = 16


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("limits") / "tiny.gguf"
    return synth.write_gguf(path, TINY, GGMLQuantizationType.F32, synth.tiny_bpe_tokenizer())


@pytest.fixture(scope="module")
def llm(tiny_path) -> LLM:
    return LLM(tiny_path, n_ctx=N_CTX, backend="reference", threads=1, progress=False)


def kv_bytes(n_ctx: int, itemsize: int = 2) -> int:
    return 2 * TINY.n_layers * TINY.kv_dim * n_ctx * itemsize  # keys and values (LLM's default f16 cache)


# ---- n_ctx bounds the cache -------------------------------------------------------------------------------


def test_n_ctx_sizes_the_kv_cache(llm):
    assert llm.n_ctx == N_CTX
    assert llm.cache.k.shape == (TINY.n_layers, TINY.n_kv_heads, N_CTX, TINY.head_dim)
    assert llm.cache.nbytes == kv_bytes(N_CTX) == 4096


def test_n_ctx_is_capped_at_the_trained_context(tiny_path):
    llm = LLM(tiny_path, n_ctx=10**9, backend="reference", threads=1, progress=False)
    assert llm.n_ctx == TINY.context_length == 128
    assert llm.cache.nbytes == kv_bytes(128)


@pytest.mark.parametrize("n_ctx", [0, -1, 1.5, "16"])
def test_bad_n_ctx(tiny_path, n_ctx):
    with pytest.raises(InvalidArgumentError, match="n_ctx must be a positive integer"):
        LLM(tiny_path, n_ctx=n_ctx, backend="reference", progress=False)


def test_prompt_longer_than_the_context(llm):
    with pytest.raises(ContextOverflowError) as e:
        list(llm.generate(list(range(3, 3 + N_CTX + 1)), max_tokens=4))
    assert (e.value.n_prompt, e.value.n_ctx) == (N_CTX + 1, N_CTX)
    assert str(e.value) == "prompt has 17 tokens but the context holds 16; shorten the prompt or raise the context size (--ctx; n_ctx= in Python)"
    with pytest.raises(ContextOverflowError):
        llm.logits(list(range(3, 3 + N_CTX + 1)))


def test_text_prompt_longer_than_the_context(llm):
    with pytest.raises(ContextOverflowError):
        list(llm.generate("the sun " * 40, max_tokens=1))


def test_generation_stops_when_the_context_is_full(llm):
    """10 prompt tokens + at most 7 generated (the 7th needs no cache slot): finish_reason "length"."""
    chunks = list(llm.generate(list(range(3, 13)), max_tokens=1000, temperature=0.0, ignore_eos=True))
    assert len(chunks) == N_CTX - 10 + 1
    assert [c.finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["length"]
    assert llm.cache.pos == N_CTX and llm.cache.k.shape[2] == N_CTX


def test_a_prompt_that_fills_the_context_yields_one_token(llm):
    chunks = list(llm.generate(list(range(3, 3 + N_CTX)), max_tokens=50, temperature=0.0, ignore_eos=True))
    assert len(chunks) == 1 and chunks[0].finish_reason == "length"


def test_forward_refuses_before_writing_past_the_cache(llm):
    cache = llm.model.new_cache(4)
    llm.model.forward(np.array([3, 4, 5]), cache)
    with pytest.raises(ContextOverflowError):
        llm.model.forward(np.array([6, 7]), cache)
    assert cache.pos == 3 and cache.tokens == [3, 4, 5]  # nothing was written


# ---- memory: refuse up front ------------------------------------------------------------------------------


def fake_memory(monkeypatch, available: int) -> None:
    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=available, total=available))


def reference_need(path: Path, n_ctx: int, itemsize: int = 2) -> int:
    """What _check_memory counts: the file, the KV cache, and float32 copies of every weight (reference backend)."""
    return path.stat().st_size + kv_bytes(n_ctx, itemsize) + TINY.n_params() * 4


def test_check_memory_boundary(tiny_path, monkeypatch):
    need = reference_need(tiny_path, 64, itemsize=4)
    fake_memory(monkeypatch, need)
    _check_memory(str(tiny_path), "reference", TINY, 64, np.float32)  # exactly enough
    fake_memory(monkeypatch, need - 1)
    with pytest.raises(LlamalabError) as e:
        _check_memory(str(tiny_path), "reference", TINY, 64, np.float32)
    assert str(e.value).startswith(f"{tiny_path}: needs about ")
    assert "(reference backend, context of 64 tokens) but only" in str(e.value)
    assert str(e.value).endswith("is available; lower the context size (--ctx; n_ctx= in Python) "
                                 "or use the fast backend (--backend fast)")
    fast_need = tiny_path.stat().st_size + kv_bytes(64, 4)  # the fast backend reads the weights in place
    fake_memory(monkeypatch, fast_need)
    _check_memory(str(tiny_path), "fast", TINY, 64, np.float32)
    fake_memory(monkeypatch, reference_need(tiny_path, 64, itemsize=2))  # an f16 cache halves the KV part
    _check_memory(str(tiny_path), "reference", TINY, 64, np.float16)


def test_llm_refuses_before_building_the_model(tiny_path, monkeypatch):
    import llamalab.runtime.model

    def must_not_build(*a, **k):
        raise AssertionError("the model was built although the memory check should have failed")

    monkeypatch.setattr(llamalab.runtime.model, "Llama", must_not_build)
    fake_memory(monkeypatch, reference_need(tiny_path, N_CTX) - 1)
    with pytest.raises(LlamalabError, match=r"needs about \d+ MiB \(reference backend, context of 16 tokens\)"):
        LLM(tiny_path, n_ctx=N_CTX, backend="reference", progress=False)


def test_lowering_n_ctx_makes_it_fit(tiny_path, monkeypatch):
    fake_memory(monkeypatch, reference_need(tiny_path, N_CTX))
    with pytest.raises(LlamalabError, match="context of 128 tokens"):
        LLM(tiny_path, backend="reference", progress=False)  # the whole trained context does not fit
    assert LLM(tiny_path, n_ctx=N_CTX, backend="reference", threads=1, progress=False).n_ctx == N_CTX


def test_a_huge_trained_context_is_refused_not_allocated(tmp_path):
    """context_length 2**40 in the file: the default n_ctx would need ~128 TiB of cache; real psutil says no."""
    fuzz = load_fuzz()
    path = fuzz.write_tiny_gguf(tmp_path / "long.gguf", tokenizer="gpt2",
                                overrides={"llama.context_length": (2**40, GGUFValueType.UINT64)})
    with pytest.raises(LlamalabError, match=r"context of 1099511627776 tokens\) but only") as e:
        LLM(path, backend="fast", progress=False)
    assert str(e.value).endswith("lower the context size (--ctx; n_ctx= in Python)")  # no backend hint: it is the fast one


def test_new_cache_beyond_memory_is_a_project_error(llm):
    with pytest.raises(LlamalabError, match=r"n_ctx=1099511627776 needs .* MiB; lower n_ctx"):
        llm.model.new_cache(2**40)
