"""``llamalab bench``: llama-bench's tests (pp512, tg128) over models × backends × threads.

pp<N>: one forward of N prompt tokens on an empty cache; t/s = N / time.
tg<N>: N single-token forwards from an empty cache; t/s = N / total time.
Warm-up excluded, tokenization and sampling excluded; each (model, backend, threads)
runs in its own process, and backends alternate within every repeat round.
"""

from __future__ import annotations

from dataclasses import dataclass

from .matrix import Backend, PreparedModel, make_job
from .runner import Cell, Plan, Workload, run_plans
from .stats import ratio, summarize

ROW_FIELDS = ("model_filename", "model_type", "model_size", "model_n_params", "backend", "n_threads", "n_prompt",
              "n_gen", "test", "status", "reason", "avg_ts", "stddev_ts", "median_ts", "min_ts", "max_ts",
              "avg_ns", "stddev_ns", "samples_ts", "samples_ns", "peak_rss_bytes", "load_peak_rss_bytes", "load_s", "capped",
              "baseline", "vs_baseline", "bandwidth_gbs", "gflops")  # fmt: skip


@dataclass(frozen=True)
class Test:
    kind: str  # "pp" or "tg"
    n: int

    @property
    def name(self) -> str:
        return f"{self.kind}{self.n}"


def tests_for(n_prompt: list[int], n_gen: list[int]) -> list[Test]:
    return [Test("pp", n) for n in n_prompt if n > 0] + [Test("tg", n) for n in n_gen if n > 0]


def _capped(test: Test, backend: Backend) -> Test:
    cap = backend.cap
    if cap is None:
        return test
    limit = cap.n_prompt if test.kind == "pp" else cap.n_gen
    return Test(test.kind, min(test.n, limit)) if limit is not None else test


def build_plans(models: list[PreparedModel], backends: list[Backend], threads: list[int],
                tests: list[Test]) -> tuple[list[Plan], list[Cell]]:
    """The plans to run, and the cells skipped up front (a test longer than the model's context,
    as `study` skips them, instead of running past the context)."""
    plans, skipped = [], []
    for m in models:
        fits = [t for t in tests if t.n <= m.info.context_length]
        need = max([t.n for t in fits] + [1])
        n_ctx = min(max(need + 16, 256), max(m.info.context_length, 1))
        for b in backends:
            for t in threads:
                workloads = []
                for asked in tests:
                    test = _capped(asked, b)
                    was = asked.name if test != asked else None
                    if test.n > m.info.context_length:
                        skipped.append(Cell(m.info.path, b.name, t, test.name, test.n if test.kind == "pp" else 0,
                                            test.n if test.kind == "tg" else 0, status="skipped",
                                            reason=f"{test.n} tokens exceed the model's context length "
                                                   f"{m.info.context_length}", capped_from=was))
                        continue
                    if test.kind == "pp":
                        prompt, _ = m.tokens.take(test.n, 0)
                        workloads.append(Workload(test.name, prompt, [], m.tokens.text(prompt), was))
                    else:
                        _, gen = m.tokens.take(0, test.n)
                        workloads.append(Workload(test.name, [], gen, "", was))
                if workloads:
                    plans.append(Plan(m.info.path, make_job(m.info, b, t, n_ctx), workloads))
    return plans, skipped


def _sample_value(cell: Cell, s: dict) -> tuple[float | None, float | None]:
    """(tokens/s, seconds) of one sample of a pp or tg cell."""
    if cell.n_prompt and not cell.n_gen:
        secs = s.get("prefill_s")
        tps = cell.n_prompt / secs if secs else s.get("prompt_tps")
    else:
        secs = sum(s.get("step_s") or []) or None
        tps = cell.n_gen / secs if secs else s.get("gen_tps")
    return tps, secs


def rows_from_cells(cells: list[Cell], models: list[PreparedModel], backends: list[Backend],
                    baseline: str | None = None) -> list[dict]:
    """One llama-bench-style row per cell, with mean ± stddev, median and the ratio to the baseline."""
    info = {m.info.path: m.info for m in models}
    rows = []
    for c in cells:
        m = info[c.model]
        kind = "pp" if c.n_prompt and not c.n_gen else "tg"
        row = dict(model_filename=m.filename, model_type=m.type, model_size=m.size, model_n_params=m.n_params,
                   backend=c.backend, n_threads=c.threads, n_prompt=c.n_prompt, n_gen=c.n_gen, test=c.test,
                   status=c.status, reason=c.reason, load_s=c.load_s, capped=c.capped_from is not None,
                   capped_from=c.capped_from,
                   kind=kind, model_label=m.label)
        pairs = [_sample_value(c, s) for s in c.samples]
        ts = [p[0] for p in pairs if p[0]]
        ns = [p[1] * 1e9 for p in pairs if p[1]]
        row["samples_ts"], row["samples_ns"] = ts, [int(x) for x in ns]
        if ts:
            st = summarize(ts)
            row.update(avg_ts=st.mean, stddev_ts=st.stddev, median_ts=st.median, min_ts=st.min, max_ts=st.max)
        else:
            row.update(avg_ts=None, stddev_ts=None, median_ts=None, min_ts=None, max_ts=None)
        if ns:
            sn = summarize(ns)
            row.update(avg_ns=sn.mean, stddev_ns=sn.stddev)
        else:
            row.update(avg_ns=None, stddev_ns=None)
        med = row["median_ts"]
        # tg reads every weight once per token; pp's work is 2 flops per parameter per token
        row["bandwidth_gbs"] = m.size * med / 1e9 if med and kind == "tg" else None
        row["gflops"] = 2 * m.n_params * med / 1e9 if med else None
        row["peak_rss_bytes"] = _run_peak(c)
        row["load_peak_rss_bytes"] = c.load_peak_rss
        row["info"] = c.info
        rows.append(row)
    apply_baseline(rows, baseline)
    return rows


def _run_peak(cell: Cell) -> int | None:
    """The cell's peak RSS while it runs: the highest per-run high-water mark where the worker could
    reset it before each run (Linux), else the process's whole-life peak, load included."""
    peaks = [s.get("child_peak_rss") or s.get("peak_rss") for s in cell.samples]
    windowed = all(s.get("peak_rss_per_run") or s.get("child_peak_rss") for s in cell.samples)
    peaks = [p for p in peaks + ([] if windowed else [cell.load_peak_rss]) if p]
    return max(peaks) if peaks else None


def apply_baseline(rows: list[dict], base: str | None) -> None:
    """Set vs_baseline = median t/s / the baseline's, for the same model, threads and test kind
    (so a capped backend's tg16 is compared with the baseline's tg128)."""
    for row in rows:
        row["baseline"] = base
        ref = next((r for r in rows if base and r["backend"] == base and r["model_filename"] == row["model_filename"]
                    and r["n_threads"] == row["n_threads"] and r["kind"] == row["kind"]), None)
        row["vs_baseline"] = ratio(row["median_ts"], ref["median_ts"] if ref else None)


def run_bench(models: list[PreparedModel], backends: list[Backend], threads: list[int], n_prompt: list[int],
              n_gen: list[int], repeats: int, baseline: str | None = None, *, python: str | None = None,
              run_timeout: float = 600, load_timeout: float = 600, bar=None) -> list[dict]:
    """Run the sweep and return one row per (model, backend, threads, test).

    bar: None, or a callable (total steps) -> context manager yielding a progress callback.
    """
    from contextlib import nullcontext

    tests = tests_for(n_prompt, n_gen)
    plans, skipped = build_plans(models, backends, threads, tests)
    total = sum(len(p.workloads) for p in plans) * repeats
    with bar(total) if bar else nullcontext(None) as progress:
        cells = run_plans(plans, repeats, run_timeout=run_timeout, load_timeout=load_timeout, python=python,
                          progress=progress) if plans else []
    return rows_from_cells(cells + skipped, models, backends, baseline)


def bench_notes(rows: list[dict], backends: list[Backend], models: list[PreparedModel]) -> list[str]:
    """What a reader must know beside the table: caps that applied, model and runtime notes, the machine."""
    from .machine import describe

    notes = []
    if any(r.get("capped_from") for r in rows):
        for b in backends:
            if b.cap:
                limits = [f"{b.cap.n_prompt} prompt" if b.cap.n_prompt is not None else "",
                          f"{b.cap.n_gen} generated" if b.cap.n_gen is not None else ""]
                notes.append(f"{b.name} runs at most {' / '.join(x for x in limits if x)} tokens per test "
                             f"(--cap {b.name}={b.cap}); its ratio compares tokens/s of the shorter test")
    for m in models:
        notes.extend(f"{m.info.label}: {n}" for n in m.info.notes + m.tokens.notes)
    notes.extend(dict.fromkeys(f"{r['backend']}: {r['info']['note']}" for r in rows if (r.get("info") or {}).get("note")))
    mach = describe()
    la = mach.get("load_average")
    notes.append(f"machine: {mach['cpu']}, {mach['physical_cores']} cores, {(mach['memory_bytes'] or 0) / 2**30:.0f} GiB"
                 + (f", load average {la[0]:.2f} at the end" if la else ""))
    return notes
