"""Rendering results: llama-bench-style tables for ``bench``; report.md and CSV for ``study``."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

from .machine import describe_lines
from .study import METRICS
from .sweep import ROW_FIELDS


def fmt_bytes(n: int | None) -> str:
    return "" if not n else f"{n / 2**20:.2f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def fmt_params(n: int | None) -> str:
    return "" if not n else f"{n / 1e6:.2f} M" if n < 1e9 else f"{n / 1e9:.2f} B"


def fmt_num(x: float | None, digits: int = 2) -> str:
    """A number for a table: thousands separated, at most 1 decimal from 100 up, else `digits`."""
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.{min(digits, 1)}f}"
    return f"{x:.{digits}f}"


def fmt_ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def md_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A GitHub markdown table; align is one of 'l'/'r' per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- bench


def bench_markdown(rows: list[dict], baseline: str | None) -> str:
    """llama-bench's table, plus median, ratio to the baseline and peak RSS."""
    header = ["model", "size", "params", "backend", "threads", "test", "t/s (mean ± sd)", "median t/s"]
    if baseline:
        header.append(f"vs {baseline}")
    header += ["GB/s", "GFLOP/s", "peak RSS"]
    out = []
    for r in rows:
        if r["status"] == "ok" and r["avg_ts"] is not None:
            ts = f"{r['avg_ts']:.2f} ± {r['stddev_ts']:.2f}"
            med = f"{r['median_ts']:.2f}"
        else:
            ts, med = f"{r['status']}: {r.get('reason') or ''}".strip(), "–"
        line = [r["model_label"], fmt_bytes(r["model_size"]), fmt_params(r["model_n_params"]), r["backend"],
                str(r["n_threads"]), r["test"] + (f" (cap; asked {r['capped_from']})" if r.get("capped_from") else ""), ts, med]
        if baseline:
            line.append(fmt_ratio(r.get("vs_baseline")))
        line += [fmt_num(r.get("bandwidth_gbs"), 2) if r.get("bandwidth_gbs") else "–",
                 fmt_num(r.get("gflops"), 1) if r.get("gflops") else "–", fmt_bytes(r.get("peak_rss_bytes"))]
        out.append(line)
    return md_table(header, out, "lrrlrrrr" + ("r" if baseline else "") + "rrr")


def bench_rows_for_output(rows: list[dict]) -> list[dict]:
    """Rows with the documented fields first (extras kept at the end)."""
    out = []
    for r in rows:
        d = {k: r.get(k) for k in ROW_FIELDS}
        d.update({k: v for k, v in r.items() if k not in d})
        out.append(d)
    return out


def bench_output(rows: list[dict], fmt: str, baseline: str | None) -> str:
    rows_out = bench_rows_for_output(rows)
    if fmt == "md":
        return bench_markdown(rows, baseline)
    if fmt == "json":
        return json.dumps(rows_out, indent=2, default=str)
    if fmt == "jsonl":
        return "\n".join(json.dumps(r, default=str) for r in rows_out)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(ROW_FIELDS), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows_out:
            w.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
        return buf.getvalue().rstrip("\n")
    raise ValueError(fmt)


# ------------------------------------------------------------------------------------------------- study

CSV_METRICS = list(METRICS)


def study_csv(cells: list[dict]) -> str:
    """One row per cell: identity, status and min/median/max of every metric."""
    head = ["model", "model_filename", "backend", "threads", "prompt", "n_prompt", "n_gen", "status", "reason",
            "repeats", "capped"]
    cols = head + [f"{m}_{s}" for m in CSV_METRICS for s in ("median", "min", "max")] + [
        "token_match", "token_match_of", "diverges_at", "bandwidth_gbs", "gflops"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for c in cells:
        row = [c.get(k) for k in head]
        for m in CSV_METRICS:
            st = c["metrics"].get(m) or {}
            row += [st.get("median"), st.get("min"), st.get("max")]
        tm = c.get("token_match") or {}
        row += [tm.get("matched"), tm.get("of"), tm.get("diverges_at"), c.get("bandwidth_gbs"), c.get("gflops")]
        w.writerow(["" if v is None else v for v in row])
    return buf.getvalue()


def _median(c: dict, metric: str) -> float | None:
    return (c["metrics"].get(metric) or {}).get("median")


def _with_range(c: dict, metric: str, digits: int = 2) -> str:
    st = c["metrics"].get(metric)
    if not st:
        return "–"
    return f"{fmt_num(st['median'], digits)} ({fmt_num(st['min'], digits)}–{fmt_num(st['max'], digits)})"


def _pivot(cells: list[dict], metric: str, prompts: list[str], threads: list[int], digits: int = 1) -> str:
    """Rows model × backend, columns threads × prompt, cells the metric's median."""
    cols = [(t, p) for t in threads for p in prompts]
    header = ["model", "backend"] + [f"{p} · {t}t" for t, p in cols]
    keys = []
    for c in cells:
        k = (c["model"], c["backend"])
        if k not in keys:
            keys.append(k)
    keys = [k for k in keys if any(c["status"] == "ok" for c in cells if (c["model"], c["backend"]) == k)]
    rows = []
    for model, backend in keys:  # rows with no result at all are listed under "Skipped and failed" only
        line = [model, backend]
        for t, p in cols:
            c = next((c for c in cells if c["model"] == model and c["backend"] == backend and c["threads"] == t
                      and c["prompt"] == p), None)
            if c is None:
                line.append("")
            elif c["status"] != "ok" or _median(c, metric) is None:
                line.append(c["status"] if c["status"] != "ok" else "–")
            else:
                line.append(fmt_num(_median(c, metric), digits))
        rows.append(line)
    return md_table(header, rows, "ll" + "r" * len(cols))


def _ratio_table(cells: list[dict], baseline: str, metric: str, prompts: list[str], threads: list[int]) -> str | None:
    """Each backend's median metric divided by the baseline's, same model, threads and prompt."""
    base = {(c["model"], c["threads"], c["prompt"]): _median(c, metric) for c in cells
            if c["backend"] == baseline and c["status"] == "ok"}
    if not base:
        return None
    cols = [(t, p) for t in threads for p in prompts]
    keys = []
    for c in cells:
        if c["backend"] != baseline and (c["model"], c["backend"]) not in keys:
            keys.append((c["model"], c["backend"]))
    rows = []
    for model, backend in keys:
        line = [model, backend]
        for t, p in cols:
            c = next((c for c in cells if c["model"] == model and c["backend"] == backend and c["threads"] == t
                      and c["prompt"] == p and c["status"] == "ok"), None)
            b = base.get((model, t, p))
            v = _median(c, metric) if c else None
            line.append(fmt_ratio(v / b) if v and b else "–")
        rows.append(line)
    if not rows:
        return None
    return md_table(["model", "backend"] + [f"{p} · {t}t" for t, p in cols], rows, "ll" + "r" * len(cols))


def _token_match_section(result: dict) -> list[str]:
    """Per (model, backend): how many of the first N greedy ids equal llamalab's reference."""
    cells = [c for c in result["cells"] if c.get("token_match")]
    if not cells:
        return []
    from .tokenmatch import match_text

    ref = result["meta"].get("token_reference") or "reference"
    out = ["## Token match\n",
           f"First N greedy tokens generated from BOS, compared with llamalab's `{ref}` path on the same weights "
           "(every port reads the id vocabulary, so the ids are read back from what it printed). "
           "A runtime that diverges is flagged ⚠, not hidden.\n"]
    rows, seen = [], set()
    for c in cells:
        key = (c["model"], c["backend"])
        if key in seen:
            continue
        seen.add(key)
        got = c["token_match"].get("got") or []
        rows.append([c["model"], c["backend"], match_text(c["token_match"]), " ".join(map(str, got[:8]))])
    refs = result.get("reference_tokens") or {}
    out.append(md_table(["model", "runtime", "token match", "first ids"], rows, "llll"))
    for label, ids in refs.items():
        out.append(f"\nReference ids ({label}): {' '.join(map(str, ids[:16]))}{' …' if len(ids) > 16 else ''}")
    out.append("")
    return out


def _roofline_section(result: dict) -> list[str]:
    """Achieved bandwidth (weight bytes × generation tokens/s) and GFLOP/s (2 × params × tokens/s), next to
    what the machine probe measured: how close each runtime gets to the memory roof."""
    rows = []
    for c in result["cells"]:
        if c.get("bandwidth_gbs") is None:
            continue
        rows.append([c["model"], c["backend"], str(c["threads"]), c["prompt"], fmt_num(_median(c, "gen_tps"), 1),
                     fmt_num(c["bandwidth_gbs"], 2), fmt_num(c.get("gflops"), 1)])
    if not rows:
        return []
    probe = (result.get("machine") or {}).get("probe") or {}
    roof = ""
    if probe.get("read_gbs"):
        roof = (f" The machine probe read memory at {probe['read_gbs']:.1f} GB/s (one thread"
                + (f", {probe['read_gbs_all']:.1f} GB/s all threads" if probe.get("read_gbs_all") else "") + ").")
    return ["## Achieved bandwidth\n",
            "Generation reads every weight once per token: GB/s = weight bytes × tokens/s; GFLOP/s = 2 × "
            f"parameters × tokens/s.{roof}\n",
            md_table(["model", "runtime", "threads", "prompt", "gen t/s", "GB/s", "GFLOP/s"], rows, "lllrrrr"), ""]


def study_markdown(result: dict) -> str:
    """The study's report: machine, method, tables like the studies' figures, charts, failures."""
    meta, cells = result["meta"], result["cells"]
    prompts = list(meta["prompts"])
    threads = meta["threads"]
    when = datetime.fromtimestamp(meta["started"], timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = ["# llamalab study\n",
           f"Generated by `{meta['command']}` on {when}; {meta['duration_s'] / 60:.1f} minutes in all.\n"]
    machines = result.get("machines") or [result["machine"]]
    for m in machines:
        out.append("## Machine" + (f": {m.get('node') or m.get('hostname')}\n" if len(machines) > 1 else "\n"))
        out += describe_lines(m)
        out.append("")
    if meta.get("merged_from"):
        out.append(f"Merged from {meta['merged_from']} result folders (`llamalab study merge`).\n")
    out.append("## Method\n")
    gen = meta["n_gen"]
    out.append(
        f"Every cell is one (model, backend, thread count, prompt length). Each inference prefills the prompt "
        f"and then decodes {gen} tokens one at a time; tokenization and sampling are excluded (the decode steps "
        f"are fed the tokens that follow the prompt in the shipped essay, so every runtime does the same work). "
        f"Each (model, backend, threads) runs in its own process with OMP/OpenBLAS/MKL/Numba thread counts set "
        f"before NumPy loads, after one untimed warm-up run; within each of the {meta['repeats']} repeat rounds "
        f"the backends alternate (A B C A B C ...), so drift of the machine affects all of them alike. "
        f"Numbers are medians over repeats, with (min–max) where shown. Peak RSS is the worker process's "
        f"high-water mark during the run (Linux VmHWM, reset before each run)."
    )
    out.append("")
    out.append("Prompt lengths: " + ", ".join(f"{k} = {v} tokens" for k, v in meta["prompts"].items()) + ".")
    if any(m["synthesized"] for m in result["models"]):
        out.append("")
        out.append("**Synthesized models** (`synth:`) have the shapes of the named model and random weights: "
                   "throughput depends only on shapes (layers, widths, heads, vocabulary, block format), not on "
                   "the weights' values, so their speed is the speed of the real model in the same format. Their "
                   "context length is raised to fit the longest prompt, and their tokenizer is synthetic.")
    for note in meta.get("notes", []):
        out.append("")
        out.append(f"Note: {note}")
    out.append("")
    out.append("## Models\n")
    out.append(md_table(["model", "file", "type", "params", "size"],
                        [[m["label"], m["filename"], m["type"], fmt_params(m["n_params"]), fmt_bytes(m["size"])]
                         for m in result["models"]], "lllrr"))
    out.append("")
    out.append("## Backends\n")
    out.append(md_table(["backend", "status", "detail"],
                        [[b["backend"], b["status"], b.get("detail") or ""] for b in result["backends"]], "lll"))
    out.append("")
    out += _token_match_section(result)
    out += _roofline_section(result)
    from .npstudy import markdown as np_markdown

    out += np_markdown(result)
    sections = [("gen_tps", "Generation speed (tokens/s, higher is better)", 1),
                ("prompt_tps", "Prompt processing (tokens/s, higher is better)", 1),
                ("ttft_ms", "Time to first token (ms, lower is better)", 1),
                ("tpot_p90_ms", "Time per generated token, p90 (ms, lower is better)", 2),
                ("peak_rss_mib", "Peak RSS (MiB)", 0)]
    for metric, title, digits in sections:
        out.append(f"## {title}\n")
        out.append(_pivot(cells, metric, prompts, threads, digits))
        out.append("")
    base = meta.get("baseline")
    if base:
        for metric, what in (("gen_tps", "generation"), ("prompt_tps", "prompt processing")):
            table = _ratio_table(cells, base, metric, prompts, threads)
            if table:
                out.append(f"## {what.capitalize()} speed relative to {base}\n")
                out.append(f"Median tokens/s divided by {base}'s in the same cell (above 1× = faster).\n")
                out.append(table)
                out.append("")
    if result.get("charts"):
        out.append("## Charts\n")
        for name, caption in result["charts"]:
            out.append(f"![{caption}]({name})\n")
    out.append("## Every cell\n")
    out.append("Median (min–max) over repeats. Time per token: mean / median / p90 within each run, "
               "then the median over repeats.\n")
    rows = []
    for c in cells:
        if c["status"] != "ok":
            continue
        rows.append([c["model"], c["backend"], str(c["threads"]), f"{c['prompt']} ({c['n_prompt']})", str(c["n_gen"]),
                     _with_range(c, "prompt_tps", 1), _with_range(c, "gen_tps", 1), _with_range(c, "ttft_ms", 1),
                     " / ".join(fmt_num(_median(c, m), 2) for m in ("tpot_mean_ms", "tpot_median_ms", "tpot_p90_ms")),
                     fmt_num(_median(c, "wall_s"), 2), fmt_num(_median(c, "peak_rss_mib"), 0)])
    out.append(md_table(["model", "backend", "threads", "prompt", "gen", "prompt t/s", "gen t/s", "TTFT ms",
                         "ms/token mean / med / p90", "wall s", "peak RSS MiB"], rows, "llrlrrrrrrr"))
    out.append("")
    bad = [c for c in cells if c["status"] != "ok"]
    if bad:
        out.append("## Skipped and failed cells\n")
        seen = set()
        for c in bad:
            key = (c["model"], c["backend"], c["status"], c["reason"])
            if key in seen:
                continue
            seen.add(key)
            out.append(f"- {c['model']} · {c['backend']} · {c['threads']}t · {c['prompt']}: **{c['status']}** — "
                       f"{c['reason']}")
        out.append("")
    return "\n".join(out)
