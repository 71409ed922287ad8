"""Decode logits on each matvec backend (the decode activations: int8 or int) against the float reference.

    python benchmarks/decode_fidelity.py [MODEL] [-p 8] [-n 64]

The reference path (weights dequantized to float32) prefills a random prompt and decodes greedily;
the fast path follows the same tokens (teacher forcing) with each matvec backend. Per backend:
the relative error of the decode logits ||fast - ref|| / ||ref|| (mean and largest over the steps),
on how many steps the top token agrees, and after how many steps the fast path's own greedy text
first parts from the reference's. The prompt stays under the small-batch limit, so the prompt too
runs on the row kernels under test.
"""

from __future__ import annotations

import argparse

import numpy as np

from llamalab import kernels
from llamalab.runtime.model import Llama

from _models import load_or_exit  # benchmarks/ is the script's own folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=None, help="path, known name or synth:PRESET:DTYPE (default: the default model)")
    ap.add_argument("-p", type=int, default=8, help="prompt tokens (at most the small-batch limit)")
    ap.add_argument("-n", type=int, default=64, help="decode steps")
    a = ap.parse_args()
    path, loaded = load_or_exit(a.model, "decode_fidelity")
    ref_model, fast = Llama(loaded, backend="reference"), Llama(loaded, backend="fast")
    prompt = list(np.random.default_rng(0).integers(0, loaded.config.vocab_size, a.p))

    def run(model, follow=None):
        """Logits of every decode step (n, vocab) and the greedy tokens, following `follow` if given."""
        cache = model.new_cache(a.p + a.n + 1)
        logits = [np.asarray(model.forward(prompt, cache), np.float64)[-1]]
        tokens = []
        for i in range(a.n):
            tokens.append(int(logits[-1].argmax()))
            logits.append(np.asarray(model.forward([follow[i] if follow else tokens[-1]], cache), np.float64)[-1])
        return np.stack(logits[:-1]), tokens

    ref, ref_tokens = run(ref_model)
    print(f"{path}: prompt {a.p} random tokens, {a.n} greedy steps against the float32 reference")
    print("| matvec backend | logits rel. error, mean | largest | top token agrees | own greedy text follows for |")
    print("|---|---:|---:|---:|---:|")
    for backend in ("int8", "int"):
        kernels.set_matvec_backend(backend)
        if kernels.get_matvec_backend() != backend:
            print(f"| {backend} | not on this CPU | | | |")
            continue
        got, _ = run(fast, follow=ref_tokens)
        per = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
        agree = int((got.argmax(1) == ref.argmax(1)).sum())
        _, own = run(fast)
        follows = next((i for i, (x, y) in enumerate(zip(own, ref_tokens)) if x != y), a.n)
        print(f"| {backend} | {per.mean():.2e} | {per.max():.2e} | {agree} / {a.n} | {follows} tokens |")


if __name__ == "__main__":
    main()
