"""The small Python API: ``LLM`` loads a model and streams text from it.

    from llamalab import LLM
    llm = LLM()                                  # the default model, fetched on first use
    for chunk in llm.generate("The capital of France is", max_tokens=16):
        print(chunk.text, end="")
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .text.chat import render_chat
from .errors import InvalidArgumentError, LlamalabError, ModelFormatError
from .formats import load as load_model_file
from .generate import Chunk, stream_generate
from .runtime.kv_cache import DEFAULT_KV_TYPE, KVCache, kv_dtype
from .sampling import SamplingParams, chain, check_logit_bias, logit_bias_processor, make_sampler

POOLING = {1: "mean", 2: "cls", 3: "last"}  # GGUF {arch}.pooling_type (llama.cpp's enum); 0 none, 4 rank


def default_threads() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def _check_memory(path: str, backend: str, cfg, n_ctx: int, kv_dtype) -> None:
    """Refuse up front when the model cannot fit, rather than be killed half-way."""
    import psutil

    need = os.path.getsize(path) + 2 * cfg.n_layers * cfg.kv_dim * n_ctx * np.dtype(kv_dtype).itemsize
    if backend == "reference":
        need += cfg.n_params() * 4  # float32 copies of every weight
    avail = psutil.virtual_memory().available
    if need > avail:
        hint = " or use the fast backend (--backend fast)" if backend == "reference" else ""
        raise LlamalabError(
            f"{path}: needs about {need / 2**20:.0f} MiB ({backend} backend, context of {n_ctx} tokens) "
            f"but only {avail / 2**20:.0f} MiB is available; lower the context size (--ctx; n_ctx= in Python){hint}"
        )


def _refuse_unsupported(model) -> None:
    """A known name the engine cannot run yet fails before its download, not after."""
    from .errors import UnsupportedModelError
    from .store import KNOWN_MODELS

    entry = KNOWN_MODELS.get(str(model)) if model is not None else None
    if entry is not None and not entry.supported:
        raise UnsupportedModelError(
            f"model '{entry.name}' ({entry.arch} architecture) is not supported by the engine; "
            f"`llamalab pull {entry.name}` still fetches it"
        )


class LLM:
    """A loaded model with its tokenizer, one KV cache and the generation loop.

    threads=None: each generate() runs on the physical cores other processes have left free
    since the previous call (``kernels.threads_for_load``): beside a busy process, a thread
    on its core holds the others back at every barrier (issue 12)."""

    def __init__(self, model: str | os.PathLike | None = None, threads: int | None = None, n_ctx: int | None = None,
                 backend: str = "fast", kv_type: str = DEFAULT_KV_TYPE, tokenizer: str | os.PathLike | None = None,
                 progress: bool = True):
        from .runtime.model import Llama
        from .store import resolve_model
        from .text.tokenizer import Tokenizer

        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InvalidArgumentError(f"threads must be a positive integer, got {threads!r}")
        if n_ctx is not None and (not isinstance(n_ctx, int) or n_ctx < 1):
            raise InvalidArgumentError(f"n_ctx must be a positive integer, got {n_ctx!r}")
        if model is not None and not isinstance(model, (str, os.PathLike)):  # its str() would become the message
            raise InvalidArgumentError(f"model must be a path, a known name or synth:PRESET:DTYPE, got {type(model).__name__}")
        if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
            raise InvalidArgumentError(f"tokenizer must be a path to a llama2.c tokenizer.bin, got {type(tokenizer).__name__}")
        kv = kv_dtype(kv_type)  # f16 (llama.cpp's default) or f32
        _refuse_unsupported(model)
        self.path = str(resolve_model(None if model is None else str(model), progress=progress))
        loaded = load_model_file(self.path, tokenizer)
        if loaded.tokenizer is None:
            raise ModelFormatError(f"{self.path}: the file has no tokenizer; pass its llama2.c tokenizer.bin with --tokenizer PATH (tokenizer= in Python)")
        self.config = loaded.config
        self.metadata = loaded.metadata
        self.n_ctx = min(n_ctx or self.config.context_length, self.config.context_length)
        _check_memory(self.path, backend, self.config, self.n_ctx, kv)
        self.threads = threads or default_threads()
        self._busy = None  # threads not given: each generate() uses the cores other processes leave
        if backend == "fast":
            from . import kernels

            kernels.set_threads(self.threads)
            if threads is None:
                self._busy = kernels.BusyCores()
                self._busy()  # starts the clock: the first generate() sees the load since now
        else:
            from threadpoolctl import threadpool_limits

            threadpool_limits(self.threads)
        self.tokenizer = Tokenizer.from_spec(loaded.tokenizer)
        self.chat_template = loaded.tokenizer.chat_template
        self.model = Llama(loaded, backend=backend)
        self.backend = backend
        self.cache: KVCache = self.model.new_cache(self.n_ctx, kv)
        if backend == "fast":
            from .runtime.decode import compiled_before

            if progress and not compiled_before():
                print("llamalab: compiling the kernels for this machine (once: up to a minute)...",
                      file=sys.stderr, flush=True)
            self.model.warm_up(kv)

    # --- text <-> tokens ---------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_bos=add_bos, special=special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, tools: list | None = None) -> str:
        tok = self.tokenizer
        piece = lambda i: tok.piece(i) if i is not None else ""  # noqa: E731
        return render_chat(self.chat_template, messages, piece(tok.bos_id), piece(tok.eos_id), add_generation_prompt,
                           tools=tools)

    def chat_tokens(self, messages, tools: list | None = None) -> list[int]:
        """Template applied and tokenized with special tokens; no double BOS."""
        text = self.apply_chat_template(messages, tools=tools)
        bos = self.tokenizer.bos_id
        ids = self.tokenizer.encode(text, special=True)
        if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]
        return ids

    # --- model ---------------------------------------------------------------------------
    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits (len(ids), vocab) of one forward pass from an empty cache."""
        ids = list(ids)
        if len(ids) > self.n_ctx:
            from .errors import ContextOverflowError

            raise ContextOverflowError(len(ids), self.n_ctx)
        cache = self.model.new_cache(max(len(ids), 1), self.cache.k.dtype)
        return self.model.forward(np.asarray(ids), cache, all_logits=True)

    def follow_load(self) -> int:
        """With threads=None, run on the cores other processes left free since the previous call
        (a call within 50 ms of it keeps the count it set); with a thread count given, keep it.
        Returns the count in use. generate() calls it; the server's scheduler between steps."""
        from . import kernels

        if self._busy is not None and self.backend == "fast":
            busy = self._busy()
            if busy is not None:
                return kernels.set_threads(kernels.threads_for_load(self.threads, busy))
        return kernels.get_threads() if self.backend == "fast" else self.threads

    def generate(self, prompt: str | Sequence[int], max_tokens: int = 256, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
                 seed: int | None = None, stop: str | Sequence[str] | None = None, ignore_eos: bool = False,
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0, logprobs: int = 0,
                 add_bos: bool | None = None, json_schema: dict | None = None, grammar: str | None = None,
                 regex: str | None = None, logit_bias: dict | None = None) -> Iterator[Chunk]:
        """Stream a completion of `prompt` (text, or token ids used as given).

        json_schema / grammar (GBNF or Lark) / regex: the output is forced to match, token
        by token (see constrain.py); a schema keyword that cannot be enforced is an error.
        logit_bias: {token id: bias in [-100, 100]}; -100 bans the token.
        """
        ids = self.tokenize(prompt, add_bos=add_bos) if isinstance(prompt, str) else [int(t) for t in prompt]
        self.follow_load()
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty,
                                presence_penalty=presence_penalty, seed=seed)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        processor = self.logits_processor(json_schema=json_schema, grammar=grammar, regex=regex,
                                          logit_bias=logit_bias, ignore_eos=ignore_eos)
        return stream_generate(self.model, self.tokenizer, self.cache, ids, make_sampler(params),
                               max_tokens=max_tokens, stop=stops, ignore_eos=ignore_eos, top_logprobs=logprobs,
                               logits_processor=processor)

    def logits_processor(self, json_schema=None, grammar=None, regex=None, logit_bias=None, ignore_eos=False,
                         json_object: bool = False, field: str | None = None, compiled: str | None = None):
        """The per-generation logits processor for these constraints (None when there are none)."""
        from .constrain import compile_grammar, grammar_processor

        text = compiled or compile_grammar(json_schema=json_schema, grammar=grammar, regex=regex,
                                           json_object=json_object, field=field)
        if text is not None and ignore_eos:
            raise InvalidArgumentError("ignore_eos cannot be combined with a grammar or schema (the grammar ends "
                                       "the output with end-of-sequence)")
        bias = check_logit_bias(logit_bias, self.config.vocab_size) if logit_bias is not None else None
        return chain(logit_bias_processor(bias), grammar_processor(self.tokenizer, text))

    def chat(self, messages, tools: list | None = None, tool_choice="auto", parallel_tool_calls: bool = True,
             **kwargs) -> Iterator[Chunk]:
        """Stream the assistant's reply to OpenAI-style messages.

        With `tools`, the reply is constrained as text/tools.py describes; read the calls
        back with ``self.tool_plan(...).parse(text)``, or use ``chat_with_tools``.
        """
        if tools is None and tool_choice in (None, "auto"):
            return self.generate(self.chat_tokens(messages), **kwargs)
        plan = self.tool_plan(messages, tools, tool_choice, parallel_tool_calls)
        if plan.json_schema is not None or plan.lark is not None:
            kwargs = {**kwargs, "json_schema": plan.json_schema, "grammar": plan.lark}
            if plan.json_schema is None:
                kwargs.pop("json_schema")
            if plan.lark is None:
                kwargs.pop("grammar")
        return self.generate(self.chat_tokens(plan.messages, tools=plan.template_tools), **kwargs)

    def tool_plan(self, messages, tools, tool_choice="auto", parallel_tool_calls: bool = True):
        from .text.tools import plan_tools

        return plan_tools(list(messages), tools, tool_choice, parallel_tool_calls, self.chat_template)

    def chat_with_tools(self, messages, tools: list, tool_choice="auto", parallel_tool_calls: bool = True,
                        **kwargs) -> tuple[str | None, list[dict]]:
        """The reply as (content, OpenAI-style tool_calls)."""
        text = "".join(c.text for c in self.chat(messages, tools=tools, tool_choice=tool_choice,
                                                 parallel_tool_calls=parallel_tool_calls, **kwargs))
        return self.tool_plan(messages, tools, tool_choice, parallel_tool_calls).parse(text)

    # --- embeddings ----------------------------------------------------------------------
    @property
    def pooling(self) -> str:
        """How `embed` pools: the file's {arch}.pooling_type when it says (mean, cls, last), else mean."""
        arch = self.metadata.get("general.architecture", "llama") if isinstance(self.metadata, dict) else "llama"
        kind = self.metadata.get(f"{arch}.pooling_type") if isinstance(self.metadata, dict) else None
        return POOLING.get(int(kind), "mean") if kind is not None else "mean"

    def embed(self, inputs: str | Sequence[int] | Sequence[str] | Sequence[Sequence[int]],
              pooling: str | None = None, normalize: bool = True) -> np.ndarray:
        """Embeddings (n, dim) float32: final-normed hidden states pooled per input (mean /
        cls / last, see `pooling`), L2-normalized. Inputs: a text, token ids, or lists of either."""
        pooling = pooling or self.pooling
        if pooling not in ("mean", "cls", "last"):
            raise InvalidArgumentError(f"pooling must be mean, cls or last, got {pooling!r}")
        batch = [inputs] if isinstance(inputs, str) or (len(inputs) and isinstance(inputs[0], (int, np.integer))) \
            else list(inputs)
        if not batch:
            raise InvalidArgumentError("embed: give at least one input")
        out = np.empty((len(batch), self.config.dim), dtype=np.float32)
        for i, item in enumerate(batch):
            ids = self.embedding_tokens(item, f"input[{i}]")
            h = self.model.forward(np.asarray(ids), self.model.new_cache(len(ids), self.cache.k.dtype), hidden=True)
            out[i] = pool(h, pooling, normalize)  # h: (T, dim)
        return out

    def embedding_tokens(self, item, where: str = "input") -> list[int]:
        """Token ids for one embedding input (text gets BOS/EOS as the tokenizer says)."""
        ids = self.tokenize(item) if isinstance(item, str) else [int(t) for t in item]
        if not ids:
            raise InvalidArgumentError(f"{where}: is empty; give at least one token")
        if len(ids) > self.n_ctx:
            from .errors import ContextOverflowError

            raise ContextOverflowError(len(ids), self.n_ctx)
        bad = next((t for t in ids if not 0 <= t < self.config.vocab_size), None)
        if bad is not None:
            raise InvalidArgumentError(f"{where}: token id {bad} is out of range [0, {self.config.vocab_size})")
        return ids

    def complete(self, prompt: str | Sequence[int], **kwargs) -> str:
        """The whole completion as one string."""
        return "".join(c.text for c in self.generate(prompt, **kwargs))

    def perplexity(self, text: str, window: int | None = None) -> tuple[float, int]:
        """Perplexity of `text` over non-overlapping windows (llama.cpp style: score the
        second half of each window). Returns (ppl, tokens scored)."""
        ids = self.tokenize(text, add_bos=False)
        window = min(window or 512, self.n_ctx)
        if len(ids) < 2:
            raise InvalidArgumentError("perplexity needs a text of at least 2 tokens")
        nll, n = 0.0, 0
        bos = [self.tokenizer.bos_id] if self.tokenizer.bos_id is not None and self.tokenizer.add_bos else []
        for s in range(0, len(ids) - 1, window - len(bos)):
            chunk = bos + ids[s : s + window - len(bos)]
            if len(chunk) < 2:
                break
            logits = self.logits(chunk)  # (T, vocab)
            first = max(len(chunk) // 2, 1) if s > 0 else 1
            tgt = np.asarray(chunk[first:])
            lg = logits[first - 1 : -1].astype(np.float64)
            lg -= lg.max(axis=1, keepdims=True)
            lse = np.log(np.exp(lg).sum(axis=1))
            nll += float((lse - lg[np.arange(len(tgt)), tgt]).sum())
            n += len(tgt)
        return float(np.exp(nll / n)), n


def pool(hidden: np.ndarray, pooling: str, normalize: bool = True) -> np.ndarray:
    """(T, dim) hidden states -> (dim,): their mean, the first (cls) or the last; L2-normalized."""
    v = hidden.mean(axis=0) if pooling == "mean" else hidden[0] if pooling == "cls" else hidden[-1]
    v = v.astype(np.float32)
    if normalize:
        v /= max(float(np.linalg.norm(v)), 1e-12)
    return v
