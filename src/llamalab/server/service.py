"""Between the routes and the engine: the loaded model, prompts, and the one chunk stream.

``openai_chunks`` turns the engine's Chunks into OpenAI chunk objects. The streaming route
sends them as server-sent events; the non-streaming route folds the very same objects
into one response (``schemas.fold``), so both paths share every field.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

from ..errors import ContextOverflowError, InvalidArgumentError, LlamalabError
from ..generate import Chunk
from ..sampling import SamplingParams
from .engine import Cancelled, Engine, Job
from .schemas import ChatRequest, CompletionRequest, Envelope, timings, usage

log = logging.getLogger("llamalab.server")


@dataclass(frozen=True)
class Settings:
    """Server options (the CLI's flags)."""

    parallel: int = 4
    queue_size: int = 64
    cache_mb: int = 512
    api_key: str | None = None
    max_body: int = 2 * 2**20
    model_id: str | None = None


class NotReadyError(LlamalabError):
    """The model is still loading (or failed to load)."""


class ServerState:
    """The model and its engine; loaded in a background thread so /health can answer meanwhile."""

    def __init__(self, loader: Callable[[], object], settings: Settings):
        self.loader, self.settings = loader, settings
        self.llm = None
        self.engine: Engine | None = None
        self.error: str | None = None
        self.model_id = settings.model_id or "llamalab"
        self.created = int(time.time())
        self.loaded = threading.Event()
        self.on_load_error: Callable[[str], None] | None = None

    def start_loading(self) -> None:
        threading.Thread(target=self._load_and_run, name="llamalab-engine", daemon=True).start()

    def _load_and_run(self) -> None:
        """Load, warm up, then run the scheduler: all on this one thread (see Engine.run)."""
        try:
            llm = self.loader()
            engine = Engine(llm.model, llm.tokenizer, llm.n_ctx, parallel=self.settings.parallel,
                            queue_size=self.settings.queue_size, cache_bytes=self.settings.cache_mb * 2**20,
                            kv_dtype=llm.cache.k.dtype).warm_up()
        except Exception as e:  # surfaced by /health and by the CLI
            self.error = str(e) if isinstance(e, LlamalabError) else f"{type(e).__name__}: {e}"
            log.error("model failed to load: %s", self.error)
            self.loaded.set()
            if self.on_load_error:
                self.on_load_error(self.error)
            return
        if self.settings.model_id is None and getattr(llm, "path", None):
            self.model_id = Path(llm.path).name
        self.llm, self.engine = llm, engine
        self.loaded.set()
        engine.run()

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.stop()

    def ready(self):
        """The LLM, or NotReadyError."""
        if self.llm is None:
            raise NotReadyError(f"model failed to load: {self.error}" if self.error else "model is loading")
        return self.llm

    # --- prompts -----------------------------------------------------------------------------
    def completion_prompt(self, req: CompletionRequest) -> list[int]:
        llm = self.ready()
        if isinstance(req.prompt, str):
            return llm.tokenize(req.prompt, special=True)
        return self.check_ids(req.prompt, "prompt")

    def chat_prompt(self, req: ChatRequest) -> list[int]:
        return self.ready().chat_tokens([m.model_dump() for m in req.messages])

    def check_ids(self, ids: list[int], field: str) -> list[int]:
        n = self.ready().tokenizer.vocab_size
        bad = next((t for t in ids if not 0 <= t < n), None)
        if bad is not None:
            raise InvalidArgumentError(f"{field}: token id {bad} is out of range [0, {n})")
        return list(ids)

    # --- generation -------------------------------------------------------------------------
    def start_job(self, prompt: list[int], req, top_logprobs: int, limit: int | None) -> tuple[Job, asyncio.Queue]:
        """Validate, queue the job on the engine and return it with the queue its chunks arrive on.

        Raises InvalidArgumentError / ContextOverflowError (400) or QueueFullError (503)
        before any response has started.
        """
        llm = self.ready()
        n_ctx = llm.n_ctx
        if not prompt:
            raise InvalidArgumentError("prompt: is empty after tokenization; give at least one token")
        if len(prompt) > n_ctx:
            raise ContextOverflowError(len(prompt), n_ctx)
        params = SamplingParams(**req.sampling_kwargs())
        max_tokens = min(limit or n_ctx, n_ctx - len(prompt) + 1)  # the last token need not fit in the cache
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def emit(item) -> None:  # from a slot thread; never blocks, never raises
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is gone (shutdown)
                job.cancel()

        job = Job(prompt=prompt, params=params, emit=emit, max_tokens=max_tokens, stop=req.stops,
                  ignore_eos=req.ignore_eos, top_logprobs=top_logprobs, cache_prompt=req.cache_prompt)
        self.engine.submit(job)
        return job, queue


async def engine_chunks(job: Job, queue: asyncio.Queue) -> AsyncIterator[Chunk]:
    """The job's Chunks as they arrive; leaving early (client gone) cancels the job."""
    try:
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, Cancelled):
                raise NotReadyError("the server is shutting down")
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        job.cancel()


def token_text(tokenizer, token: int) -> tuple[str, list[int]]:
    raw = tokenizer.token_bytes(token)
    return raw.decode("utf-8", errors="replace"), list(raw)


def chat_logprobs(tokenizer, c: Chunk) -> dict:
    """OpenAI chat logprobs for one token."""
    text, raw = token_text(tokenizer, c.token)
    top = []
    for t, lp in (c.top_logprobs or {}).items():
        tt, tb = token_text(tokenizer, t)
        top.append({"token": tt, "logprob": lp, "bytes": tb})
    return {"content": [{"token": text, "logprob": c.logprob, "bytes": raw, "top_logprobs": top}]}


def text_logprobs(tokenizer, c: Chunk, offset: int) -> dict:
    """Legacy completions logprobs for one token."""
    text, _ = token_text(tokenizer, c.token)
    top = {token_text(tokenizer, t)[0]: lp for t, lp in (c.top_logprobs or {}).items()}
    return {"tokens": [text], "token_logprobs": [c.logprob], "top_logprobs": [top], "text_offset": [offset]}


async def openai_chunks(env: Envelope, job: Job, queue: asyncio.Queue, tokenizer,
                        logprobs: bool) -> AsyncIterator[dict]:
    """OpenAI chunk objects for one job: (chat: a role delta,) text deltas, a finish chunk
    carrying `timings`, and last a usage chunk with no choices."""
    n_prompt = len(job.prompt)
    last, offset = None, 0
    if env.kind == "chat":
        yield env.chunk([env.choice(text="", role="assistant")])
    async for c in engine_chunks(job, queue):
        last = c
        lp = None
        if logprobs:
            lp = chat_logprobs(tokenizer, c) if env.kind == "chat" else text_logprobs(tokenizer, c, offset)
        if c.text or lp:
            yield env.chunk([env.choice(text=c.text, logprobs=lp)])
            offset += len(c.text)
    finish = last.finish_reason if last and last.finish_reason else "length"
    yield env.chunk([env.choice(finish_reason=finish)], timings=timings(last, n_prompt))
    yield env.chunk([], usage=usage(last, n_prompt))
