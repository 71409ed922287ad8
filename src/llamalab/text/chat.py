"""Chat prompts: the model file's own Jinja2 template, rendered in a sandbox with limits.

A template is code from whoever made the model file; `template_sandbox` bounds each render in
steps, time, size and depth, and the compiled template is cached per source (once per model).

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

from ..errors import InvalidArgumentError, ModelFormatError
from .template_sandbox import LimitedSandbox, TemplateLimitError, TemplateLimits, render_limited

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


LIMITS = TemplateLimits()


@lru_cache(maxsize=8)
def _compile(source: str, limits: TemplateLimits = LIMITS):
    """The compiled template, or the ModelFormatError saying why not (cached too: a hostile
    template is not recompiled on every request)."""
    if len(source) > limits.max_source:
        return ModelFormatError(f"tokenizer.chat_template is {len(source):,} characters "
                                f"(limit {limits.max_source:,})")
    env = LimitedSandbox(limits, trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, loopcontrols])
    env.set_filter("tojson", _tojson)
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
        msg = {"role": m["role"], "content": content}
        msg.update((k, m[k]) for k in MESSAGE_FIELDS if m.get(k) is not None)
        if not isinstance(msg.get("tool_calls", []), list):
            raise InvalidArgumentError(f"messages[{i}].tool_calls must be a list")
        out.append(msg)
    return out


def render_chat(template: str | None, messages, bos_token: str = "", eos_token: str = "",
                add_generation_prompt: bool = True, tools: list | None = None, limits: TemplateLimits = LIMITS,
                **template_vars) -> str:
    """The prompt text for `messages`, as the model was trained to see it.

    tools: OpenAI-style function schemas, for templates with a tools section (Qwen, Llama 3.1).
    template_vars: more variables some templates read, such as Qwen3's ``enable_thinking``.
    Raises InvalidArgumentError (one line) when the template refuses the messages or goes over
    `limits`, ModelFormatError when it does not compile.
    """
    msgs = check_messages(messages)
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise InvalidArgumentError("tools must be a list of function schemas (objects)")
    compiled = _compile(template or CHATML, limits)
    if isinstance(compiled, ModelFormatError):
        raise compiled
    try:
        return render_limited(compiled, limits, messages=msgs, bos_token=bos_token, eos_token=eos_token,
                              add_generation_prompt=add_generation_prompt, tools=tools, **template_vars)
    except TemplateLimitError as e:
        raise InvalidArgumentError(str(e)) from None
    except TemplateError as e:
        raise InvalidArgumentError(f"chat template refused the messages: {_one_line(e)}") from None
    except (TypeError, ValueError, LookupError, ArithmeticError, AttributeError) as e:
        raise InvalidArgumentError(f"chat template failed: {type(e).__name__}: {_one_line(e)}") from None
