"""Ray Serve: 2 replicas (1 thread each) of the server behind one endpoint, on a local Ray
instance. Concurrent clients are spread over both; killing one replica mid-run gives its
clients an error (not a hang) while the other's finish, and new requests keep being served.

Skipped where Ray Serve is not installed (it is the optional `ray` extra)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from gguf import GGMLQuantizationType

ray = pytest.importorskip("ray", reason="Ray Serve is the optional 'ray' extra: pip install 'llamalab[ray]'")
serve = pytest.importorskip("ray.serve", reason="Ray Serve is the optional 'ray' extra: pip install 'llamalab[ray]'")

import llamalab  # noqa: E402
from llamalab.lab.synth import PRESETS, tiny_bpe_tokenizer, write_gguf  # noqa: E402
from llamalab.server import Settings  # noqa: E402
from llamalab.server.ray_serve import run as run_ray  # noqa: E402

pytestmark = pytest.mark.slow  # starting Ray and two replicas takes ~30 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    cfg = dataclasses.replace(PRESETS["tiny"], context_length=2048)
    path = write_gguf(tmp_path_factory.mktemp("ray") / "tiny.gguf", cfg, GGMLQuantizationType.Q8_0,
                      tokenizer=tiny_bpe_tokenizer(), seed=3)
    src = str(Path(llamalab.__file__).parents[1])  # the replicas import this very checkout
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": src, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}})
    port = free_port()
    try:
        run_ray(str(path), host="127.0.0.1", port=port, replicas=2, ray_address=None, threads=1, n_ctx=2048,
                backend="reference", settings=Settings(model_id="tiny", parallel=4), blocking=False)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def stream(url: str, max_tokens: int, out: dict, started: threading.Event | None = None) -> None:
    """One streaming chat; records the replica, the text, how it ended."""
    body = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": max_tokens,
            "stream": True, "ignore_eos": True, "temperature": 0}
    text, n = [], 0
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
            out["status"] = r.status_code
            out["replica"] = r.headers.get("x-llamalab-replica")
            if started:
                started.set()
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                c = json.loads(line[6:])
                if "error" in c:
                    out["error"] = c["error"]["message"]
                    return
                for ch in c["choices"]:
                    text.append(ch["delta"].get("content") or "")
                    out["finish"] = ch["finish_reason"] or out.get("finish")
                n += 1
    except httpx.HTTPError as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        out["text"], out["chunks"] = "".join(text), n


def test_requests_spread_over_both_replicas(endpoint):
    outs = [{} for _ in range(8)]
    threads = [threading.Thread(target=stream, args=(endpoint, 64, o)) for o in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(o.get("status") == 200 and o.get("finish") == "length" for o in outs), outs
    assert len({o["replica"] for o in outs}) == 2
    assert len({o["text"] for o in outs}) == 1  # greedy: every replica gives the same text


def test_killed_replica_gives_clean_errors_and_service_goes_on(endpoint):
    outs = [{} for _ in range(6)]
    started = [threading.Event() for _ in outs]
    threads = [threading.Thread(target=stream, args=(endpoint, 1500, o, e)) for o, e in zip(outs, started)]
    for t in threads:
        t.start()
    assert all(e.wait(60) for e in started)
    time.sleep(0.5)
    victim = outs[0]["replica"]
    ray.kill(ray.get_actor(victim, namespace="serve"))
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a client hung"
    for o in outs:
        if o["replica"] == victim:
            assert "error" in o and o.get("finish") is None, o  # cut short, and the client knows it
        else:
            assert o.get("finish") == "length" and "error" not in o, o
    for _ in range(4):  # the survivor (and the restarted replica, once up) keep serving
        r = httpx.post(endpoint + "/v1/completions", json={"prompt": "hi", "max_tokens": 4}, timeout=60)
        assert r.status_code == 200, r.text
