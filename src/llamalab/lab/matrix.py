"""Shared by ``bench`` and ``study``: which backends, with which caps, on which models.

A cap lets a slow backend run fewer tokens (``reference=512/16``: prompts of at most
512 tokens, at most 16 generated); every capped row says so in its output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InvalidArgumentError
from .backends import BUILTIN, ExternalSpec, Job, canonical
from .models import ModelInfo, llama2c_twin
from .workload import TokenSource


@dataclass(frozen=True)
class Cap:
    n_prompt: int | None = None
    n_gen: int | None = None

    def __str__(self) -> str:
        return f"{self.n_prompt if self.n_prompt is not None else ''}/{self.n_gen if self.n_gen is not None else ''}"


@dataclass
class Backend:
    """A backend as the user chose it: its name, options for the worker, and a cap."""

    name: str
    options: dict = field(default_factory=dict)
    cap: Cap | None = None


def parse_list(values) -> list[str]:
    """['a,b', 'c'] or 'a,b' -> ['a', 'b', 'c']."""
    if isinstance(values, str):
        values = [values]
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def parse_ints(values, what: str) -> list[int]:
    out = []
    for v in parse_list(values):
        try:
            n = int(v)
        except ValueError:
            raise InvalidArgumentError(f"{what}: expected integers, got {v!r}") from None
        if n < 0 or (what == "threads" and n < 1):
            raise InvalidArgumentError(f"{what}: {n} is out of range")
        out.append(n)
    return out


def parse_caps(values) -> dict[str, Cap]:
    """['reference=512/16', 'transformers=/64'] -> {name: Cap}; 'none' -> {}."""
    caps = {}
    for item in parse_list(values):
        if item.lower() == "none":
            return {}
        name, sep, spec = item.partition("=")
        p, slash, g = spec.partition("/")
        try:
            cap = Cap(int(p) if p else None, int(g) if g else None)
        except ValueError:
            cap = None
        if not sep or not slash or cap is None or (cap.n_prompt is None and cap.n_gen is None):
            raise InvalidArgumentError(f"--cap {item!r}: expected BACKEND=MAX_PROMPT/MAX_GEN, e.g. reference=512/16")
        caps[canonical(name)] = cap
    return caps


def resolve_caps(given, names: list[str], default: list[str]) -> dict[str, Cap]:
    """--cap as given; when not given, the default caps of the backends that are in the run."""
    if given is not None:
        return parse_caps(given)
    present = {canonical(n) for n in names}
    return {k: v for k, v in parse_caps(default).items() if k in present}


def parse_backends(names, externals=(), caps: dict[str, Cap] | None = None,
                   runtimes: dict[str, str] | None = None) -> list[Backend]:
    """Backend names (comma lists allowed) plus --external specs -> Backend list, externals appended.

    A name from ``ports.PORTS`` is a named runtime, found now (runtimes: --runtime NAME=PATH);
    one that is missing stays in the list and its cells are skipped with the reason.
    """
    import shutil

    from .ports import PORTS, find

    caps = caps or {}
    specs = {}
    for e in externals or []:
        spec = ExternalSpec.parse(e)
        specs[spec.name] = spec
    out, seen = [], set()
    for raw in parse_list(names):
        name = canonical(raw)
        if name.startswith("external:"):
            ext = name.split(":", 1)[1]
            if ext not in specs:
                raise InvalidArgumentError(f"backend {raw!r}: no --external named {ext!r}")
        elif name not in BUILTIN and name not in PORTS and name.split(":")[0] != "fake":
            raise InvalidArgumentError(f"unknown backend {raw!r}; choose from {', '.join(BUILTIN)}, a runtime "
                                       f"({', '.join(PORTS)}) or external:NAME")
        if name not in seen:
            seen.add(name)
            b = Backend(name, cap=caps.get(name))
            if name in PORTS and name not in BUILTIN:
                exe, how = find(name, runtimes)
                b.options["port"] = {"name": name, "exe": exe, "missing": None if exe else how,
                                     "hyperfine": shutil.which("hyperfine")}
            out.append(b)
    for ext, spec in specs.items():
        name = f"external:{ext}"
        if name not in seen:
            seen.add(name)
            out.append(Backend(name, cap=caps.get(name)))
    for b in out:
        if b.name.startswith("external:"):
            b.options["external"] = {k: getattr(specs[b.name.split(':', 1)[1]], k) for k in ExternalSpec.KEYS}
    unknown_caps = set(caps) - seen
    if unknown_caps:
        raise InvalidArgumentError(f"--cap for backend(s) not in the run: {', '.join(sorted(unknown_caps))}")
    return out


def port_files(info: ModelInfo, port_name: str, n_gen: int) -> tuple[dict, str | None]:
    """The exported files a port reads for this model ({format: path}), or ({}, why not)."""
    from .export import export
    from .models import parse_synth_spec
    from .ports import PORTS

    port = PORTS[port_name]
    if not info.synthesized:
        return {}, "ports run on synth: models, whose weights the lab writes in each port's format"
    if port.fixed_shape and info.synth_preset != port.fixed_shape:
        return {}, f"{port_name} hard-codes the {port.fixed_shape} shapes; this model is {info.synth_preset}"
    dtype = parse_synth_spec(info.spec)[1].lower()
    files = {}
    for fmt in port.reads:
        if fmt == "hf" and dtype not in ("f32", "f16"):
            return {}, f"{port_name} gets f32/f16 weights here, not {dtype} (quantize with mlx_lm.convert -q)"
        if fmt == "llama2c" and port_name == "llama2.cpp":  # runs exactly seq_len steps
            files[fmt] = str(export(info.synth_preset, fmt, ctx=n_gen))
        elif fmt in ("llama2c", "npz", "tokenizer.bin-legacy", "tokenizer.bin", "tokenizer.model.np"):
            files[fmt] = str(export(info.synth_preset, fmt, ctx=max(info.context_length, n_gen + 8)
                                    if fmt == "llama2c" else None))
        else:
            files[fmt] = str(export(info.synth_preset, fmt, dtype=dtype, ctx=info.context_length))
    return files, None


def make_job(info: ModelInfo, backend: Backend, threads: int, n_ctx: int, n_gen: int = 0) -> Job:
    """The worker job for one (model, backend, threads)."""
    options = dict(backend.options)
    if "port" in options:
        port = dict(options["port"])
        if port.get("exe"):
            files, why = port_files(info, backend.name, n_gen)
            port["files"], port["missing"] = files, why
            if why:
                port["exe"] = None
        options["port"] = port
    ext = options.get("external")
    if ext and "{model_llama2c}" in ext["cmd"] and info.synthesized:
        options["model_llama2c"] = llama2c_twin(info)
    return Job(backend=backend.name, model=info.path, threads=threads, n_ctx=n_ctx, tokenizer=info.tokenizer,
               options=options)


@dataclass
class PreparedModel:
    """A model ready to benchmark: its info and where its token ids come from."""

    info: ModelInfo
    tokens: TokenSource


def prepare_models(specs: list[str | None], tokenizer: str | None = None, min_ctx: int = 0,
                   strict: bool = True) -> tuple[list[PreparedModel], list[str]]:
    """Resolve each spec (synthesizing synth: models) and tokenize the prompt text for it.

    strict: the first model that cannot be resolved raises; otherwise it is reported in
    the returned problems list and the others go on.
    """
    from ..errors import LlamalabError
    from .models import resolve
    from .workload import token_source

    out, problems = [], []
    for spec in specs:
        spec = None if spec in (None, "", "default") else spec
        try:
            info, loaded = resolve(spec, tokenizer, min_ctx)
        except LlamalabError as e:
            if strict:
                raise
            problems.append(f"model {spec or 'default'}: {e}")
            continue
        tokens = token_source(loaded.tokenizer, loaded.config.vocab_size)
        out.append(PreparedModel(info, tokens))
        del loaded
    return out, problems


def choose_baseline(requested: str | None, rows_ok: set[str], order: list[str]) -> tuple[str | None, str | None]:
    """The baseline to use and a note when it had to change."""
    if requested and requested.lower() == "none":
        return None, None
    want = canonical(requested) if requested else None
    if want in rows_ok:
        return want, None
    for b in ["llama.cpp", "reference"] + order:
        if b in rows_ok:
            return b, (f"baseline {want} has no results; ratios are against {b}" if want else None)
    return None, None
