"""FastAPI routes: validate, hand over to the service, stream or fold. Nothing else lives here."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Callable

import anyio
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from ..errors import ContextOverflowError, InvalidArgumentError, LlamalabError
from .engine import QueueFullError
from .guard import Guard
from .metrics import RequestLog
from .schemas import (ChatRequest, CompletionRequest, DetokenizeRequest, EmbeddingRequest, Envelope, TokenizeRequest,
                      error_body, fold)
from .service import NotReadyError, ServerState, Settings, merged_chunks, openai_chunks

log = logging.getLogger("llamalab.server")


def create_app(loader: Callable[[], object], settings: Settings = Settings(), read_timeout: float = 30.0) -> FastAPI:
    """The server for the LLM that `loader()` returns (called in a background thread at start-up).
    A request body must arrive within `read_timeout` seconds (408 otherwise)."""
    state = ServerState(loader, settings)
    # Chat templates come with the model file and may be hostile: each render is bounded (text/
    # template_sandbox.py), and they run one at a time on a thread of their own, waiting here
    # without holding a worker thread, so that a flood of them cannot starve the other routes.
    templates = anyio.CapacityLimiter(1)
    closing = threading.Event()  # set by launch.py when shutdown begins

    @asynccontextmanager
    async def lifespan(app):
        state.start_loading()
        yield
        state.stop()

    app = FastAPI(title="llamalab", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.llamalab = state
    app.state.closing = closing
    app.add_middleware(Guard, api_key=settings.api_key, max_body=settings.max_body, read_timeout=read_timeout)
    app.add_middleware(RequestLog, metrics=state.metrics)
    _add_error_handlers(app)

    @app.get("/health")
    async def health():
        if state.llm is not None:
            return {"status": "ok"}
        if state.error:
            return JSONResponse(error_body(f"model failed to load: {state.error}", "server_error", code=500), 500)
        return JSONResponse(error_body("model is loading", "unavailable_error", code=503), 503)

    @app.get("/", response_class=HTMLResponse)
    async def chat_page():
        return HTMLResponse(resources.files(__package__).joinpath("static/index.html").read_text("utf-8"))

    @app.get("/v1/models")
    async def models():
        llm = state.ready()
        cfg = llm.config
        return {"object": "list", "data": [{
            "id": state.model_id, "object": "model", "created": state.created, "owned_by": "llamalab",
            "meta": {"n_ctx": llm.n_ctx, "n_ctx_train": cfg.context_length, "n_vocab": cfg.vocab_size,
                     "n_params": cfg.n_params(), "n_slots": len(state.engine.slots)},
        }]}

    @app.get("/slots")
    async def slots():
        state.ready()
        return state.engine.cache_report()

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        prompt = await run_in_threadpool(state.completion_prompt, req)
        return await _generate(state, request, "text", prompt, req, req.max_tokens, req.logprobs or 0,
                               req.logprobs is not None)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request):
        state.ready()
        if templates.statistics().tasks_waiting >= settings.queue_size:
            raise QueueFullError("too many chat requests waiting for their template; retry later")

        def render():
            if closing.is_set():
                raise NotReadyError("the server is shutting down")
            return state.chat_prompt(req)

        prompt, plan = await anyio.to_thread.run_sync(render, limiter=templates)
        top = req.top_logprobs or 0
        return await _generate(state, request, "chat", prompt, req, req.token_limit, top, req.logprobs or top > 0,
                               plan)

    @app.post("/v1/embeddings")
    async def embeddings(req: EmbeddingRequest):
        state.ready()
        return await run_in_threadpool(state.embed, req)

    @app.get("/metrics")
    async def metrics():
        body, content_type = state.metrics.exposition()
        return Response(body, media_type=content_type)

    @app.post("/tokenize")
    async def tokenize(req: TokenizeRequest):
        llm = state.ready()
        add = None if req.add_special else False  # None: as the model's tokenizer says
        ids = await run_in_threadpool(llm.tokenizer.encode, req.content, add, req.parse_special, add)
        if req.with_pieces:
            pieces = [{"id": i, "piece": llm.tokenizer.token_bytes(i).decode("utf-8", errors="replace")} for i in ids]
            return {"tokens": pieces}
        return {"tokens": ids}

    @app.post("/detokenize")
    async def detokenize(req: DetokenizeRequest):
        llm = state.ready()
        return {"content": llm.detokenize(state.check_ids(req.tokens, "tokens"))}

    return app


async def _generate(state: ServerState, request: Request, kind: str, prompt: list[int], req, limit,
                    top_logprobs: int, logprobs: bool, plan=None):
    t0 = time.perf_counter()
    jobs = await run_in_threadpool(state.start_jobs, prompt, req, top_logprobs, limit, plan, asyncio.get_running_loop())
    env = Envelope(kind, state.model_id)
    chunks = merged_chunks([openai_chunks(env, job, queue, state.llm.tokenizer, logprobs, index=i, plan=plan,
                                          metrics=state.metrics, t_start=t0) for i, (job, queue) in enumerate(jobs)])
    group = _Group([job for job, _ in jobs])
    if req.stream:
        return StreamingResponse(_sse(chunks, group, req.include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    watcher = asyncio.create_task(_cancel_on_disconnect(request, group))
    try:
        return fold([c async for c in chunks])
    finally:
        watcher.cancel()
        group.cancel()  # a no-op when they finished; frees the slots at once otherwise


class _Group:
    """The jobs of one request's n choices, cancelled together."""

    def __init__(self, jobs):
        self.jobs = jobs

    def cancel(self) -> None:
        for j in self.jobs:
            j.cancel()


async def _cancel_on_disconnect(request: Request, job) -> None:
    """Non-streaming requests: the body is read, so the next ASGI message is the disconnect."""
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            job.cancel()
            return


async def _sse(chunks, job, include_usage: bool):
    """Server-sent events: one `data:` line per chunk, then [DONE]. Errors after the start
    become an error event (the status line has already gone out). However the stream ends
    (client gone included), the job is cancelled at once rather than when collected."""
    try:
        async for c in chunks:
            if not c["choices"] and not include_usage:
                continue
            yield f"data: {json.dumps(c, ensure_ascii=False)}\n\n"
    except LlamalabError as e:
        yield f"data: {json.dumps(error_body(str(e), 'server_error', code=500))}\n\n"
    except Exception as e:
        log.exception("generation failed")
        yield f"data: {json.dumps(error_body(f'internal error: {type(e).__name__}', 'server_error', code=500))}\n\n"
    finally:
        job.cancel()
    yield "data: [DONE]\n\n"


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def bad_request(request, exc: RequestValidationError):
        err = exc.errors()[0] if exc.errors() else {}
        if err.get("type") == "json_invalid":
            return JSONResponse(error_body(f"malformed JSON body: {err.get('ctx', {}).get('error', 'invalid')}"), 400)
        if err.get("type") == "unsupported":  # a field OpenAI defines that this server does not honour
            field = err["ctx"]["field"]
            return JSONResponse(error_body(f"{field}: {err['msg']}", param=field, code="unsupported_parameter"), 400)
        if err.get("type") == "extra_forbidden":
            field = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            return JSONResponse(error_body(f"{field}: unknown field (this server does not support it)", param=field,
                                           code="unsupported_parameter"), 400)
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        # pydantic names the union branch in the location (stop.str, stop.list[str].0): keep the field path
        param = ".".join(p for p in loc if not p.startswith(("list[", "str", "int", "function-")) or p.isdigit())
        if not loc:
            return JSONResponse(error_body(f"request body: {err.get('msg', 'invalid')}"), 400)
        msg = f"{param or loc[0]}: {err.get('msg', 'invalid value')}"
        if "input" in err and not isinstance(err["input"], (dict, list)):
            msg += f" (got {err['input']!r})"
        return JSONResponse(error_body(msg, param=param or loc[0]), 400)

    @app.exception_handler(ContextOverflowError)
    async def overflow(request, exc: ContextOverflowError):
        return JSONResponse(error_body(str(exc), param="messages" if "chat" in request.url.path else "prompt",
                                       code="context_length_exceeded", n_prompt_tokens=exc.n_prompt,
                                       n_ctx=exc.n_ctx), 400)

    @app.exception_handler(InvalidArgumentError)
    async def invalid(request, exc: InvalidArgumentError):
        msg = str(exc)
        head = msg.split(":", 1)[0].split(" ", 1)[0]
        return JSONResponse(error_body(msg, param=head if head.replace("_", "").replace(".", "").isalnum() else None), 400)

    @app.exception_handler(QueueFullError)
    async def busy(request, exc: QueueFullError):
        return JSONResponse(error_body(str(exc), "unavailable_error", code=503), 503, headers={"Retry-After": "1"})

    @app.exception_handler(NotReadyError)
    async def not_ready(request, exc: NotReadyError):
        return JSONResponse(error_body(str(exc), "unavailable_error", code=503), 503)

    @app.exception_handler(LlamalabError)
    async def other(request, exc: LlamalabError):
        return JSONResponse(error_body(str(exc), "server_error", code=500), 500)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error" if exc.status_code < 500 else "server_error",
                                       code=exc.status_code), exc.status_code)

    @app.exception_handler(Exception)
    async def crash(request, exc: Exception):
        log.exception("unhandled error")
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error", code=500), 500)
