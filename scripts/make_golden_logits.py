"""Golden logits from llama.cpp for the tiny model of every architecture (tests/data/golden/).

Writes each tiny preset with random weights (lab/synth.py, deterministic in the seed), runs
the same token ids through llama.cpp (llama-cpp-python, in the interpreter given by
--llama-python), and stores the file's SHA-256, the tokens and llama.cpp's logits at a few
positions (past 1,000 included). tests/test_architectures.py regenerates the file, checks the
hash and compares llamalab's logits with these. llama.cpp runs with an f32 KV cache and no
flash attention, so the F32 files are compared at float32 precision.

    python scripts/make_golden_logits.py --llama-python /path/to/venv-with-llama-cpp-python/bin/python
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llamalab.lab.synth import PRESETS, tiny_spm_tokenizer, write_gguf  # noqa: E402

PRESET_NAMES = ("tiny-llama3", "tiny-qwen2", "tiny-qwen3", "tiny-gemma3", "tiny-phi3", "tiny")
TYPES = (T.F32, T.Q8_0)
N_TOKENS = 1100
POSITIONS = (0, 1, 2, 7, 15, 16, 17, 31, 33, 100, 257, 512, 777, 1023, 1024, 1099)
SEED = 3

RUNNER = r"""
import json, sys
import numpy as np
import llama_cpp
path, out, tokens = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
llm = llama_cpp.Llama(model_path=path, n_ctx=2048, n_batch=2048, n_ubatch=2048, logits_all=True, n_threads=2,
                      type_k=0, type_v=0, flash_attn=False, verbose=False)
llm.eval(tokens)
np.save(out, np.asarray(llm.scores[: len(tokens)], dtype=np.float32))
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_path(folder: Path, preset: str, qtype: T) -> Path:
    return write_gguf(folder / f"{preset}-{qtype.name}.gguf", PRESETS[preset], qtype, tokenizer=tiny_spm_tokenizer(),
                      seed=SEED)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-python", required=True, help="a Python with llama-cpp-python installed")
    args = ap.parse_args()
    rng = np.random.default_rng(SEED)
    tokens = [1] + rng.integers(3, 384, size=N_TOKENS - 1).tolist()  # BOS, then random ids
    out = ROOT / "tests" / "data" / "golden"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for preset in PRESET_NAMES:
            for qtype in TYPES:
                path = model_path(Path(tmp), preset, qtype)
                npy = Path(tmp) / "logits.npy"
                subprocess.run([args.llama_python, "-c", RUNNER, str(path), str(npy), json.dumps(tokens)], check=True)
                logits = np.load(npy)[list(POSITIONS)]  # (positions, vocab)
                np.savez_compressed(out / f"{preset}-{qtype.name}.npz", tokens=np.asarray(tokens, np.int32),
                                    positions=np.asarray(POSITIONS, np.int32), logits=logits,
                                    sha256=np.asarray(sha256(path)))
                print(f"{preset} {qtype.name}: {logits.shape} logits, |max| {np.abs(logits).max():.2f}", flush=True)


if __name__ == "__main__":
    main()
