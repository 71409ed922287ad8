"""The models a benchmark runs: what the user typed -> a file on disk plus what to call it.

A spec is a path, a known model name (``smollm2-135m``; None = the default model), or
``synth:NAME[:DTYPE]``: a synthesized model with the shapes of a preset from
``llamalab.lab.synth`` (random weights, throughput depends only on shapes), written once
into ``<llamalab home>/synth/`` and reused. Synthesized GGUFs carry a synthetic
tokenizer padded to the preset's vocabulary size, so llama.cpp can load them too.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from gguf import GGMLQuantizationType

from ..errors import InvalidArgumentError, ModelNotFoundError
from ..formats.pages import rehouse
from .progress import progress_bar

SYNTH_PREFIX = "synth:"
DEFAULT_SYNTH_DTYPE = "q8_0"
SYNTH_SEED = 0


@dataclass
class ModelInfo:
    """A resolved model: its file, its size and shape, and how to label it in tables."""

    spec: str  # as the user gave it
    path: str
    filename: str
    format: str  # "gguf" or "llama2c"
    size: int  # bytes on disk
    n_params: int
    type: str  # llama-bench's model_type, e.g. "llama 135M Q4_1"
    context_length: int
    config: dict
    tokenizer: str | None = None  # llama2.c tokenizer.bin, when given
    synthesized: bool = False
    synth_preset: str | None = None  # the preset name, for synthesized models
    llama2c_twin: str | None = None  # a llama2.c checkpoint with the same weights (synthesized models, on demand)
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """Short name for tables: the preset for synthesized models, else the file name."""
        return f"{self.synth_preset} (synth {self.type.split()[-1]})" if self.synthesized else self.filename

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["label"] = self.label
        return d


def human_count(n: int) -> str:
    """134515008 -> '135M' (llama-bench style)."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.0f}{unit}" if n / div >= 10 else f"{n / div:.1f}{unit}"
    return str(n)


def dominant_qtype(weights: dict) -> str:
    """The block format holding the most bytes among the 2-D weights ('Q4_1', 'F32', ...)."""
    by_type: dict[str, int] = {}
    for t in weights.values():
        if len(t.shape) == 2:
            by_type[t.qtype.name] = by_type.get(t.qtype.name, 0) + t.nbytes
    return max(by_type, key=by_type.get) if by_type else "?"


def parse_dtype(dtype: str) -> GGMLQuantizationType:
    """'q8_0' / 'F16' / ... -> the ggml type; InvalidArgumentError naming the choices (for names
    ggml knows but llamalab cannot encode, such as iq4_nl, too: never a silent substitute)."""
    from .. import quants

    from ..convert.mixes import FILE_TYPES

    names = ", ".join(t.name.lower() for t in GGMLQuantizationType if _writable(t, quants))
    qtype = GGMLQuantizationType.__members__.get(dtype.upper())
    if qtype is None:
        mixes = ", ".join(m.lower() for m in FILE_TYPES if is_mix(m))
        raise InvalidArgumentError(f"unknown dtype {dtype!r}; choose one of {names}, or a mix: {mixes}")
    if not _writable(qtype, quants):
        raise InvalidArgumentError(f"dtype {dtype!r} cannot be written by llamalab; choose one of {names}")
    return qtype


def fallback_types(cfg, qtype: GGMLQuantizationType) -> dict[int, GGMLQuantizationType]:
    """Row lengths of `cfg` that `qtype` cannot store (K-quants need multiples of 256), with the type
    llama.cpp stores those tensors in instead; empty when every matrix fits."""
    from .. import quants
    from .synth import _FALLBACK

    size = quants.format_of(qtype).block_size
    return {cols: _FALLBACK.get(qtype, qtype) for cols in (cfg.dim, cfg.ffn_dim) if cols % size}


def write_llama2c_tokenizer_beside(model: Path, cfg) -> Path | None:
    """Write the checkpoint's tokenizer as `tokenizer.bin` beside it (run.c's default, and what
    llamalab picks up); if a different tokenizer.bin is there already, as NAME.tokenizer.bin."""
    from . import synth

    spec = padded_tokenizer(cfg.vocab_size, "llama")
    if spec is None:
        return None
    tmp = model.with_name(f".{model.name}.{os.getpid()}.tok.tmp")
    synth.write_llama2c_tokenizer(tmp, spec)
    target = model.parent / "tokenizer.bin"
    if target.exists() and target.read_bytes() != tmp.read_bytes():
        target = model.with_name(model.stem + ".tokenizer.bin")
    os.replace(tmp, target)
    return target


def _writable(t, quants) -> bool:
    try:
        quants.format_of(t)
        return True
    except Exception:
        return False


def padded_tokenizer(vocab_size: int, kind: str):
    """A synthetic tokenizer with exactly vocab_size tokens: llamalab's tiny SPM/BPE vocabulary
    plus unique filler pieces that never match text (so the text still tokenizes fine)."""
    from . import synth

    base = synth.tiny_spm_tokenizer() if kind == "llama" else synth.tiny_bpe_tokenizer()
    n = len(base.tokens)
    if vocab_size <= n:
        if vocab_size == n:
            return base
        return None  # too small for any tokenizer we can build: the model gets random ids
    import numpy as np

    from ..text.tokenizer.spec import NORMAL

    extra = vocab_size - n
    fill = [f"<fill{i}>" for i in range(extra)]
    scores = None
    if base.scores is not None:
        low = float(base.scores.min())
        scores = np.concatenate([base.scores, low - 1.0 - np.arange(extra, dtype=np.float32)]).astype(np.float32)
    types = np.concatenate([base.token_types, np.full(extra, NORMAL, np.int32)])
    return dataclasses.replace(base, tokens=base.tokens + fill, scores=scores, token_types=types)


def synth_dir() -> Path:
    from ..store import home_dir

    return home_dir() / "synth"


def _study_presets() -> dict:
    """The llamafile-vs-MLX study's shapes (config.json of Llama-3.2-1B/3B-Instruct and Meta-Llama-3-8B;
    RoPE scaling left out: random weights do not care), added to synth.PRESETS for the lab."""
    from ..runtime.config import ModelConfig

    def llama3(name, **kw):
        return ModelConfig(arch="llama", name=name, vocab_size=128256, context_length=8192, rope_base=500000.0,
                           n_kv_heads=8, **kw)

    return {
        "llama-3.2-1b": llama3("llama-3.2-1b", dim=2048, n_layers=16, n_heads=32, ffn_dim=8192, tied_output=True),
        "llama-3.2-3b": llama3("llama-3.2-3b", dim=3072, n_layers=28, n_heads=24, ffn_dim=8192, tied_output=True),
        "llama-3-8b": llama3("llama-3-8b", dim=4096, n_layers=32, n_heads=32, ffn_dim=14336, tied_output=False),
    }


def all_presets() -> dict:
    from .synth import PRESETS

    return {**PRESETS, **_study_presets()}


def synth_config(preset: str, min_ctx: int = 0, ctx: int | None = None):
    """The preset's config with its context length set to ctx, or raised to at least min_ctx
    (random weights do not care how long a context they are run on)."""
    PRESETS = all_presets()

    if preset not in PRESETS:
        raise ModelNotFoundError(f"unknown synth preset {preset!r}; known: {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    want = ctx if ctx else max(min_ctx, cfg.context_length)
    return cfg if want == cfg.context_length else dataclasses.replace(cfg, context_length=want)


def synthesize(preset: str, dtype: str = DEFAULT_SYNTH_DTYPE, fmt: str = "gguf", path: str | os.PathLike | None = None,
               min_ctx: int = 0, seed: int = SYNTH_SEED, tokenizer: bool = True, ctx: int | None = None,
               fallback: bool = True, progress: bool = False) -> Path:
    """Write (or reuse) a synthesized model file; returns its path.

    Without ``path`` the file goes to the synth cache, named by preset, dtype, context
    and seed, and is written only if absent (write to a temporary name, then rename).
    A llama2.c checkpoint gets its tokenizer.bin beside it. Without ``fallback``, a K-quant
    the shapes cannot hold is an error instead of llama.cpp's substitute type. ``progress``
    shows a bar over the tensors on stderr (a 1B model takes a minute, 8B several).

    A llama.cpp mix (``q4_k_m``, ``q3_k_s``, ...: a type name with _S, _M or _L) is made as a
    user makes one: the preset in F16 (also cached), then ``llamalab quantize`` to the mix.

    The file is then rehoused (formats/pages.py): written here, or by an earlier run, it may
    be cached in 4 KiB folios, which every process would map 4 KiB at a time.
    """
    if fmt == "gguf" and is_mix(dtype):
        path = _synthesize_mix(preset, dtype, path, min_ctx, seed, tokenizer, ctx, progress)
    else:
        path = _synthesize_file(preset, dtype, fmt, path, min_ctx, seed, tokenizer, ctx, fallback, progress)
    rehouse(path)
    return path


def _synthesize_file(preset: str, dtype: str, fmt: str, path, min_ctx: int, seed: int, tokenizer: bool,
                     ctx: int | None, fallback: bool, progress: bool) -> Path:
    """synthesize for one type (not a mix), without the rehousing."""
    from . import synth

    cfg = synth_config(preset, min_ctx, ctx)
    if fmt not in ("gguf", "llama2c"):
        raise InvalidArgumentError(f"format must be gguf or llama2c, got {fmt!r}")
    if fmt == "llama2c" and dtype.lower() != "f32":
        raise InvalidArgumentError(f"llama2c checkpoints are float32 only (--dtype f32), got {dtype!r}")
    qtype = parse_dtype(dtype) if fmt == "gguf" else None
    if qtype is not None and not fallback and (subs := fallback_types(cfg, qtype)):
        rows = ", ".join(map(str, subs))
        raise InvalidArgumentError(
            f"--dtype {dtype}: {qtype.name} stores rows in multiples of {quants_block(qtype)}, and {preset} has rows of "
            f"{rows}; llama.cpp would store those tensors as {', '.join(sorted({t.name for t in subs.values()}))} "
            f"(pass --fallback for that), or choose a type with 32-value blocks (q8_0, q4_0, ...)")
    if path is None:
        suffix = "gguf" if fmt == "gguf" else "bin"
        path = synth_dir() / f"{preset}-{dtype.lower()}-ctx{cfg.context_length}-s{seed}.{suffix}"
        if path.is_file():
            if fmt == "llama2c" and tokenizer and not (path.parent / "tokenizer.bin").exists():
                write_llama2c_tokenizer_beside(path, cfg)  # cached before checkpoints came with one
            return path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if fmt == "gguf":
            tok = padded_tokenizer(cfg.vocab_size, "gpt2" if preset.startswith("smollm") else "llama") if tokenizer else None
            with progress_bar(synth.file_tensor_count(cfg), f"synth {preset}", enabled=progress) as step:
                synth.write_gguf(tmp, cfg, qtype, tokenizer=tok, seed=seed, fallback=True,
                                 progress=lambda name: step(1, name))
        else:
            synth.write_llama2c(tmp, cfg, dtype="f32", shared_classifier=cfg.tied_output, seed=seed)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if fmt == "llama2c" and tokenizer:
        write_llama2c_tokenizer_beside(path, cfg)
    return path


def is_mix(dtype: str) -> bool:
    """Whether dtype names one of llama.cpp's per-tensor mixes (Q4_K_M, Q3_K_S, ...) rather than a type."""
    return dtype.upper().endswith(("_S", "_M", "_L"))


def _synthesize_mix(preset: str, dtype: str, path, min_ctx: int, seed: int, tokenizer: bool, ctx: int | None,
                    progress: bool) -> Path:
    from ..convert.mixes import parse_file_type
    from ..convert.quantize import quantize_file

    name = parse_file_type(dtype)[0]  # a clear error for an unknown mix
    cfg = synth_config(preset, min_ctx, ctx)
    if path is None:
        path = synth_dir() / f"{preset}-{name.lower()}-ctx{cfg.context_length}-s{seed}.gguf"
        if path.is_file():
            return path
    # the F16 source is only read by the quantizer: not rehoused (for an 8B model, 16 GB read again from disk)
    source = _synthesize_file(preset, "f16", "gguf", None, min_ctx, seed, tokenizer, ctx, True, progress)
    quantize_file(source, path, name, progress=progress)
    return Path(path)


def quants_block(qtype) -> int:
    from .. import quants

    return quants.format_of(qtype).block_size


def parse_synth_spec(spec: str) -> tuple[str, str]:
    """'synth:stories15M' -> ('stories15M', 'q8_0'); 'synth:stories15M:f32' -> ('stories15M', 'f32')."""
    parts = spec[len(SYNTH_PREFIX):].split(":")
    if not parts[0] or len(parts) > 2:
        raise InvalidArgumentError(f"bad synth spec {spec!r}; expected synth:PRESET or synth:PRESET:DTYPE")
    return parts[0], (parts[1] if len(parts) == 2 else DEFAULT_SYNTH_DTYPE)


def resolve(spec: str | None, tokenizer: str | None = None, min_ctx: int = 0) -> tuple[ModelInfo, object]:
    """Resolve one spec to (ModelInfo, LoadedModel); synthesizes ``synth:`` models on first use."""
    from ..formats import load as load_model_file
    from ..store import resolve_model

    synthesized, preset = False, None
    if spec is not None and spec.startswith(SYNTH_PREFIX):
        preset, dtype = parse_synth_spec(spec)
        path = synthesize(preset, dtype, min_ctx=min_ctx, progress=True)
        synthesized = True
    else:
        path = resolve_model(spec, progress=True)
    loaded = load_model_file(path, tokenizer)
    cfg = loaded.config
    with open(path, "rb") as f:
        fmt = "gguf" if f.read(4) == b"GGUF" else "llama2c"
    qt = dominant_qtype(loaded.weights)
    info = ModelInfo(
        spec=spec or "default", path=str(path), filename=Path(path).name, format=fmt, size=os.path.getsize(path),
        n_params=cfg.n_params(), type=f"{cfg.arch} {human_count(cfg.n_params())} {qt}",
        context_length=cfg.context_length, config=dataclasses.asdict(cfg),
        tokenizer=str(tokenizer) if tokenizer else None, synthesized=synthesized, synth_preset=preset,
    )
    return info, loaded


def llama2c_twin(info: ModelInfo) -> str:
    """A llama2.c checkpoint with the same float32 weights as a synthesized model (written on first use)."""
    if not info.synthesized:
        raise InvalidArgumentError(f"{info.filename}: only synth: models have a llama2.c twin")
    if info.llama2c_twin is None:
        info.llama2c_twin = str(synthesize(info.synth_preset, "f32", fmt="llama2c", min_ctx=info.context_length))
    return info.llama2c_twin
