"""``llamalab profile``: where the time goes, per operation, prefill and decode apart.

The model is loaded in this process and instrumented in place: each block's linear
layers (wq, wk, wv, wo, w_gate, w_up, w_down) and the output projection are wrapped in
timing proxies, the model's layer ops (``model.ops``: rms_norm, rope, attention, glu)
are swapped for timed copies, and ``llamalab.runtime.model.fused`` is replaced on the module,
for the length of the profile only. Generation goes through ``generate.generate_step`` (the loop
everything else uses) with a timed sampler. What no wrapper saw — cache writes,
residual adds, reshapes, the interpreter — is reported as the rest.

When the fast path runs a whole decode step as one compiled call (``model.decoder``),
that call is one row; ``unfused=True`` switches it off to see the op-by-op split.

It also reports the dtype of every weight, of the KV cache and of the activations each
op saw, and flags float64 anywhere (a float64 cache hiding in a float32 model is the
classic slowdown).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

LINEAR_ATTRS = {"wq": "matmul q", "wk": "matmul k", "wv": "matmul v", "wo": "matmul o", "w_gate": "matmul gate",
                "w_up": "matmul up", "w_down": "matmul down"}  # fmt: skip
OPS_FIELDS = {"rms_norm": "rms norm", "rope": "rope", "attention": "attention", "glu": "silu"}  # model.ops
PHASES = ("prefill", "decode")
REST = "rest (cache writes, adds, Python)"
ORDER = ("embedding", "rms norm", "matmul q", "matmul k", "matmul v", "matmul q+k+v (fused)", "rope", "attention",
         "matmul o", "matmul gate", "matmul up", "matmul gate+up (fused)", "silu", "matmul down", "matmul output",
         "decode step (compiled, all layers)", "sampling")  # table order; ops not listed follow


@dataclass
class Profile:
    """Seconds and calls per (phase, op); dtypes seen per op."""

    seconds: dict = field(default_factory=lambda: {p: {} for p in PHASES})
    calls: dict = field(default_factory=lambda: {p: {} for p in PHASES})
    total: dict = field(default_factory=lambda: {p: 0.0 for p in PHASES})
    tokens: dict = field(default_factory=lambda: {p: 0 for p in PHASES})
    dtypes: dict = field(default_factory=dict)  # op -> set of "in->out"
    phase: str = "prefill"
    notes: list = field(default_factory=list)
    active: bool = True

    def add(self, op: str, secs: float, args=(), result=None) -> None:
        if not self.active:
            return
        s, c = self.seconds[self.phase], self.calls[self.phase]
        s[op] = s.get(op, 0.0) + secs
        c[op] = c.get(op, 0) + 1
        ins = [a.dtype.name for a in args if isinstance(a, np.ndarray)]
        outs = result if isinstance(result, (list, tuple)) else [result]
        out = [o.dtype.name for o in outs if isinstance(o, np.ndarray)]
        if ins or out:
            self.dtypes.setdefault(op, set()).add(f"{','.join(sorted(set(ins))) or '-'} -> {','.join(sorted(set(out))) or '-'}")

    def rows(self) -> list[dict]:
        """Per op: ms and share in each phase, and ms per token; the rest last."""
        ops = []
        for p in PHASES:
            for op in self.seconds[p]:
                if op not in ops:
                    ops.append(op)
        ops.sort(key=lambda op: ORDER.index(op) if op in ORDER else len(ORDER))
        rows = []
        for op in ops + [REST]:
            row = {"op": op}
            for p in PHASES:
                measured = sum(self.seconds[p].values())
                secs = max(self.total[p] - measured, 0.0) if op == REST else self.seconds[p].get(op, 0.0)
                row[f"{p}_ms"] = secs * 1e3
                row[f"{p}_share"] = secs / self.total[p] if self.total[p] else 0.0
                row[f"{p}_ms_per_token"] = secs * 1e3 / self.tokens[p] if self.tokens[p] else 0.0
                row[f"{p}_calls"] = self.calls[p].get(op, 0)
            rows.append(row)
        return rows


class TimedLinear:
    """Stands in for a linear layer; times each call under its op name."""

    def __init__(self, inner, op: str, prof: Profile):
        self.inner, self.op, self.prof = inner, op, prof

    def __call__(self, x):
        t = time.perf_counter()
        y = self.inner(x)
        self.prof.add(self.op, time.perf_counter() - t, (x,), y)
        return y

    def __getattr__(self, name):  # qtensor, weight, ... of the wrapped layer
        return getattr(self.inner, name)


def _timed(fn, op: str, prof: Profile):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        prof.add(op, time.perf_counter() - t, args, out)
        return out

    wrapper.__wrapped__ = fn
    return wrapper


def _timed_fused(orig, prof: Profile):
    """linear.fused as the model calls it: a group stays one call where the original would fuse it."""

    def fused(linears, x):
        inner = [getattr(l, "inner", l) for l in linears]
        if x.shape[0] == 1 and all(type(l).__name__ == "QuantLinear" for l in inner):
            t = time.perf_counter()
            out = orig(inner, x)
            ops = [getattr(l, "op", "matmul").replace("matmul ", "") for l in linears]
            prof.add("matmul " + "+".join(ops) + " (fused)", time.perf_counter() - t, (x,), out)
            return out
        return [l(x) for l in linears]

    return fused


@contextmanager
def instrument(model, prof: Profile, unfused: bool = False):
    """Install the timing proxies on a loaded Llama and its module; undo them on exit."""
    from ..runtime import layer as model_mod

    saved_attrs = []
    for blk in model.blocks:
        for attr, op in LINEAR_ATTRS.items():
            if hasattr(blk, attr):
                saved_attrs.append((blk, attr, getattr(blk, attr)))
                setattr(blk, attr, TimedLinear(getattr(blk, attr), op, prof))
    if hasattr(model, "output"):
        saved_attrs.append((model, "output", model.output))
        model.output = TimedLinear(model.output, "matmul output", prof)
    if hasattr(model, "embed"):
        saved_attrs.append((model, "embed", None))  # instance attribute shadows the method
        model.embed = _timed(model.embed, "embedding", prof)
    decoder = getattr(model, "decoder", None)
    if decoder is not None:
        saved_attrs.append((model, "decoder", decoder))
        if unfused:
            model.decoder = None
            prof.notes.append("unfused: the compiled one-call decode step was switched off to split decode by op")
        else:
            saved_attrs.append((decoder, "step_one", None))  # the one-sequence step generation runs
            decoder.step_one = _timed(decoder.step_one, "decode step (compiled, all layers)", prof)
            prof.notes.append("decode runs as one compiled call per token (all matmuls, attention, norms, RoPE "
                              "inside); use --unfused to split it by op")
    if hasattr(model, "ops"):
        saved_attrs.append((model, "ops", model.ops))
        model.ops = replace(model.ops, **{f: _timed(getattr(model.ops, f), op, prof) for f, op in OPS_FIELDS.items()})
    saved_fused = model_mod.fused
    model_mod.fused = _timed_fused(saved_fused, prof)
    try:
        yield prof
    finally:
        model_mod.fused = saved_fused
        for obj, attr, value in reversed(saved_attrs):
            if value is None:
                try:
                    delattr(obj, attr)
                except AttributeError:
                    pass
            else:
                setattr(obj, attr, value)


def dtype_report(model, cache, prof: Profile) -> dict:
    """Weights by storage type, norms, KV cache and activations; float64 anywhere is flagged."""
    weights: dict[str, int] = {}
    dense = set()
    lins = [getattr(b, a) for b in model.blocks for a in LINEAR_ATTRS if hasattr(b, a)] + [model.output]
    for lin in lins:
        lin = getattr(lin, "inner", lin)
        qt = getattr(lin, "qtensor", None)
        name = getattr(getattr(qt, "qtype", None), "name", type(lin).__name__)
        weights[name] = weights.get(name, 0) + 1
        w = getattr(lin, "_w", None)
        if isinstance(w, np.ndarray):
            dense.add(w.dtype.name)
    norms = sorted({b.attn_norm.dtype.name for b in model.blocks} | {b.ffn_norm.dtype.name for b in model.blocks}
                   | {model.output_norm.dtype.name})
    acts = {op: sorted(v) for op, v in sorted(prof.dtypes.items())}
    report = {
        "weights": weights,
        "dense_weight_copies": sorted(dense),
        "embedding": getattr(getattr(model.token_embd, "qtype", None), "name", "?"),
        "norms": norms,
        "kv_cache": {"k": cache.k.dtype.name, "v": cache.v.dtype.name, "bytes": int(cache.nbytes)},
        "activations": acts,
    }
    f64 = []
    if "float64" in (cache.k.dtype.name, cache.v.dtype.name):
        f64.append("KV cache")
    if "float64" in norms:
        f64.append("norm weights")
    if "float64" in dense:
        f64.append("dense weight copies")
    f64 += [f"activations of {op}" for op, v in acts.items() if any("float64" in s for s in v)]
    report["float64_found_in"] = f64
    return report


def profile_llm(llm, n_prompt: int = 128, n_gen: int = 32, unfused: bool = False, warmup: bool = True) -> dict:
    """Profile prefill of n_prompt tokens and n_gen decode steps of a loaded LLM."""
    from ..generate import generate_step
    from ..sampling import SamplingParams, make_sampler
    from .workload import token_source

    model, cache = llm.model, llm.cache
    prompt, _ = token_source(llm.tokenizer.spec, llm.config.vocab_size).take(n_prompt, 0)
    sampler = make_sampler(SamplingParams(temperature=0.8, seed=0))
    if warmup:  # compile kernels, lay out weights for the paths this prompt takes: not profiled
        cache.reset()  # the whole prompt: a shorter one can take another product path than the one timed
        steps = generate_step(model, cache, prompt, sampler)
        for _ in range(min(3, n_gen + 1)):
            next(steps)
        steps.close()
    prof = Profile()

    def timed_sampler(logits, history):
        t = time.perf_counter()
        tok = sampler(logits, history)
        prof.add("sampling", time.perf_counter() - t, (logits,))
        return tok

    cache.reset()
    with instrument(model, prof, unfused=unfused):
        steps = generate_step(model, cache, prompt, timed_sampler)
        prof.phase = "prefill"
        t = time.perf_counter()
        next(steps)  # prefill + the first token's sampling
        prof.total["prefill"] = time.perf_counter() - t
        prof.tokens["prefill"] = len(prompt)
        prof.phase = "decode"
        t = time.perf_counter()
        for _ in range(n_gen):
            next(steps)
        prof.total["decode"] = time.perf_counter() - t
        prof.tokens["decode"] = n_gen
        prof.active = False
        steps.close()
        dt = dtype_report(model, cache, prof)
    return {"model": llm.path, "backend": llm.backend, "threads": llm.threads, "n_prompt": len(prompt), "n_gen": n_gen,
            "total_ms": {p: prof.total[p] * 1e3 for p in PHASES},
            "tokens_per_s": {p: prof.tokens[p] / prof.total[p] if prof.total[p] else None for p in PHASES},
            "rows": prof.rows(), "dtypes": dt, "notes": prof.notes}


def profile_markdown(result: dict) -> str:
    from .report import md_table

    lines = [f"profile of {result['model']} — {result['backend']} backend, {result['threads']} thread(s); "
             f"prefill {result['n_prompt']} tokens ({result['total_ms']['prefill']:.1f} ms, "
             f"{result['tokens_per_s']['prefill'] or 0:.1f} t/s), decode {result['n_gen']} tokens "
             f"({result['total_ms']['decode']:.1f} ms, {result['tokens_per_s']['decode'] or 0:.1f} t/s)", ""]
    rows = []
    for r in result["rows"]:
        rows.append([r["op"], f"{r['prefill_ms']:.2f}", f"{100 * r['prefill_share']:.1f}%", str(r["prefill_calls"] or ""),
                     f"{r['decode_ms']:.2f}", f"{100 * r['decode_share']:.1f}%", f"{r['decode_ms_per_token']:.3f}",
                     str(r["decode_calls"] or "")])
    lines.append(md_table(["op", "prefill ms", "share", "calls", "decode ms", "share", "ms/token", "calls"], rows))
    d = result["dtypes"]
    lines += ["", "dtypes:",
              f"- weights: {', '.join(f'{k} ×{v}' for k, v in d['weights'].items())}; embedding {d['embedding']}"
              + (f"; dense float copies: {', '.join(d['dense_weight_copies'])}" if d["dense_weight_copies"] else ""),
              f"- norm weights: {', '.join(d['norms'])}",
              f"- KV cache: k {d['kv_cache']['k']}, v {d['kv_cache']['v']} ({d['kv_cache']['bytes'] / 2**20:.1f} MiB)"]
    for op, v in d["activations"].items():
        lines.append(f"- {op}: {'; '.join(v)}")
    if d["float64_found_in"]:
        lines.append(f"WARNING: float64 found in {', '.join(d['float64_found_in'])} — a float32 model should not "
                     "need it (each float64 op moves twice the bytes)")
    else:
        lines.append("no float64 anywhere: OK")
    for n in result["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def profile_chart(result: dict, path) -> None:
    """100%-stacked horizontal bars: each op's share of prefill and of decode, with ms/token totals."""
    from .charts import _plt

    plt = _plt()
    rows = [r for r in result["rows"] if r["prefill_ms"] + r["decode_ms"] > 0]
    fig, ax = plt.subplots(figsize=(10, 3.0))
    cmap = plt.get_cmap("tab20")
    phases = list(reversed(PHASES))  # prefill on top
    for i, phase in enumerate(phases):
        left = 0.0
        for j, r in enumerate(rows):
            share = 100 * r[f"{phase}_share"]
            ax.barh(i, share, left=left, color="#cccccc" if r["op"] == REST else cmap(j % 20),
                    label=r["op"] if i == 0 else None, edgecolor="white", linewidth=0.5)
            if share >= 7:
                ax.text(left + share / 2, i, f"{share:.0f}%", ha="center", va="center", fontsize=7)
            left += share
        per_tok = result["total_ms"][phase] / (result["n_prompt"] if phase == "prefill" else result["n_gen"])
        ax.text(101, i, f"{per_tok:.2f} ms/token", va="center", fontsize=8)
    ax.set_yticks(range(len(phases)), phases)
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of the phase's time (%)")
    ax.grid(axis="y", visible=False)
    ax.set_title(f"where the time goes — {result['backend']} backend, {result['threads']} thread(s), "
                 f"prompt {result['n_prompt']} tokens, {result['n_gen']} generated", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=6, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
