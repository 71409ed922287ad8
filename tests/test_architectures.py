"""Every architecture against llama.cpp, and the fast path against the reference.

Golden logits (tests/data/golden/, made by scripts/make_golden_logits.py with llama-cpp-python
0.3.36, f32 KV cache, no flash attention) are for tiny random-weight models that
lab/synth.py writes deterministically; each test regenerates its file and checks its SHA-256
first, so a change to the writer cannot silently compare against another model. The token
sequence is 1,100 long: RoPE (Llama 3.1+ rope_freqs, NEOX pairs, Gemma's two bases) and the
sliding window are checked past position 1,000.

Tolerances, as max |error| over max |logit| at each stored position:
- reference path, F32 file: 2e-5 (float32 summation order); Gemma 3: 2e-3, since ggml's GELU
  goes through an fp16 table;
- compiled decode after an exact (BLAS) prefill, F32: the same bounds with an f32 KV cache; with
  the default f16 cache (every key and value rounded by up to 2**-11 of itself) 1e-3, measured
  1.4e-4 to 4.7e-4;
- fast path, Q8_0 file: 6e-2 — llama.cpp rounds the activations to 8 bits, llamalab to 16.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from llamalab import kernels
from llamalab.errors import UnsupportedModelError
from llamalab.formats import load
from llamalab.lab.synth import PRESETS, tiny_spm_tokenizer, write_gguf
from llamalab.runtime.model import Llama

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_golden_logits import PRESET_NAMES, model_path, sha256  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "golden"
EXACT = {name: 2e-5 for name in PRESET_NAMES} | {"tiny-gemma3": 2e-3}


def golden(preset: str, qtype: T, tmp_path_factory) -> tuple[Path, dict]:
    g = dict(np.load(GOLDEN / f"{preset}-{qtype.name}.npz"))
    path = model_path(tmp_path_factory.mktemp(preset), preset, qtype)
    assert sha256(path) == str(g["sha256"]), f"{path.name} differs from the golden one: rerun scripts/make_golden_logits.py"
    return path, g


def rel_err(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Per row: max |got - want| / max |want|."""
    return np.abs(got - want).max(axis=-1) / np.abs(want).max(axis=-1)


def prefill_against_golden(preset: str, qtype: T, backend: str, tmp_path_factory):
    """(logits at the stored positions, their rel_err, the positions, the golden data) of one
    pass over the golden tokens."""
    path, g = golden(preset, qtype, tmp_path_factory)
    model = Llama(load(path), backend=backend)
    tokens, pos = g["tokens"], g["positions"]
    logits = model.forward(tokens, model.new_cache(len(tokens)), all_logits=True)[pos]
    return logits, rel_err(logits, g["logits"]), pos, g


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_reference_logits_equal_llama_cpp_at_every_stored_position(preset, tmp_path_factory):
    logits, err, pos, g = prefill_against_golden(preset, T.F32, "reference", tmp_path_factory)
    assert err.max() < EXACT[preset], f"worst at position {pos[err.argmax()]}: {err.max():.2e}"
    assert (logits.argmax(-1) == g["logits"].argmax(-1)).all()


@pytest.mark.parametrize("kv", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_compiled_decode_past_1000_equals_llama_cpp(preset, kv, tmp_path_factory):
    """Exact prefill (BLAS on float panels) to position 1,022, then the compiled step; with an
    f16 cache the prefill's attention and the step read the rounded keys and values."""
    path, g = golden(preset, T.F32, tmp_path_factory)
    model = Llama(load(path), backend="fast")
    tokens, pos = g["tokens"], list(g["positions"])
    cache = model.new_cache(len(tokens), kv)
    bound = EXACT[preset] if kv == np.float32 else max(EXACT[preset], 1e-3)
    before = kernels.get_gemm_backend()
    kernels.set_gemm_backend("blas")
    try:
        model.forward(tokens[:1023], cache)
    finally:
        kernels.set_gemm_backend(before)
    for p in (1023, 1024):
        assert cache.pos == p
        logits = model.forward(tokens[p : p + 1], cache)[0]  # one token: the compiled step
        err = rel_err(logits, g["logits"][pos.index(p)])
        assert err < bound, f"position {p}: {err:.2e}"


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_fast_path_on_q8_0_is_within_the_quantization_floor_of_llama_cpp(preset, tmp_path_factory):
    _, err, pos, _ = prefill_against_golden(preset, T.Q8_0, "fast", tmp_path_factory)
    assert err.max() < 6e-2, f"worst at position {pos[err.argmax()]}: {err.max():.2e}"


ARCH_PRESETS = ("tiny-llama3", "tiny-qwen2", "tiny-qwen3", "tiny-gemma3", "tiny-phi3")


@pytest.fixture(scope="module", params=ARCH_PRESETS)
def arch_models(request, tmp_path_factory):
    path = write_gguf(tmp_path_factory.mktemp("arch") / f"{request.param}.gguf", PRESETS[request.param], T.Q8_0,
                      tokenizer=tiny_spm_tokenizer(), seed=5)
    loaded = load(path)
    return request.param, Llama(loaded, backend="fast"), Llama(loaded, backend="reference")


def test_fast_decode_equals_reference_and_recompute(arch_models):
    """Token-by-token decode through the cache equals one pass over the whole sequence
    (reference), and the fast path's steps equal the reference's within 1e-3 of the logits' scale
    (16-bit activations on the Q8_0 products)."""
    name, fast, ref = arch_models
    ids = np.random.default_rng(0).integers(3, 384, size=40)  # past tiny-gemma3's window of 16
    whole = ref.forward(ids, ref.new_cache(64), all_logits=True)
    cr, cf = ref.new_cache(64), fast.new_cache(64)
    for t, tok in enumerate(ids):
        lr, lf = ref.forward([tok], cr)[0], fast.forward([tok], cf)[0]
        np.testing.assert_allclose(lr, whole[t], atol=2e-5 * np.abs(whole[t]).max(), err_msg=f"{name} recompute {t}")
        assert rel_err(lf, lr) < 1e-3, f"{name}: step {t} fast vs reference {rel_err(lf, lr):.2e}"


def test_f16_cache_decode_is_within_1p5e_2_of_the_f32_cache(arch_models):
    """The default f16 cache against f32, 20 compiled steps after a 20-token prefill: within 1.5e-2
    of the logits' scale (measured 2.5e-3 to 7.7e-3 on these random-weight Q8_0 models, where the
    rounding of every key and value, up to 2**-11 of it, compounds over the layers)."""
    name, fast, _ = arch_models
    ids = np.random.default_rng(1).integers(3, 384, size=40)
    c32, c16 = fast.new_cache(64), fast.new_cache(64, np.float16)
    fast.forward(ids[:20], c32)
    fast.forward(ids[:20], c16)
    for t in ids[20:]:
        err = rel_err(fast.forward([t], c16)[0], fast.forward([t], c32)[0])
        assert err < 1.5e-2, f"{name}: f16 vs f32 cache {err:.2e}"


@pytest.mark.parametrize("kv", [np.float32, np.float16], ids=["f32", "f16"])
def test_batched_step_equals_single_steps_bitwise(arch_models, kv):
    name, fast, _ = arch_models
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14]]
    single, batched = [], []
    for p in prompts:
        c = fast.new_cache(32, kv)
        fast.forward(p, c)
        single.append(fast.forward([20], c)[0])
    caches = [fast.new_cache(32, kv) for _ in prompts]
    for p, c in zip(prompts, caches):
        fast.forward(p, c)
    batched = fast.decode_batch([20, 20, 20], caches)
    for b in range(3):  # B = 1 runs matvec3_rows, B > 1 matmul_rows: same block dots, same order
        np.testing.assert_array_equal(batched[b], single[b], err_msg=f"{name} sequence {b}")
    assert all(c.pos == len(p) + 1 for p, c in zip(prompts, caches))


def test_a_tensor_nothing_reads_is_refused(tmp_path):
    """An extra tensor (here: a bias the llama layer has no use for when alone) names itself."""
    from gguf import GGUFWriter

    from llamalab.lab.synth import _add_model_keys, _add_tokenizer_keys, random_weights

    cfg = PRESETS["tiny"]
    path = tmp_path / "extra.gguf"
    w = GGUFWriter(path, arch="llama")
    _add_model_keys(w, cfg)
    _add_tokenizer_keys(w, tiny_spm_tokenizer())
    for name, x in random_weights(cfg).items():
        w.add_tensor(name, x)
    w.add_tensor("blk.0.ffn_gate_inp.weight", np.zeros((4, 64), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(UnsupportedModelError, match=r"tensor 'blk.0.ffn_gate_inp.weight' is not read by llamalab's llama layer"):
        load(path)


def test_unknown_rope_scaling_is_refused(tmp_path):
    cfg = dataclasses.replace(PRESETS["tiny"], rope_scaling="longrope", rope_scale=0.5)
    path = write_gguf(tmp_path / "rope.gguf", dataclasses.replace(cfg, rope_scaling="linear"), T.F32,
                      tokenizer=tiny_spm_tokenizer())
    import gguf

    reader = gguf.GGUFReader(path, "r+")  # rewrite the scaling type in place: same length as "linear"
    field = reader.fields["llama.rope.scaling.type"]
    field.parts[field.data[0]][:] = np.frombuffer(b"yarnxx", np.uint8)
    reader.data.flush()
    with pytest.raises(UnsupportedModelError, match=r"rope scaling type 'yarnxx' \(llama.rope.scaling.type\) is not supported"):
        load(path)
