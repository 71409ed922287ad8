"""`llamalab serve`: the OpenAI-compatible server with its chat page."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import InvalidArgumentError, LlamalabError


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
RUNTIME_MIB = 300  # Python + NumPy + Numba/LLVM code, threads, one chat-template render, request bodies


def memory_bound(cfg, file_bytes: int, n_ctx: int, parallel: int, cache_mb: int, kv_itemsize: int = 2) -> dict:
    """The server's worst-case resident memory, in MiB, as the settings imply it: the mapped model
    file, every slot's KV cache full, the prompt store at its budget, and the runtime."""
    kv = 2 * cfg.n_layers * cfg.kv_dim * n_ctx * kv_itemsize / 2**20  # keys and values, one slot
    parts = {"model file": file_bytes / 2**20, f"KV cache ({parallel} x {kv:,.0f})": parallel * kv,
             "prompt store (--cache-mb)": cache_mb, "runtime": RUNTIME_MIB}
    return {**parts, "total": sum(parts.values())}


def _bound_line(path: str, tokenizer, ctx, parallel: int, cache_mb: int, kv_itemsize: int = 2) -> str:
    import os

    from ..formats import load

    cfg = load(path, tokenizer).config
    n_ctx = min(ctx or cfg.context_length, cfg.context_length)
    b = memory_bound(cfg, os.path.getsize(path), n_ctx, parallel, cache_mb, kv_itemsize)
    parts = " + ".join(f"{k} {v:,.0f}" for k, v in b.items() if k != "total")
    return f"llamalab: memory bound {b['total']:,.0f} MiB = {parts} (lower --parallel, --ctx or --cache-mb to shrink it)"


def serve(
    model_arg: Optional[str] = typer.Argument(None, metavar="[MODEL]",
                                              help="Same as --model (kept for `llamalab serve model.gguf`)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Path to a .gguf / llama2.c .bin file, or a known name (see `llamalab list`; default: the default model)."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="llama2.c tokenizer.bin, for llama2.c checkpoints."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="TCP port (0: any free port)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="LLAMALAB_API_KEY",
                                          help="Require 'Authorization: Bearer KEY' on the API (not on /health, nor on the chat page, which asks for the key)."),
    parallel: int = typer.Option(4, "--parallel", "-np", min=1, max=64, help="Requests generated at once (slots)."),
    ctx: Optional[int] = typer.Option(None, "--ctx", "-c", min=1, help="Context size per slot (default: the model's)."),
    kv_type: str = typer.Option("f16", "--kv-type", help="KV cache type: f16 (llama.cpp's default) or f32 (exact, twice the memory)."),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", min=1, help="Compute threads (default: the physical cores other processes leave free, re-read every 0.5 s between steps)."),
    backend: str = typer.Option("fast", "--backend", help="fast (compiled quantized kernels) or reference (NumPy)."),
    queue: int = typer.Option(64, "--queue", min=0, help="Requests that may wait for a slot; more get 503."),
    cache_mb: int = typer.Option(512, "--cache-mb", min=0, help="Memory for saved prompt prefixes (LRU), MiB."),
    max_body_kb: int = typer.Option(2048, "--max-body-kb", min=1, help="Largest request body accepted, KiB."),
    read_timeout: float = typer.Option(30.0, "--read-timeout", min=0.1, help="Seconds a client may take to send its request body (then 408)."),
    log_level: str = typer.Option("info", "--log-level", help=f"Server log level: {', '.join(LOG_LEVELS)}."),
    replicas: int = typer.Option(1, "--replicas", min=1, max=256, help="Copies of the model behind one endpoint, with Ray Serve (>1 needs the ray extra)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Join this Ray cluster (e.g. ray://head:10001 or auto) instead of starting a local one."),
):
    """Serve MODEL over an OpenAI-compatible HTTP API, with a chat page at /."""
    import os

    # OpenMP workers that spin between parallel regions steal the cores the event loop and the
    # other requests' threads need (measured: 10x slower decoding under load); let them sleep.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    from ..api import LLM
    from ..runtime.kv_cache import kv_dtype
    from ..store import resolve_model
    from .app import create_app
    from .launch import bind, make_server
    from .service import Settings

    if backend not in ("fast", "reference"):
        raise InvalidArgumentError(f"--backend must be fast or reference, got {backend!r}")
    if log_level.lower() not in LOG_LEVELS:
        raise InvalidArgumentError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    kv_dtype(kv_type)  # a bad --kv-type fails before the model is fetched
    if model_arg and model and model_arg != model:
        raise InvalidArgumentError(f"two models given: {model_arg!r} and --model {model!r}; give one")
    path = str(resolve_model(model or model_arg, progress=True))  # fails fast on a bad name/path, before binding
    settings = Settings(parallel=parallel, queue_size=queue, cache_mb=cache_mb, api_key=api_key,
                        max_body=max_body_kb * 1024)
    if replicas > 1 or ray_address:
        from .ray_serve import run as run_ray

        print(f"llamalab: serving {path} with {replicas} Ray Serve replica(s) on http://{host}:{port}",
              file=sys.stderr)
        run_ray(path, host=host, port=port, replicas=replicas, ray_address=ray_address, threads=threads,
                n_ctx=ctx, backend=backend, settings=settings)
        return
    app = create_app(lambda: LLM(path, threads=threads, n_ctx=ctx, backend=backend, kv_type=kv_type, tokenizer=tokenizer,
                                 progress=False),
                     settings, read_timeout=read_timeout)
    try:
        sock = bind(host, port)
    except OSError as e:
        raise LlamalabError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    server = make_server(app, log_level.lower())
    failed: list[str] = []

    def on_load_error(msg: str) -> None:
        failed.append(msg)
        server.should_exit = True

    app.state.llamalab.on_load_error = on_load_error
    h, p = sock.getsockname()[:2]
    if h not in ("127.0.0.1", "::1") and not api_key:
        print(f"llamalab: warning: listening on {h} without --api-key: anyone who can reach this port can use the model",
              file=sys.stderr)
    print(f"llamalab: serving {path} on http://{h}:{p} (chat page at /, API at /v1); loading the model...",
          file=sys.stderr)
    try:
        print(_bound_line(path, tokenizer, ctx, parallel, cache_mb, kv_dtype(kv_type).itemsize), file=sys.stderr)
    except LlamalabError:
        pass  # the loader thread reports a bad file through /health and exits
    asyncio.run(server.serve(sockets=[sock]))
    if failed:
        raise LlamalabError(failed[0])
