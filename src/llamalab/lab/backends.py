"""Runtimes under test, as they run inside a worker process (one runtime per process).

Each runtime loads a model once and then times runs of the same shape everywhere:
``prefill`` = one forward of the prompt ids on an empty cache (first-token logits
included), ``decode`` = one forward per fed token id, each timed on its own. No
tokenization, no sampling: the ids come from the parent (see ``workload``).

- ``llamalab``   llamalab's fast path (compiled quantized kernels)
- ``reference``  llamalab's plain NumPy path (weights dequantized to float32, BLAS)
- ``llama.cpp``  llama-cpp-python: ``Llama.eval`` of the prompt after ``reset``, then ``eval([tok])``
- ``transformers`` PyTorch via transformers' GGUF loader (weights dequantized to float32)
- a port's name (``llama2.c``, ``llama2.mojo``, ... see ``ports.PORTS``) its own program, one process
  per inference, greedy from BOS, on weights ``export`` wrote for it
- ``external:NAME`` any command line, run once per inference; tokens/s read from its output by a regex
- ``fake[:NAME]`` a simulated runtime that reports given timings (tests and dry runs of the lab itself)
"""

from __future__ import annotations

import os
import re
import shlex
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InvalidArgumentError

BUILTIN = ("llamalab", "reference", "llama.cpp", "transformers")
BACKEND_ALIASES = {"fast": "llamalab", "llamalab-fast": "llamalab", "numpy": "reference", "llama-cpp": "llama.cpp",
                   "llamacpp": "llama.cpp", "llama_cpp": "llama.cpp", "torch": "transformers", "pytorch": "transformers"}


class BackendUnavailable(Exception):
    """The runtime cannot run here (not installed, wrong file format): the cell is skipped, not failed."""


@dataclass
class Timing:
    """One inference. Times in seconds; rates (external runtimes) in tokens/s as the runtime reported them."""

    prefill_s: float | None = None
    step_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    prompt_tps: float | None = None
    gen_tps: float | None = None
    child_peak_rss: int | None = None  # bytes, for runtimes that run a separate program
    tokens: list[int] | None = None  # the greedy ids a runtime generated (token match), where it says
    timer: str | None = None  # how wall_s was taken: "hyperfine" or "wait4"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Job:
    """What a worker loads: one backend, one model, one thread count."""

    backend: str
    model: str
    threads: int
    n_ctx: int
    tokenizer: str | None = None
    options: dict = field(default_factory=dict)


def canonical(name: str) -> str:
    """Normalize a backend name ('fast' -> 'llamalab'); external:NAME and fake keep theirs."""
    key = name.strip()
    return BACKEND_ALIASES.get(key.lower(), key)


def _is_gguf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


class LlamalabRuntime:
    """llamalab in this process: ``Llama.forward`` over a reused KV cache."""

    def __init__(self, job: Job, mode: str):
        self.job, self.mode = job, mode

    def load(self) -> dict:
        import numpy as np

        from ..formats import load as load_model_file
        from ..runtime.kv_cache import DEFAULT_KV_TYPE, kv_dtype
        from ..runtime.model import Llama

        loaded = load_model_file(self.job.model, self.job.tokenizer)
        if self.mode == "fast":
            from .. import kernels

            kernels.set_threads(self.job.threads)
        else:
            from threadpoolctl import threadpool_limits

            self._limits = threadpool_limits(self.job.threads)  # kept alive: the limit lasts while it does
        self.model = Llama(loaded, backend=self.mode)
        self.cache = self.model.new_cache(self.job.n_ctx, kv_dtype(DEFAULT_KV_TYPE))  # f16, as llama-bench's
        self.model.warm_up(self.cache.k.dtype)  # as LLM() does: kernels loaded, then LLVM's code out of memory
        self._np = np
        return {"llamalab_backend": self.mode}

    def run(self, prompt: list[int], gen: list[int], text: str = "") -> Timing:
        np, model, cache = self._np, self.model, self.cache
        cache.reset()
        prompt_arr = np.asarray(prompt, dtype=np.int64)
        steps_in = [np.array([t], dtype=np.int64) for t in gen]
        clock = time.perf_counter
        t0 = clock()
        if len(prompt_arr):
            model.forward(prompt_arr, cache)
        t1 = clock()
        steps = []
        for x in steps_in:
            s = clock()
            model.forward(x, cache)
            steps.append(clock() - s)
        return Timing(prefill_s=(t1 - t0) if len(prompt_arr) else None, step_s=steps, wall_s=clock() - t0)


class LlamaCppRuntime:
    """llama.cpp through llama-cpp-python (CPU), driven with eval(): no sampling."""

    def __init__(self, job: Job):
        self.job = job

    def load(self) -> dict:
        try:
            import llama_cpp
        except ImportError as e:
            raise BackendUnavailable(f"llama-cpp-python is not installed ({e}); pip install llama-cpp-python") from None
        if not _is_gguf(self.job.model):
            raise BackendUnavailable("llama.cpp reads GGUF files only")
        j = self.job
        info = {"llama_cpp_version": getattr(llama_cpp, "__version__", None)}
        extra = self._extra_buffers_work()
        if not extra:
            info["note"] = ("llama.cpp's extra weight buffers (AMX / repacked) crash on this machine (a 2-token batch "
                            "segfaults in a probe), so they are off: use_extra_bufts=False")
        self.llm = self._construct(llama_cpp, extra, model_path=j.model, n_threads=j.threads, n_threads_batch=j.threads,
                                   n_ctx=j.n_ctx, n_batch=512, verbose=False)
        return info

    @staticmethod
    def _construct(llama_cpp, extra_buffers: bool, **kw):
        """Llama(**kw), with model_params.use_extra_bufts switched off when asked (the high-level
        constructor does not expose it, so its default-params factory is wrapped for the call)."""
        if extra_buffers:
            return llama_cpp.Llama(**kw)
        import llama_cpp.llama_cpp as lib

        orig = lib.llama_model_default_params

        def no_extra():
            p = orig()
            p.use_extra_bufts = False
            return p

        lib.llama_model_default_params = no_extra
        try:
            return llama_cpp.Llama(**kw)
        finally:
            lib.llama_model_default_params = orig

    def _extra_buffers_work(self) -> bool:
        """Does a 2-token batch survive with llama.cpp's default (AMX / repack) buffers? Probed in a
        throwaway process: some builds segfault there on CPUs that advertise AMX inside a VM."""
        code = ("import sys, llama_cpp\n"
                "l = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, n_batch=64, n_threads=1, verbose=False)\n"
                "l.eval([0, 0])\n")
        try:
            r = subprocess.run([sys.executable, "-c", code, self.job.model], capture_output=True, timeout=600)
        except subprocess.TimeoutExpired:
            return False
        return r.returncode == 0

    def run(self, prompt: list[int], gen: list[int], text: str = "") -> Timing:
        llm = self.llm
        llm.reset()
        clock = time.perf_counter
        t0 = clock()
        if prompt:
            llm.eval(prompt)
        t1 = clock()
        steps = []
        for tok in gen:
            s = clock()
            llm.eval([tok])
            steps.append(clock() - s)
        return Timing(prefill_s=(t1 - t0) if prompt else None, step_s=steps, wall_s=clock() - t0)


class TransformersRuntime:
    """PyTorch (CPU, float32) via transformers' GGUF support; KV cache threaded through the calls."""

    def __init__(self, job: Job):
        self.job = job

    def load(self) -> dict:
        try:
            import torch
            import transformers
        except ImportError as e:
            raise BackendUnavailable(f"torch/transformers is not installed ({e}); pip install torch transformers") from None
        if not _is_gguf(self.job.model):
            raise BackendUnavailable("transformers loads GGUF files (not llama2.c checkpoints)")
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        torch.set_num_threads(self.job.threads)
        p = Path(self.job.model).resolve()
        self.torch = torch
        self.model = transformers.AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name,
                                                                       dtype=torch.float32)
        self.model.eval()
        return {"torch_version": torch.__version__, "transformers_version": transformers.__version__,
                "torch_threads": torch.get_num_threads()}

    def run(self, prompt: list[int], gen: list[int], text: str = "") -> Timing:
        torch, model = self.torch, self.model
        prompt_t = torch.tensor([prompt], dtype=torch.long) if prompt else None
        steps_in = [torch.tensor([[t]], dtype=torch.long) for t in gen]
        clock = time.perf_counter
        with torch.inference_mode():
            past = None
            t0 = clock()
            if prompt_t is not None:
                past = model(input_ids=prompt_t, use_cache=True, logits_to_keep=1).past_key_values
            t1 = clock()
            steps = []
            for x in steps_in:
                s = clock()
                past = model(input_ids=x, past_key_values=past, use_cache=True, logits_to_keep=1).past_key_values
                steps.append(clock() - s)
        return Timing(prefill_s=(t1 - t0) if prompt else None, step_s=steps, wall_s=clock() - t0)


# ------------------------------------------------------------------------------------------- external


@dataclass(frozen=True)
class ExternalSpec:
    """Another program measured side by side: a command template and regexes for its tokens/s.

    Placeholders in ``cmd``: {model} {model_llama2c} {tokenizer} {n_prompt} {n_gen} {steps}
    (= n_prompt + n_gen) {threads} {prompt} (text) {prompt_file} (a file holding the text).
    ``regex`` must capture generation tokens/s in group 1; ``prompt_regex`` (optional)
    prompt tokens/s. The command runs with argv split like a shell would (no shell).
    """

    name: str
    cmd: str
    regex: str
    prompt_regex: str | None = None
    cwd: str | None = None

    KEYS = ("name", "cmd", "regex", "prompt_regex", "cwd")

    @classmethod
    def parse(cls, text: str) -> "ExternalSpec":
        """From 'name=...;cmd=...;regex=...' or the path of a .json / .toml file with those keys."""
        p = Path(text)
        if text.endswith((".json", ".toml")) and p.is_file():
            if text.endswith(".json"):
                import json

                fields = json.loads(p.read_text())
            else:
                try:
                    import tomllib
                except ImportError:  # Python 3.10
                    raise InvalidArgumentError(f"{text}: reading TOML needs Python 3.11+; use a .json file") from None
                fields = tomllib.loads(p.read_text())
        else:
            keys = "|".join(cls.KEYS)
            parts = re.split(rf";\s*(?=(?:{keys})=)", text.strip())
            fields = {}
            for part in parts:
                k, sep, v = part.partition("=")
                if not sep or k.strip() not in cls.KEYS:
                    raise InvalidArgumentError(f"--external: bad field {part!r}; expected name=...;cmd=...;regex=...")
                fields[k.strip()] = v
        unknown = set(fields) - set(cls.KEYS)
        missing = [k for k in ("name", "cmd", "regex") if not fields.get(k)]
        if unknown or missing:
            raise InvalidArgumentError(f"--external: missing {missing} / unknown {sorted(unknown)} fields in {text!r}")
        for k in ("regex", "prompt_regex"):
            if fields.get(k):
                try:
                    if re.compile(fields[k]).groups < 1:
                        raise InvalidArgumentError(f"--external {k} {fields[k]!r} needs a capture group for the number")
                except re.error as e:
                    raise InvalidArgumentError(f"--external {k} {fields[k]!r} is not a valid regex: {e}") from None
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", fields["name"]):
            raise InvalidArgumentError(f"--external name {fields['name']!r}: use letters, digits, . _ + -")
        return cls(**{k: fields.get(k) for k in cls.KEYS})

    def placeholders(self) -> set[str]:
        return {f for _, f, _, _ in string.Formatter().parse(self.cmd) if f}


class ExternalRuntime:
    """Runs the command once per inference; its own peak RSS comes from wait4()."""

    def __init__(self, job: Job):
        self.job = job
        self.spec = ExternalSpec(**job.options["external"])

    def load(self) -> dict:
        allowed = {"model", "model_llama2c", "tokenizer", "n_prompt", "n_gen", "steps", "threads", "prompt", "prompt_file"}
        bad = self.spec.placeholders() - allowed
        if bad:
            raise InvalidArgumentError(f"external {self.spec.name}: unknown placeholder(s) {sorted(bad)} in cmd")
        if "model_llama2c" in self.spec.placeholders() and not self.job.options.get("model_llama2c"):
            raise BackendUnavailable("{model_llama2c} is only available for synth: models")
        argv0 = shlex.split(self.spec.cmd)[0]
        where = Path(self.spec.cwd or ".") / argv0
        if "/" in argv0 and not where.exists() or "/" not in argv0 and not _which(argv0):
            raise BackendUnavailable(f"{argv0}: no such program")
        return {"cmd": self.spec.cmd}

    def run(self, prompt: list[int], gen: list[int], text: str = "") -> Timing:
        j = self.job
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(text)
        values = dict(model=j.model, model_llama2c=j.options.get("model_llama2c", ""), tokenizer=j.tokenizer or "",
                      n_prompt=len(prompt), n_gen=len(gen), steps=len(prompt) + len(gen), threads=j.threads,
                      prompt=text, prompt_file=f.name)
        argv = [a.format(**values) for a in shlex.split(self.spec.cmd)]
        try:
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.spec.cwd)
            out = proc.stdout.read().decode("utf-8", "replace")
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            os.unlink(f.name)
        if proc.returncode != 0:
            tail = " | ".join(out.strip().splitlines()[-3:])
            raise RuntimeError(f"{argv[0]} exited with status {proc.returncode}: {tail}")
        gen_tps = _last_number(self.spec.regex, out)
        if gen_tps is None:
            raise RuntimeError(f"regex {self.spec.regex!r} found no tokens/s in the output of {argv[0]}")
        prompt_tps = _last_number(self.spec.prompt_regex, out) if self.spec.prompt_regex else None
        rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        return Timing(wall_s=wall, gen_tps=gen_tps, prompt_tps=prompt_tps, child_peak_rss=rss)


# ------------------------------------------------------------------------------------------- ports


class PortRuntime:
    """A named runtime (``ports.PORTS``): one whole process per inference; tokens/s and ids from its output.

    With ``hyperfine`` installed the process runs under it (``--runs 1``, no shell) and the wall
    time is hyperfine's; otherwise perf_counter around wait4(). Peak RSS comes from wait4()
    either way (Linux reports the largest of the process and its waited-for children).
    """

    def __init__(self, job: Job):
        from .ports import PORTS

        self.job = job
        self.o = job.options["port"]
        self.port = PORTS[self.o["name"]]

    def load(self) -> dict:
        if not self.o.get("exe"):
            raise BackendUnavailable(self.o.get("missing") or f"{self.port.name}: not found")
        return {"exe": self.o["exe"], "timer": "hyperfine" if self.o.get("hyperfine") else "wait4",
                "language": self.port.language}

    def run(self, prompt: list[int], gen: list[int], text: str = "") -> Timing:
        from .ports import Invocation

        ids = list(prompt[1:] if prompt and prompt[0] == 1 else prompt)
        if ids and not self.port.takes_prompt:
            raise BackendUnavailable(f"{self.port.name} takes no prompt ids (it generates from BOS)")
        inv = Invocation(exe=self.o["exe"], files=self.o["files"], n_gen=len(gen), threads=self.job.threads,
                         prompt_ids=ids, python=self.o.get("python") or sys.executable)
        argv, cwd, env = self.port.command(inv)
        hf = self.o.get("hyperfine")
        json_path = None
        if hf:
            json_path = tempfile.mktemp(suffix=".json")
            argv = [hf, "-N", "--runs", "1", "--show-output", "--export-json", json_path,
                    "--", shlex.join(argv)]
        out, err, code, wall, rss = _run_capture(argv, cwd, {**os.environ, **env})
        try:
            if code != 0:
                tail = " | ".join((out + err).strip().splitlines()[-3:])
                raise RuntimeError(f"{self.port.name} exited with status {code}: {tail}")
            if json_path and os.path.exists(json_path):
                import json

                wall = json.loads(Path(json_path).read_text())["results"][0]["mean"]
        finally:
            if json_path:
                Path(json_path).unlink(missing_ok=True)
        got = self.port.parse(out, err)
        if got["gen_tps"] is None and got["prompt_tps"] is None and not got["tokens"]:
            raise RuntimeError(f"{self.port.name}: found no tokens/s in its output: {(out + err).strip()[-200:]!r}")
        return Timing(wall_s=wall, gen_tps=got["gen_tps"], prompt_tps=got["prompt_tps"], child_peak_rss=rss,
                      tokens=got["tokens"], timer="hyperfine" if hf else "wait4")


def _run_capture(argv: list[str], cwd: str | None, env: dict) -> tuple[str, str, int, float, int]:
    """(stdout, stderr, exit code, wall seconds, peak RSS bytes) of one process; stderr goes to a file
    so neither pipe can fill up and stall the program."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as errf:
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL, cwd=cwd,
                                    env=env)
        except OSError as e:
            raise RuntimeError(f"cannot start {argv[0]}: {e}") from None
        out = proc.stdout.read().decode("utf-8", "replace")
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        errf.seek(0)
        err = errf.read().decode("utf-8", "replace")
    code = os.waitstatus_to_exitcode(status)
    return out, err, code, wall, usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _which(prog: str) -> bool:
    import shutil

    return shutil.which(prog) is not None


def _last_number(pattern: str, text: str) -> float | None:
    found = re.findall(pattern, text)
    if not found:
        return None
    last = found[-1]
    return float(last[0] if isinstance(last, tuple) else last)


# ------------------------------------------------------------------------------------------- fake


class FakeRuntime:
    """A runtime that does no work and reports the timings it is given (cycled per run).

    options: prefill_s (list), step_s (list of per-token seconds, cycled per run),
    sleep_s (really sleep this long per run: for timeout tests), crash ('import' -> skipped,
    'load' / 'run' -> the process dies with SIGABRT, 'raise' -> an exception in run),
    alloc_mb (hold this much memory: for peak-RSS tests).
    """

    def __init__(self, job: Job):
        self.job = job
        self.o = job.options.get("fake", {})
        self.n = 0

    def load(self) -> dict:
        if self.o.get("crash") == "import":
            raise BackendUnavailable("fake runtime told to be missing")
        if self.o.get("crash") == "load":
            os.abort()
        if self.o.get("alloc_mb"):
            self.ballast = bytearray(os.urandom(1)) * (int(self.o["alloc_mb"]) << 20)
        return {}

    def run(self, prompt: list[int], gen: list[int], text: str = "") -> Timing:
        if self.o.get("crash") == "run" and self.n >= self.o.get("crash_after", 0):
            os.abort()
        if self.o.get("crash") == "raise":
            raise RuntimeError("fake runtime told to fail")
        if self.o.get("sleep_s"):
            time.sleep(float(self.o["sleep_s"]))
        pre = self.o.get("prefill_s", [0.1])
        step = self.o.get("step_s", [0.01])
        i, self.n = self.n, self.n + 1
        prefill = float(pre[i % len(pre)]) if prompt else None
        steps = [float(step[i % len(step)])] * len(gen)
        return Timing(prefill_s=prefill, step_s=steps, wall_s=(prefill or 0.0) + sum(steps))


def make_runtime(job: Job):
    """The runtime object for a job's backend name."""
    name = canonical(job.backend)
    if name == "llamalab":
        return LlamalabRuntime(job, "fast")
    if name == "reference":
        return LlamalabRuntime(job, "reference")
    if name == "llama.cpp":
        return LlamaCppRuntime(job)
    if name == "transformers":
        return TransformersRuntime(job)
    if name.startswith("external:"):
        return ExternalRuntime(job)
    if "port" in job.options:
        return PortRuntime(job)
    if name == "fake" or name.startswith("fake:"):
        return FakeRuntime(job)
    raise InvalidArgumentError(f"unknown backend {job.backend!r}; known: {', '.join(BUILTIN)}, external:NAME")
