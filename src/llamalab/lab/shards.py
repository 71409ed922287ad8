"""A study split by hand across processes or machines: ``study --shard I/N`` runs every N-th
(model, backend, threads) group from I; ``study merge DIR...`` joins the shards' results.json
into one report, with one machine section per distinct machine (hostname + probe).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import InvalidArgumentError


def parse_shard(text: str) -> tuple[int, int]:
    """'1/3' -> (1, 3); I counts from 0."""
    i, sep, n = text.partition("/")
    try:
        i_, n_ = int(i), int(n)
    except ValueError:
        i_, n_ = -1, 0
    if not sep or n_ < 1 or not 0 <= i_ < n_:
        raise InvalidArgumentError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/2")
    return i_, n_


def take_shard(plans: list, skips: list, i: int, n: int) -> tuple[list, list]:
    """Plans i, i+n, i+2n, ...; the cells decided before running (skips) go with shard 0."""
    return [p for k, p in enumerate(plans) if k % n == i], (skips if i == 0 else [])


def machine_name(m: dict) -> str:
    """The Ray node label where there is one, else the hostname."""
    return m.get("node") or m.get("hostname") or "?"


def machine_key(m: dict) -> str:
    return f"{machine_name(m)} ({m.get('cpu')})"


def merge_results(results: list[dict]) -> dict:
    """One result from several: cells concatenated (backend labelled with its machine when they differ)."""
    if not results:
        raise InvalidArgumentError("study merge: no results to merge")
    machines = {}
    for r in results:
        machines.setdefault(machine_key(r["machine"]), r["machine"])
    many = len(machines) > 1
    cells, backends, models, refs, seen_models = [], [], [], {}, set()
    for r in results:
        host = machine_name(r["machine"])
        for c in r["cells"]:
            c = dict(c)
            c["machine"] = machine_key(r["machine"])
            if many:
                c["backend"] = f"{c['backend']} @ {host}"
            cells.append(c)
        for b in r["backends"]:
            if b["status"] == "not run":  # a backend whose cells went to another shard
                continue
            b = dict(b)
            if many:
                b["backend"] = f"{b['backend']} @ {host}"
            backends.append(b)
        for m in r["models"]:
            if m["label"] not in seen_models:
                seen_models.add(m["label"])
                models.append(m)
        refs.update(r.get("reference_tokens") or {})
    first = results[0]
    meta = dict(first["meta"])
    meta["merged_from"] = len(results)
    meta["command"] = re.sub(r" --shard \d+/\d+", "", meta["command"])  # the whole study, not its first shard
    meta["shard"] = None
    meta["duration_s"] = sum(r["meta"]["duration_s"] for r in results)
    meta["notes"] = list(dict.fromkeys(n for r in results for n in r["meta"].get("notes", [])))
    meta["baseline"] = None if many else meta.get("baseline")
    return {"meta": meta, "machine": first["machine"], "machines": list(machines.values()), "models": models,
            "backends": _dedupe_status(backends), "cells": cells, "reference_tokens": refs}


def _dedupe_status(rows: list[dict]) -> list[dict]:
    """A backend in several shards: ok if ok anywhere, else its first reason."""
    out: dict[str, dict] = {}
    for b in rows:
        have = out.get(b["backend"])
        if have is None or (have["status"] != "ok" and b["status"] == "ok"):
            out[b["backend"]] = b
    return list(out.values())


def merge_dirs(dirs: list[Path], out: Path, charts: bool = True) -> dict:
    """Read each DIR/results.json, merge, and write the merged report into out."""
    results = []
    for d in dirs:
        f = Path(d) / "results.json"
        if not f.is_file():
            raise InvalidArgumentError(f"study merge: {f} not found (expected a study's output folder)")
        results.append(json.loads(f.read_text()))
    return write_merged(results, out, charts)


def write_merged(results: list[dict], out: Path, charts: bool, command_suffix: str = "") -> dict:
    """Merge the studies' results and write results.json, results.csv, report.md (and charts) into out."""
    from .charts import study_charts
    from .report import study_csv, study_markdown

    merged = merge_results(results)
    merged["meta"]["command"] += command_suffix
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    merged["charts"] = study_charts(merged, out) if charts else []
    (out / "results.json").write_text(json.dumps(merged, indent=1, default=str) + "\n")
    (out / "results.csv").write_text(study_csv(merged["cells"]))
    (out / "report.md").write_text(study_markdown(merged) + "\n")
    return merged
