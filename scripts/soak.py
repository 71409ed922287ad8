#!/usr/bin/env python3
"""Soak test for `llamalab serve`: many streaming clients for a while, with abuse mixed in.

Starts the server as a subprocess on a free loopback port (or uses --url, loopback only),
then runs --clients concurrent clients until --seconds/--minutes are up. Each client loops
over: streaming chat/completions (the bulk), disconnects mid-stream, non-streaming
requests, extreme-but-valid parameters, invalid parameters, malformed JSON, oversized
bodies and context overflows. Every loop is bounded by the deadline and every request by
--request-timeout, so the run always stops by itself.

Reports requests completed, 5xx responses (goal 0), hung requests (goal 0), unexpected
statuses, streams that ended without [DONE], p50/p99 time to first token, and the server's
RSS after loading, after warm-up and at the end (flat after warm-up). Exit status 1 when
a goal is missed.

    python scripts/soak.py --minutes 10                 # the default model
    python scripts/soak.py --tiny --seconds 25 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psutil

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
WORDS = ("the little girl named Lily went to the park with her dog and saw a big red ball under a tree "
         "once upon a time there was a happy cat who liked to play in the sun").split()


@dataclass
class Stats:
    completed: int = 0  # requests that got the response they should (2xx, or the expected 4xx)
    by_kind: dict = field(default_factory=dict)
    status_5xx: int = 0
    hung: int = 0
    unexpected: list = field(default_factory=list)  # (kind, status, body head)
    no_done: int = 0  # streams that ended without [DONE]
    disconnects: int = 0
    ttft: list = field(default_factory=list)
    tokens: int = 0

    def ok(self, kind: str) -> None:
        self.completed += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def messages(rng: random.Random) -> list[dict]:
    turns = [{"role": "user", "content": words(rng, rng.randint(1, 20))}]
    if rng.random() < 0.3:
        turns = [{"role": "system", "content": "You are brief."}] + turns
    if rng.random() < 0.3:  # a follow-up turn: exercises prefix reuse
        turns += [{"role": "assistant", "content": words(rng, 8)}, {"role": "user", "content": words(rng, 5)}]
    return turns


def extreme_params(rng: random.Random) -> dict:
    """Valid values at the edges of their ranges."""
    return rng.choice([
        {"temperature": 0.0}, {"temperature": 2.0}, {"top_k": 1}, {"top_k": 10**6}, {"top_p": 1e-9},
        {"top_p": 1.0, "top_k": 0, "min_p": 0.0}, {"min_p": 1.0}, {"repeat_penalty": 10.0}, {"repeat_penalty": 1e-3},
        {"frequency_penalty": 2.0, "presence_penalty": -2.0}, {"frequency_penalty": -2.0, "presence_penalty": 2.0},
        {"seed": 2**64 - 1}, {"seed": 0}, {"max_tokens": 1}, {"max_tokens": 10**9, "temperature": 0.0},
        {"stop": ["\n", "the", "é", "🙂", "a b", "x" * 256] + ["zz"] * 10}, {"stop": ""},
        {"logprobs": True, "top_logprobs": 20}, {"ignore_eos": True, "max_tokens": 64},
    ])


def invalid_params(rng: random.Random) -> dict:
    return rng.choice([
        {"temperature": -1}, {"temperature": 1e309}, {"top_p": 0}, {"top_k": -1}, {"min_p": 2}, {"max_tokens": 0},
        {"max_tokens": -5}, {"seed": -1}, {"seed": 2**64}, {"n": 99}, {"stop": ["a"] * 100}, {"stop": 7},
        {"top_logprobs": 100}, {"repeat_penalty": 0}, {"temperature": "warm"}, {"messages": []},
        {"messages": [{"role": "robot", "content": "hi"}]}, {"messages": [{"content": "no role"}]},
        {"max_tokens": True}, {"suffix": "x"}, {"logit_bias": {"x": 1}}, {"response_format": {"type": "json_schema", "json_schema": {"schema": {"not": {}}}}},
    ])


class Soak:
    def __init__(self, url: str, args, stats: Stats):
        self.url, self.args, self.stats = url, args, stats
        self.deadline = time.monotonic() + args.seconds

    async def client(self, index: int) -> None:
        rng = random.Random(self.args.seed * 1000 + index)
        limits = httpx.Limits(max_connections=4)
        async with httpx.AsyncClient(base_url=self.url, timeout=self.args.request_timeout, limits=limits) as http:
            while time.monotonic() < self.deadline:
                kind = rng.choices(
                    ["stream", "disconnect", "plain", "extreme", "invalid", "malformed", "oversized", "overflow"],
                    weights=[50, 12, 8, 12, 6, 4, 4, 4])[0]
                try:
                    await asyncio.wait_for(getattr(self, kind)(http, rng), self.args.request_timeout)
                except (asyncio.TimeoutError, httpx.TimeoutException):
                    self.stats.hung += 1
                except httpx.TransportError as e:  # the server dropped us: as bad as a 5xx
                    self.stats.unexpected.append((kind, "transport", repr(e)[:200]))

    def _check(self, kind: str, status: int, body: str, expect: tuple[int, ...]) -> bool:
        if status >= 500:
            self.stats.status_5xx += 1
        if status in expect:
            self.stats.ok(kind)
            return True
        self.stats.unexpected.append((kind, status, body[:200]))
        return False

    def _body(self, rng: random.Random, **extra) -> tuple[str, dict]:
        chat = rng.random() < 0.6
        body = {"max_tokens": rng.randint(1, self.args.max_tokens), "temperature": rng.choice([0.0, 0.7, 1.0]),
                "seed": rng.randrange(1000)}
        body["messages" if chat else "prompt"] = messages(rng) if chat else words(rng, rng.randint(1, 30))
        body.update(extra)
        if not chat and body.get("logprobs") is True:  # completions take a count instead
            body["logprobs"] = 5
            body.pop("top_logprobs", None)
        return ("/v1/chat/completions" if chat else "/v1/completions"), body

    async def stream(self, http, rng, extra=None, kind="stream", cut_after: int | None = None) -> None:
        path, body = self._body(rng, stream=True, stream_options={"include_usage": True}, **(extra or {}))
        t0 = time.perf_counter()
        async with http.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                self._check(kind, r.status_code, (await r.aread()).decode(errors="replace"), (200,))
                return
            first, done, n = None, False, 0
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                event = json.loads(line[6:])
                if "error" in event:
                    self.stats.status_5xx += 1
                    self.stats.unexpected.append((kind, "stream-error", line[:200]))
                    return
                ch = event["choices"][0] if event["choices"] else None
                if ch and first is None and (ch.get("text") or (ch.get("delta") or {}).get("content") or ch["finish_reason"]):
                    first = time.perf_counter() - t0
                if event.get("usage"):
                    self.stats.tokens += event["usage"]["completion_tokens"]
                n += 1
                if cut_after is not None and n >= cut_after:
                    self.stats.disconnects += 1
                    self.stats.ok(kind)
                    return  # leaving the block closes the connection mid-stream
        if first is not None:
            self.stats.ttft.append(first)
        if done:
            self.stats.ok(kind)
        else:
            self.stats.no_done += 1

    async def disconnect(self, http, rng) -> None:
        await self.stream(http, rng, {"max_tokens": self.args.max_tokens, "ignore_eos": True}, "disconnect",
                          cut_after=rng.randint(1, 6))

    async def extreme(self, http, rng) -> None:
        extra = extreme_params(rng)
        if rng.random() < 0.5:
            await self.stream(http, rng, extra, "extreme")
            return
        path, body = self._body(rng, **extra)
        r = await http.post(path, json=body)
        self._check("extreme", r.status_code, r.text, (200,))

    async def plain(self, http, rng) -> None:
        path, body = self._body(rng)
        r = await http.post(path, json=body)
        if self._check("plain", r.status_code, r.text, (200,)):
            self.stats.tokens += r.json()["usage"]["completion_tokens"]

    async def invalid(self, http, rng) -> None:
        path, body = self._body(rng)
        bad = invalid_params(rng)
        if "messages" in bad:
            path, body = "/v1/chat/completions", {k: v for k, v in body.items() if k != "prompt"}
        body.update(bad)
        if bad.get("temperature") == 1e309:  # JSON has no infinity: send the literal text
            r = await http.post(path, content=json.dumps(body).replace("Infinity", "1e309"),
                                headers={"content-type": "application/json"})
        else:
            r = await http.post(path, json=body)
        self._check("invalid", r.status_code, r.text, (400,))

    async def malformed(self, http, rng) -> None:
        raw = rng.choice([b"{", b'{"prompt": "x",}', b"\x00\xff\xfe garbage", b"[]", b"null", b'{"prompt": }',
                          b'{"messages": [{"role": "user", "content": "hi"}]', b"", "\"caf\u00e9\"".encode("latin-1")])
        path = rng.choice(["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"])
        r = await http.post(path, content=raw, headers={"content-type": "application/json"})
        self._check("malformed", r.status_code, r.text, (400,))

    async def oversized(self, http, rng) -> None:
        big = {"prompt": "x" * (self.args.max_body_kb * 1024 + rng.randint(1, 50_000)), "max_tokens": 1}
        data = json.dumps(big).encode()
        if rng.random() < 0.5:
            r = await http.post("/v1/completions", content=data, headers={"content-type": "application/json"})
        else:  # chunked, no Content-Length

            async def parts():
                for i in range(0, len(data), 16384):
                    yield data[i : i + 16384]

            r = await http.post("/v1/completions", content=parts(), headers={"content-type": "application/json"})
        self._check("oversized", r.status_code, r.text, (413,))

    async def overflow(self, http, rng) -> None:
        n = self.args.ctx + rng.randint(1, 100)
        body = json.dumps({"prompt": [rng.randrange(3, 200) for _ in range(n)], "max_tokens": 4})
        too_big = len(body) > self.args.max_body_kb * 1024  # then the body limit answers first
        r = await http.post("/v1/completions", content=body, headers={"content-type": "application/json"})
        if self._check("overflow", r.status_code, r.text, (413,) if too_big else (400,)) and "context" not in r.text \
                and not too_big:
            self.stats.unexpected.append(("overflow", 400, "message does not mention the context"))


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def tiny_model(folder: Path) -> Path:
    """A small synthetic model (random weights) for a quick soak."""
    import dataclasses

    from gguf import GGMLQuantizationType

    from llamalab.lab.synth import PRESETS, tiny_bpe_tokenizer, write_gguf

    cfg = dataclasses.replace(PRESETS["tiny"], context_length=512)
    return write_gguf(folder / "soak-tiny.gguf", cfg, GGMLQuantizationType.Q8_0, tokenizer=tiny_bpe_tokenizer(), seed=1)


def start_server(args, model: str, log: Path) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "llamalab.cli", "serve", model, "--host", "127.0.0.1", "--port", "0",
           "--parallel", str(args.parallel), "--ctx", str(args.ctx), "--cache-mb", str(args.cache_mb),
           "--max-body-kb", str(args.max_body_kb), "--queue", str(args.clients * 2), "--log-level", "warning",
           "--backend", args.backend]
    if getattr(args, "threads", None):
        cmd += ["--threads", str(args.threads)]
    out = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + args.load_timeout
    url = None
    while time.monotonic() < deadline and proc.poll() is None:
        if url is None:
            m = re.search(r"on (http://127\.0\.0\.1:\d+)", log.read_text())
            url = m[1] if m else None
        if url:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start:\n{log.read_text()[-2000:]}")


async def sample_rss(proc: psutil.Process, until: float, out: list) -> None:
    while time.monotonic() < until:
        try:
            out.append((time.monotonic(), proc.memory_info().rss))
        except psutil.Error:
            return
        await asyncio.sleep(0.5)


async def run(url: str, pid: int | None, args) -> dict:
    stats = Stats()
    soak = Soak(url, args, stats)
    rss: list = []
    t0 = time.monotonic()
    tasks = [asyncio.create_task(soak.client(i)) for i in range(args.clients)]
    sampler = None
    if pid is not None:
        sampler = asyncio.create_task(sample_rss(psutil.Process(pid), soak.deadline + args.request_timeout, rss))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t0
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:  # afterwards: healthy, nothing left running
        for _ in range(50):  # the last disconnects take a moment to reach their slots
            slots = (await http.get("/slots")).json()
            if not any(s["busy"] for s in slots["slots"]):
                break
            await asyncio.sleep(0.2)
        health = (await http.get("/health")).status_code
    if sampler:
        sampler.cancel()
    busy = sum(s["busy"] for s in slots["slots"])
    warm = [r for t, r in rss if t - t0 >= args.seconds * args.warmup]
    mib = lambda b: round(b / 2**20, 1)  # noqa: E731
    return {
        "seconds": round(elapsed, 1), "clients": args.clients, "requests_completed": stats.completed,
        "by_kind": stats.by_kind, "tokens_generated": stats.tokens, "status_5xx": stats.status_5xx,
        "hung_requests": stats.hung, "streams_without_done": stats.no_done, "disconnects": stats.disconnects,
        "unexpected": stats.unexpected[:20], "n_unexpected": len(stats.unexpected),
        "ttft_p50_ms": round(percentile(stats.ttft, 0.5) * 1000, 1),
        "ttft_p99_ms": round(percentile(stats.ttft, 0.99) * 1000, 1),
        "rss_start_mib": mib(rss[0][1]) if rss else None,
        "rss_after_warmup_mib": mib(warm[0]) if warm else None,
        "rss_end_mib": mib(rss[-1][1]) if rss else None,
        "rss_max_mib": mib(max(r for _, r in rss)) if rss else None,
        "health_after": health, "busy_slots_after": busy, "prompt_store_bytes": slots["prompt_store_bytes"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--minutes", type=float, help="Duration in minutes.")
    g.add_argument("--seconds", type=float, help="Duration in seconds (default 60).")
    p.add_argument("--model", help="Model path or known name (default: the default model).")
    p.add_argument("--tiny", action="store_true", help="Use a small synthetic model (quick check).")
    p.add_argument("--url", help="Soak an already running server instead (loopback only; no RSS then).")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--parallel", type=int, default=4, help="Server slots.")
    p.add_argument("--ctx", type=int, default=512, help="Server context per slot.")
    p.add_argument("--cache-mb", type=int, default=64, help="Server prompt-store budget (MiB).")
    p.add_argument("--max-body-kb", type=int, default=64, help="Server body limit (KiB).")
    p.add_argument("--max-tokens", type=int, default=48, help="Largest max_tokens a normal request asks for.")
    p.add_argument("--request-timeout", type=float, default=60.0, help="Seconds after which a request counts as hung.")
    p.add_argument("--load-timeout", type=float, default=300.0)
    p.add_argument("--warmup", type=float, default=0.25, help="Fraction of the run before the RSS baseline.")
    p.add_argument("--backend", default="fast")
    p.add_argument("--threads", type=int, help="Server compute threads (default: physical cores).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="Also write the report here.")
    args = p.parse_args(argv)
    args.seconds = args.minutes * 60 if args.minutes is not None else (args.seconds or 60.0)
    if args.clients < 1 or args.seconds <= 0:
        p.error("--clients and the duration must be positive")

    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.url:
            host = urlparse(args.url).hostname
            if host not in LOOPBACK:
                p.error(f"--url must be a loopback address, got {host!r}")
            url, pid = args.url.rstrip("/"), None
        else:
            model = str(tiny_model(Path(tmp))) if args.tiny else (args.model or "")
            if not model:
                from llamalab.store import default_model_path

                model = str(default_model_path())
            proc, url = start_server(args, model, Path(tmp) / "server.log")
            pid = proc.pid
        try:
            report = asyncio.run(run(url, pid, args))
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    for k, v in report.items():
        print(f"{k:24} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    failed = (report["status_5xx"] or report["hung_requests"] or report["streams_without_done"]
              or report["n_unexpected"] or report["busy_slots_after"] or report["health_after"] != 200)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
