"""Hostile input on the command line: one line on stderr naming the problem, non-zero exit."""

import os
import subprocess
import sys

import pytest

from llamalab.cli import main


def run_main(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["run", "-n", "-5", "hi"], ["-n", "greater than or equal to 0"]),
        (["run", "--temp", "abc", "hi"], ["--temp", "valid number"]),
        (["run", "--threads", "0", "hi"], ["--threads", "greater than or equal to 1"]),
        (["run", "--top-p", "1.5", "hi"], ["--top-p"]),
        (["run"], ["prompt"]),
        (["run", "--kv-type", "q4_0", "hi"], ["kv_type must be one of f16, f32, got 'q4_0'"]),
        (["serve", "--kv-type", "bf16"], ["kv_type must be one of f16, f32, got 'bf16'"]),
        (["frobnicate"], ["frobnicate"]),
    ],
)
def test_bad_cli_values(capsys, argv, needles):
    code, _, err = run_main(capsys, *argv)
    assert_one_line_error(code, err, *needles)


def test_unknown_model_name_lists_known_ones(capsys):
    code, _, err = run_main(capsys, "run", "--model", "no-such-model", "hi")
    assert_one_line_error(code, err, "no-such-model", "smollm2-135m")


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"", "not a GGUF file"),
        (b"GGUF", "truncated"),
        (b"PK\x03\x04 zip archive, not a model" * 4, "not a GGUF file"),
        (b"GGUF\x03\x00\x00\x00" + b"\xff" * 16, "more than"),  # absurd counts in the header
        (b"GGUF\x07\x00\x00\x00" + b"\x00" * 16, "version 7"),
    ],
)
def test_bad_model_files(capsys, tmp_path, content, needle):
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    code, _, err = run_main(capsys, "run", "--model", str(path), "hi")
    assert_one_line_error(code, err, str(path), needle)


def test_directory_as_model(capsys, tmp_path):
    code, _, err = run_main(capsys, "inspect", str(tmp_path))
    assert_one_line_error(code, err, str(tmp_path))


def test_installed_command_prints_one_line(tmp_path):
    """The real console script, as a user runs it."""
    exe = os.path.join(os.path.dirname(sys.executable), "llamalab")
    proc = subprocess.run([exe, "run", "--model", str(tmp_path), "hi"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert_one_line_error(proc.returncode, proc.stderr, "is a directory")
