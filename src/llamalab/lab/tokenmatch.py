"""Token match: do the runtimes generate the same greedy tokens as llamalab's reference?

The reference is llamalab's plain NumPy path (float32, BLAS) decoding greedily from BOS on the
study's model; llamalab's fast path is checked against it the same way. A runtime "matches k/N"
when its first k generated ids equal the reference's and N were expected (N stops early where
the reference itself emits BOS or EOS: ports stop there). Divergence is reported, never hidden:
float32 ports differ in summation order, eps and RoPE tables, so near-ties can flip.
"""

from __future__ import annotations

import numpy as np

STOP_IDS = (1, 2)  # BOS, EOS in the Llama 2 layout the ports assume


def greedy_ids(model_path: str, n: int, backend: str = "reference", bos: int = 1, threads: int = 1) -> list[int]:
    """n greedy ids from [BOS] with llamalab (backend 'reference' or 'fast')."""
    from ..formats import load
    from ..runtime.model import Llama

    if backend == "fast":
        from .. import kernels

        kernels.set_threads(threads)
    model = Llama(load(model_path), backend=backend)
    cache = model.new_cache(n + 2, np.float32)
    ids, x = [], bos
    for _ in range(n):
        logits = model.forward(np.array([x], dtype=np.int64), cache)
        x = int(np.argmax(logits[-1]))
        ids.append(x)
    return ids


def expected(reference: list[int], n: int) -> int:
    """How many tokens a runtime should match: n, or up to and including the reference's first stop id."""
    for i, t in enumerate(reference[:n]):
        if t in STOP_IDS:
            return i + 1
    return min(n, len(reference))


def match(tokens: list[int] | None, reference: list[int], n: int) -> dict | None:
    """{'matched': k, 'of': N, 'diverges_at': index or None, 'got': first ids} (None without tokens)."""
    if tokens is None:
        return None
    want = expected(reference, n)
    k = 0
    while k < want and k < len(tokens) and tokens[k] == reference[k]:
        k += 1
    return {"matched": k, "of": want, "diverges_at": None if k >= want else k, "got": tokens[:n]}


def match_text(m: dict | None) -> str:
    """'16/16', '3/16 (diverges at token 3)', '' without tokens."""
    if not m:
        return ""
    if m["diverges_at"] is None:
        return f"{m['matched']}/{m['of']}"
    return f"{m['matched']}/{m['of']} ⚠ diverges at token {m['diverges_at']}"
