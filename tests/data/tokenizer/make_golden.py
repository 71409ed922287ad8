"""Regenerate the tokenizer golden data: small vocab-only GGUF files and llama.cpp's ids for them.

Not run by the test suite. It needs llama.cpp's ``llama-tokenize`` and the real models:

    PYTHONPATH=src:tests python tests/data/tokenizer/make_golden.py [all | base | bpe | spm | gemma3_full]

(paths: LLAMA_TOKENIZE, SMOLLM2_GGUF, GEMMA3_GGUF, LLAMA2_SPM; defaults under /work/peers and /work/shared).
It writes here, next to itself:
  vocab_bpe_base.gguf     the 256 byte symbols and the tokens of SmolLM2's first 2000 merges
  vocab_spm_gemma.gguf    a subset of Gemma 3's 262k pieces: its special pieces and the 4000
                          best-scored normal ones, with Gemma's flags (no space prefix, add BOS)
  vocab_spm_phi3.gguf     Llama 2's special and byte pieces and its first 4000 others, plus
                          Phi-3's added chat tokens, named like a Phi-3 file
  golden_<name>.json      {"texts": [...], "ids": {"special": [[...]], "plain": [[...]]}, "eog": [...]}: what
                          llama-tokenize prints for each text (BOS as the file says; "plain" is
                          --no-parse-special) and its end-of-generation ids, for every family
                          of tests/tokenizer_vocabs.py
  golden_gemma3_full.json the same for the real 262k Gemma 3 file (ids only; the file is not stored)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGUFWriter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from texts import TEXTS  # noqa: E402
from tokenizer_vocabs import BPE_STYLES, SPM_STYLES, bpe_spec, read_gguf_spec, spm_spec  # noqa: E402

from llamalab.text.tokenizer import TokenizerSpec, spec_from_sentencepiece  # noqa: E402
from llamalab.text.tokenizer.spec import CONTROL, NORMAL, UNUSED  # noqa: E402

LLAMA_TOKENIZE = os.environ.get("LLAMA_TOKENIZE", "/work/peers/llama.cpp/bin/llama-tokenize")
SMOLLM2 = Path(os.environ.get("SMOLLM2_GGUF", "/work/peers/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
GEMMA3 = Path(os.environ.get("GEMMA3_GGUF", "/work/peers/models/gemma-3-270m-Q4_K_M.gguf"))
LLAMA2_SPM = Path(os.environ.get("LLAMA2_SPM", "/work/shared/data/llama2-tokenizer.model"))
N_MERGES = 2000
N_PIECES = 4000
PHI3_ADDED = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
              "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]


def write_gguf(spec: TokenizerSpec, path: Path, name: str | None) -> Path:
    """A vocab-only GGUF that llama.cpp's vocab_only loader accepts (architecture 'llama', tiny hparams)."""
    w = GGUFWriter(str(path), arch="llama")
    w.add_name(name or "tokenizer test")
    for add, value in ((w.add_context_length, 128), (w.add_embedding_length, 8), (w.add_block_count, 1),
                       (w.add_feed_forward_length, 8), (w.add_head_count, 1)):
        add(value)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model(spec.kind)
    if spec.pre is not None:
        w.add_tokenizer_pre(spec.pre)
    w.add_token_list(spec.tokens)
    w.add_token_types([int(t) for t in spec.token_types])
    if spec.scores is not None:
        w.add_token_scores([float(s) for s in spec.scores])
    if spec.merges:
        w.add_token_merges(spec.merges)
    for value, add in ((spec.bos_id, w.add_bos_token_id), (spec.eos_id, w.add_eos_token_id),
                       (spec.unk_id, w.add_unk_token_id)):
        if value is not None:
            add(value)
    w.add_add_bos_token(spec.add_bos)
    w.add_add_space_prefix(spec.add_space_prefix)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_base() -> None:
    smol = read_gguf_spec(SMOLLM2)[0]
    tokens = list(smol.tokens[17:273])  # SmolLM2's 256 byte symbols, in its order
    assert len(set(tokens)) == 256
    merges = smol.merges[:N_MERGES]
    have = set(tokens)
    for m in merges:
        a, b = m.split(" ")
        assert a in have and b in have, m
        if a + b not in have:
            have.add(a + b)
            tokens.append(a + b)
    base = TokenizerSpec(kind="gpt2", tokens=tokens, token_types=np.full(len(tokens), NORMAL, np.int32),
                         merges=merges, pre="gpt-2", add_space_prefix=False, eos_id=0)
    write_gguf(base, HERE / "vocab_bpe_base.gguf", "SmolLM2 first merges")

    gemma = read_gguf_spec(GEMMA3)[0]
    types, scores = np.asarray(gemma.token_types), np.asarray(gemma.scores)
    special = [int(i) for i in np.flatnonzero(types != NORMAL) if "unused" not in gemma.tokens[i]]
    special += [int(i) for i in np.flatnonzero(types != NORMAL) if "unused" in gemma.tokens[i]][:3]
    normal = np.flatnonzero(types == NORMAL)
    normal = normal[np.argsort(-scores[normal], kind="stable")[:N_PIECES]]
    keep = sorted(set(special) | {int(i) for i in normal})
    new = {old: k for k, old in enumerate(keep)}
    sub = TokenizerSpec(kind="llama", tokens=[gemma.tokens[i] for i in keep], token_types=types[keep],
                        scores=scores[keep], pre="default", bos_id=new[gemma.bos_id], eos_id=new[gemma.eos_id],
                        unk_id=new[gemma.unk_id], pad_id=new[gemma.pad_id], add_bos=True, add_space_prefix=False)
    write_gguf(sub, HERE / "vocab_spm_gemma.gguf", "Gemma 3 subset")

    llama2 = spec_from_sentencepiece(LLAMA2_SPM)
    types, scores = np.asarray(llama2.token_types), np.asarray(llama2.scores)
    keep = [i for i in range(len(llama2.tokens)) if types[i] != NORMAL or i < 259 + N_PIECES]
    tokens = [llama2.tokens[i] for i in keep] + PHI3_ADDED + ["[PAD0]", "[PAD1]"]
    sub = TokenizerSpec(
        kind="llama", tokens=tokens,
        token_types=np.array([types[i] for i in keep] + [CONTROL] * len(PHI3_ADDED) + [UNUSED] * 2, np.int32),
        scores=np.array([scores[i] for i in keep] + [0.0] * (len(PHI3_ADDED) + 2), np.float32),
        bos_id=1, eos_id=tokens.index("<|endoftext|>"), unk_id=0, add_bos=False, add_space_prefix=True,
    )  # fmt: skip
    write_gguf(sub, HERE / "vocab_spm_phi3.gguf", "Phi-3 Mini 4k Instruct (subset)")


def llama_cpp_ids(path: Path, special: bool) -> list[list[int]]:
    out = []
    for text in TEXTS:
        cmd = [LLAMA_TOKENIZE, "-m", str(path), "--stdin", "--no-escape", "--ids", "--log-disable"]
        if not special:
            cmd.append("--no-parse-special")
        r = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=True)
        out.append(json.loads(r.stdout.decode().strip().splitlines()[-1]))
    return out


def llama_cpp_eog(path: Path) -> list[int]:
    """The ids llama.cpp's loader lists under 'printing all EOG tokens' (-v)."""
    r = subprocess.run([LLAMA_TOKENIZE, "-m", str(path), "-p", "x", "--ids", "-v"], capture_output=True, check=True)
    log = r.stdout.decode() + r.stderr.decode()
    lines = log[log.index("printing all EOG tokens") :].splitlines()[1:]
    return sorted(int(m.group(1)) for m in map(re.compile(r"load:\s+- (\d+) ").search, lines[:64]) if m)


def golden(path: Path, name: str) -> None:
    data = {"texts": TEXTS, "ids": {"special": llama_cpp_ids(path, True), "plain": llama_cpp_ids(path, False)},
            "eog": llama_cpp_eog(path)}
    (HERE / f"golden_{name}.json").write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"golden_{name}.json: {len(TEXTS)} texts x 2", file=sys.stderr)


def main(which: str) -> None:
    if which in ("all", "base"):
        write_base()
    with tempfile.TemporaryDirectory() as tmp:
        if which in ("all", "bpe"):
            for style in BPE_STYLES:
                golden(write_gguf(bpe_spec(style), Path(tmp) / f"{style}.gguf", BPE_STYLES[style][-1]), f"bpe_{style}")
        if which in ("all", "spm"):
            for style in SPM_STYLES:
                spec = spm_spec(style)
                golden(write_gguf(spec, Path(tmp) / f"{style}.gguf", spec.model_name), f"spm_{style}")
    if which in ("all", "gemma3_full"):
        golden(GEMMA3, "gemma3_full")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "all")
