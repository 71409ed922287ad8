"""The forward pass on tiny synthetic models: every block format, fast path held to the
reference path, cache bookkeeping, batched prefill and batched decode, both tokenizers."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from llamalab.api import LLM
from llamalab.errors import ContextOverflowError
from llamalab.formats.gguf import load_gguf
from llamalab.runtime.model import Llama
from llamalab.lab.synth import PRESETS, tiny_bpe_tokenizer, tiny_spm_tokenizer, write_gguf, write_llama2c

ALL_FORMATS = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1,
               Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]
PROMPT = [1, 17, 42, 99, 7, 300, 12, 5]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """qtype -> path of a 2-layer model (dim 256, GQA 4/2 heads) in that format."""
    d = tmp_path_factory.mktemp("tiny")
    return {q: write_gguf(d / f"tiny-{q.name}.gguf", PRESETS["tiny256"], q, tokenizer=tiny_bpe_tokenizer(), seed=1)
            for q in ALL_FORMATS}


KQUANTS = (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)
INT8_LOGITS_TOL = 5e-2  # K-quants decoding on 8-bit activations (llama.cpp's rounding): measured 0.6-1.8e-2 here
HALF_LOGITS_TOL = 5e-3  # F16/BF16 decoding on the half activation (x rounded to f16): measured ~9e-4 here


@pytest.fixture(params=["int", "int8"])
def matvec_backend(request):
    from llamalab import kernels

    before = kernels.get_matvec_backend()
    kernels.set_matvec_backend(request.param)
    yield kernels.get_matvec_backend()  # 'int' where the CPU has no VNNI
    kernels.set_matvec_backend(before)


@pytest.mark.parametrize("qtype", ALL_FORMATS, ids=lambda q: q.name)
def test_fast_path_matches_reference(tiny_models, qtype, matvec_backend):
    """Prefill and 6 decode steps: same greedy tokens, logits within 5e-4 (relative L2) of the float32
    reference (measured 6e-5 to 1e-4). The fast path quantizes activations to 16-bit blocks for
    quantized weights, so it is not bit-exact; float formats are held to 1e-5. Under the int8 matvec
    backend (the default) K-quants decode on 8-bit activations, held to 5e-2, and F16/BF16 rows on x
    rounded to f16, held to 5e-3."""
    int8 = matvec_backend == "int8"
    tol = (INT8_LOGITS_TOL if int8 and qtype in KQUANTS else HALF_LOGITS_TOL if int8 and qtype in (Q.F16, Q.BF16)
           else 1e-5 if qtype in (Q.F32, Q.F16, Q.BF16) else 5e-4)
    loaded = load_gguf(tiny_models[qtype])
    fast, ref = Llama(loaded, "fast"), Llama(loaded, "reference")
    cf, cr = fast.new_cache(64), ref.new_cache(64)
    lf, lr = fast.forward(PROMPT, cf)[-1], ref.forward(PROMPT, cr)[-1]
    for _ in range(6):
        rel = np.linalg.norm(lf - lr) / np.linalg.norm(lr)
        assert rel <= tol, f"{qtype.name}: relative error {rel:.2e}"
        # greedy agrees up to near-ties: the fast path's pick is within its own error of the best
        assert lr[lf.argmax()] >= lr.max() - 2 * np.abs(lf - lr).max(), f"{qtype.name}: greedy pick differs"
        tok = int(lr.argmax())
        lf, lr = fast.forward([tok], cf)[-1], ref.forward([tok], cr)[-1]


@pytest.mark.parametrize("backend", ["fast", "reference"])
def test_cached_decode_equals_recomputation(tiny_models, backend):
    """Token-by-token decoding with the KV cache gives the logits of one full pass (atol 1e-4)."""
    model = Llama(load_gguf(tiny_models[Q.F32]), backend)
    full = model.forward(PROMPT, model.new_cache(64), all_logits=True)  # (T, vocab)
    cache = model.new_cache(64)
    steps = np.concatenate([model.forward([t], cache) for t in PROMPT])
    np.testing.assert_allclose(steps, full, atol=1e-4, rtol=0)
    assert cache.pos == len(PROMPT) and cache.tokens == PROMPT


def test_batch_prefill_equals_token_by_token_and_chunking(tiny_models, monkeypatch):
    """A prompt split into chunks (PREFILL_CHUNK) gives the same logits as one pass. Exact float32
    products (BLAS, not bf16 AMX tiles) so that only the cache bookkeeping is under test."""
    import llamalab.runtime.model as M
    from llamalab.kernels import gemm

    monkeypatch.setattr(gemm, "_backend", "blas")

    model = Llama(load_gguf(tiny_models[Q.F32]), "fast")
    whole = model.forward(PROMPT * 4, model.new_cache(64), all_logits=True)
    monkeypatch.setattr(M, "PREFILL_CHUNK", 5)
    chunked = model.forward(PROMPT * 4, model.new_cache(64), all_logits=True)
    np.testing.assert_allclose(chunked, whole, atol=1e-4, rtol=0)


def test_decode_batch_equals_separate_decodes(tiny_models):
    model = Llama(load_gguf(tiny_models[Q.F32]), "fast")
    prompts = [PROMPT, PROMPT[:3], [5, 6]]
    caches = [model.new_cache(32) for _ in prompts]
    solo = [model.new_cache(32) for _ in prompts]
    for p, c, s in zip(prompts, caches, solo):
        model.forward(p, c)
        model.forward(p, s)
    batched = model.decode_batch([10, 11, 12], caches)  # (3, vocab)
    for i, (tok, s) in enumerate(zip([10, 11, 12], solo)):
        np.testing.assert_allclose(batched[i], model.forward([tok], s)[0], atol=1e-4, rtol=0)
    assert [c.pos for c in caches] == [len(p) + 1 for p in prompts]


def test_single_token_steps_interleaved_over_caches_equal_separate_runs(tiny_models):
    """The one-sequence step keeps the last cache's table: switching caches (of other sizes and
    types, and one made after the first is gone) must read and write each its own arrays."""
    import gc

    from llamalab.errors import InvalidArgumentError

    model = Llama(load_gguf(tiny_models[Q.F32]), "fast")
    kinds = [(16, np.float32), (48, np.float16), (32, np.float32)]
    caches = [model.new_cache(n, t) for n, t in kinds]
    alone = []
    for (n, t), toks in zip(kinds, ([3, 4, 5], [6, 7, 8], [9, 10, 11])):
        c = model.new_cache(n, t)
        alone.append([model.forward([tok], c)[0] for tok in toks])
    got = [[], [], []]
    for step in range(3):
        for i, c in enumerate(caches):
            got[i].append(model.forward([3 * i + 3 + step], c)[0])
    for a, g in zip(alone, got):
        np.testing.assert_array_equal(np.array(g), np.array(a))
    assert [c.pos for c in caches] == [3, 3, 3]
    del caches[:], c
    gc.collect()
    fresh = model.new_cache(16)  # may reuse a freed cache's address: must still get its own table
    np.testing.assert_array_equal(model.forward([3], fresh)[0], alone[0][0])
    with pytest.raises(InvalidArgumentError, match=rf"^token ids must be in \[0, {model.config.vocab_size}\)$"):
        model.forward([model.config.vocab_size], fresh)
    with pytest.raises(InvalidArgumentError, match=r"^token ids must be in"):
        model.forward([-1], fresh)
    assert fresh.pos == 1 and fresh.tokens == [3]  # a refused token leaves the cache as it was


def test_f16_cache_takes_half_the_memory_of_f32(tiny_models):
    model = Llama(load_gguf(tiny_models[Q.F32]), "fast")
    c = model.config
    assert model.new_cache(64).nbytes == 2 * c.n_layers * c.kv_dim * 64 * 4
    assert model.new_cache(64, np.float16).nbytes * 2 == model.new_cache(64).nbytes


def test_llm_names_a_model_or_tokenizer_that_is_not_a_path():
    from llamalab.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=r"^model must be a path, a known name or synth:PRESET:DTYPE, got tuple$"):
        LLM(("info", "loaded"))
    with pytest.raises(InvalidArgumentError, match=r"^tokenizer must be a path to a llama2.c tokenizer.bin, got int$"):
        LLM("smollm2-135m", tokenizer=3)


def test_llm_defaults_to_an_f16_cache_and_names_a_bad_kv_type(tiny_models):
    from llamalab.errors import InvalidArgumentError

    path = str(tiny_models[Q.Q8_0])
    assert LLM(path, threads=1).cache.k.dtype == np.float16  # llama.cpp's default (-ctk f16 -ctv f16)
    assert LLM(path, threads=1, kv_type="f32").cache.k.dtype == np.float32
    with pytest.raises(InvalidArgumentError, match=r"^kv_type must be one of f16, f32, got 'q4_0'$"):
        LLM(path, kv_type="q4_0")


def test_context_overflow_names_both_numbers(tiny_models):
    model = Llama(load_gguf(tiny_models[Q.F32]), "fast")
    with pytest.raises(ContextOverflowError, match="prompt has 9 tokens but the context holds 8"):
        model.forward(list(range(9)), model.new_cache(8))


@pytest.mark.parametrize("make_tok", [tiny_spm_tokenizer, tiny_bpe_tokenizer], ids=["spm", "bpe"])
def test_llm_generates_and_seed_reproduces(tmp_path, make_tok):
    path = write_gguf(tmp_path / "m.gguf", PRESETS["tiny"], Q.Q8_0, tokenizer=make_tok(), seed=3)
    llm = LLM(str(path), threads=1)
    ids = llm.tokenize("Once upon a time there was a little girl")
    assert llm.detokenize(ids[1:] if ids and ids[0] == llm.tokenizer.bos_id else ids).strip() == \
        "Once upon a time there was a little girl"
    a = list(llm.generate("Once upon a time", max_tokens=12, temperature=0.9, seed=42, ignore_eos=True))
    b = list(llm.generate("Once upon a time", max_tokens=12, temperature=0.9, seed=42, ignore_eos=True))
    assert [c.token for c in a] == [c.token for c in b] and len(a) == 12
    assert a[-1].finish_reason == "length" and all(c.finish_reason is None for c in a[:-1])
    # streamed text keeps a generated leading space that one-shot decoding of a prompt would drop
    assert "".join(c.text for c in a) == llm.tokenizer.decode([c.token for c in a], strip_prefix_space=False)
    assert a[-1].n_cached == 0 and b[-1].n_cached > 0  # the second run reused the cached prompt


def test_greedy_generation_stops_at_stop_string(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", PRESETS["tiny"], Q.F16, tokenizer=tiny_bpe_tokenizer(), seed=5)
    llm = LLM(str(path), threads=1)
    full = llm.complete("the dog", max_tokens=20, temperature=0, ignore_eos=True)
    assert len(full) > 4
    stop = full[2:4]
    cut = llm.complete("the dog", max_tokens=20, temperature=0, ignore_eos=True, stop=[stop])
    assert cut == full[: full.index(stop)]


def test_chat_template_applied(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", PRESETS["tiny"], Q.F32, tokenizer=tiny_bpe_tokenizer(), seed=5)
    llm = LLM(str(path), threads=1)
    text = llm.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert llm.chat_tokens([{"role": "user", "content": "hi"}]) == llm.tokenize(text, special=True)


def test_template_with_bos_token_gives_one_bos(tmp_path):
    """Llama-2 style templates emit {{ bos_token }} themselves; the tokenizer must not add another."""
    import dataclasses

    spec = dataclasses.replace(tiny_spm_tokenizer(), add_bos=True,
                               chat_template="{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    path = write_gguf(tmp_path / "m.gguf", PRESETS["tiny"], Q.F32, tokenizer=spec, seed=5)
    llm = LLM(str(path), threads=1)
    ids = llm.chat_tokens([{"role": "user", "content": "the dog"}])
    bos = llm.tokenizer.bos_id
    assert ids[0] == bos and ids[1] != bos and ids.count(bos) == 1


def test_llama2c_checkpoint_runs_through_the_api(tmp_path, shared_data):
    cfg = PRESETS["stories15M"]
    path = write_llama2c(tmp_path / "stories15M.bin", cfg, shared_classifier=True, seed=0)
    llm = LLM(str(path), tokenizer=shared_data / "llama2c-tokenizer.bin", threads=1, kv_type="f32")  # exact vs ref
    assert llm.config.dim == 288 and llm.config.vocab_size == 32000
    out = list(llm.generate("Once upon a time", max_tokens=5, temperature=0, ignore_eos=True))
    assert len(out) == 5
    ref = Llama(__import__("llamalab.api", fromlist=["x"]).load_model_file(path, shared_data / "llama2c-tokenizer.bin"),
                "reference")
    ids = llm.tokenize("Once upon a time")
    np.testing.assert_allclose(llm.logits(ids), ref.forward(ids, ref.new_cache(16), all_logits=True), atol=1e-3)


@pytest.mark.parametrize("kv", [np.float32, np.float16], ids=["f32", "f16"])
def test_long_context_decode_combines_attention_chunks_correctly(tmp_path, monkeypatch, kv):
    """Past a few attention.ATTEND_CHUNK positions decode attention runs as several work items per kv
    head (shared with the pool's workers) whose partial softmaxes are combined; the logits still
    match the reference on the same cache type (exact float products: BLAS prefill)."""
    import dataclasses

    from llamalab.kernels import attention, gemm

    monkeypatch.setattr(gemm, "_backend", "blas")
    cfg = dataclasses.replace(PRESETS["tiny"], context_length=2048)
    loaded = load_gguf(write_gguf(tmp_path / "long.gguf", cfg, Q.F32, tokenizer=tiny_bpe_tokenizer(), seed=2))
    fast, ref = Llama(loaded, "fast"), Llama(loaded, "reference")
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, 3 * attention.ATTEND_CHUNK + 50)
    cf, cr = fast.new_cache(2048, kv), ref.new_cache(2048, kv)
    fast.forward(ids, cf)
    ref.forward(ids, cr)
    np.testing.assert_allclose(fast.forward([5], cf), ref.forward([5], cr), atol=1e-4, rtol=0)
