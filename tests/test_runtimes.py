"""Named runtimes without their toolchains: the parsers on output captured from the real ports, the
command lines, finding programs, the same-weights exports, and a study whose llama2.c is a stand-in
script that prints like run.c (its first ids right, then wrong, so the token match must flag it)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from llamalab.cli import main
from llamalab.errors import InvalidArgumentError
from llamalab.lab import export, ports
from llamalab.lab.tokenmatch import expected, match, match_text

# ---- parsers: output as the real programs printed it on this project's machine (ids from the id vocabulary)

LLAMA2C_OUT = ("[179][18034][30846][26473]", "achieved tok/s: 97.222222\n")
LLAMA2RS_OUT = "Model file: m.bin, temperature: 0, step: 4\nModel Config {..}\n<s>\n[179][18034][30846][26473]\n" \
               "--------------------------------\nelapsed: 0.168 s, avg tok/s: 41.505554\n"
ZIG_OUT = ("[179][18034][30846]", "\n\n133 tokens per second\n")
GO_OUT = ("[179][18034][30846]\n", "2026/12/01 10:25:09 config: llama2.Config{Dim:288, SeqLen:256}\n"
                                   "2026/12/01 10:25:09 achieved tok/s: 50.239129\n")
NP_OUT = "\n[179][19112][22283]\n\nToken count: 50, elapsed: 5.28s, 9 tokens/s\n"
COMPLETION_OUT = ("[179][18034][30846][26473]\n\n", (
    "0.00.192.305 I generate: n_ctx = 256, n_batch = 2048, n_predict = 8, n_keep = 1\n"
    "0.00.253.910 I common_perf_print: prompt eval time =       0.00 ms /     1 tokens (    0.00 ms per token,      "
    "inf tokens per second)\n"
    "0.00.253.927 I common_perf_print:        eval time =      59.33 ms /     8 runs   (    7.42 ms per token,   "
    "134.83 tokens per second)\n"))
MLX_OUT = "==========\n[179] [18034] [30846]\n==========\nPrompt: 1 tokens, 1.129 tokens-per-sec\n" \
          "Generation: 8 tokens, 38.838 tokens-per-sec\nPeak memory: 0.065 GB\n"
BENCH_OUT = ('{"model_type": "llama ?B all F32", "n_prompt": 5, "n_gen": 0, "avg_ts": 612.5}\n'
             '{"model_type": "llama ?B all F32", "n_prompt": 0, "n_gen": 8, "avg_ts": 140.25}\n')


@pytest.mark.parametrize("name, out, err, tps, ids", [
    ("llama2.c", *LLAMA2C_OUT, 97.222222, [179, 18034, 30846, 26473]),
    ("llama2.rs", LLAMA2RS_OUT, "", 41.505554, [179, 18034, 30846, 26473]),
    ("llama2.mojo", "[179][18034]\nachieved tok/s:  61.5\n", "", 61.5, [179, 18034]),
    ("llama2.zig", *ZIG_OUT, 133.0, [179, 18034, 30846]),
    ("llama2.go", *GO_OUT, 50.239129, [179, 18034, 30846]),
    ("llama3.np", NP_OUT, "", 49 / 5.28, [179, 19112, 22283]),  # the count includes the prompt's BOS
    ("llama-completion", *COMPLETION_OUT, 134.83, [179, 18034, 30846, 26473]),
    ("mlx-lm", MLX_OUT, "", 38.838, [179, 18034, 30846]),
    # llamafile prints llama.cpp's older timing lines
    ("llamafile", "[179][18034]", "llama_print_timings:        eval time =      59.33 ms /     8 runs   (    7.42 ms "
                                  "per token,   134.83 tokens per second)\n", 134.83, [179, 18034]),
])  # fmt: skip
def test_parsers_read_speed_and_ids(name, out, err, tps, ids):
    got = ports.PORTS[name].parse(out, err)
    assert got["gen_tps"] == pytest.approx(tps)
    assert got["tokens"] == ids


def test_parsers_ids_only_from_stdout_and_llama_bench_has_no_tokens():
    # ids in the log stream (stderr) are not generated tokens
    assert ports.PORTS["llama2.c"].parse("[5][6]", "loading [7]\nachieved tok/s: 1.5")["tokens"] == [5, 6]
    got = ports.PORTS["llama-bench"].parse(BENCH_OUT)
    assert (got["prompt_tps"], got["gen_tps"], got["tokens"]) == (612.5, 140.25, None)
    assert ports.PORTS["mlx-lm"].parse("Prompt: 1 tokens, 2.0 tokens-per-sec\n")["gen_tps"] is None
    assert ports.PORTS["llama2.c"].parse("[70][52]", "achieved tok/s: inf\n") == {  # run.c's ms timer on 2 tokens
        "gen_tps": None, "prompt_tps": None, "tokens": [70, 52]}


# ---- command lines ---------------------------------------------------------------------------------------------


def _inv(**kw):
    files = {"llama2c": "/m/x.bin", "tokenizer.bin": "/t/tokenizer.bin", "tokenizer.bin-legacy": "/t/legacy/tokenizer.bin",
             "npz": "/n/stories15M.model.npz", "gguf": "/g/x.gguf", "hf": "/h/hf-f32"}
    return ports.Invocation(exe="/bin/port", files=files, n_gen=16, threads=2, python="/py", **kw)


def test_commands_follow_each_ports_cli():
    argv, cwd, env = ports.PORTS["llama2.c"].command(_inv())
    assert argv == ["/bin/port", "/m/x.bin", "-z", "/t/tokenizer.bin", "-t", "0", "-n", "16", "-s", "1"]
    assert cwd is None and env == {"OMP_NUM_THREADS": "2"}
    argv, cwd, _ = ports.PORTS["llama2.cpp"].command(_inv())  # no prompt, no steps; ./tokenizer.bin
    assert argv == ["/bin/port", "/m/x.bin", "0"] and cwd == "/t/legacy"
    argv, cwd, _ = ports.PORTS["llama2.rs"].command(_inv())
    assert argv == ["/bin/port", "/m/x.bin", "0", "16"] and cwd == "/t"
    argv, cwd, env = ports.PORTS["llama3.np"].command(_inv())
    assert argv == ["/py", "/bin/port", ""] and cwd == "/n" and env["OMP_NUM_THREADS"] == "2"
    assert ports.PORTS["llama2.go"].command(_inv())[2] == {"GOMAXPROCS": "2"}
    argv, _, _ = ports.PORTS["mlx-lm"].command(_inv(prompt_ids=[5, 17]))
    assert argv[argv.index("--prompt") + 1] == "<s> [5] [17]" and argv[argv.index("--max-tokens") + 1] == "16"
    argv, _, _ = ports.PORTS["llama-bench"].command(_inv(prompt_ids=[5, 17]))
    assert argv[argv.index("-p") + 1] == "3" and argv[argv.index("-n") + 1] == "16"


# ---- finding programs ------------------------------------------------------------------------------------------


def test_find_order_override_env_ports_dir_and_reasons(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMALAB_PORTS", str(tmp_path))
    monkeypatch.delenv("LLAMALAB_LLAMA2_C", raising=False)
    path, why = ports.find("llama2.c")
    assert path is None and "not built" in why and "llamalab runtimes build llama2.c" in why
    (tmp_path / "llama2.c").mkdir()
    (tmp_path / "llama2.c" / "run").write_text("")
    assert ports.find("llama2.c") == (str(tmp_path / "llama2.c" / "run"), str(tmp_path))
    other = tmp_path / "other"
    other.write_text("")
    monkeypatch.setenv("LLAMALAB_LLAMA2_C", str(other))
    assert ports.find("llama2.c") == (str(other), "LLAMALAB_LLAMA2_C")
    assert ports.find("llama2.c", {"llama2.c": str(tmp_path / "nope")}) == (
        None, f"--runtime={tmp_path / 'nope'}: no such file")
    assert ports.find("llamafile")[1].startswith("needs the cosmocc toolchain")
    assert ports.parse_overrides(["llama2.c=/a,llama2.zig=/b"]) == {"llama2.c": "/a", "llama2.zig": "/b"}
    with pytest.raises(InvalidArgumentError, match="unknown runtime"):
        ports.parse_overrides(["llama9=/a"])
    with pytest.raises(InvalidArgumentError, match="expected NAME=PATH"):
        ports.parse_overrides(["llama2.c"])


def test_runtimes_command_lists_found_and_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLAMALAB_PORTS", str(tmp_path))
    monkeypatch.delenv("LLAMALAB_LLAMA2_C", raising=False)
    exe = tmp_path / "run"
    exe.write_text("")
    assert main(["runtimes", "--json", "--runtime", f"llama2.c={exe}"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["llama2.c"]["status"] == "found" and rows["llama2.c"]["path"] == str(exe)
    assert rows["llama2.jl"]["status"] == "missing" and "Julia" in rows["llama2.jl"]["detail"]
    assert set(rows) >= {"llama2.cpp", "llama2.mojo", "llama2.rs", "llama2.zig", "llama2.go", "llama3.np",
                         "llama3.np-numba", "llama-completion", "llama-bench", "mlx-lm", "llamafile"}
    assert main(["runtimes"]) == 0
    assert "| llama2.c | C | missing |" in capsys.readouterr().out
    assert main(["runtimes", "bulid", "x"]) == 1
    assert main(["runtimes", "build", "llama2.c", "--source", str(tmp_path / "none")]) == 1
    assert "--source must be a checkout" in capsys.readouterr().err


# ---- exports ---------------------------------------------------------------------------------------------------


def test_llama2c_tokenizers_exact_bytes(tmp_path):
    pieces = export.id_pieces(5)
    assert pieces == ["<unk>", "<s>", "</s>", "[3]", "[4]"]
    new = export.write_llama2c_tokenizer(tmp_path / "t.bin", pieces).read_bytes()
    body = b"".join(struct.pack("<fi", 0.0, len(p)) + p.encode() for p in pieces)
    assert new == struct.pack("<i", 5) + body
    old = export.write_llama2c_tokenizer(tmp_path / "o.bin", pieces, legacy=True).read_bytes()
    assert old == b"".join(struct.pack("<i", len(p)) + p.encode() for p in pieces)


def test_hf_unpermute_inverts_convert_hf_to_gguf():
    n_head, rows, cols = 4, 32, 8
    hf = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    # convert_hf_to_gguf's LlamaModel.permute
    gguf = hf.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)
    np.testing.assert_array_equal(export.hf_unpermute(gguf, n_head), hf)


def test_npz_hf_and_safetensors_hold_the_same_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path / "home"))
    from llamalab.lab.models import synth_config
    from llamalab.lab.synth import random_weights

    cfg = synth_config("tiny")
    w = random_weights(cfg, 0)
    npz = export.export("tiny", "npz")
    with np.load(npz) as z:
        np.testing.assert_array_equal(z["model.layers.1.self_attn.q_proj.weight"], w["blk.1.attn_q.weight"])
        np.testing.assert_array_equal(z["lm_head.weight"], w.get("output.weight", w["token_embd.weight"]))
        assert z["model.norm.weight"].dtype == np.float32
    tok = json.loads((npz.parent / "tokenizer.model.np").read_text())
    assert tok["tokens"][:4] == ["<unk>", "<s>", "</s>", "[3]"] and len(tok["scores"]) == cfg.vocab_size
    folder = export.export("tiny", "hf")
    raw = (folder / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    k = header["model.layers.0.self_attn.k_proj.weight"]
    assert k["dtype"] == "F32" and k["shape"] == [cfg.kv_dim, cfg.dim]
    a, b = k["data_offsets"]
    got = np.frombuffer(raw[8 + n + a:8 + n + b], "<f4").reshape(cfg.kv_dim, cfg.dim)
    np.testing.assert_array_equal(got, export.hf_unpermute(w["blk.0.attn_k.weight"], cfg.n_kv_heads))
    conf = json.loads((folder / "config.json").read_text())
    assert (conf["hidden_size"], conf["num_key_value_heads"], conf["vocab_size"]) == (cfg.dim, cfg.n_kv_heads,
                                                                                     cfg.vocab_size)
    with pytest.raises(InvalidArgumentError, match="unknown export format"):
        export.export("tiny", "onnx")


def test_hf_tokenizer_round_trips_ids():
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_str(json.dumps(export.hf_tokenizer_json(export.id_pieces(50))))
    assert tok.encode("<s> [5] [17] [49]").ids == [1, 5, 17, 49]
    assert ports._ids(tok.decode([5, 17, 49])) == [5, 17, 49]


# ---- token match -----------------------------------------------------------------------------------------------


def test_token_match_counts_the_common_prefix_and_stops_at_bos_eos():
    ref = [7, 8, 9, 10]
    assert match([7, 8, 9, 10], ref, 4) == {"matched": 4, "of": 4, "diverges_at": None, "got": [7, 8, 9, 10]}
    m = match([7, 8, 5], ref, 4)
    assert (m["matched"], m["diverges_at"]) == (2, 2) and match_text(m) == "2/4 ⚠ diverges at token 2"
    assert expected([7, 2, 9], 3) == 2  # the reference emits EOS: ports stop there
    assert match([7, 2], [7, 2, 9], 3)["diverges_at"] is None
    assert match(None, ref, 4) is None and match_text(None) == ""


# ---- a study with a stand-in llama2.c -------------------------------------------------------------------------


def _stand_in(path: Path, ids: list[int], tps: float) -> Path:
    """A program that answers like run.c: ids as [i] pieces on stdout, 'achieved tok/s' on stderr;
    it checks the arguments the lab gives it and fails like a real port when the checkpoint is missing."""
    path.write_text(f"""#!{sys.executable}
import os, sys
args = sys.argv[1:]
if not os.path.isfile(args[0]) or args[args.index("-z") + 1] and not os.path.isfile(args[args.index("-z") + 1]):
    print("Couldn't open file", args[0], file=sys.stderr); sys.exit(1)
n = int(args[args.index("-n") + 1])
assert args[args.index("-t") + 1] == "0" and os.environ["OMP_NUM_THREADS"] == "1"
ids = {ids!r}
print("".join(f"[{{i}}]" for i in ids[:n]), end="")
print("achieved tok/s: {tps}", file=sys.stderr)
""")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_study_with_stand_in_port_reports_speed_and_flags_divergence(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLAMALAB_PORTS", str(tmp_path / "noports"))
    from llamalab.lab.cli import run_study_command
    from llamalab.lab.models import synthesize
    from llamalab.lab.tokenmatch import greedy_ids

    ref = greedy_ids(str(synthesize("tiny", "f32", min_ctx=6 + 1 + 16)), 6)
    good = _stand_in(tmp_path / "good", ref, 123.5)
    bad = _stand_in(tmp_path / "bad", ref[:3] + [(ref[3] + 1) % 384] + ref[4:], 50.0)
    out = tmp_path / "study"
    result = run_study_command(
        ["synth:tiny:f32"], ["reference", "llama2.c", "llama2.zig", "llama2.go"], ["1"], {"bos": 1, "short": 5},
        n_gen=6, repeats=1, out=out, baseline="none", cap=None, external=None, python=None, timeout=120,
        tokenizer=None, charts=False, progress=False,
        runtime=[f"llama2.c={good}", f"llama2.zig={bad}"])
    cells = {(c["backend"], c["prompt"]): c for c in result["cells"]}
    c = cells["llama2.c", "bos"]
    assert c["status"] == "ok" and c["tokens"] == ref
    assert c["info"]["timer"] == ("hyperfine" if shutil.which("hyperfine") else "wait4")
    assert c["metrics"]["gen_tps"]["median"] == pytest.approx(123.5)
    assert c["token_match"]["matched"] == expected(ref, 6) and c["token_match"]["diverges_at"] is None
    assert c["bandwidth_gbs"] == pytest.approx(c["metrics"]["gen_tps"]["median"] * result["models"][0]["size"] / 1e9)
    assert c["metrics"]["peak_rss_mib"]["median"] > 1  # from wait4 of the stand-in
    assert cells["llama2.c", "short"]["status"] == "skipped" and "takes no prompt" in cells["llama2.c", "short"]["reason"]
    # the zig stand-in prints run.c's 'achieved tok/s', not zig's 'tokens per second': no speed is read,
    # but its ids are, and they diverge at token 3
    z = cells["llama2.zig", "bos"]
    assert z["status"] == "ok" and "gen_tps" not in z["metrics"] and z["metrics"]["wall_s"]["median"] > 0
    if expected(ref, 6) > 3:
        assert z["token_match"]["diverges_at"] == 3
    go = cells["llama2.go", "bos"]
    assert go["status"] == "skipped" and "not built" in go["reason"]
    assert cells["reference", "bos"]["token_match"]["matched"] == expected(ref, 6)
    report = (out / "report.md").read_text()
    n = expected(ref, 6)
    assert "## Token match" in report and f"| llama2.c | {n}/{n} |" in report
    assert "## Achieved bandwidth" in report and "whole process per inference" in report


def test_study_stand_in_divergence_is_flagged(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path / "home"))
    from llamalab.lab.cli import run_study_command
    from llamalab.lab.models import synthesize
    from llamalab.lab.tokenmatch import greedy_ids

    ref = greedy_ids(str(synthesize("tiny", "f32", min_ctx=1 + 8 + 16)), 8)
    bad = _stand_in(tmp_path / "bad", ref[:3] + [(ref[3] + 1) % 384] + ref[4:], 50.0)
    monkeypatch.setenv("PATH", str(tmp_path))  # no hyperfine: perf_counter around wait4()
    out = tmp_path / "study"
    result = run_study_command(["synth:tiny:f32"], ["llama2.c"], ["1"], {"bos": 1}, n_gen=8, repeats=1, out=out,
                               baseline="none", cap=None, external=None, python=None, timeout=120, tokenizer=None,
                               charts=False, progress=False, runtime=[f"llama2.c={bad}"])
    (c,) = result["cells"]
    assert c["info"]["timer"] == "wait4" and c["metrics"]["wall_s"]["median"] > 0
    assert expected(ref, 8) > 3, "the tiny model's reference stops early; pick another seed"
    assert c["token_match"] == {"matched": 3, "of": expected(ref, 8), "diverges_at": 3, "got": c["tokens"]}
    assert f"3/{expected(ref, 8)} ⚠ diverges at token 3" in (out / "report.md").read_text()
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].endswith("token_match,token_match_of,diverges_at,bandwidth_gbs,gflops")
    assert f",3,{expected(ref, 8)},3," in rows[1]


# ---- the real llama2.c, when its source or a binary is at hand -----------------------------------------------


def _real_llama2c(tmp_path) -> str | None:
    if os.environ.get("LLAMA2C_BIN"):
        return os.environ["LLAMA2C_BIN"]
    src = os.environ.get("LLAMA2C_SRC")
    if not src or not (Path(src) / "run.c").is_file():
        return None
    import shutil
    import subprocess

    if not shutil.which("gcc"):
        return None
    exe = tmp_path / "run"
    subprocess.run(["gcc", "-O3", "-o", str(exe), str(Path(src) / "run.c"), "-lm"], check=True)
    return str(exe)


def test_real_llama2c_matches_llamalab(tmp_path, monkeypatch):
    exe = _real_llama2c(tmp_path)
    if exe is None:
        pytest.skip("set LLAMA2C_SRC (a llama2.c checkout; built here with gcc) or LLAMA2C_BIN to run this")
    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path / "home"))
    from llamalab.lab.cli import run_study_command

    result = run_study_command(["synth:tiny:f32"], ["llama2.c"], ["1"], {"bos": 1}, n_gen=12, repeats=1,
                               out=tmp_path / "study", baseline="none", cap=None, external=None, python=None,
                               timeout=120, tokenizer=None, charts=False, progress=False,
                               runtime=[f"llama2.c={exe}"])
    (c,) = result["cells"]
    assert c["status"] == "ok", c["reason"]
    assert c["token_match"]["diverges_at"] is None and c["token_match"]["matched"] == c["token_match"]["of"] > 0
    assert c["metrics"]["wall_s"]["median"] > 0


def test_runtimes_build_runs_the_documented_command(tmp_path, capsys):
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    src = tmp_path / "checkout"
    src.mkdir()
    # a stand-in run.c (the real one is never in this repository): the recipe only compiles what is there
    (src / "run.c").write_text('#include <stdio.h>\nint main(void) { puts("achieved tok/s: 1.0"); return 0; }\n')
    assert main(["runtimes", "build", "llama2.c", "--source", str(src)]) == 0
    assert (src / "run").is_file() and f"--runtime llama2.c={src / 'run'}" in capsys.readouterr().out
    (src / "run.c").write_text("not C\n")
    assert main(["runtimes", "build", "llama2.c", "--source", str(src)]) == 1
    assert "failed with status" in capsys.readouterr().err


def test_numba_np_extras_profile_a_stand_in_llama3_np(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path / "home"))
    from llamalab.lab import npstudy
    from llamalab.lab.matrix import parse_backends, prepare_models

    script = tmp_path / "llama3.py"  # reads ./stories15M.model.npz as llama3.np does, and works a little
    script.write_text("import numpy as np\n"
                      "def forward(w):\n    t = 0\n    for i in range(300_000):  # own time, in Python\n        t += i * i\n    return t\n"
                      "w = np.load('./stories15M.model.npz')\nfor _ in range(3):\n    forward(w)\n"
                      "print('[5][6]\\n\\nToken count: 3, elapsed: 0.10s, 30 tokens/s')\n")
    models, _ = prepare_models(["synth:stories15M:f32"])
    backends = parse_backends(["llama3.np"], runtimes={"llama3.np": str(script)})
    extra = npstudy.numba_np_extras(models, backends, progress=False)
    e = extra["numba_np"]["llama3.np"]
    assert e["dtypes"] == {"float32": str(3 + 9 * 6)}  # embed, norm, lm_head + 9 per layer, 6 layers
    assert any("(forward)" in p["function"] and p["calls"] == 3 for p in e["profile"])
    text = "\n".join(npstudy.markdown(extra))
    assert "### llama3.np" in text and "float32 × 57" in text
