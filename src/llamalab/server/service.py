"""Between the routes and the engine: the loaded model, prompts, and the one chunk stream.

``openai_chunks`` turns the engine's Chunks into OpenAI chunk objects. The streaming route
sends them as server-sent events; the non-streaming route folds the very same objects
into one response (``schemas.fold``), so both paths share every field.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

from ..errors import ContextOverflowError, InvalidArgumentError, LlamalabError
from ..generate import Chunk
from ..constrain import compile_grammar, ll_tokenizer
from ..sampling import SamplingParams
from ..text.tools import ToolPlan, plan_tools
from .engine import Cancelled, Engine, Job
from .metrics import Metrics
from ..api import pool
from .schemas import ChatRequest, CompletionRequest, EmbeddingRequest, Envelope, timings, usage

MAX_EMBED_INPUTS = 256

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
        self.metrics = Metrics(self)
        self._loading = False

    def start_loading(self) -> None:
        """Load in the background (once: a second call, e.g. a Ray replica's lifespan after
        its constructor started it, does nothing)."""
        if self._loading:
            return
        self._loading = True
        threading.Thread(target=self._load_and_run, name="llamalab-engine", daemon=True).start()

    def _load_and_run(self) -> None:
        """Load, warm up, then run the scheduler: all on this one thread (see Engine.run)."""
        try:
            llm = self.loader()
            engine = Engine(llm.model, llm.tokenizer, llm.n_ctx, parallel=self.settings.parallel,
                            queue_size=self.settings.queue_size, cache_bytes=self.settings.cache_mb * 2**20,
                            kv_dtype=llm.cache.k.dtype, follow_load=getattr(llm, "follow_load", None)).warm_up()
            ll_tokenizer(llm.tokenizer)  # the grammar engine's vocabulary, built once (~0.3 s for 49k tokens)
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

    def chat_prompt(self, req: ChatRequest) -> tuple[list[int], ToolPlan]:
        """The prompt and how the request's tools (if any) are put to the model and read back."""
        llm = self.ready()
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        plan = plan_tools(messages, req.tools, req.tool_choice, req.parallel_tool_calls, llm.chat_template)
        return llm.chat_tokens(plan.messages, tools=plan.template_tools), plan

    def check_ids(self, ids: list[int], field: str) -> list[int]:
        n = self.ready().tokenizer.vocab_size
        bad = next((t for t in ids if not 0 <= t < n), None)
        if bad is not None:
            raise InvalidArgumentError(f"{field}: token id {bad} is out of range [0, {n})")
        return list(ids)

    # --- embeddings ---------------------------------------------------------------------------
    def embed(self, req: EmbeddingRequest) -> dict:
        """The OpenAI embeddings response; runs in a worker thread, the model on the scheduler's."""
        llm = self.ready()
        dim = llm.config.dim
        if req.dimensions is not None and req.dimensions != dim:
            raise InvalidArgumentError(f"dimensions: this model's embeddings have {dim} dimensions, got {req.dimensions}")
        items = req.items
        if not items:
            raise InvalidArgumentError("input: give at least one string or token array")
        if len(items) > MAX_EMBED_INPUTS:
            raise InvalidArgumentError(f"input: at most {MAX_EMBED_INPUTS} inputs per request, got {len(items)}")
        ids = [llm.embedding_tokens(x, f"input[{i}]" if len(items) > 1 else "input") for i, x in enumerate(items)]
        pooling, data, n_tokens = llm.pooling, [], 0
        for i, t in enumerate(ids):
            v = pool(self.engine.hidden_states(t), pooling)  # (dim,)
            emb = base64.b64encode(v.astype("<f4").tobytes()).decode() if req.encoding_format == "base64" else v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": emb})
            n_tokens += len(t)
        self.metrics.embedded.inc(len(ids))
        self.metrics.prompt_tokens.inc(n_tokens)
        return {"object": "list", "data": data, "model": self.model_id,
                "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}

    # --- generation -------------------------------------------------------------------------
    def constraint(self, req, plan: ToolPlan | None = None) -> str | None:
        """The request's grammar (response_format, json_schema, grammar, or its tools), compiled."""
        given = [(f, v) for f, v in (("response_format", req.response_format), ("json_schema", req.json_schema),
                                     ("grammar", req.grammar)) if v is not None and not (
                                         f == "response_format" and v.type == "text")]
        if plan is not None and (plan.json_schema is not None or plan.lark is not None):
            given.append(("tools", plan))
        if len(given) > 1:
            raise InvalidArgumentError(f"{given[1][0]}: cannot be combined with {given[0][0]} (one constraint per request)")
        if not given:
            return None
        field, v = given[0]
        if field == "response_format":
            if v.type == "json_object":
                return compile_grammar(json_object=True, field="response_format")
            return compile_grammar(json_schema=v.json_schema.schema_, field="response_format.json_schema.schema")
        if field == "tools":
            if v.json_schema is not None:
                return compile_grammar(json_schema=v.json_schema, field="tools")
            return compile_grammar(grammar=v.lark, field="tools")
        return compile_grammar(json_schema=v, field=field) if field == "json_schema" else compile_grammar(grammar=v)

    def start_jobs(self, prompt: list[int], req, top_logprobs: int, limit: int | None,
                   plan: ToolPlan | None = None, loop=None) -> list[tuple[Job, asyncio.Queue]]:
        """Validate, queue the request's n jobs on the engine; return each with the queue its
        chunks arrive on. Choices after the first wait for the first one's prefill and
        start from its saved KV prefix (see Slot._run), so the prompt is computed once.

        Raises InvalidArgumentError / ContextOverflowError (400) or QueueFullError (503)
        before any response has started.
        """
        llm = self.ready()
        n_ctx = llm.n_ctx
        if not prompt:
            raise InvalidArgumentError("prompt: is empty after tokenization; give at least one token")
        if len(prompt) > n_ctx:
            raise ContextOverflowError(len(prompt), n_ctx)
        grammar = self.constraint(req, plan)
        bias = req.logit_bias
        max_tokens = min(limit or n_ctx, n_ctx - len(prompt) + 1)  # the last token need not fit in the cache
        loop = loop or asyncio.get_running_loop()
        first_prefilled = threading.Event()
        out = []
        for i in range(req.n):
            kw = req.sampling_kwargs()
            if kw["seed"] is not None:
                kw["seed"] = (kw["seed"] + i) % 2**64  # each choice its own, reproducible, stream
            params = SamplingParams(**kw)
            processor = llm.logits_processor(logit_bias=bias, ignore_eos=req.ignore_eos, compiled=grammar)
            queue: asyncio.Queue = asyncio.Queue()
            job = Job(prompt=prompt, params=params, emit=_emitter(loop, queue), max_tokens=max_tokens, stop=req.stops,
                      ignore_eos=req.ignore_eos, top_logprobs=top_logprobs, cache_prompt=req.cache_prompt,
                      logits_processor=processor, prefilled=first_prefilled if i == 0 else None,
                      after=first_prefilled if i > 0 else None)
            job.emit.job = job
            out.append((job, queue))
        try:
            for job, _ in out:
                self.engine.submit(job)
        except Exception:
            for job, _ in out:
                job.cancel()
            first_prefilled.set()
            raise
        return out


class _emitter:
    """A job's emit: from a slot thread onto the event loop's queue; never blocks, never raises."""

    def __init__(self, loop, queue: asyncio.Queue):
        self.loop, self.queue, self.job = loop, queue, None

    def __call__(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (shutdown)
            if self.job is not None:
                self.job.cancel()


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


async def openai_chunks(env: Envelope, job: Job, queue: asyncio.Queue, tokenizer, logprobs: bool,
                        index: int = 0, plan: ToolPlan | None = None, metrics: Metrics | None = None,
                        t_start: float | None = None) -> AsyncIterator[dict]:
    """OpenAI chunk objects for one choice: (chat: a role delta,) text deltas, a finish
    chunk carrying `timings`, and last a usage chunk with no choices.

    With tools, the text is held back and sent at the end as content or `tool_calls`
    deltas, since it is the JSON (or <tool_call> blocks) the calls are parsed from.
    """
    n_prompt = len(job.prompt)
    last, offset, held = None, 0, []
    tools = plan is not None and plan.mode != "none"
    if env.kind == "chat":
        yield env.chunk([env.choice(text="", role="assistant", index=index)])
    try:
        async for c in engine_chunks(job, queue):
            if last is None and metrics is not None and t_start is not None:
                metrics.ttft.observe(time.perf_counter() - t_start)
            last = c
            lp = None
            if logprobs:
                lp = chat_logprobs(tokenizer, c) if env.kind == "chat" else text_logprobs(tokenizer, c, offset)
            if tools:
                held.append(c.text)
                if lp:
                    yield env.chunk([env.choice(logprobs=lp, index=index)])
            elif c.text or lp:
                yield env.chunk([env.choice(text=c.text, logprobs=lp, index=index)])
                offset += len(c.text)
    finally:
        if metrics is not None:
            metrics.finished(last, n_prompt)
    finish = last.finish_reason if last and last.finish_reason else "length"
    if tools:
        content, calls = plan.parse("".join(held))
        if calls:
            for k, call in enumerate(calls):
                yield env.chunk([env.choice(tool_calls=[{"index": k, **call}], index=index)])
            finish = "tool_calls" if finish == "stop" else finish
        elif content:
            yield env.chunk([env.choice(text=content, index=index)])
    yield env.chunk([env.choice(finish_reason=finish, index=index)], timings=timings(last, n_prompt))
    yield env.chunk([], usage=usage(last, n_prompt))


async def merged_chunks(streams: list[AsyncIterator[dict]]) -> AsyncIterator[dict]:
    """The chunks of n choices as they come, interleaved; one usage chunk at the end for all
    (the prompt counted once, the completions summed)."""
    if len(streams) == 1:
        async for c in streams[0]:
            yield c
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(stream):
        try:
            async for c in stream:
                await queue.put(c)
        except BaseException as e:  # handed to the consumer
            await queue.put(e)
        finally:
            await queue.put(done)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    usages, running = [], len(tasks)
    try:
        while running:
            item = await queue.get()
            if item is done:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            elif not item["choices"] and item.get("usage"):
                usages.append(item)
            else:
                yield item
    finally:
        for t in tasks:
            t.cancel()
    if usages:
        u = {k: v for k, v in usages[0]["usage"].items()}
        u["completion_tokens"] = sum(c["usage"]["completion_tokens"] for c in usages)
        u["total_tokens"] = u["prompt_tokens"] + u["completion_tokens"]
        yield {**usages[0], "usage": u}
