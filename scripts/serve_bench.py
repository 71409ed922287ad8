#!/usr/bin/env python3
"""Throughput of `llamalab serve` with 1 client and with N concurrent clients.

Starts the server as a subprocess on a free loopback port (or uses --url), sends a warm-up
request (excluded), then for each client count runs `--rounds` rounds in which every client
streams one completion of exactly --tokens tokens (ignore_eos, greedy). Reports generated
tokens per second over the wall time of each round (min/median/max), and time to first
token. With continuous batching, N clients should get more tokens/s in total than one.

    python scripts/serve_bench.py                     # default model, 1 vs 8 clients
    python scripts/serve_bench.py --clients 1 4 8 --tokens 64 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak import LOOPBACK, start_server  # noqa: E402  (same server launcher)

PROMPTS = ["Write a short story about a robot who learns to paint.", "Explain how rain forms, step by step.",
           "List some tips for learning a new language.", "Describe a walk through a busy market.",
           "What makes a good cup of tea?", "Tell me about the history of bicycles.",
           "How do bees make honey?", "Give advice to someone starting to run."]


def one_request(url: str, prompt: str, tokens: int, out: list, i: int) -> None:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first, n = None, 0
    with httpx.Client(timeout=600) as c, c.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev.get("usage"):
                n = ev["usage"]["completion_tokens"]
            elif first is None and ev["choices"] and ev["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - t0
    out[i] = (n, first, time.perf_counter() - t0)


def round_(url: str, clients: int, tokens: int) -> dict:
    out: list = [None] * clients
    threads = [threading.Thread(target=one_request, args=(url, PROMPTS[i % len(PROMPTS)], tokens, out, i))
               for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    total = sum(n for n, _, _ in out)
    return {"tokens": total, "wall_s": wall, "tps": total / wall, "ttft_s": [f for _, f, _ in out]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="Model path or known name (default: the default model).")
    p.add_argument("--url", help="Bench an already running server (loopback only).")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    p.add_argument("--tokens", type=int, default=64, help="Tokens generated per request.")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--parallel", type=int, default=8, help="Server slots.")
    p.add_argument("--ctx", type=int, default=1024)
    p.add_argument("--threads", type=int, default=None, help="Server compute threads.")
    p.add_argument("--backend", default="fast")
    p.add_argument("--json", help="Also write the results here.")
    args = p.parse_args(argv)

    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.url:
            if httpx.URL(args.url).host not in LOOPBACK:
                p.error("--url must be a loopback address")
            url = args.url.rstrip("/")
        else:
            model = args.model
            if not model:
                from llamalab.store import default_model_path

                model = str(default_model_path())
            ns = argparse.Namespace(parallel=args.parallel, ctx=args.ctx, cache_mb=64, max_body_kb=1024,
                                    clients=max(args.clients), backend=args.backend, load_timeout=600,
                                    threads=args.threads)
            proc, url = start_server(ns, model, Path(tmp) / "server.log")
        try:
            round_(url, 1, 8)  # warm-up: compiled kernels, caches
            results = {}
            for n in args.clients:
                rounds = [round_(url, n, args.tokens) for _ in range(args.rounds)]
                tps = [r["tps"] for r in rounds]
                ttft = sorted(f for r in rounds for f in r["ttft_s"] if f is not None)
                results[n] = {"tps_min": min(tps), "tps_median": statistics.median(tps), "tps_max": max(tps),
                              "ttft_median_ms": 1000 * statistics.median(ttft) if ttft else None,
                              "tokens_per_round": rounds[0]["tokens"]}
                print(f"{n:3d} client(s): {statistics.median(tps):7.1f} tok/s total (min {min(tps):.1f}, "
                      f"max {max(tps):.1f}); median time to first token "
                      f"{results[n]['ttft_median_ms']:.0f} ms", flush=True)
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if len(args.clients) > 1:
        lo, hi = min(args.clients), max(args.clients)
        print(f"speed-up {hi} vs {lo} client(s): {results[hi]['tps_median'] / results[lo]['tps_median']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
