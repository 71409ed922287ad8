"""Real chat templates (Gemma 3, Qwen2.5, Qwen3, Llama 3.1, Phi-3.5) render exactly as transformers renders them.

tests/data/chat/ holds the templates and expected.json, made by transformers'
render_jinja_template (make_expected.py): system folding, tools, tool calls and results,
reasoning, enable_thinking, refused conversations.
"""

import json
import sys
from pathlib import Path

import pytest

from llamalab.errors import InvalidArgumentError
from llamalab.text.chat import render_chat

DATA = Path(__file__).resolve().parent / "data" / "chat"
sys.path.insert(0, str(DATA))
from conversations import CONVERSATIONS, TEMPLATES  # noqa: E402

EXPECTED = json.loads((DATA / "expected.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_template_renders_as_transformers(key):
    name, conv_name = key.split("/")
    conv = CONVERSATIONS[conv_name]
    template = (DATA / name).read_text(encoding="utf-8")
    extra = {k: v for k, v in conv.items() if k not in ("messages", "tools", "add_generation_prompt")}
    call = lambda: render_chat(  # noqa: E731
        template, conv["messages"], add_generation_prompt=conv.get("add_generation_prompt", True),
        tools=conv.get("tools"), **TEMPLATES[name], **extra,
    )  # fmt: skip
    want = EXPECTED[key]
    if "error" in want:
        with pytest.raises(InvalidArgumentError, match="chat template refused the messages: " + want["error"]):
            call()
    else:
        assert call() == want["text"]


def test_gemma_folds_the_system_prompt_into_the_first_user_turn():
    text = EXPECTED["gemma3-it.jinja/system_user"]["text"]
    assert text == "<bos><start_of_turn>user\nYou are terse.\n\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"


def test_tojson_keeps_unicode_and_html_as_transformers():
    out = render_chat("{{ messages[0] | tojson }}|{{ {'b': 1, 'a': '<é>'} | tojson(indent=2) }}",
                      [{"role": "user", "content": "日本 <b>"}])
    assert out == '{"role": "user", "content": "日本 <b>"}|{\n  "b": 1,\n  "a": "<é>"\n}'


def test_bad_tools_are_refused():
    with pytest.raises(InvalidArgumentError, match="tools must be a list"):
        render_chat(None, [{"role": "user", "content": "x"}], tools="get_weather")
