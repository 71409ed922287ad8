"""Run the server under uvicorn: in the foreground (the CLI) or in a thread (tests, soak, bench)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import uvicorn


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app the moment shutdown begins (SIGTERM, Ctrl-C, stop()),
    so that requests still waiting (for a template render) get a 503 at once instead of being
    cancelled after the grace period."""

    def handle_exit(self, sig, frame) -> None:
        _closing(self.config.app)
        super().handle_exit(sig, frame)


def _closing(app) -> None:
    event = getattr(getattr(app, "state", None), "closing", None)
    if event is not None:
        event.set()


def make_server(app, log_level: str = "warning") -> uvicorn.Server:
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=3,
                            lifespan="on", ws="none")
    return _Server(config)


class RunningServer:
    """A uvicorn server on a background thread; `url` is its base address."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self.app = app
        self.sock = bind(host, port)
        h, p = self.sock.getsockname()[:2]
        self.url = f"http://{'[' + h + ']' if ':' in h else h}:{p}"
        self.server = make_server(app)
        self.thread = threading.Thread(target=self._run, name="llamalab-uvicorn", daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def start(self, timeout: float = 30.0) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def wait_ready(self, timeout: float = 120.0) -> RunningServer:
        """Block until the model has loaded; raises if loading failed."""
        state = self.app.state.llamalab
        if not state.loaded.wait(timeout):
            raise TimeoutError(f"model not loaded after {timeout} s")
        if state.error:
            raise RuntimeError(state.error)
        return self

    def stop(self) -> None:
        _closing(self.app)
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, ready: bool = True) -> RunningServer:
    """Start `app` on a free loopback port; with `ready`, wait for the model too."""
    server = RunningServer(app, host, port).start()
    return server.wait_ready() if ready else server
