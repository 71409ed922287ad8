"""Paths that are not regular model files — FIFOs, devices, symbolic link loops, files that cannot
be read — each get one line saying what the path is (they used to read "no such file", or a traceback)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from llamalab.cli import main
from llamalab.errors import LlamalabError
from llamalab.formats import load


@pytest.fixture(autouse=True)
def no_hang():
    """A FIFO opened for reading blocks forever: fail instead."""
    def expire(*_):
        raise TimeoutError("hung on the path")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def fifo(tmp_path: Path) -> Path:
    p = tmp_path / "model.gguf"
    os.mkfifo(p)
    return p


def loop(tmp_path: Path) -> Path:
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def dangling(tmp_path: Path) -> Path:
    p = tmp_path / "link.gguf"
    p.symlink_to(tmp_path / "gone.gguf")
    return p


CASES = {
    "fifo": (fifo, "is a named pipe (FIFO), expected a regular model file"),
    "symlink-loop": (loop, "is a symbolic link loop"),
    "dangling-symlink": (dangling, "is a symbolic link to a file that does not exist"),
    "dev-zero": (lambda _: Path("/dev/zero"), "is a character device, expected a regular model file"),
    "proc-self-mem": (lambda _: Path("/proc/self/mem"), "cannot read it (Input/output error)"),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("command", [["run", "--model", "{}", "hi"], ["inspect", "{}"], ["tokenize", "--model", "{}", "x"]])
def test_cli_names_what_the_path_is(tmp_path, capsys, name, command):
    make, needle = CASES[name]
    path = make(tmp_path)
    if not os.path.lexists(path):
        pytest.skip(f"{path} does not exist here")
    code = main([a.format(path) for a in command])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: {path}: {needle}") and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("name", CASES)
def test_load_names_what_the_path_is(tmp_path, name):
    make, needle = CASES[name]
    path = make(tmp_path)
    if not os.path.lexists(path):
        pytest.skip(f"{path} does not exist here")
    with pytest.raises(LlamalabError) as e:
        load(path)
    assert str(e.value).startswith(f"{path}: {needle}") and "\n" not in str(e.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path, capsys):
    p = tmp_path / "model.gguf"
    p.write_bytes(b"GGUF" + bytes(100))
    p.chmod(0)
    assert main(["run", "--model", str(p), "hi"]) == 1
    assert capsys.readouterr().err.strip() == f"error: {p}: cannot read it (Permission denied)"


@pytest.mark.parametrize("path,needle", [("/dev/zero", "is a character device, expected a UTF-8 text file"),
                                         ("/", "is a directory, expected a UTF-8 text file")])
def test_perplexity_names_what_the_text_path_is(capsys, path, needle):
    """/dev/zero was "no such file" (and reading it would never end)."""
    assert main(["perplexity", path]) == 1
    assert capsys.readouterr().err == f"error: {path}: {needle}\n"
