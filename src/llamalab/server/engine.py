"""Slots and a continuous-batching scheduler around the one generation loop.

Each request runs ``generate.stream_generate`` unchanged, in the thread of the slot it was
given, against a ``BatchedModel`` stand-in. Its ``forward`` does not compute: it posts the
step to the scheduler thread and waits. The scheduler gathers the steps of every busy slot
and runs them together: all single-token decode steps as one ``model.decode_batch`` call,
then prompt chunks (prefill) up to a token budget. Requests join and leave between steps.

Prompt reuse: a slot keeps its KV cache after its request ends. A new request goes to the
idle slot whose cache shares the longest prefix with its prompt; before a slot's cache is
overwritten, its contents are kept in a ``PromptStore`` (LRU, bounded in bytes), from which
a later request with a matching prefix is restored.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..errors import LlamalabError
from ..generate import stream_generate
from ..runtime.kv_cache import KVCache
from ..sampling import LogitsProcessor, SamplingParams, make_sampler
from .prompt_store import PromptStore

PREFILL_CHUNK = 128  # prompt tokens per scheduler step: bounds how long decoding waits for a long prompt
MAX_GATHER_S = 0.05  # the scheduler waits at most this long for every busy slot to post its step
FOLLOW_LOAD_S = 0.5  # how often the scheduler re-reads the machine's load (a psutil read: ~50 us)


class QueueFullError(LlamalabError):
    """Every slot is busy and the waiting line is full."""


class Cancelled(Exception):
    """The client went away; unwinds the slot's generation."""


@dataclass
class Job:
    """One request: the prompt, how to sample, and where the chunks go.

    ``emit`` is called from a slot thread with each Chunk, then once with None (done) or
    an exception. It must not block.
    """

    prompt: list[int]
    params: SamplingParams
    emit: Callable[[object], None]
    max_tokens: int = 256
    stop: Sequence[str] = ()
    ignore_eos: bool = False
    top_logprobs: int = 0
    cache_prompt: bool = True  # False: compute the whole prompt afresh
    logits_processor: LogitsProcessor | None = None  # logit bias, grammar: one per job (it keeps state)
    prefilled: threading.Event | None = None  # set once this job's prompt is in the prompt store
    after: threading.Event | None = None  # wait for this before starting (n > 1: the first choice's prefill)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()


class _Step:
    """A forward request from a slot thread: tokens to run on one cache, then (1, vocab) logits."""

    __slots__ = ("tokens", "cache", "job", "done", "logits", "error", "hidden")

    def __init__(self, tokens: np.ndarray, cache: KVCache, job: Job, hidden: bool = False):
        self.tokens, self.cache, self.job, self.hidden = tokens, cache, job, hidden
        self.done = threading.Event()
        self.logits: np.ndarray | None = None
        self.error: BaseException | None = None


class BatchedModel:
    """What stream_generate sees as the model: ``forward`` hands the work to the scheduler."""

    def __init__(self, engine: Engine, job: Job):
        self.engine, self.job = engine, job

    def forward(self, tokens, cache: KVCache, all_logits: bool = False) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        logits = None
        for s in range(0, len(tokens), PREFILL_CHUNK):  # a long prompt goes in chunks, interleaved with decoding
            logits = self.engine._run_step(_Step(tokens[s : s + PREFILL_CHUNK], cache, self.job))
        return logits


def _check_memory(cfg, n_ctx: int, parallel: int, cache_bytes: int, itemsize: int) -> None:
    """Refuse a configuration whose KV caches, once filled, would not fit in memory."""
    import psutil

    per_slot = 2 * cfg.n_layers * cfg.kv_dim * n_ctx * itemsize
    need = parallel * per_slot + cache_bytes
    avail = psutil.virtual_memory().available
    if need > avail:
        raise LlamalabError(
            f"{parallel} slots of {n_ctx} tokens need {per_slot * parallel / 2**20:.0f} MiB of KV cache "
            f"(+ {cache_bytes / 2**20:.0f} MiB prompt cache) but only {avail / 2**20:.0f} MiB is available; "
            f"lower --parallel, --ctx or --cache-mb")


class Slot:
    """One lane of generation: a thread, a KV cache, and the job it runs (None when idle)."""

    def __init__(self, engine: Engine, index: int, cache: KVCache):
        self.engine, self.index, self.cache = engine, index, cache
        self.job: Job | None = None
        self.last_used = 0
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"llamalab-slot-{index}", daemon=True)

    def _loop(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            job = self.job
            if self.engine.stopping:
                if job is not None:
                    job.emit(Cancelled())
                return
            try:
                self._run(job)
                job.emit(None)
            except Cancelled:
                job.emit(None)
            except Exception as e:  # reported to this request only; the server goes on
                job.emit(e)
            finally:
                self.engine._release(self)

    def _run(self, job: Job) -> None:
        try:
            self._generate(job)
        finally:
            if job.prefilled is not None:
                job.prefilled.set()  # never leave the other choices waiting

    def _generate(self, job: Job) -> None:
        engine, cache = self.engine, self.cache
        if job.after is not None:  # a later choice of n: start from the first one's prefill
            while not job.after.wait(0.05):
                if job.cancelled.is_set() or engine.stopping:
                    raise Cancelled()
        if job.cancelled.is_set():
            raise Cancelled()
        keep = cache.common_prefix(job.prompt) if job.cache_prompt else 0
        if engine.store is not None and keep < cache.pos:  # contents about to be overwritten: keep a copy
            engine.store.save(cache)
        cache.truncate(keep)
        if job.cache_prompt and engine.store is not None:
            engine.store.restore(cache, job.prompt)
        chunks = stream_generate(BatchedModel(engine, job), engine.tokenizer, cache, job.prompt,
                                 make_sampler(job.params), max_tokens=job.max_tokens, stop=job.stop,
                                 ignore_eos=job.ignore_eos, top_logprobs=job.top_logprobs,
                                 logits_processor=job.logits_processor)
        for chunk in chunks:
            if job.prefilled is not None and not job.prefilled.is_set():
                if engine.store is not None and job.cache_prompt:
                    engine.store.save(cache)  # the prompt, not yet the first token: for the other choices
                job.prefilled.set()
            job.emit(chunk)
            if job.cancelled.is_set():
                chunks.close()
                raise Cancelled()


class Engine:
    """Runs jobs on `parallel` slots; decode steps of busy slots are batched together."""

    def __init__(self, model, tokenizer, n_ctx: int, parallel: int = 4, queue_size: int = 64,
                 cache_bytes: int = 512 * 2**20, kv_dtype=np.float32, follow_load: Callable[[], int] | None = None):
        """follow_load: called on the scheduler thread at most every FOLLOW_LOAD_S between steps
        (``LLM.follow_load``: the thread count follows the other processes' load)."""
        if parallel < 1:
            raise LlamalabError(f"parallel must be >= 1, got {parallel}")
        if queue_size < 0:
            raise LlamalabError(f"queue size must be >= 0, got {queue_size}")
        self.model, self.tokenizer, self.n_ctx = model, tokenizer, n_ctx
        self.queue_size = queue_size
        _check_memory(model.config, n_ctx, parallel, cache_bytes, np.dtype(kv_dtype).itemsize)
        self.store = PromptStore(cache_bytes) if cache_bytes > 0 else None
        self.slots = [Slot(self, i, model.new_cache(n_ctx, kv_dtype)) for i in range(parallel)]
        self.waiting: deque[Job] = deque()
        self.steps: list[_Step] = []
        self.busy = 0
        self.stopping = False
        self.cond = threading.Condition()
        self.clock = itertools.count(1)
        self.stats = {"steps": 0, "decode_batches": 0, "decode_rows": 0, "max_batch": 0, "prefill_tokens": 0}
        self.scheduler: threading.Thread | None = None  # the one thread that runs the model
        self.follow_load = follow_load
        self._load_checked = 0.0  # time.monotonic() of the last follow_load call

    # --- lifecycle ---------------------------------------------------------------------------
    def warm_up(self) -> Engine:
        """Build the compiled kernels, batched step included, before the first request (and
        before /health reports ready)."""
        self.model.warm_up(self.slots[0].cache.k.dtype, batch_kv_dtype=self.slots[0].cache.k.dtype)
        return self

    def start(self) -> Engine:
        """Start the slots and a scheduler thread; returns at once."""
        for s in self.slots:
            s.thread.start()
        self.scheduler = threading.Thread(target=self._schedule, name="llamalab-scheduler", daemon=True)
        self.scheduler.start()
        return self

    def run(self) -> None:
        """Start the slots and run the scheduler in the calling thread until stop().

        Keeping every model call (loading, warm-up, steps) on one thread matters to
        OpenMP-backed kernels: each calling thread gets its own team of workers.
        """
        for s in self.slots:
            s.thread.start()
        self.scheduler = threading.current_thread()
        self._schedule()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            for job in self.waiting:
                job.emit(Cancelled())
            self.waiting.clear()
            for s in self.slots:
                if s.job is not None:
                    s.job.cancel()
            self.cond.notify_all()
        for s in self.slots:
            s.wake.set()
        if self.scheduler is not None and self.scheduler is not threading.current_thread():
            self.scheduler.join(timeout=10)

    # --- requests ----------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue a job; raises QueueFullError when every slot is busy and the line is full."""
        with self.cond:
            if self.stopping:
                raise QueueFullError("the server is shutting down")
            if self.busy == len(self.slots) and len(self.waiting) >= self.queue_size:
                raise QueueFullError(f"server busy: {len(self.slots)} requests running and {len(self.waiting)} waiting")
            self.waiting.append(job)
            self._dispatch()

    @property
    def n_waiting(self) -> int:
        return len(self.waiting)

    def _dispatch(self) -> None:
        """Give waiting jobs to idle slots, each to the slot sharing the longest prefix (caller holds cond)."""
        while self.waiting:
            idle = [s for s in self.slots if s.job is None]
            if not idle:
                return
            job = self.waiting.popleft()
            if job.cancelled.is_set():
                job.emit(None)
                continue
            if job.cache_prompt:
                slot = max(idle, key=lambda s: (s.cache.common_prefix(job.prompt), -s.last_used))
            else:  # the least recently used slot: keep the others' prefixes for later requests
                slot = min(idle, key=lambda s: s.last_used)
            slot.job = job
            slot.last_used = next(self.clock)
            self.busy += 1
            slot.wake.set()

    def _release(self, slot: Slot) -> None:
        with self.cond:
            slot.job = None
            self.busy -= 1
            self._dispatch()
            self.cond.notify_all()

    def hidden_states(self, tokens: Sequence[int], cancelled: threading.Event | None = None) -> np.ndarray:
        """Final-normed hidden states (T, dim) of `tokens` from an empty cache (embeddings),
        computed on the scheduler thread between the other requests' steps, in prompt chunks."""
        ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
        job = Job(prompt=list(ids), params=SamplingParams(), emit=lambda item: None)
        if cancelled is not None:
            job.cancelled = cancelled
        cache = self.model.new_cache(len(ids), self.slots[0].cache.k.dtype)
        return np.concatenate([self._run_step(_Step(ids[s : s + PREFILL_CHUNK], cache, job, hidden=True))
                               for s in range(0, len(ids), PREFILL_CHUNK)])

    # --- scheduler ---------------------------------------------------------------------------
    def _run_step(self, step: _Step) -> np.ndarray:
        """Called by a slot thread: post one step and wait for its logits."""
        if step.job.cancelled.is_set():
            raise Cancelled()
        with self.cond:
            if self.stopping:
                raise Cancelled()
            self.steps.append(step)
            self.cond.notify_all()
        step.done.wait()
        if step.error is not None:
            raise step.error
        return step.logits

    def _gather(self) -> list[_Step]:
        """Wait until every busy slot has posted a step (or MAX_GATHER_S passed); take them."""
        with self.cond:
            while not self.steps and not self.stopping:
                self.cond.wait()
            deadline = time.monotonic() + MAX_GATHER_S
            while not self.stopping and len(self.steps) < self.busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            steps, self.steps = self.steps, []
            return steps

    def _schedule(self) -> None:
        while not self.stopping:
            steps = self._gather()
            if self.follow_load is not None and time.monotonic() - self._load_checked >= FOLLOW_LOAD_S:
                self._load_checked = time.monotonic()
                self.stats["threads"] = self.follow_load()
            live = []
            for s in steps:
                if s.job.cancelled.is_set() or self.stopping:
                    s.error = Cancelled()
                    s.done.set()
                else:
                    live.append(s)
            decode = [s for s in live if len(s.tokens) == 1 and not s.hidden]
            prefill = [s for s in live if len(s.tokens) > 1 or s.hidden]
            if decode:
                self._decode(decode)
            budget = PREFILL_CHUNK
            for i, s in enumerate(prefill):
                if budget <= 0:  # the rest wait for the next step
                    with self.cond:
                        self.steps.extend(prefill[i:])
                    break
                self._prefill(s)
                budget -= len(s.tokens)
            self.stats["steps"] += 1
        with self.cond:  # wake anyone still waiting
            for s in self.steps:
                s.error = Cancelled()
                s.done.set()
            self.steps.clear()

    def _decode(self, steps: list[_Step]) -> None:
        try:
            logits = self.model.decode_batch(np.concatenate([s.tokens for s in steps]), [s.cache for s in steps])
        except Exception as e:  # one bad step must not take the others down: retry each alone
            if len(steps) == 1:
                self._fail(steps[0], e)
                return
            for s in steps:
                self._prefill(s)
            return
        for i, s in enumerate(steps):
            s.logits = logits[i : i + 1]  # (1, vocab)
            s.done.set()
        self.stats["decode_batches"] += 1
        self.stats["decode_rows"] += len(steps)
        self.stats["max_batch"] = max(self.stats["max_batch"], len(steps))

    def _prefill(self, s: _Step) -> None:
        try:
            if s.hidden:  # (T, dim) final-normed hidden states, for embeddings
                s.logits = self.model.forward(s.tokens, s.cache, hidden=True)
            else:
                s.logits = self.model.forward(s.tokens, s.cache)  # (1, vocab)
            self.stats["prefill_tokens"] += len(s.tokens)
        except Exception as e:
            self._fail(s, e)
            return
        s.done.set()

    @staticmethod
    def _fail(s: _Step, e: BaseException) -> None:
        s.error = e
        s.done.set()

    # --- cache bookkeeping ---------------------------------------------------------------------
    def cache_report(self) -> dict:
        store = self.store
        return {
            "slots": [{"id": s.index, "busy": s.job is not None, "cached_tokens": s.cache.pos} for s in self.slots],
            "prompt_store_entries": len(store.entries) if store else 0,
            "prompt_store_bytes": store.nbytes if store else 0,
            "prompt_store_max_bytes": store.max_bytes if store else 0,
        }
