"""Fuzzing the GGUF loader: forged counts, lengths, types, dimensions, offsets and truncations.

Every input must either load (and then run: tokenizer, one forward pass) or raise a
LlamalabError whose one-line message names the file, quickly and without allocating what
the file claims. The engine is scripts/fuzz.py (the long run: ``python scripts/fuzz.py``);
these are its short, deterministic CI cases plus targeted forgeries with exact messages.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from fuzz_harness import load_fuzz
from gguf import GGUFValueType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamalab.errors import LlamalabError, ModelFormatError, UnsupportedModelError
from llamalab.formats.gguf import load_gguf


fuzz = load_fuzz()
BACKENDS = fuzz.backends_available()


@pytest.fixture(scope="module", autouse=True)
def compiled_kernels(tmp_path_factory):
    """Run every seed once outside the per-case time limit: compiling the kernels can take a while."""
    fuzz.warm_up(tmp_path_factory.mktemp("warm"), BACKENDS)
CASE_SECONDS = 5.0  # per case; a normal case takes milliseconds


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def run(data: bytes, workdir: Path):
    with fuzz.time_limit(CASE_SECONDS):
        return fuzz.run_gguf(data, workdir, BACKENDS)


def forge(name: str, label: str, value: int, nth: int = 0) -> bytes:
    """The seed file `name` with the nth integer field whose label ends with `label` set to `value`."""
    data = bytearray(fuzz.gguf_seed(name))
    slots = [s for s in fuzz.gguf_layout(bytes(data)).slots if s.label.endswith(label) and s.kind == "int"]
    slot = slots[nth]
    data[slot.offset : slot.offset + slot.size] = value.to_bytes(slot.size, "little")
    return bytes(data)


def load_error(data: bytes, tmp_path: Path, cls=ModelFormatError) -> str:
    """Load forged bytes; return the message of the expected error (which must name the file), within a second."""
    path = tmp_path / "forged.gguf"
    path.write_bytes(data)
    t0 = time.perf_counter()
    with pytest.raises(cls) as e:
        load_gguf(path)
    assert time.perf_counter() - t0 < 1.0
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    return msg[len(f"{path}: ") :]


# ---- seeds and sweeps ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(fuzz.GGUF_SEEDS))
def test_seed_loads_and_runs(name, workdir):
    assert run(fuzz.gguf_seed(name), workdir) == fuzz.Outcome("ok", "", "forward")


@pytest.mark.parametrize("name, step", [("llama-f32", 1), ("no-tokenizer", 1), ("gpt2-q8", 9)])
def test_truncation_at_every_boundary_is_a_format_error(name, step, workdir):
    """Cut at every field boundary (+-1 byte) of header, metadata and tensor infos (the 2.8k of the
    byte-level vocabulary: every 9th here, all of them in the long run)."""
    data = fuzz.gguf_seed(name)
    points = fuzz.boundaries(fuzz.gguf_layout(data), len(data))
    assert len(points) > 300
    for cut in points[::step]:
        out = run(data[:cut], workdir)
        assert out.status == "rejected" and out.message.startswith("ModelFormatError"), (cut, out)


def assert_no_failures(target: str, outcomes: list) -> None:
    """No unexpected exception; failures already reported to their owners (fuzz.KNOWN_ISSUES) make it xfail."""
    new, known = fuzz.triage(outcomes)
    assert not new, [(i, fuzz.describe(target, 0, i), o) for i, o in new[:5]]
    if known:
        pytest.xfail("known issues: " + "; ".join(sorted(known)))


def test_mutated_files_load_or_raise_project_errors(workdir):
    """400 structure-aware and random mutations (deterministic): nothing but project errors."""
    outcomes = []
    for i in range(400):
        with fuzz.time_limit(CASE_SECONDS):
            outcomes.append(fuzz.run_case("gguf", 0, i, workdir, BACKENDS))
    assert {o.status for o in outcomes} >= {"ok", "rejected"}  # some mutations keep the file usable
    assert_no_failures("gguf", outcomes)


INT_FIELDS = [s for s in fuzz.gguf_layout(fuzz.gguf_seed("llama-f32")).slots if s.kind == "int"]


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(slot=st.sampled_from(INT_FIELDS), value=st.sampled_from(fuzz.INTERESTING) | st.integers(0, 2**64 - 1))
def test_any_value_in_any_integer_field(slot, value, tmp_path_factory):
    data = bytearray(fuzz.gguf_seed("llama-f32"))
    data[slot.offset : slot.offset + slot.size] = (value % 2 ** (8 * slot.size)).to_bytes(slot.size, "little")
    out = run(bytes(data), tmp_path_factory.getbasetemp())
    assert out.status != "bad" or fuzz.known_issue(out.message), (slot.label, value, out)


# ---- forged sizes: rejected at once, nothing allocated -----------------------------------------------------


def test_header_counts_beyond_the_file(tmp_path):
    assert "header claims 9223372036854775808 metadata entries" in load_error(forge("llama-f32", "metadata count", 2**63), tmp_path)
    assert "header claims 4294967296 tensors" in load_error(forge("llama-f32", "tensor count", 2**32), tmp_path)


def test_string_array_length_beyond_the_file(tmp_path):
    msg = load_error(forge("llama-f32", "tokenizer.ggml.tokens: array length", 2**40), tmp_path)
    assert msg.startswith("metadata key 'tokenizer.ggml.tokens': array at byte ")
    assert "claims 1099511627776 STRING entries, more than the" in msg


def test_numeric_array_length_beyond_the_file(tmp_path):
    msg = load_error(forge("llama-f32", "tokenizer.ggml.scores: array length", 2**64 - 1), tmp_path)
    assert "claims 18446744073709551615 FLOAT32 entries" in msg


def test_string_length_beyond_the_file(tmp_path):
    msg = load_error(forge("llama-f32", "general.architecture: string length", 2**63), tmp_path)
    assert msg.startswith("metadata key 'general.architecture': string at byte ")
    assert "claims 9223372036854775808 bytes but only" in msg


def test_array_string_length_beyond_the_file(tmp_path):
    msg = load_error(forge("llama-f32", "tokenizer.ggml.tokens[1]: string length", 2**40), tmp_path)
    assert msg.startswith("metadata key 'tokenizer.ggml.tokens': string at byte ")
    assert "claims 1099511627776 bytes but only" in msg


def test_array_string_that_is_not_utf8(tmp_path):
    data = bytearray(fuzz.gguf_seed("llama-f32"))
    slot = next(s for s in fuzz.gguf_layout(bytes(data)).slots if s.label.endswith("tokenizer.ggml.tokens[1]: string bytes"))
    data[slot.offset] = 0xFF
    msg = load_error(bytes(data), tmp_path)
    assert msg == f"metadata key 'tokenizer.ggml.tokens': string 1 at byte {slot.offset - 8} is not valid UTF-8"


def test_key_length_beyond_the_file(tmp_path):
    msg = load_error(forge("llama-f32", "key: string length", 2**40, nth=3), tmp_path)
    assert msg.startswith("metadata entry 3 of ") and "claims 1099511627776 bytes" in msg


def test_unknown_value_type(tmp_path):
    msg = load_error(forge("llama-f32", "general.architecture: value type", 13), tmp_path)
    assert msg.startswith("metadata key 'general.architecture': unknown value type 13 at byte ")


def test_nested_array_is_refused(tmp_path):
    msg = load_error(forge("llama-f32", "tokenizer.ggml.tokens: array entry type", int(GGUFValueType.ARRAY)), tmp_path)
    assert "nested array at byte" in msg


def test_tensor_with_too_many_dimensions(tmp_path):
    msg = load_error(forge("llama-f32", "tensor token_embd.weight: n_dims", 5), tmp_path)
    assert msg.startswith("tensor info 0 of ") and "tensor 'token_embd.weight' has 5 dimensions (expected 1 to 4)" in msg


def test_tensor_dims_whose_product_wraps_around(tmp_path):
    """ne = (32, 2**63): the uint64 product wraps to 0 in the stock reader; here it is 2**68 bytes, past the end."""
    msg = load_error(forge("llama-f32", "tensor token_embd.weight: dim 1", 2**63), tmp_path)
    assert "tensor 'token_embd.weight' (F32, dims [32, 9223372036854775808]) needs bytes" in msg


def test_tensor_data_offset_past_the_end(tmp_path):
    msg = load_error(forge("llama-f32", "tensor output_norm.weight: data offset", 2**62), tmp_path)
    assert "tensor 'output_norm.weight'" in msg and "but the file has 45376" in msg


def test_misaligned_tensor_data_offset(tmp_path):
    data = fuzz.gguf_seed("llama-f32")
    slot = next(s for s in fuzz.gguf_layout(data).slots if s.label == "tensor output_norm.weight: data offset")
    old = int.from_bytes(data[slot.offset : slot.offset + 8], "little")
    msg = load_error(forge("llama-f32", "tensor output_norm.weight: data offset", old + 4), tmp_path)
    assert f"tensor 'output_norm.weight' data offset {old + 4} is not a multiple of the alignment 32" in msg


def test_unknown_tensor_type(tmp_path):
    msg = load_error(forge("llama-f32", "tensor output_norm.weight: type", 99), tmp_path, UnsupportedModelError)
    assert msg == "tensor 'output_norm.weight' has unknown ggml type 99"


def test_tensor_type_llamalab_cannot_run(tmp_path):
    """I32 has F32's size, so the file is consistent; the model still cannot use it."""
    msg = load_error(forge("llama-f32", "tensor output_norm.weight: type", 26), tmp_path, UnsupportedModelError)
    assert msg == "tensor 'output_norm.weight' has type I32, which llamalab cannot run"


def test_row_length_not_in_whole_blocks(tmp_path):
    msg = load_error(forge("gpt2-q8", "tensor blk.0.attn_q.weight: dim 0", 33), tmp_path)
    assert "tensor 'blk.0.attn_q.weight' row length 33 is not a multiple of Q8_0's block size 32" in msg


def repeat_entry(name: str, kind: str, nth: int) -> bytes:
    """The seed with its nth metadata entry / tensor info written twice and the header count raised."""
    data = fuzz.gguf_seed(name)
    _, start, end = [e for e in fuzz.gguf_layout(data).entries if e[0] == kind][nth]
    out = bytearray(data[:end] + data[start:end] + data[end:])
    at = 16 if kind == "kv" else 8
    out[at : at + 8] = (int.from_bytes(out[at : at + 8], "little") + 1).to_bytes(8, "little")
    return bytes(out)


def test_duplicate_tensor_name(tmp_path):
    assert load_error(repeat_entry("llama-f32", "tensor", 0), tmp_path) == "tensor 'token_embd.weight' appears twice"


def test_duplicate_metadata_key(tmp_path):
    assert load_error(repeat_entry("llama-f32", "kv", 0), tmp_path) == "metadata key 'general.architecture' appears twice"


def test_block_count_cannot_run_away(tmp_path):
    """block_count = 2**31 - 1 with one layer in the file: stops at the first missing tensor, at once."""
    msg = load_error(forge("llama-f32", "llama.block_count: value", 2**31 - 1), tmp_path)
    assert msg == "missing tensor 'blk.1.attn_norm.weight'"


# ---- metadata of the wrong kind ---------------------------------------------------------------------------


def write(tmp_path: Path, **overrides) -> Path:
    return fuzz.write_tiny_gguf(tmp_path / "meta.gguf", overrides=overrides)


@pytest.mark.parametrize(
    "key, spec, cls, expected",
    [
        ("llama.block_count", ("four", GGUFValueType.STRING), ModelFormatError, "metadata 'llama.block_count' should be int, got str"),
        ("llama.block_count", (1.5, GGUFValueType.FLOAT32), ModelFormatError, "metadata 'llama.block_count' should be int, got float"),
        ("llama.attention.head_count_kv", ([2], GGUFValueType.ARRAY, GGUFValueType.UINT32), ModelFormatError,
         "metadata 'llama.attention.head_count_kv' should be int, got list"),
        ("llama.attention.head_count", (0, GGUFValueType.UINT32), ModelFormatError,
         "bad hyper-parameters: embedding_length must be a multiple of head_count (or attention.key_length given)"),
        ("llama.attention.head_count_kv", (3, GGUFValueType.UINT32), ModelFormatError,
         "bad hyper-parameters: head_count must be a multiple of head_count_kv"),
        ("llama.attention.layer_norm_rms_epsilon", (float("nan"), GGUFValueType.FLOAT32), ModelFormatError,
         "bad hyper-parameters: layer_norm_rms_epsilon and rope.freq_base must be positive and finite"),
        ("llama.rope.freq_base", (float("inf"), GGUFValueType.FLOAT32), ModelFormatError,
         "bad hyper-parameters: layer_norm_rms_epsilon and rope.freq_base must be positive and finite"),
        ("llama.context_length", None, ModelFormatError, "missing metadata key 'llama.context_length'"),
        ("general.architecture", ("mamba", GGUFValueType.STRING), UnsupportedModelError,
         "architecture 'mamba' is not supported (supported: llama, qwen2, qwen3, gemma3, phi3, mistral)"),
        ("tokenizer.ggml.model", ("bert", GGUFValueType.STRING), UnsupportedModelError,
         "tokenizer 'bert' is not supported (supported: llama, gpt2)"),
        ("tokenizer.ggml.tokens", (list(range(24)), GGUFValueType.ARRAY, GGUFValueType.INT32), ModelFormatError,
         "'tokenizer.ggml.tokens' should be an array of strings"),
        ("tokenizer.ggml.scores", (["x"] * 24, GGUFValueType.ARRAY, GGUFValueType.STRING), ModelFormatError,
         "'tokenizer.ggml.scores' should be an array of float32 numbers"),
        ("tokenizer.ggml.scores", ([0.0] * 23, GGUFValueType.ARRAY, GGUFValueType.FLOAT32), ModelFormatError,
         "'tokenizer.ggml.scores' has 23 entries, expected 24 (one per token)"),
        ("tokenizer.ggml.token_type", ([2**40] * 24, GGUFValueType.ARRAY, GGUFValueType.INT64), ModelFormatError,
         "'tokenizer.ggml.token_type' should be an array of int32 numbers"),
        ("tokenizer.ggml.bos_token_id", (24, GGUFValueType.UINT32), ModelFormatError,
         "'tokenizer.ggml.bos_token_id' = 24 is not a token id in [0, 24)"),
        ("tokenizer.ggml.merges", ([1, 2], GGUFValueType.ARRAY, GGUFValueType.UINT8), ModelFormatError,
         "'tokenizer.ggml.merges' should be an array of strings"),
        ("tokenizer.chat_template", (7, GGUFValueType.UINT32), ModelFormatError,
         "metadata 'tokenizer.chat_template' should be a string, got int"),
    ],
)
def test_metadata_of_the_wrong_kind(tmp_path, key, spec, cls, expected):
    path = write(tmp_path, **{key: spec})
    with pytest.raises(cls) as e:
        load_gguf(path)
    assert str(e.value) == f"{path}: {expected}"


def test_big_endian_file_is_named(tmp_path):
    data = bytearray(fuzz.gguf_seed("llama-f32"))
    data[4:8] = struct.pack(">I", 3)
    assert load_error(bytes(data), tmp_path) == "GGUF version 50331648 is not supported (expected 2 or 3) (a big-endian file?)"


@pytest.mark.parametrize("head, expected", [
    (b"", "not a GGUF file (magic b'', expected b'GGUF')"),
    (b"GGML\x03\x00\x00\x00", "not a GGUF file (magic b'GGML', expected b'GGUF')"),
    (b"GGUF\x03\x00\x00\x00", "truncated GGUF header (8 bytes)"),
    (b"GGUF\x01\x00\x00\x00" + bytes(16), "GGUF version 1 is not supported (expected 2 or 3)"),
])  # fmt: skip
def test_not_a_gguf_file(tmp_path, head, expected):
    assert load_error(head, tmp_path) == expected


def test_every_error_is_a_llamalab_error_subclass():
    assert issubclass(ModelFormatError, LlamalabError) and issubclass(UnsupportedModelError, LlamalabError)
