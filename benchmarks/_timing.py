"""The timed prefill-then-decode run the benchmark scripts share."""

from __future__ import annotations

import time

import numpy as np


def prefill_decode(model, cache, prompt: np.ndarray, n: int) -> tuple[float, float]:
    """Seconds to prefill prompt (one forward on an emptied cache), then to decode n greedy tokens."""
    cache.reset()
    t0 = time.perf_counter()
    logits = model.forward(prompt, cache)
    t1 = time.perf_counter()
    tok = int(np.argmax(np.asarray(logits).reshape(-1, model.config.vocab_size)[-1]))
    for _ in range(n):
        tok = int(np.argmax(np.asarray(model.forward(np.array([tok], np.int64), cache)).reshape(-1)))
    return t1 - t0, time.perf_counter() - t1
