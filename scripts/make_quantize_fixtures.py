"""Regenerate tests/data/quantize/: llama-quantize's output for small inputs, the referee for `llamalab quantize`.

Needs llama.cpp's llama-quantize (built from the llama-cpp-python sdist; default
/work/peers/llama.cpp/bin/llama-quantize, or $LLAMA_QUANTIZE). Tests read the files it
writes without llama-quantize installed.

    python scripts/make_quantize_fixtures.py [--check]

Writes
- ``blocks-in.gguf``: a few F32 tensors of varied shapes and value ranges (zero rows,
  tiny and huge values, outliers, rows of 96 and 40 values that force llama.cpp's
  fallback types), with the llama hyper-parameters llama-quantize needs to open it;
- ``blocks-TYPE.gguf``: that file after ``llama-quantize --pure ... TYPE`` for each type;
- ``mixes.json``: for two tiny multi-layer models (one with 256-multiple rows and grouped
  KV heads, one with 64-wide rows and tied embeddings), the type llama-quantize picks for
  every tensor under each mix (Q2_K, Q3_K_M, Q4_K_M, ...), no --pure.

``--check`` also quantizes the mix models with llamalab and reports how many tensors
differ from llama-quantize's bytes (the answer recorded in the README).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFWriter

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "quantize"
QUANTIZE = os.environ.get("LLAMA_QUANTIZE", "/work/peers/llama.cpp/bin/llama-quantize")
PURE_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
MIXES = ["Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
         "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16"]  # fmt: skip


def block_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """name -> float32 (rows, cols): shapes and values chosen to reach every branch of the quantizers."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((8, 512), dtype=np.float32)
    a[0] = 0  # all-zero blocks
    a[1] *= np.float32(1e-6)  # f16 subnormal scales
    a[2, 7] = 60.0  # one outlier per block
    a[3] = 0.25  # constant
    a[4, :256] = np.abs(a[4, :256])  # all positive
    a[5, 256:] = -np.abs(a[5, 256:])  # all negative
    a[6] = rng.standard_t(2, 512).astype(np.float32) * 3  # heavy tails
    a[7, ::3] = 0  # sparse
    b = (rng.standard_normal((4, 256), dtype=np.float32) * 0.02).astype(np.float32)  # weight-like
    c = rng.standard_normal((3, 96), dtype=np.float32)  # K-quants fall back to a 32-block type
    d = rng.standard_normal((2, 40), dtype=np.float32)  # nothing fits: F16
    e = (rng.uniform(-1, 1, (2, 1280)) * 1e4).astype(np.float32)  # large magnitudes
    return {"a.weight": a, "b.weight": b, "c.weight": c, "d.weight": d, "e.weight": e,
            "x_norm.weight": rng.standard_normal(96, dtype=np.float32)}  # fmt: skip


def write_llama_gguf(path: Path, tensors: dict[str, np.ndarray], n_layers: int = 1, dim: int = 64,
                     n_heads: int = 4, n_kv_heads: int = 4, ffn: int = 128) -> None:
    """A GGUF with llama hyper-parameters (all llama-quantize reads) and the given F32 tensors."""
    w = GGUFWriter(path, arch="llama")
    w.add_block_count(n_layers)
    w.add_context_length(128)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)
    for name, x in tensors.items():
        w.add_tensor(name, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_quantize(src: Path, dst: Path, qtype: str, pure: bool) -> None:
    cmd = [QUANTIZE] + (["--pure"] if pure else []) + [str(src), str(dst), qtype, "1"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")


def mix_models(tmp: Path) -> dict[str, Path]:
    """Two tiny llama models (random weights, llamalab's synth) whose mixes differ in interesting ways."""
    from llamalab.lab import synth
    from llamalab.runtime.config import ModelConfig

    tok = synth.tiny_bpe_tokenizer()
    models = {
        # 256-multiple rows, 8 layers (use_more_bits varies), 4 query heads per KV head, own output
        "gqa4-256": ModelConfig(arch="llama", name="gqa4-256", dim=256, n_layers=8, n_heads=4, n_kv_heads=1,
                                ffn_dim=512, vocab_size=len(tok.tokens), context_length=128, tied_output=False),
        # 64-wide rows: every K-quant falls back; tied embeddings
        "tied-64": ModelConfig(arch="llama", name="tied-64", dim=64, n_layers=3, n_heads=4, n_kv_heads=2,
                               ffn_dim=160, vocab_size=len(tok.tokens), context_length=128, tied_output=True),
    }
    paths = {}
    for name, cfg in models.items():
        paths[name] = synth.write_gguf(tmp / f"{name}.gguf", cfg, qtype=0, tokenizer=tok, seed=1), cfg  # F32
    return paths


def tensor_types(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in GGUFReader(path).tensors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="also compare llamalab's mixes with llama-quantize's bytes")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    src = OUT / "blocks-in.gguf"
    write_llama_gguf(src, block_inputs())
    for t in PURE_TYPES:
        llama_quantize(src, OUT / f"blocks-{t}.gguf", t, pure=True)
        print(f"blocks-{t}.gguf: {(OUT / f'blocks-{t}.gguf').stat().st_size} bytes")

    mixes: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model, (path, cfg) in mix_models(tmp).items():
            tensors = [[t.name, [int(n) for n in reversed(t.shape.tolist())]] for t in GGUFReader(path).tensors]
            mixes[model] = {"n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads,
                            "tensors": tensors, "types": {}}
            for mix in MIXES:
                dst = tmp / f"{model}-{mix}.gguf"
                llama_quantize(path, dst, mix, pure=False)
                mixes[model]["types"][mix] = tensor_types(dst)
                if args.check:
                    check(path, dst, mix)
    (OUT / "mixes.json").write_text(json.dumps(mixes, sort_keys=True) + "\n")
    print(f"mixes.json: {len(mixes)} models x {len(MIXES)} mixes")


def check(src: Path, ref: Path, mix: str) -> None:
    """Quantize src with llamalab and compare every tensor's bytes with llama-quantize's file."""
    from llamalab.convert.quantize import quantize_file

    with tempfile.TemporaryDirectory() as tmp:
        mine = Path(tmp) / "mine.gguf"
        quantize_file(src, mine, mix, progress=False)
        a = {t.name: t for t in GGUFReader(mine).tensors}
        b = {t.name: t for t in GGUFReader(ref).tensors}
        bad = [n for n in b if a[n].tensor_type != b[n].tensor_type or
               not np.array_equal(np.asarray(a[n].data).view(np.uint8), np.asarray(b[n].data).view(np.uint8))]
        print(f"  {src.stem} {mix}: {len(b) - len(bad)}/{len(b)} tensors byte-identical" + (f"; differ: {bad[:4]}" if bad else ""))


if __name__ == "__main__":
    main()
