"""What a new user hits on the command line: exit codes (Ctrl-C, a closed pipe), prompts from
stdin, --model on every command, --version, wide help with text for every option, `make run`
with any prompt, and the bench lab's output checks."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import typer
from gguf import GGMLQuantizationType

from llamalab.cli import app, main
from llamalab.lab.synth import PRESETS, tiny_bpe_tokenizer, write_gguf
from llamalab.text.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]
EXE = os.path.join(os.path.dirname(sys.executable), "llamalab")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    cfg = dataclasses.replace(PRESETS["tiny"], context_length=32768)  # long enough to be interrupted
    return write_gguf(tmp_path_factory.mktemp("cli") / "tiny.gguf", cfg, GGMLQuantizationType.F32,
                      tokenizer=tiny_bpe_tokenizer())


def llamalab(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([EXE, *map(str, args)], stdin=kw.pop("stdin", subprocess.DEVNULL),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def wait_for_output(proc: subprocess.Popen, n: int = 1) -> bytes:
    got = b""
    while len(got) < n:
        b = os.read(proc.stdout.fileno(), 4096)
        assert b, proc.stderr.read().decode()
        got += b
    return got


# ---- exit codes --------------------------------------------------------------------------------------------

def _sigint_default() -> None:
    """In the child: SIGINT as a terminal's foreground job has it. A shell starts background jobs with
    SIGINT ignored, and Python then keeps ignoring it, so under `make test &` this test hung for 30 s."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_run_exits_130_with_a_message(tiny):
    proc = llamalab("run", "--model", tiny, "--backend", "reference", "--ignore-eos", "-n", "30000", "Once",
                    preexec_fn=_sigint_default)
    wait_for_output(proc, 20)
    proc.send_signal(signal.SIGINT)
    try:  # communicate, not wait: the run prints until the signal lands, and a full pipe would block its exit
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"still running 30 s after SIGINT; its stderr: {err.decode()[-3000:]!r}") from None
    err = err.decode()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in err


def test_closed_pipe_exits_141_silently(tiny):
    """`llamalab run ... | head -c 20`: the reader leaves; no message, the status of a SIGPIPE death."""
    proc = llamalab("run", "--model", tiny, "--backend", "reference", "--ignore-eos", "-n", "30000", "Once")
    wait_for_output(proc, 20)
    proc.stdout.close()
    proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    assert proc.returncode == 141, err
    assert err == ""


def test_inspect_into_head_exits_141_silently(tmp_path):
    """`llamalab inspect … | head -2` (was: status 1, nothing on stderr): rich's console output too."""
    cfg = dataclasses.replace(PRESETS["tiny"], n_layers=400)  # ~3,600 tensor rows: more than a pipe holds
    path = write_gguf(tmp_path / "deep.gguf", cfg, GGMLQuantizationType.F32, tokenizer=tiny_bpe_tokenizer())
    proc = llamalab("inspect", "--model", path)
    wait_for_output(proc, 100)
    proc.stdout.close()
    proc.wait(timeout=60)
    assert (proc.returncode, proc.stderr.read()) == (141, b"")


def test_explicit_exit_codes_are_returned(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"llamalab {__import__('llamalab').__version__}"


# ---- prompts from stdin ------------------------------------------------------------------------------------

def test_a_megabyte_prompt_from_stdin(tiny, tmp_path):
    text = "word " * 200_000  # 1 MB: past the command line's limit ("Argument list too long")
    (tmp_path / "p.txt").write_text(text)
    with open(tmp_path / "p.txt", "rb") as f:
        out = subprocess.run([EXE, "tokenize", "--model", str(tiny), "-"], stdin=f, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == Tokenizer.from_spec(tiny_bpe_tokenizer()).encode(text)


def test_run_reads_the_prompt_from_stdin(tiny):
    args = [EXE, "run", "--model", str(tiny), "--backend", "reference", "-n", "3"]
    piped = subprocess.run([*args, "-"], input=b"Once upon", capture_output=True, timeout=120)
    direct = subprocess.run([*args, "Once upon"], capture_output=True, timeout=120)
    assert piped.returncode == direct.returncode == 0, piped.stderr
    n_prompt = [re.search(rb"prompt: (\d+) tokens", p.stderr).group(1) for p in (piped, direct)]
    assert piped.stdout == direct.stdout and n_prompt[0] == n_prompt[1]


def test_stdin_that_is_not_utf8(tiny):
    out = subprocess.run([EXE, "tokenize", "--model", str(tiny), "-"], input=b"\xff\xfe", capture_output=True)
    assert out.returncode == 1
    assert out.stderr.decode().strip() == "error: text on standard input is not UTF-8 (invalid start byte at byte 0)"


# ---- options: the same everywhere --------------------------------------------------------------------------

def test_inspect_takes_model_as_option_or_argument(tiny, capsys):
    assert main(["inspect", "--model", str(tiny), "--json", "--no-tensors"]) == 0
    by_option = json.loads(capsys.readouterr().out)
    assert main(["inspect", str(tiny), "--json", "--no-tensors"]) == 0
    assert json.loads(capsys.readouterr().out) == by_option
    assert main(["inspect", str(tiny), "--model", "other.gguf"]) == 1
    assert "two models given" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "chat", "inspect", "tokenize", "perplexity", "serve", "bench", "profile"])
def test_every_model_command_takes_dash_dash_model(command):
    cmd = typer.main.get_command(app).commands[command]
    assert any("--model" in p.opts for p in cmd.params), command


@pytest.mark.parametrize("command", ["run", "chat", "tokenize", "perplexity", "serve", "bench", "study", "profile"])
def test_every_command_loading_a_llama2c_file_takes_dash_dash_tokenizer(command):
    cmd = typer.main.get_command(app).commands[command]
    assert any("--tokenizer" in p.opts for p in cmd.params), command


def test_every_option_has_help_text():
    root = typer.main.get_command(app)
    missing = [f"{name} {p.opts[0]}" for name, cmd in root.commands.items() for p in cmd.params
               if isinstance(p, typer.core.TyperOption) and not (p.help or "").strip()]
    assert missing == []


def test_help_is_wide_off_a_terminal():
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    out = subprocess.run([EXE, "run", "--help"], capture_output=True, text=True, env=env, timeout=60).stdout
    assert max(map(len, out.splitlines())) > 100
    top_k = next(line for line in out.splitlines() if "--top-k" in line)
    assert "Sample among the K most likely tokens (0 = all)." in top_k  # not wrapped at 80 columns


def test_version(capsys):
    assert main(["-V"]) == 0 and capsys.readouterr().out.startswith("llamalab ")


# ---- make run ----------------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
@pytest.mark.parametrize("prompt", ['$HOME "quoted" `id` $(shell id) ; echo injected', "-n 5", "it's"])
def test_make_run_passes_the_prompt_verbatim(tmp_path, prompt):
    fake = tmp_path / "llamalab"
    fake.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    fake.chmod(0o755)
    out = subprocess.run(["make", "-s", "-C", str(REPO), "run", "STAMP=", f"BIN={tmp_path}", f"PROMPT={prompt}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["run", "--", prompt]


# ---- the bench lab -----------------------------------------------------------------------------------------

def test_bench_out_file_in_a_missing_folder_fails_before_running(capsys, tmp_path):
    t0 = time.monotonic()
    code = main(["bench", "-m", "synth:tiny", "-b", "reference", "--out-file", str(tmp_path / "no" / "x.md")])
    err = capsys.readouterr().err
    assert code == 1 and time.monotonic() - t0 < 5
    assert err.strip() == f"error: --out-file {tmp_path / 'no' / 'x.md'}: folder {tmp_path / 'no'} does not exist"


def test_study_out_that_is_a_file(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    assert main(["study", "--quick", "-o", str(tmp_path / "f")]) == 1
    assert "is a file; the study writes a folder" in capsys.readouterr().err


def test_bench_skips_a_prompt_longer_than_the_context(tmp_path, capsys):
    cfg = dataclasses.replace(PRESETS["tiny"], context_length=128)
    path = write_gguf(tmp_path / "c128.gguf", cfg, GGMLQuantizationType.F32, tokenizer=tiny_bpe_tokenizer())
    t0 = time.monotonic()
    assert main(["bench", "-m", str(path), "-b", "reference", "-p", "100000", "-n", "0", "-r", "1", "-t", "1",
                 "--no-progress", "-o", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert time.monotonic() - t0 < 30
    assert [(r["test"], r["status"], r["reason"]) for r in rows] == [
        ("pp100000", "skipped", "100000 tokens exceed the model's context length 128")]


def bench_workers(proc: subprocess.Popen, timeout: float = 120) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = [p for p in psutil.Process(proc.pid).children(recursive=True)
                if "llamalab.lab.worker" in " ".join(p.cmdline())]
        if kids:
            return kids
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    raise AssertionError("no worker started")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_bench_takes_its_workers_with_it(tiny, sig):
    proc = llamalab("bench", "-m", tiny, "-b", "reference", "-p", "64", "-n", "64", "-r", "100000", "-t", "1",
                    "--no-progress")
    kids = bench_workers(proc)
    time.sleep(1.0)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    gone, alive = psutil.wait_procs(kids, timeout=15)
    assert not alive, f"workers still running after {sig.name}: {[p.pid for p in alive]}"
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and proc.stderr.read().decode().strip().endswith("error: interrupted")
