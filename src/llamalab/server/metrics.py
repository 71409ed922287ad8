"""Prometheus metrics (``GET /metrics``) and request logs with ids.

One registry per app (tests run several servers in one process). Counters move as
requests finish; the gauges (queue depth, busy slots, KV and prompt-store bytes) are read
from the engine at scrape time. Names follow llama.cpp's and vLLM's where they exist.
"""

from __future__ import annotations

import logging
import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("llamalab.server")

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The server's metrics; `state` gives the engine for the live gauges."""

    def __init__(self, state):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("llamalab_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.prompt_tokens = Counter("llamalab_prompt_tokens", "Prompt tokens received", registry=r)
        self.prompt_computed = Counter("llamalab_prompt_tokens_computed", "Prompt tokens computed (not reused from a cache)", registry=r)
        self.generated = Counter("llamalab_generation_tokens", "Tokens generated", registry=r)
        self.prompt_seconds = Counter("llamalab_prompt_seconds", "Time spent in prefill", registry=r)
        self.decode_seconds = Counter("llamalab_decode_seconds", "Time spent decoding after the first token", registry=r)
        self.prompt_tps = Gauge("llamalab_prompt_tokens_per_second", "Prefill speed of the last request", registry=r)
        self.decode_tps = Gauge("llamalab_decode_tokens_per_second", "Decode speed of the last request", registry=r)
        self.ttft = Histogram("llamalab_time_to_first_token_seconds", "Request start to first token (queueing included)",
                              buckets=TTFT_BUCKETS, registry=r)
        self.embedded = Counter("llamalab_embedding_inputs", "Inputs embedded", registry=r)

        def engine(attr, default=0):
            return lambda: (attr(state.engine) if state.engine is not None else default)

        Gauge("llamalab_queue_depth", "Requests waiting for a slot", registry=r).set_function(engine(lambda e: e.n_waiting))
        Gauge("llamalab_slots_busy", "Slots generating", registry=r).set_function(engine(lambda e: e.busy))
        Gauge("llamalab_slots", "Slots", registry=r).set_function(engine(lambda e: len(e.slots)))
        Gauge("llamalab_kv_cache_bytes", "Memory held by the slots' KV caches", registry=r).set_function(
            engine(lambda e: sum(s.cache.nbytes for s in e.slots)))
        Gauge("llamalab_kv_cache_used_tokens", "Positions filled in the slots' KV caches", registry=r).set_function(
            engine(lambda e: sum(s.cache.pos for s in e.slots)))
        Gauge("llamalab_prompt_store_bytes", "Memory held by saved prompt prefixes", registry=r).set_function(
            engine(lambda e: e.store.nbytes if e.store else 0))

    def finished(self, last, n_prompt: int) -> None:
        """One generation ended; `last` is its last Chunk (None: nothing generated)."""
        self.prompt_tokens.inc(n_prompt)
        if last is None:
            return
        self.prompt_computed.inc(n_prompt - last.n_cached)
        self.generated.inc(last.n_generated)
        self.prompt_seconds.inc(last.prompt_s)
        self.decode_seconds.inc(last.decode_s)
        if last.prompt_tps:
            self.prompt_tps.set(last.prompt_tps)
        if last.decode_tps:
            self.decode_tps.set(last.decode_tps)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestLog:
    """ASGI middleware: an id per request (X-Request-Id, the client's own if it sent one),
    counted by route and status, and logged with its time."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")[:64]
        rid = given if given.replace("-", "").isalnum() else f"req-{uuid.uuid4().hex[:16]}"
        scope.setdefault("state", {})["request_id"] = rid
        t0, status = time.perf_counter(), [500]

        async def send_with_id(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
                msg = {**msg, "headers": [*msg.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(msg)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope.get("path", "")
            route = path if path in _ROUTES else "other"
            self.metrics.requests.labels(route=route, status=str(status[0])).inc()
            if route not in ("/health", "/metrics"):
                log.info("%s %s %s %d %.1f ms", rid, scope.get("method"), path, status[0],
                         1e3 * (time.perf_counter() - t0))


_ROUTES = {"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/models", "/tokenize", "/detokenize",
           "/health", "/metrics", "/slots", "/"}
