"""`llamalab synth` writes what it says: every listed --dtype really is the type of every matrix
(or the command refuses), and a llama2.c checkpoint comes with the tokenizer.bin it needs."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from gguf import GGUFReader

from llamalab import LLM
from llamalab.cli import main
from llamalab.formats.llama2c import load_llama2c_tokenizer
from llamalab.lab.models import padded_tokenizer
from llamalab.lab.synth import PRESETS
from llamalab.text.tokenizer import Tokenizer

LISTED = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]


def matrix_types(path) -> set[str]:
    return {t.tensor_type.name for t in GGUFReader(path).tensors if len(t.shape) == 2}


@pytest.mark.parametrize("dtype", LISTED)
def test_every_listed_dtype_is_written_as_asked(tmp_path, capsys, dtype):
    out = tmp_path / "m.gguf"
    assert main(["synth", "tiny256", "--dtype", dtype, "-o", str(out)]) == 0
    assert capsys.readouterr().err == ""
    assert matrix_types(out) == {dtype.upper()}


def test_help_lists_every_type():
    from llamalab.lab import cli

    text = str(inspect.signature(cli.synth).parameters["dtype"].default.help)
    assert all(d in text for d in LISTED)


def test_a_k_quant_the_shapes_cannot_hold_is_refused(tmp_path, capsys):
    out = tmp_path / "m.gguf"
    assert main(["synth", "tiny", "--dtype", "q3_k", "-o", str(out)]) == 1  # rows of 64 and 128
    err = capsys.readouterr().err
    assert "--dtype q3_k: Q3_K stores rows in multiples of 256, and tiny has rows of 64, 128" in err
    assert "--fallback" in err and not out.exists()


def test_fallback_says_what_it_wrote(tmp_path, capsys):
    out = tmp_path / "m.gguf"
    assert main(["synth", "tiny", "--dtype", "q3_k", "--fallback", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "note: rows of 64 are not whole Q3_K blocks; those tensors are Q4_0" in err
    assert matrix_types(out) == {"Q4_0"}


@pytest.mark.parametrize("dtype", ["iq4_nl", "q8_1", "nonsense"])
def test_types_llamalab_cannot_write_are_refused(tmp_path, capsys, dtype):
    assert main(["synth", "tiny256", "--dtype", dtype, "-o", str(tmp_path / "m.gguf")]) == 1
    assert "choose one of f32, f16" in capsys.readouterr().err


def test_llama2c_checkpoint_comes_with_its_tokenizer(tmp_path, capsys):
    out = tmp_path / "tiny.bin"
    assert main(["synth", "tiny", "--format", "llama2c", "-o", str(out)]) == 0
    assert f"wrote {tmp_path / 'tokenizer.bin'}" in capsys.readouterr().err
    spec = load_llama2c_tokenizer(tmp_path / "tokenizer.bin")
    want = padded_tokenizer(PRESETS["tiny"].vocab_size, "llama")
    assert spec.tokens == want.tokens
    np.testing.assert_array_equal(spec.scores, want.scores)
    llm = LLM(out, backend="reference", threads=1, progress=False)  # finds tokenizer.bin beside it
    assert llm.tokenize("hello") == Tokenizer.from_spec(want).encode("hello")


def test_a_different_tokenizer_bin_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "tokenizer.bin").write_bytes(b"someone else's")
    out = tmp_path / "tiny.bin"
    assert main(["synth", "tiny", "--format", "llama2c", "-o", str(out)]) == 0
    assert (tmp_path / "tokenizer.bin").read_bytes() == b"someone else's"
    assert f"pass --tokenizer {tmp_path / 'tiny.tokenizer.bin'}" in capsys.readouterr().err
    assert len(load_llama2c_tokenizer(tmp_path / "tiny.tokenizer.bin").tokens) == PRESETS["tiny"].vocab_size
