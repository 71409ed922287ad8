"""The bench lab's commands: ``bench``, ``study``, ``profile``, ``synth``.

``llamalab.cli`` registers these functions when this module imports; everything heavy
is imported inside them, so ``llamalab --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

DEFAULT_BACKENDS = "llamalab,reference,llama.cpp,transformers"
DEFAULT_CAPS = ["reference=/16"]  # the NumPy reference decodes at ~1 token/s on the default model

ModelsOpt = typer.Option(None, "-m", "--model", help="Model path, known name or synth:PRESET[:DTYPE]; comma list or "
                         "repeat the option (default: the default model).")
BackendsOpt = typer.Option(None, "--backend", "-b", help=f"Comma list of {DEFAULT_BACKENDS}, external:NAME "
                           "(default: all four; those not installed are listed as skipped).")
ExternalOpt = typer.Option(None, "--external", help="Another runtime: 'name=N;cmd=TEMPLATE;regex=RE' or a .json/.toml "
                           "file with those keys. Placeholders: {model} {model_llama2c} {n_prompt} {n_gen} {steps} "
                           "{threads} {prompt} {prompt_file} {tokenizer}.")
CapOpt = typer.Option(None, "--cap", help="Let a slow backend run fewer tokens: BACKEND=MAX_PROMPT/MAX_GEN "
                      "(e.g. reference=512/16 or reference=/16); default reference=/16; 'none' for no caps. Capped rows are marked.")
PythonOpt = typer.Option(None, "--python", help="Interpreter for the worker processes (e.g. a venv with "
                         "llama-cpp-python / torch); default: this one.")
TokenizerOpt = typer.Option(None, "--tokenizer", help="llama2.c tokenizer.bin, for llama2.c checkpoints.")


def _check_out_file(path: Path, option: str) -> None:
    """Refuse an output file that cannot be written before the run, not after it."""
    import os

    from ..errors import InvalidArgumentError

    if path.is_dir():
        raise InvalidArgumentError(f"{option} {path}: is a folder; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InvalidArgumentError(f"{option} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InvalidArgumentError(f"{option} {path}: not writable")


def _check_out_folder(path: Path, option: str) -> None:
    import os

    from ..errors import InvalidArgumentError

    if path.exists() and not path.is_dir():
        raise InvalidArgumentError(f"{option} {path}: is a file; the study writes a folder "
                                   "(results.json, results.csv, report.md, charts)")
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not os.access(existing, os.W_OK):
        raise InvalidArgumentError(f"{option} {path}: {existing} is not writable")


class _TermAsInterrupt:
    """SIGTERM ends a run like Ctrl-C: the `finally` blocks stop the worker processes."""

    def __enter__(self):
        import signal
        import threading

        self.old = None
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGTERM, self._interrupt)
        return self

    @staticmethod
    def _interrupt(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        import signal

        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)


def _err_if_bad_format(fmt: str, allowed: tuple[str, ...]) -> None:
    from ..errors import InvalidArgumentError

    if fmt not in allowed:
        raise InvalidArgumentError(f"-o/--output must be one of {', '.join(allowed)}, got {fmt!r}")


def bench(
    model: Optional[list[str]] = ModelsOpt,
    n_prompt: list[str] = typer.Option(["512"], "-p", "--n-prompt", help="Prompt sizes (pp tests), comma list."),
    n_gen: list[str] = typer.Option(["128"], "-n", "--n-gen", help="Generation lengths (tg tests), comma list."),
    threads: list[str] = typer.Option(["1,2"], "-t", "--threads", help="Thread counts, comma list."),
    repeats: int = typer.Option(3, "-r", "--repetitions", min=1, help="Repeats per test (median of these)."),
    output: str = typer.Option("md", "-o", "--output", help="md, csv, json or jsonl."),
    backend: Optional[list[str]] = BackendsOpt,
    external: Optional[list[str]] = ExternalOpt,
    baseline: str = typer.Option("llama.cpp", "--baseline", help="Backend the ratios are against ('none': no ratios)."),
    cap: Optional[list[str]] = CapOpt,
    python: Optional[str] = PythonOpt,
    timeout: float = typer.Option(600, "--timeout", min=1, help="Seconds allowed per load and per run."),
    out_file: Optional[Path] = typer.Option(None, "--out-file", help="Also write the output to this file."),
    tokenizer: Optional[Path] = TokenizerOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
):
    """Throughput like llama-bench: pp (prompt) and tg (generation) tests, mean ± stddev tokens/s, alternating backends."""
    from .matrix import choose_baseline, parse_backends, parse_ints, parse_list, prepare_models, resolve_caps
    from .progress import progress_bar
    from .report import bench_output
    from .sweep import apply_baseline, bench_notes, run_bench

    _err_if_bad_format(output, ("md", "csv", "json", "jsonl"))
    if out_file:
        _check_out_file(out_file, "--out-file")
    names = parse_list(backend) if backend else parse_list(DEFAULT_BACKENDS)
    backends = parse_backends(names, external, resolve_caps(cap, names, DEFAULT_CAPS))
    thread_list = parse_ints(threads, "threads")
    pp, tg = parse_ints(n_prompt, "n-prompt"), parse_ints(n_gen, "n-gen")
    models, _ = prepare_models(parse_list(model) or [None], str(tokenizer) if tokenizer else None,
                               min_ctx=max(pp + tg + [1]) + 16)
    with _TermAsInterrupt():
        rows = run_bench(models, backends, thread_list, pp, tg, repeats, None, python=python, run_timeout=timeout,
                         load_timeout=timeout, bar=lambda total: progress_bar(total, "bench", progress))
    ok = {r["backend"] for r in rows if r["status"] == "ok"}
    base, note = choose_baseline(baseline, ok, [b.name for b in backends])
    apply_baseline(rows, base)
    text = bench_output(rows, output, base)
    notes = ([note] if note else []) + bench_notes(rows, backends, models)
    if output == "md":
        text += "\n\n" + "\n".join(f"note: {n}" for n in notes + [
            "t/s: mean ± sample stddev over repeats; ratios use medians; warm-up, tokenization and sampling excluded",
            "GB/s = weight bytes × tg t/s (tg only); GFLOP/s = 2 × parameters × t/s",
            machine_note(),
            "peak RSS: the runtime's high-water mark while the tests run (reset before each); the load's own peak "
            "is load_peak_rss_bytes in -o json"])
    else:
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
    print(text)
    if out_file:
        try:
            out_file.write_text(text + "\n")
        except OSError as e:
            from ..errors import LlamalabError

            print(text, file=sys.stderr)
            raise LlamalabError(f"--out-file {out_file}: cannot write it ({e.strerror}); the results are above") from None


RuntimeOpt = typer.Option(None, "--runtime", help="Where a named runtime's program is: NAME=PATH (repeatable or "
                          "comma list); else $LLAMALAB_<NAME>, $LLAMALAB_PORTS/..., PATH. See `llamalab runtimes`.")


def machine_note() -> str:
    """One line for a bench table: the machine and what the probe measured."""
    from .machine import describe

    m = describe()
    p = m["probe"]
    return (f"machine: {m['cpu']}, {m['physical_cores']} cores, ISA {p['isa']}, AMX {'yes' if p['amx'] else 'no'}; "
            f"probe: memory read {p['read_gbs']:.1f} GB/s, float32 matmul {p['peak_gflops']:.0f} GFLOP/s")


def study(
    action: Optional[list[str]] = typer.Argument(None, help="`merge DIR...`: merge shard/machine results into -o."),
    model: Optional[list[str]] = ModelsOpt,
    backend: Optional[list[str]] = BackendsOpt,
    threads: Optional[list[str]] = typer.Option(None, "-t", "--threads", help="Thread counts, comma list (default 1,2)."),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="Prompt lengths as NAME=TOKENS, comma list "
                                          "(default: short=5,long=1200,very long=4000)."),
    n_gen: Optional[int] = typer.Option(None, "-n", "--n-gen", min=1, help="Tokens generated per inference (default 125)."),
    repeats: Optional[int] = typer.Option(None, "-r", "--repetitions", min=1, help="Repeats per cell (default 3)."),
    out: Path = typer.Option(Path("study"), "-o", "--out", help="Folder for results.json, results.csv, report.md, PNGs."),
    quick: bool = typer.Option(False, "--quick", help="Smoke run: stories15M (synth), llamalab + reference, 1 thread, "
                               "prompts of 5 and 128 tokens, 16 generated, 2 repeats; with --preset, that "
                               "study's smoke run (options given explicitly win)."),
    baseline: str = typer.Option("llama.cpp", "--baseline", help="Backend for the ratio tables ('none': no ratios)."),
    cap: Optional[list[str]] = CapOpt,
    external: Optional[list[str]] = ExternalOpt,
    python: Optional[str] = PythonOpt,
    timeout: float = typer.Option(900, "--timeout", min=1, help="Seconds allowed per load and per inference."),
    tokenizer: Optional[Path] = TokenizerOpt,
    charts: bool = typer.Option(True, "--charts/--no-charts", help="Write PNG charts."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    preset_name: Optional[str] = typer.Option(None, "--preset", help="A study: languages (llama2.c and its ports), "
                                              "llamafile-mlx (Llama 3 shapes, long prompts), numba-np (llama3.np vs "
                                              "Numba); with --quick, its smoke run."),
    runtime: Optional[list[str]] = RuntimeOpt,
    shard: Optional[str] = typer.Option(None, "--shard", help="Run only shard I of N (I/N, from 0): every N-th "
                                        "(model, backend, threads); combine with `llamalab study merge`."),
    ray_address: Optional[str] = typer.Option(None, "--ray", help="Run on a Ray cluster ('auto' or HOST:PORT; "
                                              "needs the ray extra): one shard per --ray-label node, merged."),
    ray_label: Optional[str] = typer.Option(None, "--ray-label", help="Comma list of the custom resources the "
                                            "nodes were started with (ray start --resources='{\"NAME\": 1}')."),
):
    """The full matrix: models × backends × threads × prompt lengths; writes a report with tables and charts."""
    from . import study as st

    _check_out_folder(out, "-o/--out")
    if action:
        from ..errors import InvalidArgumentError

        if action[0] != "merge" or len(action) < 2:
            raise InvalidArgumentError(f"study: unexpected argument(s) {' '.join(action)}; did you mean "
                                       "`llamalab study merge DIR [DIR...] -o OUT`?")
        from .shards import merge_dirs

        merge_dirs([Path(a) for a in action[1:]], out, charts=charts)
        print(f"wrote {out / 'report.md'}, results.json, results.csv", file=sys.stderr)
        return
    if preset_name:
        if preset_name not in st.PRESETS:
            from ..errors import InvalidArgumentError

            raise InvalidArgumentError(f"--preset {preset_name!r}: choose one of {', '.join(st.PRESETS)}")
        p = dict(st.PRESETS[preset_name])
        p.update(p.pop("quick") if quick else {})
        p.pop("quick", None)
        preset = p
    else:
        preset = st.QUICK if quick else st.FULL
    kwargs = dict(
        models_l=parse_models(model) if model else preset["models"],
        names=backend if backend else preset["backends"],
        threads=threads if threads else [",".join(map(str, preset["threads"]))],
        prompt_map=parse_prompts(prompts) if prompts else dict(preset["prompts"]),
        n_gen=n_gen or preset["n_gen"], repeats=repeats or preset["repeats"], out=out, baseline=baseline, cap=cap,
        external=external, python=python, timeout=timeout, tokenizer=str(tokenizer) if tokenizer else None,
        charts=charts, progress=progress, preset=preset_name, runtime=runtime, shard=shard, quick=quick)
    if ray_address:
        from .matrix import parse_list
        from .ray_cells import run_on_ray

        if shard:
            from ..errors import InvalidArgumentError

            raise InvalidArgumentError("--ray places the shards itself; leave out --shard")
        run_on_ray(ray_address, parse_list(ray_label or ""), out, charts, kwargs)
        print(f"wrote {out / 'report.md'}, results.json, results.csv", file=sys.stderr)
        return
    with _TermAsInterrupt():
        run_study_command(**kwargs)


def parse_models(values) -> list[str]:
    from .matrix import parse_list

    return parse_list(values)


def parse_prompts(text: str) -> dict[str, int]:
    """'short=5,long=1200' -> {'short': 5, 'long': 1200}."""
    from ..errors import InvalidArgumentError

    out = {}
    for item in text.split(","):
        name, sep, n = item.partition("=")
        try:
            out[name.strip()] = int(n)
        except ValueError:
            raise InvalidArgumentError(f"--prompts {item!r}: expected NAME=TOKENS, e.g. long=1200") from None
        if not sep or not name.strip() or out[name.strip()] < 1:
            raise InvalidArgumentError(f"--prompts {item!r}: expected NAME=TOKENS with TOKENS >= 1")
    return out


def run_study_command(models_l, names, threads, prompt_map, n_gen, repeats, out: Path, baseline, cap, external,
                      python, timeout, tokenizer, charts, progress, preset=None, runtime=None, shard=None,
                      quick=False) -> dict:
    """Parse the study's options, prepare the models, then run and write it (study.make_study)."""
    import shlex

    from .matrix import parse_backends, parse_ints, parse_list, prepare_models, resolve_caps
    from .ports import parse_overrides
    from .shards import parse_shard
    from .study import make_study

    names = parse_list(names)
    shard_t = parse_shard(shard) if shard else None
    backends = parse_backends(names, external, resolve_caps(cap, names, DEFAULT_CAPS), runtimes=parse_overrides(runtime))
    thread_list = parse_ints(threads, "threads")
    need = max(prompt_map.values()) + n_gen + 16
    models, problems = prepare_models(models_l, tokenizer, min_ctx=need, strict=False)
    if not models:
        from ..errors import LlamalabError

        raise LlamalabError("no model could be prepared: " + "; ".join(problems))
    parts = ["llamalab", "study", "-m", ",".join(models_l), "-b", ",".join(n for n in names), "-t",
             ",".join(map(str, thread_list)), "--prompts", ",".join(f"{k}={v}" for k, v in prompt_map.items()),
             "-n", str(n_gen), "-r", str(repeats)]
    if preset:
        parts = ["llamalab", "study", "--preset", preset] + (["--quick"] if quick else [])
    if shard:
        parts += ["--shard", shard]
    for b in backends:
        if b.cap:
            parts += ["--cap", f"{b.name}={b.cap}"]
        if "external" in b.options:
            e = b.options["external"]
            parts += ["--external", f"name={e['name']};cmd={e['cmd']};regex={e['regex']}"]
    cmd = " ".join(shlex.quote(a) for a in parts)
    extra = {}
    if preset == "numba-np":
        from .npstudy import numba_np_extras

        extra = numba_np_extras(models, backends, progress=progress)
    result = make_study(models, backends, thread_list, prompt_map, n_gen, repeats, out, baseline=baseline,
                        python=python, timeout=timeout, charts=charts, progress=progress, command=cmd, notes=problems,
                        preset=preset, extra=extra, shard=shard_t,
                        reference="fast" if preset == "llamafile-mlx" else "reference")
    print(f"wrote {out / 'report.md'}, results.json, results.csv"
          + (f" and {len(result['charts'])} charts" if result["charts"] else ""), file=sys.stderr)
    return result


def runtimes(
    action: Optional[list[str]] = typer.Argument(None, help="`build NAME --source DIR`: build a port from your checkout."),
    runtime: Optional[list[str]] = RuntimeOpt,
    source: Optional[Path] = typer.Option(None, "--source", help="The port's checkout (build)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """The named runtimes a study can compare: found or missing (and why), formats, limitations; or build one."""
    import json

    from .ports import PORTS, listing, parse_overrides

    if action:
        from ..errors import InvalidArgumentError

        if action[0] != "build" or len(action) != 2:
            raise InvalidArgumentError(f"runtimes: unexpected argument(s) {' '.join(action)}; expected "
                                       "`llamalab runtimes build NAME --source DIR`")
        from .build import build_port

        print(build_port(action[1], source))
        return
    rows = listing(parse_overrides(runtime))
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    from .report import md_table

    print(md_table(["runtime", "language", "status", "path / why missing", "reads"],
                   [[r["name"], r["language"], r["status"], r["path"] or r["detail"], ", ".join(r["reads"])]
                    for r in rows], "lllll"))
    print("\nlimitations:")
    for r in rows:
        for lim in r["limits"]:
            print(f"  {r['name']}: {lim}")
    print(f"\nbuilt-in backends: llamalab, reference, llama.cpp (llama-cpp-python), transformers; "
          f"{len(PORTS)} named runtimes above; anything else: --external")


def profile(
    model_arg: Optional[str] = typer.Argument(None, metavar="[MODEL]", help="Same as --model."),
    model: Optional[str] = typer.Option(None, "-m", "--model", help="Model path, known name or synth:PRESET "
                                        "(default: the default model)."),
    backend: str = typer.Option("fast", "--backend", help="fast or reference."),
    threads: Optional[int] = typer.Option(None, "-t", "--threads", min=1, help="Compute threads (default: physical cores)."),
    n_prompt: int = typer.Option(128, "-p", "--n-prompt", min=1, help="Prompt tokens to prefill."),
    n_gen: int = typer.Option(32, "-n", "--n-gen", min=1, help="Tokens to decode."),
    unfused: bool = typer.Option(False, "--unfused", help="Switch off the compiled one-call decode step to split decode by op."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    chart: Optional[Path] = typer.Option(None, "--chart", help="Also write a PNG chart here."),
    tokenizer: Optional[Path] = TokenizerOpt,
):
    """Time per operation (each matmul, attention, norms, RoPE, sampling, the rest), prefill and decode apart; dtypes."""
    import json

    from ..api import LLM
    from .models import parse_synth_spec, synthesize
    from .profile import profile_chart, profile_llm, profile_markdown

    from ..cli import pick_model

    spec = pick_model(model_arg, model)
    if spec and spec.startswith("synth:"):
        preset, dtype = parse_synth_spec(spec)
        spec = str(synthesize(preset, dtype, min_ctx=n_prompt + n_gen + 8))
    llm = LLM(spec, threads=threads, n_ctx=n_prompt + n_gen + 8, backend=backend,
              tokenizer=str(tokenizer) if tokenizer else None)
    result = profile_llm(llm, n_prompt, n_gen, unfused=unfused)
    print(json.dumps(result, indent=1, default=str) if as_json else profile_markdown(result))
    if chart:
        profile_chart(result, chart)
        print(f"wrote {chart}", file=sys.stderr)


def synth(
    name: str = typer.Argument(..., help="Preset: stories15M/42M/110M, smollm2-135m, llama-3.2-1b, llama-3.2-3b, "
                               "llama-3-8b, qwen2.5-0.5b, qwen3-0.6b, gemma3-270m, phi-3-mini, tiny, tiny256, "
                               "tiny-llama3, tiny-qwen2, tiny-qwen3, tiny-gemma3, tiny-phi3."),
    format: str = typer.Option("gguf", "--format", "-f", help="gguf or llama2c."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k "
                                        "(GGUF; default q8_0), or a llama.cpp mix such as q4_k_m (made from the F16 file by "
                                        "`llamalab quantize`); llama2c: f32 only."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output file (default: NAME-DTYPE.gguf / NAME.bin here)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed of the weights."),
    ctx: Optional[int] = typer.Option(None, "--ctx", min=1, help="Context length to record (default: the preset's)."),
    no_tokenizer: bool = typer.Option(False, "--no-tokenizer", help="GGUF without tokenizer keys (llama.cpp cannot load "
                                      "it); llama2c: no tokenizer.bin."),
    fallback: bool = typer.Option(False, "--fallback", help="Where a K-quant cannot hold a preset's rows (not multiples of "
                                  "256), store those tensors in llama.cpp's substitute type instead of refusing."),
):
    """Write a model with a preset's shapes and random weights (for benchmarks: speed depends only on shapes).
    A llama2c checkpoint comes with its tokenizer.bin."""
    from ..errors import InvalidArgumentError
    from .models import fallback_types, is_mix, parse_dtype, synth_config, synthesize

    if format not in ("gguf", "llama2c"):
        raise InvalidArgumentError(f"--format must be gguf or llama2c, got {format!r}")
    dtype = dtype or ("q8_0" if format == "gguf" else "f32")
    if out is None:
        out = Path(f"{name}-{dtype.lower()}.gguf" if format == "gguf" else f"{name}.bin")
    path = synthesize(name, dtype, fmt=format, path=out, ctx=ctx, seed=seed, tokenizer=not no_tokenizer,
                      fallback=fallback, progress=sys.stderr.isatty())  # a bar on a terminal; logs stay quiet
    if format == "gguf" and not is_mix(dtype):
        qtype = parse_dtype(dtype)
        for cols, sub in fallback_types(synth_config(name, 0, ctx), qtype).items():
            print(f"note: rows of {cols} are not whole {qtype.name} blocks; those tensors are {sub.name} "
                  f"(llama.cpp's fallback)", file=sys.stderr)
    elif not no_tokenizer:
        tok = next((p for p in (path.with_name(path.stem + ".tokenizer.bin"), path.parent / "tokenizer.bin")
                    if p.exists()), None)
        if tok is not None:
            print(f"wrote {tok}" + (f" (a different tokenizer.bin is there already: pass --tokenizer {tok})"
                                    if tok.name != "tokenizer.bin" else ""), file=sys.stderr)
    print(path)
