"""N replicas of the server behind one OpenAI endpoint, with Ray Serve (the optional `ray` extra).

Each replica is the very app `llamalab serve` runs (``create_app``: engine, slots, batching,
prompt store, /metrics), wrapped as a Ray Serve deployment; Ray's HTTP proxy spreads the
requests over the replicas and passes streams through. A replica is ready only once its
model is loaded, and reports its health to Ray (``check_health``: model loaded, scheduler
alive), so Ray routes around a sick one and restarts it. Every response names the replica
that served it (``X-Llamalab-Replica``).

    llamalab serve MODEL --replicas 2 --threads 1                  # a local Ray instance
    llamalab serve MODEL --replicas 4 --ray-address ray://head:10001  # an existing cluster
"""

from __future__ import annotations

import os

from ..errors import LlamalabError

DEPLOYMENT = "llamalab"
LOAD_TIMEOUT_S = 600


def require_ray():
    """(ray, ray.serve), or a one-line error saying how to get them."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise LlamalabError("--replicas / --ray-address need Ray Serve: pip install 'llamalab[ray]'") from None
    return ray, serve


class ReplicaHeader:
    """ASGI middleware: names the replica in every response."""

    def __init__(self, app, name: str):
        self.app, self.name = app, name.encode()

    async def __call__(self, scope, receive, send):
        async def named(msg):
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", []), (b"x-llamalab-replica", self.name)]}
            await send(msg)

        return await self.app(scope, receive, named)


def deployment(model_path: str, *, replicas: int, threads: int | None, n_ctx: int | None, backend: str,
               settings, num_cpus: float | None = None):
    """The bound Ray Serve application: `replicas` copies of the server for `model_path`
    (a path every node can read, or a known name each node fetches)."""
    _, serve = require_ray()
    cpus = float(num_cpus if num_cpus is not None else (threads or 1))

    @serve.deployment(name=DEPLOYMENT, num_replicas=replicas, ray_actor_options={"num_cpus": cpus},
                      max_ongoing_requests=settings.parallel + settings.queue_size,
                      health_check_period_s=2, health_check_timeout_s=30, graceful_shutdown_timeout_s=5)
    @serve.ingress()
    class Replica:
        def __init__(self):
            import ray

            from ..api import LLM
            from .app import create_app

            os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # as `llamalab serve` does
            self.name = ray.get_runtime_context().get_actor_name() or f"pid-{os.getpid()}"
            self.server = create_app(lambda: LLM(model_path, threads=threads, n_ctx=n_ctx, backend=backend,
                                              progress=False), settings)
            self.server.add_middleware(ReplicaHeader, name=self.name)
            self.state = self.server.state.llamalab
            self.state.start_loading()  # now, so the replica is ready only once loaded
            if not self.state.loaded.wait(LOAD_TIMEOUT_S):
                raise LlamalabError(f"model not loaded after {LOAD_TIMEOUT_S} s")
            if self.state.error:
                raise LlamalabError(f"model failed to load: {self.state.error}")

        def __serve_build_asgi_app__(self):
            return self.server

        def check_health(self):
            """Called by Ray every few seconds: an exception marks the replica unhealthy."""
            if self.state.error:
                raise LlamalabError(f"model failed to load: {self.state.error}")
            sched = self.state.engine.scheduler if self.state.engine else None
            if sched is None or not sched.is_alive():
                raise LlamalabError("the scheduler thread is not running")

    return Replica.bind()


def run(model_path: str, *, host: str, port: int, replicas: int, ray_address: str | None, threads: int | None,
        n_ctx: int | None, backend: str, settings, blocking: bool = True):
    """Start (or join) Ray, deploy the replicas on host:port, and serve until interrupted."""
    ray, serve = require_ray()
    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    app = deployment(model_path, replicas=replicas, threads=threads, n_ctx=n_ctx, backend=backend, settings=settings)
    serve.run(app, name=DEPLOYMENT, route_prefix="/", blocking=blocking)
