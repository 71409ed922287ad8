"""The quality/speed table per quantization type, like llama.cpp's (size, bits per weight, perplexity, KL divergence).

From one source model: write an F16 base (dequantizing the source if it is quantized),
quantize the base to each type with ``quantize_file``, then for every file measure with
llamalab's fast backend: perplexity on a text (llama.cpp-style windows), the mean KL
divergence of its next-token distributions from the F16 base's over the text's first window,
and prefill/decode speed. Each figure is one run on a shared machine: speeds are noisy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_TYPES = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_1", "Q5_0", "Q4_K_M", "Q4_1", "Q4_0", "Q3_K_M", "Q2_K")


@dataclass
class Row:
    qtype: str
    size: int
    bpw: float
    ppl: float
    kl: float
    prefill_tps: float
    decode_tps: float
    quantize_s: float


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _n_weights(path: Path) -> int:
    from gguf import GGUFReader

    return sum(int(np.prod(t.shape)) for t in GGUFReader(path).tensors)


def measure(path: Path, text: str, base_logp: np.ndarray | None, window: int, threads: int | None):
    """(ppl, KL vs base over the first window, first-window log-probs, prefill tok/s, decode tok/s)."""
    from ..api import LLM

    llm = LLM(path, threads=threads, progress=False)
    ppl, _ = llm.perplexity(text, window)
    ids = llm.tokenize(text)[:window]
    logp = _log_softmax(llm.logits(ids))  # (window, vocab)
    kl = float("nan") if base_logp is None else float((np.exp(base_logp) * (base_logp - logp)).sum(axis=1).mean())
    for _ in llm.generate(ids[:16], max_tokens=4, temperature=0, ignore_eos=True):  # warm-up, not timed
        pass
    last = None
    for last in llm.generate(ids[:128], max_tokens=32, temperature=0, ignore_eos=True):
        pass
    return ppl, kl, logp, last.prompt_tps, last.decode_tps


def quant_table(model: Path, text_file: Path, out_dir: Path, types=DEFAULT_TYPES, window: int = 512,
                threads: int | None = None, progress: bool = True) -> list[Row]:
    from .quantize import quantize_file

    text = text_file.read_text(encoding="utf-8")
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / "base-F16.gguf"
    quantize_file(model, base, "F16", progress=progress)
    rows, base_logp = [], None
    n_w = _n_weights(base)
    for qtype in types:
        path = base if qtype == "F16" else out_dir / f"{qtype}.gguf"
        t0 = time.perf_counter()
        if qtype != "F16":
            quantize_file(base, path, qtype, progress=progress)
        q_s = time.perf_counter() - t0
        ppl, kl, logp, pp, tg = measure(path, text, base_logp, window, threads)
        if qtype == "F16":
            base_logp, kl = logp, 0.0
        size = path.stat().st_size
        rows.append(Row(qtype, size, size * 8 / n_w, ppl, kl, pp, tg, q_s))
    return rows


def markdown(rows: list[Row]) -> str:
    base = rows[0].ppl
    lines = ["| type | size | bits/weight | perplexity | Δppl vs F16 | mean KL vs F16 | prefill tok/s | decode tok/s | quantize s |",
             "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r.qtype} | {r.size / 2**20:.1f} MiB | {r.bpw:.2f} | {r.ppl:.4f} | {r.ppl - base:+.4f} | "
                     f"{r.kl:.5f} | {r.prefill_tps:.0f} | {r.decode_tps:.1f} | {r.quantize_s:.1f} |")
    return "\n".join(lines)
