"""Render every template on every conversation with transformers, the referee; writes expected.json.

    /work/peers/venv/bin/python tests/data/chat/make_expected.py

A conversation a template refuses (raise_exception) is stored as {"error": message}.
"""

import json
import sys
from pathlib import Path

import jinja2
from transformers.utils.chat_template_utils import render_jinja_template

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conversations import CONVERSATIONS, TEMPLATES  # noqa: E402

out = {}
for name, tokens in TEMPLATES.items():
    template = (HERE / name).read_text(encoding="utf-8")
    for conv_name, conv in CONVERSATIONS.items():
        kwargs = {k: v for k, v in conv.items() if k not in ("messages", "tools", "add_generation_prompt")}
        try:
            rendered, _ = render_jinja_template(
                conversations=[conv["messages"]], tools=conv.get("tools"), chat_template=template,
                add_generation_prompt=conv.get("add_generation_prompt", True), **tokens, **kwargs,
            )
            out[f"{name}/{conv_name}"] = {"text": rendered[0]}
        except jinja2.TemplateError as e:
            out[f"{name}/{conv_name}"] = {"error": str(e)}
(HERE / "expected.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
print(f"{len(out)} renders", file=sys.stderr)
