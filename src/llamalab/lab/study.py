"""``llamalab study``: the full matrix, models × backends × threads × prompt lengths × repeats.

Each run prefills a prompt cut from the shipped essay and then feeds ``n_gen`` more
tokens one at a time (no sampling). Per cell we keep every repeat and report
min / median / max of: prompt tokens/s, generation tokens/s, time to first token,
time per generated token (mean, median, p90 within the run), wall time per
inference and peak RSS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .matrix import Backend, PreparedModel, make_job
from .ports import PORTS
from .runner import Cell, Plan, Workload
from .stats import percentile, summarize

FULL = dict(models=["default", "synth:stories15M:f32", "synth:stories42M:f32", "synth:stories110M:f32"],  # fp32, as in the studies
            backends=["llamalab", "reference", "llama.cpp", "transformers"], threads=[1, 2],
            prompts={"short": 5, "long": 1200, "very long": 4000}, n_gen=125, repeats=3)
QUICK = dict(models=["synth:stories15M"], backends=["llamalab", "reference"], threads=[1],
             prompts={"short": 5, "long": 128}, n_gen=16, repeats=2)

# the studies, one preset each; "quick" overrides for a smoke run on a busy machine
PORT_NAMES = ["llama2.c", "llama2.cpp", "llama2.mojo", "llama2.rs", "llama2.zig", "llama2.go", "llama3.np",
              "llama-completion", "mlx-lm", "llama2.jl"]
PRESETS = {
    # llama2.c and its ports on the TinyStories shapes, generating from BOS as the ports' benchmarks did
    "languages": dict(models=["synth:stories15M:f32", "synth:stories42M:f32", "synth:stories110M:f32"],
                      backends=["llamalab"] + PORT_NAMES, threads=[1, 2], prompts={"bos": 1}, n_gen=125, repeats=3,
                      quick=dict(models=["synth:stories15M:f32"], threads=[1], n_gen=16, repeats=1)),
    # llamafile vs MLX vs llama.cpp: Llama 3.2 1B/3B fp16 and Llama 3 8B at 2/4/8 bits
    "llamafile-mlx": dict(models=["synth:llama-3.2-1b:f16", "synth:llama-3.2-3b:f16", "synth:llama-3-8b:q2_k",
                                  "synth:llama-3-8b:q4_k", "synth:llama-3-8b:q8_0"],
                          backends=["llamalab", "llama-bench", "llama-completion", "mlx-lm", "llamafile"],
                          threads=[2], prompts={"bos": 1, "short": 5, "long": 1200, "very long": 4000}, n_gen=125,
                          repeats=3, quick=dict(models=["synth:llama-3.2-1b:f16"], prompts={"bos": 1, "short": 5,
                                                                                          "long": 256}, n_gen=8,
                                     repeats=1)),
    # llama3.np against its Numba variant and llamalab (+ dtype audit and a per-function profile)
    "numba-np": dict(models=["synth:stories15M:f32"], backends=["llama3.np", "llama3.np-numba", "llamalab", "reference"],
                     threads=[1], prompts={"bos": 1}, n_gen=49, repeats=3, quick=dict(n_gen=16, repeats=1)),
}

METRICS = {  # name -> (label, unit, higher is better)
    "prompt_tps": ("prompt tokens/s", "t/s", True),
    "gen_tps": ("generation tokens/s", "t/s", True),
    "ttft_ms": ("time to first token", "ms", False),
    "tpot_mean_ms": ("time per token, mean", "ms", False),
    "tpot_median_ms": ("time per token, median", "ms", False),
    "tpot_p90_ms": ("time per token, p90", "ms", False),
    "wall_s": ("wall time per inference", "s", False),
    "peak_rss_mib": ("peak RSS", "MiB", False),
}


@dataclass
class Skip:
    """A cell decided before running (capped out, longer than the context)."""

    model: str
    backend: str
    threads: int
    test: str
    n_prompt: int
    n_gen: int
    reason: str
    status: str = "skipped"
    samples: list = field(default_factory=list)
    load_s: float | None = None
    load_peak_rss: int | None = None
    info: dict = field(default_factory=dict)


def build_plans(models: list[PreparedModel], backends: list[Backend], threads: list[int], prompts: dict[str, int],
                n_gen: int) -> tuple[list[Plan], list[Skip]]:
    plans, skips = [], []
    for m in models:
        n_ctx = max(prompts.values()) + n_gen + 16
        for b in backends:
            cap = b.cap
            gen_n = min(n_gen, cap.n_gen) if cap and cap.n_gen is not None else n_gen
            for t in threads:
                workloads = []
                for name, n in prompts.items():
                    if cap and cap.n_prompt is not None and n > cap.n_prompt:
                        skips.append(Skip(m.info.path, b.name, t, name, n, gen_n,
                                          f"capped: prompts over {cap.n_prompt} tokens are not run on {b.name} (--cap)"))
                        continue
                    port = b.options.get("port")
                    if port and n > 1 and not PORTS[port["name"]].takes_prompt:
                        skips.append(Skip(m.info.path, b.name, t, name, n, gen_n,
                                          f"{b.name} takes no prompt: it generates from BOS"))
                        continue
                    if n + gen_n > m.info.context_length:
                        skips.append(Skip(m.info.path, b.name, t, name, n, gen_n,
                                          f"{n} + {gen_n} tokens exceed the model's context length {m.info.context_length}"))
                        continue
                    prompt, gen = m.tokens.take(n, gen_n)
                    workloads.append(Workload(name, prompt, gen, m.tokens.text(prompt)))
                if workloads:
                    plans.append(Plan(m.info.path, make_job(m.info, b, t, n_ctx, gen_n), workloads))
    return plans, skips


def run_metrics(cell, s: dict) -> dict:
    """The metrics of one repeat (None where the runtime does not expose them)."""
    steps = s.get("step_s") or []
    prefill = s.get("prefill_s")
    out = {k: None for k in METRICS}
    out["prompt_tps"] = cell.n_prompt / prefill if prefill else s.get("prompt_tps")
    out["gen_tps"] = len(steps) / sum(steps) if steps and sum(steps) > 0 else s.get("gen_tps")
    out["ttft_ms"] = prefill * 1e3 if prefill else None
    if steps:
        ms = [x * 1e3 for x in steps]
        out["tpot_mean_ms"] = sum(ms) / len(ms)
        out["tpot_median_ms"] = percentile(ms, 50)
        out["tpot_p90_ms"] = percentile(ms, 90)
    elif out["gen_tps"]:
        out["tpot_mean_ms"] = 1e3 / out["gen_tps"]
    out["wall_s"] = s.get("wall_s")
    peak = s.get("child_peak_rss") or s.get("peak_rss")
    out["peak_rss_mib"] = peak / 2**20 if peak else None
    return out


def cell_record(cell: Cell | Skip, models: dict, capped: set[str]) -> dict:
    """A JSON-able cell: identity, status, per-repeat metrics and min/median/max over repeats."""
    m = models[cell.model]
    reps = [run_metrics(cell, s) for s in cell.samples]
    summary = {}
    for k in METRICS:
        vals = [r[k] for r in reps if r[k] is not None]
        if vals:
            st = summarize(vals)
            summary[k] = {"min": st.min, "median": st.median, "max": st.max}
    gen = summary.get("gen_tps", {}).get("median")
    return {
        "bandwidth_gbs": m.size * gen / 1e9 if gen else None, "gflops": 2 * m.n_params * gen / 1e9 if gen else None,
        "model": m.label, "model_filename": m.filename, "model_type": m.type, "model_n_params": m.n_params,
        "model_size": m.size, "synthesized": m.synthesized, "backend": cell.backend, "threads": cell.threads,
        "prompt": cell.test, "n_prompt": cell.n_prompt, "n_gen": cell.n_gen, "status": cell.status,
        "reason": cell.reason, "capped": cell.backend in capped, "repeats": len(reps), "load_s": cell.load_s,
        "load_peak_rss_mib": cell.load_peak_rss / 2**20 if cell.load_peak_rss else None,
        "metrics": summary, "runs": reps, "info": cell.info,
        "tokens": next((x.get("tokens") for x in cell.samples if x.get("tokens") is not None), None),
    }


def run_study(models: list[PreparedModel], backends: list[Backend], threads: list[int], prompts: dict[str, int],
              n_gen: int, repeats: int, *, python: str | None = None, run_timeout: float = 900,
              load_timeout: float = 900, bar=None, shard: tuple[int, int] | None = None) -> tuple[list[dict], list[dict]]:
    """Run the matrix; returns (cell records, backend status rows).

    bar: None, or a callable (total steps) -> context manager yielding a progress callback.
    """
    from contextlib import nullcontext

    from .runner import run_plans

    plans, skips = build_plans(models, backends, threads, prompts, n_gen)
    if shard:
        from .shards import take_shard

        plans, skips = take_shard(plans, skips, *shard)
    total = sum(len(p.workloads) for p in plans) * repeats
    with bar(total) if bar else nullcontext(None) as progress:
        cells = run_plans(plans, repeats, run_timeout=run_timeout, load_timeout=load_timeout, python=python,
                          progress=progress)
    by_model = {m.info.path: m.info for m in models}
    capped = {b.name for b in backends if b.cap}
    records = [cell_record(c, by_model, capped) for c in list(cells) + skips]
    order = {(m.info.label, b.name, t, p): i for i, (m, b, t, p) in enumerate(
        (m, b, t, p) for m in models for b in backends for t in threads for p in prompts)}
    records.sort(key=lambda r: order.get((r["model"], r["backend"], r["threads"], r["prompt"]), 1 << 30))
    return records, backend_status(records, backends)


def add_token_match(records: list[dict], models: list[PreparedModel], reference: str = "reference",
                    progress=None) -> dict:
    """Give every ok cell a 'token_match' against llamalab's greedy reference ids (per model, from BOS).

    llamalab's own rows (which time teacher-forced decoding) get their greedy ids from a separate
    greedy run of the same path. Returns {model label: reference ids}.
    """
    from .tokenmatch import greedy_ids, match

    refs = {}
    for m in models:
        mine = [r for r in records if r["model"] == m.info.label and r["status"] == "ok"]
        if not any(r["tokens"] is not None or r["backend"] in ("llamalab", "reference") for r in mine):
            continue  # nothing to compare (fake or speed-only runtimes)
        n = max(r["n_gen"] for r in mine)
        if progress:
            progress(f"token match: {reference} greedy ids for {m.info.label}")
        ref = greedy_ids(m.info.path, n, backend=reference)
        refs[m.info.label] = ref
        own = {"reference": ref}
        for r in mine:
            if r["tokens"] is None and r["backend"] in ("llamalab", "reference"):
                mode = "fast" if r["backend"] == "llamalab" else "reference"
                if mode not in own:
                    own[mode] = greedy_ids(m.info.path, n, backend=mode)
                r["tokens"] = own[mode][: r["n_gen"]]
            r["token_match"] = match(r["tokens"], ref, r["n_gen"])
    return refs


def cap_text(cap) -> str:
    """'generates at most 16 tokens; prompts over 512 tokens not run (--cap)'."""
    parts = []
    if cap.n_gen is not None:
        parts.append(f"generates at most {cap.n_gen} tokens per inference")
    if cap.n_prompt is not None:
        parts.append(f"prompts over {cap.n_prompt} tokens not run")
    return "; ".join(parts) + " (--cap)"


def backend_status(records: list[dict], backends: list[Backend]) -> list[dict]:
    """Per backend: ok (with versions and any cap), skipped or failed (with the first reason)."""
    rows = []
    for b in backends:
        mine = [r for r in records if r["backend"] == b.name]
        ok = [r for r in mine if r["status"] == "ok"]
        info = next((r["info"] for r in ok if r["info"]), {})
        if ok:
            detail = ", ".join(f"{k} {v}" for k, v in info.items() if v and k.endswith("version"))
            if info.get("note"):
                detail = (detail + "; " if detail else "") + info["note"]
            if b.cap:
                detail = (detail + "; " if detail else "") + cap_text(b.cap)
            failed = [r for r in mine if r["status"] == "failed"]
            if failed:
                detail = (detail + "; " if detail else "") + f"{len(failed)} cell(s) failed"
            rows.append({"backend": b.name, "status": "ok", "detail": detail})
        else:
            first = next((r for r in mine if r["status"] != "ok"), None)
            rows.append({"backend": b.name, "status": first["status"] if first else "not run",
                         "detail": first["reason"] if first else ""})
    return rows


def make_study(models: list[PreparedModel], backends: list[Backend], threads: list[int], prompts: dict[str, int],
               n_gen: int, repeats: int, out, *, baseline: str | None = "llama.cpp", python: str | None = None,
               timeout: float = 900, charts: bool = True, progress: bool = True, command: str = "llamalab study",
               notes: list[str] | None = None, token_match: bool = True, reference: str = "reference",
               preset: str | None = None, extra: dict | None = None, shard: tuple[int, int] | None = None) -> dict:
    """Run the study and write results.json, results.csv, report.md and the PNG charts into `out`."""
    import json
    import sys
    import time
    from pathlib import Path

    from .charts import study_charts
    from .machine import describe
    from .matrix import choose_baseline
    from .progress import progress_bar
    from .report import study_csv, study_markdown

    started = time.time()
    machine = describe()
    records, status = run_study(models, backends, threads, prompts, n_gen, repeats, python=python,
                                run_timeout=timeout, load_timeout=timeout, shard=shard,
                                bar=lambda total: progress_bar(total, "study", progress))
    refs = {}
    if token_match:
        say = (lambda msg: print(msg, file=sys.stderr)) if progress else None
        refs = add_token_match(records, models, reference, say)
    ok = {r["backend"] for r in records if r["status"] == "ok"}
    base, base_note = choose_baseline(baseline, ok, [b.name for b in backends])
    notes = list(notes or []) + ([base_note] if base_note else [])
    for m in models:
        notes.extend(f"{m.info.label}: {n}" for n in m.info.notes + m.tokens.notes)
    for b in backends:
        if b.cap:
            notes.append(f"{b.name} {cap_text(b.cap)}.")
    ports = [b.name for b in backends if "port" in b.options]
    if ports:
        timer = "hyperfine" if any(b.options["port"].get("hyperfine") for b in backends if "port" in b.options) \
            else "perf_counter around wait4()"
        notes.append(f"Named runtimes ({', '.join(ports)}) run one whole process per inference, load included, "
                     f"timed by {timer} (wall s, peak RSS from wait4); their tokens/s is what each prints about "
                     "itself, read from its output. llamalab's rows are timed inside a warm process. Ports generate "
                     "greedily from BOS (prompt 'bos'), as their own benchmarks do.")
    result = {
        "meta": {"command": command, "started": started, "duration_s": time.time() - started, "threads": threads,
                 "prompts": prompts, "n_gen": n_gen, "repeats": repeats, "baseline": base, "notes": notes,
                 "preset": preset, "token_reference": reference if token_match else None,
                 "shard": list(shard) if shard else None},
        "reference_tokens": refs,
        "machine": machine,
        "models": [m.info.as_dict() for m in models],
        "backends": status,
        "cells": records,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.update(extra or {})
    result["charts"] = study_charts(result, out) if charts else []
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (out / "results.csv").write_text(study_csv(records))
    (out / "report.md").write_text(study_markdown(result) + "\n")
    return result
