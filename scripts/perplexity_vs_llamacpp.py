#!/usr/bin/env python
"""Perplexity of a model on a text, computed exactly as llama.cpp's llama-perplexity does, next
to llama-perplexity's own figure (when LLAMA_PERPLEXITY or PATH has it).

    python scripts/perplexity_vs_llamacpp.py --model gemma3-270m --file src/llamalab/lab/prompts/essay.txt

llama.cpp's protocol: tokenize the whole text (with BOS when the model adds one), cut it into
chunks of --ctx tokens, put BOS first in each chunk, and score the second half of every chunk.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess

import numpy as np

from llamalab import LLM


def llamalab_ppl(llm: LLM, text: str, n_ctx: int) -> tuple[float, int]:
    ids = llm.tokenize(text)
    bos = llm.tokenizer.bos_id if llm.tokenizer.add_bos else None
    nll, n = 0.0, 0
    for c in range(len(ids) // n_ctx):
        chunk = ids[c * n_ctx : (c + 1) * n_ctx]
        if bos is not None:
            chunk[0] = bos
        logits = llm.logits(chunk).astype(np.float64)  # (n_ctx, vocab)
        first = n_ctx // 2
        lg = logits[first : n_ctx - 1]
        lg -= lg.max(axis=1, keepdims=True)
        tgt = np.asarray(chunk[first + 1 :])
        nll += float((np.log(np.exp(lg).sum(axis=1)) - lg[np.arange(len(tgt)), tgt]).sum())
        n += len(tgt)
        print(f"  chunk {c + 1}: running ppl {np.exp(nll / n):.4f}", flush=True)
    return float(np.exp(nll / n)), n


def llama_cpp_ppl(path: str, file: str, n_ctx: int, threads: int) -> float | None:
    exe = os.environ.get("LLAMA_PERPLEXITY") or shutil.which("llama-perplexity")
    if exe is None:
        return None
    out = subprocess.run([exe, "-m", path, "-f", file, "-c", str(n_ctx), "-b", str(n_ctx), "-t", str(threads)],
                         capture_output=True, text=True).stderr
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", out)
    return float(m.group(1)) if m else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", "-m", default=None)
    ap.add_argument("--file", "-f", required=True)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", "-t", type=int, default=2)
    args = ap.parse_args()
    text = open(args.file, encoding="utf-8").read()
    llm = LLM(args.model, threads=args.threads, n_ctx=args.ctx, progress=False)
    ppl, n = llamalab_ppl(llm, text, args.ctx)
    print(f"llamalab:  PPL = {ppl:.4f} over {n} tokens")
    ref = llama_cpp_ppl(llm.path, args.file, args.ctx, args.threads)
    if ref is not None:
        print(f"llama.cpp: PPL = {ref:.4f} ({100 * (ppl / ref - 1):+.2f}%)")


if __name__ == "__main__":
    main()
