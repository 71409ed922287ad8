#!/usr/bin/env python
"""How long greedy generation agrees between llamalab's fast path, its float reference and
llama.cpp (when llama-cpp-python is importable), on the default model or --model.

    python scripts/greedy_agreement.py                       # the README prompts, 64 tokens
    python scripts/greedy_agreement.py -p "Once upon a time" -n 128

For each prompt it prints the number of leading tokens on which each pair agrees, and where
they first differ, the float reference's margin between its top two logits there (a tie
smaller than the fast path's error cannot be kept by any quantized engine).
"""

from __future__ import annotations

import argparse

import numpy as np

from llamalab import LLM

PROMPTS = ["The capital of France is", "The three primary colors of paint are", "Once upon a time"]


def greedy(llm: LLM, prompt: str, n: int) -> list[int]:
    return [c.token for c in llm.generate(prompt, max_tokens=n, temperature=0, ignore_eos=True) if c.token is not None]


def llama_cpp_greedy(path: str, prompt: str, n: int, threads: int) -> list[int] | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    from llamalab.lab.backends import LlamaCppRuntime

    model = LlamaCppRuntime._construct(llama_cpp, False, model_path=path, n_ctx=512, n_threads=threads,
                                       verbose=False, logits_all=False)
    ids = model.tokenize(prompt.encode(), add_bos=True)
    out = []
    for tok in model.generate(ids, temp=0.0, top_k=1):
        out.append(tok)
        if len(out) == n:
            break
    return out


def common_prefix(a: list[int], b: list[int]) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", "-m", default=None)
    ap.add_argument("--prompt", "-p", action="append", help="(repeatable; default: the README prompts)")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--threads", "-t", type=int, default=2)
    args = ap.parse_args()
    fast = LLM(args.model, threads=args.threads, n_ctx=1024, progress=False)
    ref = LLM(fast.path, threads=args.threads, n_ctx=1024, backend="reference", progress=False)
    for prompt in args.prompt or PROMPTS:
        f, r = greedy(fast, prompt, args.n), greedy(ref, prompt, args.n)
        c = llama_cpp_greedy(fast.path, prompt, args.n, args.threads)
        k = common_prefix(f, r)
        line = f"{prompt!r}: fast = reference for {k}/{args.n} tokens"
        if k < args.n:
            ids = ref.tokenize(prompt) + r[:k]
            top2 = np.sort(ref.logits(ids)[-1])[-2:]
            line += f" (then {ref.detokenize([r[k]])!r} vs {fast.detokenize([f[k]])!r}; reference top-2 margin " \
                    f"{top2[1] - top2[0]:.3f})"
        if c is not None:
            kc = common_prefix(c, r)
            line += f"; llama.cpp = reference for {kc}, = fast for {common_prefix(c, f)}"
            if kc < min(len(c), len(r)):  # how close the float reference itself was to llama.cpp's pick
                lg = ref.logits(ref.tokenize(prompt) + r[:kc])[-1]
                line += (f" (then {ref.detokenize([c[kc]])!r} vs the reference's {ref.detokenize([r[kc]])!r}: "
                         f"reference logits {lg[r[kc]]:.3f} vs {lg[c[kc]]:.3f})")
        print(line, flush=True)


if __name__ == "__main__":
    main()
