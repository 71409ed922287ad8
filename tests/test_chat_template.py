"""Chat templates come inside strangers' model files: every render is bounded in steps, time,
size and depth, ends in one line when it is not, and real templates render as plain Jinja does."""

from __future__ import annotations

import re
import time
import tracemalloc
from pathlib import Path

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llamalab.errors import InvalidArgumentError, LlamalabError, ModelFormatError
from llamalab.text import chat
from llamalab.text.chat import LIMITS, render_chat

DATA = Path(__file__).parent / "data" / "chat_templates"
HOSTILE = sorted(DATA.glob("hostile/*.jinja"))
BENIGN = sorted(DATA.glob("benign/*.jinja"))
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "<think>hmm</think>\nHello!"}, {"role": "user", "content": "A joke?"}]

# what specific hostile templates must be told (the others: any one-line project error, or bounded output)
EXPECTED = {
    "nested_loops": "exceeded (1,000,000 steps|1 s)",  # whichever comes first on a loaded machine
    "nested_loops_over_string": "exceeded (1,000,000 steps|1 s)",
    "string_times_literal": "'\\*' would build 10,000,000,000 characters",
    "integer_power": "'\\*\\*' would build",
    "string_doubling_concat": "'~' would build",
    "string_doubling_plus": "'\\+' would build",
    "recursive_macro": "calls nested deeper than 32",
    "mutual_recursion": "calls nested deeper than 32",
    "recursive_loop": "calls nested deeper than 32",
    "huge_output": "exceeded 4,194,304 characters of output",
    "huge_set_block": "exceeded 4,194,304 characters of output",
    "center_filter": "the 'center' filter would build 1,000,000,000 characters",
    "format_width": "str.format would build 999,999,999 characters",
    "percent_star_width": "'%' would build 999,999,999",
    "join_of_copies": "the 'join' filter would build 1,000,000,000",
    "replace_empty": "str.replace would build",
    "deep_parentheses": "does not compile: nested too deeply",
    "escape_class": "access to attribute '__class__' of 'str' object is unsafe",
    "range_huge": "range\\(\\) of 1,000,000,000,000 items",
}


def plain_render(source: str, messages) -> str:
    """What Jinja's own sandbox renders, for comparison."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = chat._raise
    env.globals["strftime_now"] = lambda fmt: "01 Jan 2026"
    return env.from_string(source).render(messages=messages, bos_token="<s>", eos_token="</s>",
                                          add_generation_prompt=True)


@pytest.mark.parametrize("path", HOSTILE, ids=[p.stem for p in HOSTILE])
def test_hostile_template_is_bounded(path):
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        out = render_chat(path.read_text(), MESSAGES, "<s>", "</s>")
        err = None
    except LlamalabError as e:
        err = e
    elapsed = time.monotonic() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < LIMITS.max_seconds + 1.0, f"{path.stem} rendered for {elapsed:.1f} s"
    assert peak < 200 * 2**20, f"{path.stem} allocated {peak / 2**20:.0f} MiB"
    if err is None:
        assert len(out) <= LIMITS.max_output
        assert path.stem not in EXPECTED
        return
    msg = str(err)
    assert "\n" not in msg and len(msg) < 400, msg
    assert isinstance(err, (InvalidArgumentError, ModelFormatError))
    assert msg.startswith(("chat template", "tokenizer.chat_template")), msg
    if path.stem in EXPECTED:
        assert re.search(EXPECTED[path.stem], msg), msg


def test_corpus_is_there():
    assert len(HOSTILE) >= 40 and len(BENIGN) >= 4


@pytest.mark.parametrize("path", BENIGN, ids=[p.stem for p in BENIGN])
@pytest.mark.parametrize("messages", [MESSAGES, MESSAGES[1:2], [{"role": "user", "content": "long " * 200_000}]],
                         ids=["four", "one", "one-megabyte"])
def test_real_templates_render_as_plain_jinja(path, messages, monkeypatch):
    source = path.read_text()
    if "strftime_now" in source:
        monkeypatch.setattr(chat, "_compile", chat._compile.__wrapped__)  # a fixed date, like plain_render
        monkeypatch.setattr(chat, "datetime", type("D", (), {"now": staticmethod(lambda: _FixedDate())}))
    try:
        want = plain_render(source, messages)
    except Exception as e:  # noqa: BLE001 - the template refuses these messages (llama2: roles alternate)
        with pytest.raises(InvalidArgumentError, match="refused"):
            render_chat(source, messages, "<s>", "</s>")
        assert "alternate" in str(e)
        return
    assert render_chat(source, messages, "<s>", "</s>") == want


class _FixedDate:
    def strftime(self, fmt):
        return "01 Jan 2026"


def test_default_chatml():
    assert render_chat(None, MESSAGES[1:2]) == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"


def test_compiled_once_per_template():
    source = (BENIGN[0]).read_text()
    render_chat(source, MESSAGES)
    before = chat._compile.cache_info()
    for _ in range(3):
        render_chat(source, MESSAGES)
    after = chat._compile.cache_info()
    assert after.hits == before.hits + 3 and after.misses == before.misses


def test_a_template_that_does_not_compile_is_remembered():
    bad = "{% for %}"
    with pytest.raises(ModelFormatError, match="does not compile"):
        render_chat(bad, MESSAGES)
    misses = chat._compile.cache_info().misses
    with pytest.raises(ModelFormatError, match="does not compile"):
        render_chat(bad, MESSAGES)
    assert chat._compile.cache_info().misses == misses


def test_limits_are_per_render_not_cumulative():
    source = "{% for i in range(6000) %}{% for j in range(100) %}{% endfor %}{% endfor %}ok"  # 606k steps
    slow_machine = chat.TemplateLimits(max_seconds=60)  # steps are the point here, not the clock
    for _ in range(2):  # 1.2M together: over the limit if the count carried over
        assert render_chat(source, MESSAGES, limits=slow_machine) == "ok"


def test_time_limit_is_enforced():
    tight = chat.TemplateLimits(max_seconds=0.05, max_steps=10**9)
    t0 = time.monotonic()
    with pytest.raises(InvalidArgumentError, match=r"chat template: exceeded 0.05 s"):
        render_chat((DATA / "hostile" / "nested_loops.jinja").read_text(), MESSAGES, limits=tight)
    assert time.monotonic() - t0 < 0.5


@pytest.mark.parametrize("content,needle", [
    ([{"type": "text", "text": 42}], "messages[0].content[0].text must be a string, got int"),
    ([{"type": "text", "text": None}], "messages[0].content[0].text must be a string, got NoneType"),
    (3.5, "messages[0].content must be a string or a list of text parts, got float"),
])
def test_bad_content_parts_are_argument_errors(content, needle):
    with pytest.raises(InvalidArgumentError) as e:
        render_chat(None, [{"role": "user", "content": content}])
    assert needle in str(e.value)


def test_text_parts_are_joined():
    parts = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}, {"type": "text", "text": "b"}]
    assert "user\nab<|im_end|>" in render_chat(None, [{"role": "user", "content": parts}])


def test_cli_chat_with_a_recursive_template_is_one_line(tmp_path, capsys):
    """Was a 1,400-line traceback."""
    import dataclasses

    from gguf import GGMLQuantizationType

    from llamalab.cli import main
    from llamalab.lab.synth import PRESETS, tiny_bpe_tokenizer, write_gguf

    tok = dataclasses.replace(tiny_bpe_tokenizer(), chat_template=(DATA / "hostile" / "recursive_macro.jinja").read_text())
    path = write_gguf(tmp_path / "m.gguf", PRESETS["tiny"], GGMLQuantizationType.F32, tokenizer=tok)
    assert main(["run", "--model", str(path), "--backend", "reference", "--chat", "hi"]) == 1
    assert capsys.readouterr().err == "error: chat template: calls nested deeper than 32\n"


def test_the_watchdog_stops_a_render_the_checks_miss(monkeypatch):
    """Should a path escape the in-render checks, the timer thread stops it from outside."""
    from llamalab.text import template_sandbox as ts

    monkeypatch.setattr(ts.Budget, "step", lambda self, n=1: None)  # as if no loop ever ticked
    limits = chat.TemplateLimits(max_seconds=0.2)
    t0 = time.monotonic()
    with pytest.raises(InvalidArgumentError, match=r"^chat template: ran past its time limit \(stopped by the watchdog\)$"):
        render_chat((DATA / "hostile" / "nested_loops.jinja").read_text(), MESSAGES, limits=limits)
    assert time.monotonic() - t0 < 0.2 + ts.WATCHDOG_GRACE + 1.0


def test_a_disarmed_watchdog_never_fires_later():
    from llamalab.text import template_sandbox as ts

    limits = chat.TemplateLimits(max_seconds=0.05)  # the watchdog fires 1.05 s after the start, if armed
    assert render_chat(None, MESSAGES[1:2], limits=limits).startswith("<|im_start|>user")
    time.sleep(ts.WATCHDOG_GRACE + 0.3)  # a stray asynchronous exception would land in this sleep
