"""A short soak (about 20 s, tiny model): 16 streaming clients with random disconnects, malformed,
oversized and extreme requests against a server subprocess. Goals: no 5xx, nothing hung, every
stream ends with [DONE], every slot free afterwards, RSS flat after warm-up."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"


def backend() -> str:
    from llamalab import kernels

    return "fast" if hasattr(kernels, "set_threads") else "reference"


def test_short_soak(tmp_path):
    spec = importlib.util.spec_from_file_location("soak", SCRIPT)
    soak = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = soak  # dataclasses look their module up there
    spec.loader.exec_module(soak)
    out = tmp_path / "soak.json"
    status = soak.main(["--tiny", "--seconds", "20", "--clients", "16", "--parallel", "4", "--cache-mb", "2",
                        "--request-timeout", "25", "--backend", backend(), "--json", str(out)])
    r = json.loads(out.read_text())
    assert r["status_5xx"] == 0 and r["hung_requests"] == 0, r
    assert r["streams_without_done"] == 0 and r["n_unexpected"] == 0, r["unexpected"]
    assert r["busy_slots_after"] == 0 and r["health_after"] == 200
    assert r["requests_completed"] >= 30
    kinds = r["by_kind"]
    for kind in ("stream", "disconnect", "malformed", "oversized", "invalid", "extreme"):
        assert kinds.get(kind, 0) > 0, f"no {kind} request completed: {kinds}"
    assert r["disconnects"] > 0
    assert r["ttft_p50_ms"] <= r["ttft_p99_ms"]
    # the prompt store (2 MiB) fills during warm-up; after that memory must stay flat
    assert r["rss_end_mib"] - r["rss_after_warmup_mib"] < 24, r
    assert r["prompt_store_bytes"] <= 2 * 2**20
    assert status == 0
