"""Prefill logits of each large-batch backend against the float reference, on one model.

    PYTHONPATH=src python benchmarks/prefill_fidelity.py [MODEL] [-p 96]

Prints, per backend (amx where present, int8, int, blas), the relative error of the prompt's
logits ||fast - ref|| / ||ref|| over all positions, the largest per-position error, and
on how many positions the top token agrees with the reference's.
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
    ap.add_argument("-p", type=int, default=96, help="prompt tokens (above the small-batch limit)")
    a = ap.parse_args()
    path, loaded = load_or_exit(a.model, "prefill_fidelity")
    ref_model, fast = Llama(loaded, backend="reference"), Llama(loaded, backend="fast")
    prompt = np.random.default_rng(0).integers(0, loaded.config.vocab_size, a.p).astype(np.int64)

    def logits(model) -> np.ndarray:
        cache = model.new_cache(a.p + 1)
        return np.asarray(model.forward(prompt, cache, all_logits=True), np.float64).reshape(a.p, -1)

    ref = logits(ref_model)
    for backend in kernels.gemm.BACKENDS:
        kernels.set_gemm_backend(backend)
        got = logits(fast)
        per = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
        top = int((got.argmax(1) == ref.argmax(1)).sum())
        print(f"{backend:5s} rel err {np.linalg.norm(got - ref) / np.linalg.norm(ref):.2e}  worst position {per.max():.2e}  "
              f"top-1 agrees {top}/{a.p}", flush=True)


if __name__ == "__main__":
    main()
