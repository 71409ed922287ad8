"""Chat prompts: the model file's own Jinja2 template, rendered in a sandbox with limits.

A template is code from whoever made the model file; `template_sandbox` bounds each render in
steps, time, size and depth, and the compiled template is cached per source (once per model).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from jinja2 import TemplateError

from ..errors import InvalidArgumentError, ModelFormatError
from .template_sandbox import LimitedSandbox, TemplateLimitError, TemplateLimits, render_limited

# used when a file carries no template (llama.cpp falls back to ChatML too)
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ROLES = ("system", "user", "assistant", "tool", "developer")


def _raise(message: str):
    raise TemplateError(message)


LIMITS = TemplateLimits()


@lru_cache(maxsize=8)
def _compile(source: str, limits: TemplateLimits = LIMITS):
    """The compiled template, or the ModelFormatError saying why not (cached too: a hostile
    template is not recompiled on every request)."""
    if len(source) > limits.max_source:
        return ModelFormatError(f"tokenizer.chat_template is {len(source):,} characters "
                                f"(limit {limits.max_source:,})")
    env = LimitedSandbox(limits, trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(str(fmt)[:100])
    try:
        return env.from_string(source)
    except TemplateError as e:
        return ModelFormatError(f"tokenizer.chat_template does not compile: {_one_line(e)}")
    except (RecursionError, MemoryError):
        return ModelFormatError("tokenizer.chat_template does not compile: nested too deeply")


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]


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
            texts = []
            for j, p in enumerate(content):
                if isinstance(p, dict) and p.get("type") == "text":
                    if not isinstance(p.get("text"), str):
                        raise InvalidArgumentError(f"messages[{i}].content[{j}].text must be a string, "
                                                   f"got {type(p.get('text')).__name__}")
                    texts.append(p["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise InvalidArgumentError(f"messages[{i}].content must be a string or a list of text parts, "
                                       f"got {type(content).__name__}")
        out.append({"role": m["role"], "content": content})
    return out


def render_chat(template: str | None, messages, bos_token: str = "", eos_token: str = "",
                add_generation_prompt: bool = True, limits: TemplateLimits = LIMITS) -> str:
    """The prompt text for `messages`, as the model was trained to see it.

    Raises InvalidArgumentError (one line) when the template refuses the messages or goes over
    `limits`, ModelFormatError when it does not compile."""
    msgs = check_messages(messages)
    compiled = _compile(template or CHATML, limits)
    if isinstance(compiled, ModelFormatError):
        raise compiled
    try:
        return render_limited(compiled, limits, messages=msgs, bos_token=bos_token, eos_token=eos_token,
                              add_generation_prompt=add_generation_prompt)
    except TemplateLimitError as e:
        raise InvalidArgumentError(str(e)) from None
    except TemplateError as e:
        raise InvalidArgumentError(f"chat template refused the messages: {_one_line(e)}") from None
    except (TypeError, ValueError, LookupError, ArithmeticError, AttributeError) as e:
        raise InvalidArgumentError(f"chat template failed: {type(e).__name__}: {_one_line(e)}") from None
