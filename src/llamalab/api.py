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
from .runtime.kv_cache import KVCache
from .sampling import SamplingParams, make_sampler

KV_DTYPES = {"float32": np.float32, "f32": np.float32, "float16": np.float16, "f16": np.float16}


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
            f"model '{entry.name}' ({entry.arch} architecture) is not supported by the engine yet; "
            f"`llamalab pull {entry.name}` still fetches it"
        )


class LLM:
    """A loaded model with its tokenizer, one KV cache and the generation loop."""

    def __init__(self, model: str | os.PathLike | None = None, threads: int | None = None, n_ctx: int | None = None,
                 backend: str = "fast", kv_dtype: str = "float32", tokenizer: str | os.PathLike | None = None,
                 progress: bool = True):
        from .runtime.model import Llama
        from .store import resolve_model
        from .text.tokenizer import Tokenizer

        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InvalidArgumentError(f"threads must be a positive integer, got {threads!r}")
        if n_ctx is not None and (not isinstance(n_ctx, int) or n_ctx < 1):
            raise InvalidArgumentError(f"n_ctx must be a positive integer, got {n_ctx!r}")
        if kv_dtype not in KV_DTYPES:
            raise InvalidArgumentError(f"kv_dtype must be float32 or float16, got {kv_dtype!r}")
        _refuse_unsupported(model)
        self.path = str(resolve_model(None if model is None else str(model), progress=progress))
        loaded = load_model_file(self.path, tokenizer)
        if loaded.tokenizer is None:
            raise ModelFormatError(f"{self.path}: the file has no tokenizer; pass its llama2.c tokenizer.bin with --tokenizer PATH (tokenizer= in Python)")
        self.config = loaded.config
        self.metadata = loaded.metadata
        self.n_ctx = min(n_ctx or self.config.context_length, self.config.context_length)
        _check_memory(self.path, backend, self.config, self.n_ctx, KV_DTYPES[kv_dtype])
        self.threads = threads or default_threads()
        if backend == "fast":
            from . import kernels

            kernels.set_threads(self.threads)
        else:
            from threadpoolctl import threadpool_limits

            threadpool_limits(self.threads)
        self.tokenizer = Tokenizer.from_spec(loaded.tokenizer)
        self.chat_template = loaded.tokenizer.chat_template
        self.model = Llama(loaded, backend=backend)
        self.backend = backend
        self.cache: KVCache = self.model.new_cache(self.n_ctx, KV_DTYPES[kv_dtype])
        if backend == "fast":
            from .runtime.decode import compiled_before

            if progress and not compiled_before():
                print("llamalab: compiling the kernels for this machine (once: up to a minute)...",
                      file=sys.stderr, flush=True)
            self.model.warm_up()

    # --- text <-> tokens ---------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_bos=add_bos, special=special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> str:
        tok = self.tokenizer
        piece = lambda i: tok.piece(i) if i is not None else ""  # noqa: E731
        return render_chat(self.chat_template, messages, piece(tok.bos_id), piece(tok.eos_id), add_generation_prompt)

    def chat_tokens(self, messages) -> list[int]:
        """Template applied and tokenized with special tokens; no double BOS."""
        text = self.apply_chat_template(messages)
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

    def generate(self, prompt: str | Sequence[int], max_tokens: int = 256, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
                 seed: int | None = None, stop: str | Sequence[str] | None = None, ignore_eos: bool = False,
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0, logprobs: int = 0,
                 add_bos: bool | None = None) -> Iterator[Chunk]:
        """Stream a completion of `prompt` (text, or token ids used as given)."""
        ids = self.tokenize(prompt, add_bos=add_bos) if isinstance(prompt, str) else [int(t) for t in prompt]
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty,
                                presence_penalty=presence_penalty, seed=seed)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        return stream_generate(self.model, self.tokenizer, self.cache, ids, make_sampler(params),
                               max_tokens=max_tokens, stop=stops, ignore_eos=ignore_eos, top_logprobs=logprobs)

    def chat(self, messages, **kwargs) -> Iterator[Chunk]:
        """Stream the assistant's reply to OpenAI-style messages."""
        return self.generate(self.chat_tokens(messages), **kwargs)

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
