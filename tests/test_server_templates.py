"""A model file whose chat template is hostile: the server answers each such request with one
400 line, keeps serving everything else meanwhile, and still stops at once on SIGTERM."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from gguf import GGMLQuantizationType

from llamalab import LLM
from llamalab.lab.synth import PRESETS, tiny_bpe_tokenizer, write_gguf
from llamalab.server import Settings, create_app, serve_in_thread

HOSTILE = Path(__file__).parent / "data" / "chat_templates" / "hostile"
LOOPS = (HOSTILE / "nested_loops.jinja").read_text()
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
N_HOSTILE = 24  # "a few dozen"


@pytest.fixture(scope="module")
def hostile_path(tmp_path_factory):
    cfg = dataclasses.replace(PRESETS["tiny"], context_length=128)
    tok = dataclasses.replace(tiny_bpe_tokenizer(), chat_template=LOOPS)
    return write_gguf(tmp_path_factory.mktemp("tpl") / "hostile.gguf", cfg, GGMLQuantizationType.F32, tokenizer=tok)


def flood(url: str, n: int) -> list:
    """n hostile chat requests at once, on threads; returns the futures."""
    pool = ThreadPoolExecutor(n)

    def one(_):
        with httpx.Client(timeout=120) as c:
            return c.post(url + "/v1/chat/completions", json=CHAT)

    futures = [pool.submit(one, i) for i in range(n)]
    pool.shutdown(wait=False)
    return futures


def test_hostile_template_flood_leaves_the_server_responsive(hostile_path):
    srv = serve_in_thread(create_app(lambda: LLM(hostile_path, backend="reference", threads=1, progress=False),
                                     Settings(model_id="hostile", parallel=2)))
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            http.post("/v1/completions", json={"prompt": "warm", "max_tokens": 1}).raise_for_status()
            futures = flood(srv.url, 10)
            time.sleep(0.5)  # renders under way
            worst = 0.0
            for _ in range(5):
                for call in (lambda: http.get("/v1/models"), lambda: http.post("/tokenize", json={"content": "hi"}),
                             lambda: http.post("/v1/completions", json={"prompt": "Once", "max_tokens": 2})):
                    t0 = time.monotonic()
                    call().raise_for_status()
                    worst = max(worst, time.monotonic() - t0)
            assert worst < 1.0, f"a normal request took {worst:.2f} s during the flood"
            replies = [f.result(timeout=120) for f in futures]
        assert {r.status_code for r in replies} <= {400, 503}
        bodies = [r.json()["error"]["message"] for r in replies if r.status_code == 400]
        assert bodies and all(re.fullmatch(r"chat template: exceeded (1,000,000 steps|1 s)", b) for b in bodies), bodies[:3]
    finally:
        srv.stop()


def test_serve_exits_on_sigterm_during_a_hostile_flood(hostile_path, tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "llamalab")
    log = tmp_path / "serve.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([exe, "serve", "--model", str(hostile_path), "--port", "0", "--backend", "reference",
                                 "--threads", "1", "--log-level", "info"],
                                stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (m := re.search(r"on (http://\S+) ", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        url = m.group(1)
        while True:
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        rss0 = psutil.Process(proc.pid).memory_info().rss
        futures = flood(url, N_HOSTILE)
        peak = rss0
        for _ in range(15):
            time.sleep(0.1)
            peak = max(peak, psutil.Process(proc.pid).memory_info().rss)
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        proc.wait(timeout=15)
        took = time.monotonic() - t0
        for f in futures:  # every client got an answer or a closed connection, none hangs
            try:
                f.result(timeout=30)
            except httpx.HTTPError:
                pass
        assert took < 5.0, f"SIGTERM took {took:.1f} s"
        assert "Traceback" not in log.read_text() and "Finished server process" in log.read_text()
        assert peak - rss0 < 300 * 2**20, f"RSS grew {(peak - rss0) / 2**20:.0f} MiB under the flood"
        bound = float(re.search(r"memory bound ([\d,]+) MiB", log.read_text()).group(1).replace(",", ""))
        assert peak < bound * 2**20, f"peak RSS {peak / 2**20:.0f} MiB over the stated bound {bound:.0f} MiB"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
