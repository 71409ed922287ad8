"""Fuzzing the llama2.c loader: forged header ints, truncated checkpoints, damaged tokenizer.bin files.

Every input loads (and then runs one forward pass) or raises a one-line LlamalabError that
names the file, without allocating what the header claims. Engine: scripts/fuzz.py.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from fuzz_harness import load_fuzz

from llamalab.errors import ModelFormatError
from llamalab.formats.llama2c import load_llama2c


fuzz = load_fuzz()
BACKENDS = fuzz.backends_available()


@pytest.fixture(scope="module", autouse=True)
def compiled_kernels(tmp_path_factory):
    """Run every seed once outside the per-case time limit: compiling the kernels can take a while."""
    fuzz.warm_up(tmp_path_factory.mktemp("warm"), BACKENDS)
HEADER_FIELDS = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"]


def run(model: bytes, tok: bytes, tmp_path: Path):
    with fuzz.time_limit(5.0):
        return fuzz.run_llama2c(model, tok, tmp_path, BACKENDS)


def with_int(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack("<i", value) + data[offset + 4 :]


def load_error(model: bytes, tok: bytes, tmp_path: Path) -> str:
    """The ModelFormatError message of loading these bytes, raised within a second."""
    mpath, tpath = tmp_path / "m.bin", tmp_path / "tokenizer.bin"
    mpath.write_bytes(model)
    tpath.write_bytes(tok)
    t0 = time.perf_counter()
    with pytest.raises(ModelFormatError) as e:
        load_llama2c(mpath, tpath)
    assert time.perf_counter() - t0 < 1.0
    msg = str(e.value)
    assert "\n" not in msg and (str(mpath) in msg or str(tpath) in msg), msg
    return msg


@pytest.mark.parametrize("shared", [True, False])
def test_seed_loads_and_runs(shared, tmp_path):
    assert run(fuzz.llama2c_seed(shared), fuzz.llama2c_tokenizer_seed(), tmp_path).status == "ok"


@pytest.mark.parametrize("shared", [True, False])
def test_truncation_at_every_array_boundary(shared, tmp_path):
    model, tok = fuzz.llama2c_seed(shared), fuzz.llama2c_tokenizer_seed()
    for cut in fuzz._llama2c_boundaries(shared):
        msg = load_error(model[:cut], tok, tmp_path)
        assert "header" in msg, (cut, msg)  # "truncated llama2.c header" or "should be N bytes for its header (...)"


@pytest.mark.parametrize("field", range(7), ids=HEADER_FIELDS)
@pytest.mark.parametrize("value", [-(2**31), -1, 0, 3, 2**31 - 1])
def test_any_header_int(field, value, tmp_path):
    """Zero, negative, odd or huge sizes: a format error at once (vocab_size < 0 only flips the classifier flag)."""
    model = with_int(fuzz.llama2c_seed(True), 4 * field, value)
    msg = load_error(model, fuzz.llama2c_tokenizer_seed(), tmp_path)
    assert "llama2.c" in msg


def test_huge_header_is_checked_against_the_file_size(tmp_path):
    model = with_int(fuzz.llama2c_seed(True), 0, 2**30)  # dim: still a multiple of 2 heads of even size
    for field in (1, 2, 5, 6):  # hidden_dim, n_layers, vocab_size, seq_len
        model = with_int(model, 4 * field, 2**31 - 1)
    msg = load_error(model, fuzz.llama2c_tokenizer_seed(), tmp_path)
    assert "llama2.c checkpoint should be" in msg and f"but it is {len(model)} bytes" in msg


@pytest.mark.parametrize("value, expected", [
    (2**31 - 1, "token 0 claims 2147483647 bytes at byte 12"),
    (-5, "token 0 claims -5 bytes at byte 12"),
])  # fmt: skip
def test_token_length_out_of_range(value, expected, tmp_path):
    tok = with_int(fuzz.llama2c_tokenizer_seed(), 8, value)  # max_len i32, then token 0: score f32, length i32
    assert expected in load_error(fuzz.llama2c_seed(True), tok, tmp_path)


def test_tokenizer_damage(tmp_path):
    model, tok = fuzz.llama2c_seed(True), fuzz.llama2c_tokenizer_seed()
    assert "needs a positive int32 max_token_length" in load_error(model, with_int(tok, 0, 0), tmp_path)
    assert "is not valid UTF-8" in load_error(model, tok[:12] + b"\xff" + tok[13:], tmp_path)
    assert "truncated entry for token" in load_error(model, tok + b"\x00\x00", tmp_path)
    assert "tokenizer has 23 tokens but" in load_error(model, tok[: tok.rindex(b"<0xF0>") - 8], tmp_path)


def test_mutated_files_load_or_raise_project_errors(tmp_path):
    """150 mutations (deterministic) of header, data length and tokenizer.bin: nothing but project errors."""
    outcomes = []
    for i in range(150):
        with fuzz.time_limit(5.0):
            outcomes.append(fuzz.run_case("llama2c", 0, i, tmp_path, BACKENDS))
    assert {o.status for o in outcomes} >= {"ok", "rejected"}
    new, known = fuzz.triage(outcomes)
    assert not new, [(i, fuzz.describe("llama2c", 0, i), o) for i, o in new[:5]]
    if known:
        pytest.xfail("known issues: " + "; ".join(sorted(known)))
