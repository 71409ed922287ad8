"""Total tokens/s of N Ray Serve replicas (1 thread each) behind one endpoint, against 1 replica.

    python scripts/ray_bench.py [MODEL] [--replicas 1 2] [--clients 4] [--tokens 64] [--rounds 2]

Each round: `clients` concurrent streaming chats of `tokens` greedy tokens (ignore_eos);
total tok/s = all generated tokens / wall time of the round. Needs the `ray` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx


def one(url: str, tokens: int, out: list) -> None:
    body = {"messages": [{"role": "user", "content": "Write a story about a robot."}], "max_tokens": tokens,
            "stream": True, "ignore_eos": True, "temperature": 0, "cache_prompt": False}
    n = 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        replica = r.headers.get("x-llamalab-replica")
        for line in r.iter_lines():
            if line.startswith("data: {"):
                c = json.loads(line[6:])
                n += sum(1 for ch in c["choices"] if ch["delta"].get("content"))
    out.append((n, replica))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="smollm2-135m")
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    import ray
    from ray import serve

    import llamalab
    from llamalab.server import Settings
    from llamalab.server.ray_serve import run
    from llamalab.store import resolve_model

    path = str(resolve_model(a.model, progress=True))
    src = str(Path(llamalab.__file__).parents[1])
    ray.init(include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": src, "OMP_NUM_THREADS": "1"}})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    for n in a.replicas:
        run(path, host="127.0.0.1", port=port, replicas=n, ray_address=None, threads=1, n_ctx=1024, backend="fast",
            settings=Settings(parallel=4), blocking=False)
        one(url, 8, [])  # warm-up
        rates = []
        for _ in range(a.rounds):
            out: list = []
            t0 = time.perf_counter()
            ts = [threading.Thread(target=one, args=(url, a.tokens, out)) for _ in range(a.clients)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            rates.append(sum(k for k, _ in out) / (time.perf_counter() - t0))
        used = len({r for _, r in out})
        print(f"{n} replica(s): {statistics.median(rates):.1f} tok/s total (median of {a.rounds}; "
              f"{a.clients} clients x {a.tokens} tokens; last round used {used} replica(s))", flush=True)
        serve.delete("llamalab")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
