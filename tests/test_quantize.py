"""`llamalab quantize` against llama-quantize's own output (tests/data/quantize/, made by
scripts/make_quantize_fixtures.py): the same blocks, byte for byte, and the same per-tensor
type choice for every mix."""

from __future__ import annotations

import os

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader

from llamalab import quants
from llamalab.cli import main
from llamalab.convert import quantize as qmod
from llamalab.convert.mixes import MixPlanner, ModelShape, parse_file_type
from llamalab.convert.quantize import quantize_file
from llamalab.errors import InvalidArgumentError
from llamalab.quants.encode import encode

DATA = Path(__file__).parent / "data" / "quantize"
PURE = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


def _tensors(path: Path) -> dict:
    return {t.name: t for t in GGUFReader(path).tensors}


def _bytes(t) -> np.ndarray:
    return np.asarray(t.data).view(np.uint8).reshape(-1)


def _first_diff(a: np.ndarray, b: np.ndarray, type_size: int) -> str:
    bad = np.flatnonzero(a != b)
    return f"{len(bad)} bytes differ, first in block {bad[0] // type_size}" if len(bad) else "same"


@pytest.mark.parametrize("qtype", PURE)
def test_encode_matches_llama_quantize_blocks(qtype):
    """quants.encode on each F32 input tensor gives llama-quantize --pure's blocks (fallback types included)."""
    src, ref = _tensors(DATA / "blocks-in.gguf"), _tensors(DATA / f"blocks-{qtype}.gguf")
    for name, r in ref.items():
        rt = T(r.tensor_type)
        if "norm" in name:  # 1-D: llama-quantize leaves it alone
            assert rt == T.F32
            continue
        x = np.asarray(src[name].data, dtype=np.float32)
        mine = encode(x.reshape(-1, int(src[name].shape[0])), rt).reshape(-1)  # (rows, cols) -> blocks
        expected = _bytes(r)
        assert mine.shape == expected.shape, (name, rt.name)
        assert np.array_equal(mine, expected), f"{qtype} {name} as {rt.name}: {_first_diff(mine, expected, quants.type_size(rt))}"


@pytest.mark.parametrize("qtype", ["F16", "Q4_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
def test_quantize_file_pure_matches_llama_quantize(tmp_path, qtype):
    """The whole file: same tensor types (fallbacks for 96- and 40-wide rows) and bytes, file_type set."""
    out = tmp_path / "out.gguf"
    res = quantize_file(DATA / "blocks-in.gguf", out, qtype, pure=True, progress=False)
    mine, ref = _tensors(out), _tensors(DATA / f"blocks-{qtype}.gguf")
    assert list(mine) == list(ref)
    for name in ref:
        assert T(mine[name].tensor_type) == T(ref[name].tensor_type), name
        assert list(mine[name].shape) == list(ref[name].shape), name
        assert np.array_equal(_bytes(mine[name]), _bytes(ref[name])), name
    r_mine, r_ref = GGUFReader(out), GGUFReader(DATA / f"blocks-{qtype}.gguf")
    for key in ("general.file_type", "general.quantization_version", "llama.block_count", "llama.embedding_length"):
        assert r_mine.fields[key].contents() == r_ref.fields[key].contents(), key
    assert res.types["c.weight"] == ref["c.weight"].tensor_type.name  # K-quants: a 32-block fallback
    assert res.types["d.weight"] == ref["d.weight"].tensor_type.name  # nothing divides 40: F16


def test_fallback_types_are_llama_cpps():
    ref = {q: {n: T(t.tensor_type).name for n, t in _tensors(DATA / f"blocks-{q}.gguf").items()} for q in ("Q2_K", "Q4_K", "Q5_K", "Q6_K")}
    assert [ref[q]["c.weight"] for q in ref] == ["Q4_0", "Q5_0", "Q5_1", "Q8_0"]
    assert {ref[q]["d.weight"] for q in ref} == {"F16"}


def test_mixes_choose_llama_quantize_types():
    """Per-tensor types for every mix on two tiny models (GQA 4 with 256-wide rows; tied 64-wide)."""
    models = json.loads((DATA / "mixes.json").read_text())
    checked = 0
    for model, m in models.items():
        shape = ModelShape(arch="llama", n_layers=m["n_layers"], n_heads=m["n_heads"], n_kv_heads=m["n_kv_heads"])
        names = [n for n, _ in m["tensors"]]
        for mix, expected in m["types"].items():
            planner = MixPlanner(mix, shape, names)
            got = {n: planner.choose(n, tuple(s), T.F32).name for n, s in m["tensors"]}
            wrong = {n: (got[n], expected[n]) for n in names if got[n] != expected[n]}
            assert not wrong, f"{model} {mix}: (llamalab, llama-quantize) {wrong}"
            checked += 1
    assert checked == 30
    q4km = models["gqa4-256"]["types"]["Q4_K_M"]  # the mix really mixes
    assert q4km["output.weight"] == "Q6_K" and q4km["blk.0.attn_v.weight"] == "Q6_K" and q4km["blk.2.attn_v.weight"] == "Q4_K"


def test_requantize_warns_and_matches_dequantize_then_encode(tmp_path, capsys):
    out = tmp_path / "q4.gguf"
    quantize_file(DATA / "blocks-Q8_0.gguf", out, "Q4_0", pure=True, progress=False)
    assert "dequantized and quantized again" in capsys.readouterr().err
    src, mine = _tensors(DATA / "blocks-Q8_0.gguf"), _tensors(out)
    t = src["a.weight"]
    x = quants.dequantize(_bytes(t).reshape(8, -1), T.Q8_0)
    assert np.array_equal(_bytes(mine["a.weight"]), encode(x, T.Q4_0).reshape(-1))


def test_failed_quantize_leaves_no_file(tmp_path, monkeypatch):
    out = tmp_path / "out.gguf"
    calls = []

    def boom(x, qtype, threads=None):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("disk on fire")
        return encode(x, qtype, threads)

    monkeypatch.setattr(qmod, "encode", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        quantize_file(DATA / "blocks-in.gguf", out, "Q8_0", pure=True, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_file_type_names():
    assert parse_file_type("q4_k")[0] == "Q4_K_M" and parse_file_type("Q3_K")[0] == "Q3_K_M"
    with pytest.raises(InvalidArgumentError, match=r"unknown quantization type 'Q7_K' \(expected one of: F32, F16"):
        parse_file_type("Q7_K")


def test_cli_quantize(tmp_path, capsys):
    out = tmp_path / "o.gguf"
    assert main(["quantize", str(DATA / "blocks-in.gguf"), str(out), "q6_k", "--pure", "--no-progress"]) == 0
    assert np.array_equal(_bytes(_tensors(out)["a.weight"]), _bytes(_tensors(DATA / "blocks-Q6_K.gguf")["a.weight"]))
    assert "Q6_K" in capsys.readouterr().out
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file: not mkstemp's 0600
    assert main(["quantize", str(DATA / "blocks-in.gguf"), str(out), "Q9"]) == 1
    assert "unknown quantization type 'Q9'" in capsys.readouterr().err
    assert main(["quantize", str(tmp_path / "missing.gguf"), str(out), "Q4_0"]) == 1
    assert "missing.gguf: no such file" in capsys.readouterr().err
    assert main(["quantize", str(out), str(out), "Q4_0"]) == 1
    assert "output would overwrite the input" in capsys.readouterr().err
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    assert main(["quantize", str(bad), str(out), "Q4_0"]) == 1
    assert "not a readable GGUF file" in capsys.readouterr().err
