"""Chat prompts: the model file's own Jinja2 template, rendered in a sandbox.

The environment is the one transformers' ``apply_chat_template`` builds, so templates
written for it render the same bytes here: trim_blocks/lstrip_blocks, the loopcontrols
extension, a ``tojson`` that keeps non-ASCII and HTML characters and key order (Jinja's
own escapes ``<>&'`` and sorts keys), ``raise_exception``, ``strftime_now``, and a
``{% generation %}`` block that just renders its body.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

from jinja2 import TemplateError, nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import InvalidArgumentError, ModelFormatError

# used when a file carries no template (llama.cpp falls back to ChatML too)
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ROLES = ("system", "user", "assistant", "tool", "developer")


MESSAGE_FIELDS = ("name", "tool_calls", "tool_call_id", "reasoning_content")  # passed on when present


def _raise(message: str):
    raise TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class _Generation(Extension):
    """``{% generation %}...{% endgeneration %}`` (transformers' assistant-mask marker): the body as is."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


@lru_cache(maxsize=8)
def _compile(source: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except TemplateError as e:
        raise ModelFormatError(f"tokenizer.chat_template does not compile: {e}") from None


def check_messages(messages) -> list[dict]:
    """Validate OpenAI-style messages: a non-empty list of {role, content: str}."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InvalidArgumentError("messages must be a non-empty list of {role, content}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise InvalidArgumentError(f"messages[{i}] must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise InvalidArgumentError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {m['role']!r}")
        content = m.get("content") or ""
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise InvalidArgumentError(f"messages[{i}].content must be a string")
        msg = {"role": m["role"], "content": content}
        msg.update((k, m[k]) for k in MESSAGE_FIELDS if m.get(k) is not None)
        if not isinstance(msg.get("tool_calls", []), list):
            raise InvalidArgumentError(f"messages[{i}].tool_calls must be a list")
        out.append(msg)
    return out


def render_chat(template: str | None, messages, bos_token: str = "", eos_token: str = "",
                add_generation_prompt: bool = True, tools: list | None = None, **template_vars) -> str:
    """The prompt text for `messages`, as the model was trained to see it.

    tools: OpenAI-style function schemas, for templates with a tools section (Qwen, Llama 3.1).
    template_vars: more variables some templates read, such as Qwen3's ``enable_thinking``.
    """
    msgs = check_messages(messages)
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise InvalidArgumentError("tools must be a list of function schemas (objects)")
    try:
        return _compile(template or CHATML).render(
            messages=msgs, bos_token=bos_token, eos_token=eos_token, add_generation_prompt=add_generation_prompt,
            tools=tools, **template_vars,
        )
    except TemplateError as e:
        raise InvalidArgumentError(f"chat template refused the messages: {e}") from None
