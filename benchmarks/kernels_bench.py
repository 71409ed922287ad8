"""Kernel micro-benchmarks: matvec per format and shape, fused decode step, matmul.

    python benchmarks/kernels_bench.py                 # everything, 1 and 2 threads
    python benchmarks/kernels_bench.py --only decode   # the SmolLM2 per-token estimate
    python benchmarks/kernels_bench.py --only stream --formats F16 Q4_K --threads 1   # from DRAM

Reports microseconds per call (min and median over repeats; warm-up excluded) and
GB/s of weight bytes streamed; matmul reports GFLOP/s. The machine is shared, so
numbers are noisy: the min is the best estimate of what the kernel can do.

"stream" runs each matvec over distinct weights of one shape totalling at least 160 MB, more
than any L3 here, so the GB/s are what a model's decode gets from memory (the "matvec" rows
reuse one weight, which small shapes keep in cache).

The decode estimate runs SmolLM2-135M's per-token products the way the model does
(per layer: fused QKV, O, fused gate/up, down; then the Q8_0 tied output head) over
30 distinct layers of weights, so memory traffic is realistic (~96 MB per token).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T

from llamalab import kernels
from llamalab.kernels import floats, tuning
from llamalab.kernels.rows import HALF_ACTIVATION, activation_kind
from llamalab.runtime.tensor import QTensor

SMOL = {"q,o": (576, 576), "k,v": (192, 576), "gate,up": (1536, 576), "down": (576, 1536), "head": (49152, 576)}
STORIES = {"wq": (768, 768), "w1": (2048, 768), "w2": (768, 2048), "head": (32000, 768)}
FORMATS = [T.Q4_1, T.Q8_0, T.Q4_0, T.Q5_0, T.Q5_1, T.Q4_K, T.Q6_K, T.Q5_K, T.Q3_K, T.Q2_K, T.F16, T.BF16, T.F32]
# byte offsets of the f16 scale fields in each block, set to a sane value (random bytes may hold inf/nan)
_SCALE_FIELDS = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.Q2_K: [80, 82],
                 T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}


def random_weight(qtype, rows: int, cols: int, rng, name: str = "w") -> QTensor:
    """Random bytes in qtype's layout, with finite small scales (timing only, values meaningless)."""
    block, size = GGML_QUANT_SIZES[qtype]
    if qtype == T.F32:
        return QTensor(name, qtype, (rows, cols), rng.standard_normal((rows, cols), dtype=np.float32).view(np.uint8))
    if qtype in (T.F16, T.BF16):
        vals = rng.standard_normal((rows, cols), dtype=np.float32)
        bits = vals.astype(np.float16).view(np.uint8) if qtype == T.F16 else (vals.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        return QTensor(name, qtype, (rows, cols), bits.reshape(rows, -1))
    data = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)  # (n_blocks, type_size)
    half = np.array([0.01], np.float16).view(np.uint8)
    for off in _SCALE_FIELDS[qtype]:
        data[:, off : off + 2] = half
    return QTensor(name, qtype, (rows, cols), data.reshape(rows, -1))


def timeit(fn, repeat: int, number: int) -> tuple[float, float]:
    """(min, median) seconds per call over `repeat` rounds of `number` calls, after a warm-up round."""
    fn()
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - t0) / number)
    return min(rounds), float(np.median(rounds))


def bench_matvec(threads: list[int], formats, shapes: dict, repeat: int, rng) -> None:
    print("\n== matvec: us per call (min / median), GB/s of weights at the min ==")
    print(f"{'format':7} {'shape':>14} " + " ".join(f"{f'{t} thr':>22}" for t in threads))
    for qtype in formats:
        for label, (rows, cols) in shapes.items():
            if cols % GGML_QUANT_SIZES[qtype][0]:
                continue
            w = random_weight(qtype, rows, cols, rng)
            x = rng.standard_normal(cols, dtype=np.float32)
            out = np.empty(rows, np.float32)
            number = max(3, int(2e7 // w.nbytes))
            cells = []
            for t in threads:
                kernels.set_threads(t)
                lo, med = timeit(lambda: kernels.matvec(w, x, out), repeat, number)
                cells.append(f"{lo * 1e6:8.1f} /{med * 1e6:8.1f} {w.nbytes / lo / 1e9:5.1f}")
            print(f"{qtype.name:7} {f'{cols}->{rows}':>14} " + " ".join(f"{c:>22}" for c in cells), flush=True)


STREAM_SHAPES = [(8192, 2048), (4096, 4096), (2048, 8192)]  # (rows, cols): Llama-3.2-1B's ffn_gate/up and ffn_down
STREAM_BYTES = 160e6


def bench_stream(threads: list[int], formats, repeat: int, rng) -> None:
    print(f"\n== matvec from memory: distinct weights of >= {STREAM_BYTES / 1e6:.0f} MB per shape, GB/s at the best round ==")
    print(f"{'format':7} {'shape':>14} " + " ".join(f"{f'{t} thr':>8}" for t in threads))
    for qtype in formats:
        for rows, cols in STREAM_SHAPES:
            if cols % GGML_QUANT_SIZES[qtype][0]:
                continue
            ws = [random_weight(qtype, rows, cols, rng)]
            while sum(w.nbytes for w in ws) < STREAM_BYTES:
                ws.append(random_weight(qtype, rows, cols, rng))
            nbytes = sum(w.nbytes for w in ws)
            x = rng.standard_normal(cols, dtype=np.float32)
            out = np.empty(rows, np.float32)
            cells = []
            for t in threads:
                kernels.set_threads(t)
                lo, _ = timeit(lambda: [kernels.matvec(w, x, out) for w in ws], repeat, 1)
                cells.append(f"{nbytes / lo / 1e9:8.1f}")
            print(f"{qtype.name:7} {f'{cols}->{rows}':>14} " + " ".join(cells), flush=True)


def smollm2_weights(rng, n_layers: int = 30):
    layers = []
    for i in range(n_layers):
        mk = lambda r, c, n: random_weight(T.Q4_1, r, c, rng, f"blk.{i}.{n}")  # noqa: E731
        layers.append({"q": mk(576, 576, "q"), "k": mk(192, 576, "k"), "v": mk(192, 576, "v"), "o": mk(576, 576, "o"),
                       "gate": mk(1536, 576, "gate"), "up": mk(1536, 576, "up"), "down": mk(576, 1536, "down")})
    head = random_weight(T.Q8_0, 49152, 576, rng, "token_embd")
    return layers, head


def bench_decode(threads: list[int], repeat: int, rng) -> None:
    layers, head = smollm2_weights(rng)
    total = sum(w.nbytes for layer in layers for w in layer.values()) + head.nbytes
    x576 = rng.standard_normal(576, dtype=np.float32)
    x1536 = rng.standard_normal(1536, dtype=np.float32)

    plans = [(kernels.plan([L["q"], L["k"], L["v"]]), kernels.plan([L["o"]]), kernels.plan([L["gate"], L["up"]]),
              kernels.plan([L["down"]])) for L in layers]
    head_plan = kernels.plan([head])

    def layers_only():
        for qkv, o, gate_up, down in plans:  # validated once, as the model's compiled decode step does
            qkv(x576)
            o(x576)
            gate_up(x576)
            down(x1536)

    def token():
        layers_only()
        head_plan(x576)

    print(f"\n== SmolLM2-135M Q4_1 decode step: all matvecs of one token ({total / 1e6:.1f} MB of weights) ==")
    budget = {1: 1000 / 58, 2: 1000 / 104}
    for t in threads:
        kernels.set_threads(t)
        lo, med = timeit(token, repeat, 5)
        llo, _ = timeit(layers_only, repeat, 5)
        b = budget.get(t)
        ref = f"   llama.cpp whole token: {b:.1f} ms" if b else ""
        print(f"{t} thr: {lo * 1e3:6.2f} ms min, {med * 1e3:6.2f} ms median ({total / lo / 1e9:.1f} GB/s); "
              f"layers {llo * 1e3:.2f} ms + head {(lo - llo) * 1e3:.2f} ms{ref}", flush=True)


def bench_overhead(threads: list[int], repeat: int, rng) -> None:
    w = random_weight(T.Q4_1, 1, 32, rng)
    x = rng.standard_normal(32, dtype=np.float32)
    out = np.empty(1, np.float32)
    print("\n== per-call overhead (1x32 Q4_1 matvec: validation + dispatch + parallel launch) ==")
    for t in threads:
        kernels.set_threads(t)
        lo, med = timeit(lambda: kernels.matvec(w, x, out), repeat, 2000)
        lo3, _ = timeit(lambda: kernels.matvec_many([w, w, w], x, [out, out.copy(), out.copy()]), repeat, 2000)
        print(f"{t} thr: matvec {lo * 1e6:.1f} us (median {med * 1e6:.1f}), matvec_many x3 {lo3 * 1e6:.1f} us")


def bench_matmul(threads: list[int], ns: list[int], repeat: int, rng) -> None:
    print("\n== matmul Y = X @ W.T: ms per call (min), GFLOP/s; large n on each backend ==")
    backend = kernels.get_gemm_backend()
    for qtype in (T.Q4_1, T.Q8_0, T.F32):
        for label, (rows, cols) in SMOL.items():
            if label == "head":
                continue  # the model computes logits for the last position only
            w = random_weight(qtype, rows, cols, rng)
            for n in ns:
                X = rng.standard_normal((n, cols), dtype=np.float32)
                out = np.empty((n, rows), np.float32)
                for name in (kernels.gemm.BACKENDS if n > kernels.SMALL_BATCH["amx"] else [backend]):
                    kernels.set_gemm_backend(name)
                    cells = []
                    for t in threads:
                        kernels.set_threads(t)
                        lo, _ = timeit(lambda: kernels.matmul(w, X, out), repeat, 1 if n > 64 else 5)
                        cells.append(f"{lo * 1e3:8.2f} ms {2 * n * rows * cols / lo / 1e9:6.1f} GF/s")
                    path = name if n > kernels.small_batch_limit() else "row kernels"
                    print(f"{qtype.name:5} {f'{cols}->{rows}':>12} n={n:<4} {path:11} " + "  ".join(cells), flush=True)
    kernels.set_gemm_backend(backend)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--only", choices=["matvec", "stream", "stories", "decode", "overhead", "matmul"], nargs="+",
                    help="default: all but stream")
    ap.add_argument("--formats", nargs="+", help="e.g. Q4_1 Q8_0 (default: all)")
    ap.add_argument("--f16-prefetch", choices=["auto", "l1", "l2", "none"], default="auto",
                    help="F16/BF16 rows under LONG_COLS: prefetcht0, prefetcht1, none (default: as calibrate_f16 measures)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    kernels.warmup()
    print(f"warm-up (compile or cache load): {time.perf_counter() - t0:.1f} s")
    mode = floats.calibrate_f16()
    if args.f16_prefetch != "auto":
        mode = {"l1": floats.PF_L1, "l2": floats.PF_L2, "none": floats.PF_NONE}[args.f16_prefetch]
        tuning.set(tuning.F16_PREFETCH, mode)
    print(f"F16/BF16 prefetch: {({floats.PF_L1: 'l1', floats.PF_L2: 'l2', floats.PF_NONE: 'none'})[mode]}"
          f"{' (calibrated)' if args.f16_prefetch == 'auto' else ''}; decode activations {kernels.get_matvec_backend()}"
          f" (F16/BF16 rows: x {'in half' if activation_kind(int(T.F16)) == HALF_ACTIVATION else 'in float32'},"
          f" calibrated)")
    only = set(args.only or ["matvec", "stories", "decode", "overhead", "matmul"])
    formats = [T[f] for f in args.formats] if args.formats else FORMATS
    if "overhead" in only:
        bench_overhead(args.threads, args.repeat, rng)
    if "decode" in only:
        bench_decode(args.threads, args.repeat, rng)
    if "matvec" in only:
        bench_matvec(args.threads, formats, SMOL, args.repeat, rng)
    if "stream" in only:
        bench_stream(args.threads, formats, args.repeat, rng)
    if "stories" in only:
        bench_matvec(args.threads, [T.F32], STORIES, args.repeat, rng)
    if "matmul" in only:
        bench_matmul(args.threads, [8, 512], args.repeat, rng)
    print(f"\ntotal benchmark time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
