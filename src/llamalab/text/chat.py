"""Chat prompts: the model file's own Jinja2 template, rendered in a sandbox."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import InvalidArgumentError, ModelFormatError

# used when a file carries no template (llama.cpp falls back to ChatML too)
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ROLES = ("system", "user", "assistant", "tool", "developer")


def _raise(message: str):
    raise TemplateError(message)


@lru_cache(maxsize=8)
def _compile(source: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
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
        for key in ("tool_calls", "tool_call_id", "name"):  # for templates that render tool turns
            if m.get(key) is not None:
                msg[key] = m[key]
        out.append(msg)
    return out


def render_chat(template: str | None, messages, bos_token: str = "", eos_token: str = "",
                add_generation_prompt: bool = True, tools: list | None = None) -> str:
    """The prompt text for `messages`, as the model was trained to see it (`tools` are
    handed to templates that render them; see text/tools.py for the others)."""
    msgs = check_messages(messages)
    extra = {"tools": tools} if tools else {}
    try:
        return _compile(template or CHATML).render(
            messages=msgs, bos_token=bos_token, eos_token=eos_token, add_generation_prompt=add_generation_prompt,
            **extra,
        )
    except TemplateError as e:
        raise InvalidArgumentError(f"chat template refused the messages: {e}") from None
