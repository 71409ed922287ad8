"""Tool calling: OpenAI `tools` put before the model, and its answer read back as `tool_calls`.

Two formats, as llama.cpp has them:

- **native**: the model's chat template handles `tools` itself (its source mentions them);
  it is rendered with ``tools=``, and calls written as ``<tool_call>{json}</tool_call>``
  (the Hermes / Qwen / SmolLM3 style) are parsed out of the text.
- **generic** (every other template, the default model's included): the tools are
  described in a system message, and the grammar forces the answer into JSON, either
  ``{"tool_calls": [{"name": ..., "arguments": {...}}]}`` or ``{"response": "..."}``.

`tool_choice` "required" or a named function is enforced by the grammar in both formats;
"none" leaves the tools out of the prompt. Tools are never silently dropped.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..constrain import JSON_LAYOUT
from ..errors import InvalidArgumentError

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_NATIVE_CALL = re.compile(re.escape(CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(CALL_CLOSE), re.S)

GENERIC_PROMPT = (
    "You can call the following tools. Each is described by a JSON schema of its arguments:\n{tools}\n\n"
    "Respond with one JSON object: either {{\"tool_calls\": [{{\"name\": <tool name>, \"arguments\": <arguments>}}]}} "
    "to call {how}, or {{\"response\": <your answer>}} to answer the user directly."
)


def check_tools(tools) -> list[dict]:
    """OpenAI tools: [{"type": "function", "function": {"name", "description"?, "parameters"?}}]."""
    if not isinstance(tools, list) or not tools:
        raise InvalidArgumentError("tools must be a non-empty list of {type: 'function', function: {...}}")
    out, names = [], set()
    for i, t in enumerate(tools):
        f = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(f, dict):
            raise InvalidArgumentError(f"tools[{i}]: must be {{type: 'function', function: {{name, parameters}}}}")
        name = f.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise InvalidArgumentError(f"tools[{i}].function.name: must be 1-64 letters, digits, _ . -, got {name!r}")
        if name in names:
            raise InvalidArgumentError(f"tools[{i}].function.name: {name!r} is given twice")
        names.add(name)
        params = f.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise InvalidArgumentError(f"tools[{i}].function.parameters: must be a JSON schema object")
        out.append({"type": "function", "function": {"name": name, "description": f.get("description", ""),
                                                     "parameters": params}})
    return out


def check_tool_choice(choice, tools: list[dict]) -> str | dict:
    """"auto" | "none" | "required" | {"type": "function", "function": {"name": ...}} -> the same, checked."""
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if name not in {t["function"]["name"] for t in tools}:
            raise InvalidArgumentError(f"tool_choice.function.name: no tool is named {name!r}")
        return {"type": "function", "function": {"name": name}}
    raise InvalidArgumentError(f"tool_choice must be 'auto', 'none', 'required' or {{type: 'function', function: "
                               f"{{name}}}}, got {choice!r}")


def template_supports_tools(template: str | None) -> bool:
    return bool(template) and "tools" in template and CALL_OPEN in template


@dataclass
class ToolPlan:
    """How one request's tools reach the model, and how its answer is read back."""

    mode: str  # "native" | "generic" | "none"
    messages: list[dict]
    template_tools: list[dict] | None = None  # for the template (native)
    json_schema: dict | None = None  # the constraint (generic)
    lark: str | None = None  # the constraint (native, required / named)
    names: list[str] = field(default_factory=list)

    def parse(self, text: str) -> tuple[str | None, list[dict]]:
        """(content, OpenAI tool_calls) from the generated text."""
        if self.mode == "none":
            return text, []
        if self.mode == "generic":
            try:
                obj = json.loads(text)
            except ValueError:  # cut short (max_tokens): hand the text back as it is
                return text, []
            if isinstance(obj, dict) and isinstance(obj.get("tool_calls"), list):
                return None, [_call(c.get("name"), c.get("arguments", {})) for c in obj["tool_calls"]
                              if isinstance(c, dict)]
            if isinstance(obj, dict) and isinstance(obj.get("response"), str):
                return obj["response"], []
            return text, []
        calls = []
        for body in _NATIVE_CALL.findall(text):
            try:
                obj = json.loads(body)
            except ValueError:
                continue
            if isinstance(obj, dict) and "name" in obj:
                calls.append(_call(obj["name"], obj.get("arguments", obj.get("parameters", {}))))
        content = _NATIVE_CALL.sub("", text).strip() if calls else text
        return (content or None), calls


def _call(name, arguments) -> dict:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": {"name": name, "arguments": args}}


def _call_schema(tool: dict) -> dict:
    f = tool["function"]
    return {"type": "object", "properties": {"name": {"const": f["name"]}, "arguments": f["parameters"]},
            "required": ["name", "arguments"], "additionalProperties": False}


def plan_tools(messages: list[dict], tools, tool_choice="auto", parallel_tool_calls: bool = True,
               template: str | None = None) -> ToolPlan:
    """The prompt messages and the constraint for a request with `tools` (None: no tools)."""
    if tools is None:
        if tool_choice not in (None, "auto", "none"):
            raise InvalidArgumentError("tool_choice: needs tools")
        return ToolPlan("none", _plain_history(messages))
    tools = check_tools(tools)
    choice = check_tool_choice(tool_choice if tool_choice is not None else "auto", tools)
    if choice == "none":
        return ToolPlan("none", _plain_history(messages))
    chosen = tools if not isinstance(choice, dict) else [t for t in tools if t["function"]["name"] == choice["function"]["name"]]
    names = [t["function"]["name"] for t in chosen]
    forced = choice != "auto"
    if template_supports_tools(template):
        lark = None
        if forced:
            one = {"anyOf": [_call_schema(t) for t in chosen]} if len(chosen) > 1 else _call_schema(chosen[0])
            one = {**one, "x-guidance": JSON_LAYOUT}  # compact JSON, as compile_grammar asks for schemas
            more = ' ("\\n" call)*' if parallel_tool_calls else ""
            lark = f'start: call{more}\ncall: "{CALL_OPEN}\\n" %json {json.dumps(one)} "\\n{CALL_CLOSE}"\n'
        return ToolPlan("native", _native_history(messages), template_tools=tools, lark=lark, names=names)
    one = {"anyOf": [_call_schema(t) for t in chosen]} if len(chosen) > 1 else _call_schema(chosen[0])
    calls = {"type": "array", "items": one, "minItems": 1, **({} if parallel_tool_calls else {"maxItems": 1})}
    call_obj = {"type": "object", "properties": {"tool_calls": calls}, "required": ["tool_calls"],
                "additionalProperties": False}
    answer = {"type": "object", "properties": {"response": {"type": "string"}}, "required": ["response"],
              "additionalProperties": False}
    described = json.dumps([{"name": t["function"]["name"], "description": t["function"]["description"],
                             "parameters": t["function"]["parameters"]} for t in chosen], ensure_ascii=False)
    how = f"the tool {names[0]}" if len(names) == 1 else "one or more tools"
    system = GENERIC_PROMPT.format(tools=described, how=how)
    history = _generic_history(messages)
    if history and history[0]["role"] == "system":
        history[0] = {**history[0], "content": f"{history[0]['content']}\n\n{system}"}
    else:
        history.insert(0, {"role": "system", "content": system})
    return ToolPlan("generic", history, json_schema=call_obj if forced else {"anyOf": [call_obj, answer]}, names=names)


def _arguments(tc: dict) -> Any:
    args = (tc.get("function") or {}).get("arguments", {})
    if isinstance(args, str):
        try:
            return json.loads(args)
        except ValueError:
            return args
    return args


def _plain_history(messages: list[dict]) -> list[dict]:
    """Tool turns for a request without tools: kept as text, so nothing is lost."""
    return _generic_history(messages)


def _generic_history(messages: list[dict]) -> list[dict]:
    """Earlier calls written back as the JSON the model gave; tool results as user turns
    (minja's polyfill: many templates know no 'tool' role)."""
    out = []
    for m in messages:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            calls = [{"name": (tc.get("function") or {}).get("name"), "arguments": _arguments(tc)} for tc in m["tool_calls"]]
            out.append({"role": "assistant", "content": json.dumps({"tool_calls": calls}, ensure_ascii=False)})
        elif m.get("role") == "tool":
            resp = {"tool_call_id": m.get("tool_call_id"), "content": _text(m.get("content"))}
            out.append({"role": "user", "content": json.dumps({"tool_response": resp}, ensure_ascii=False)})
        else:
            out.append({"role": m["role"], "content": m.get("content")})
    return out


def _native_history(messages: list[dict]) -> list[dict]:
    """As the HF templates expect: arguments as objects, tool turns with their ids."""
    out = []
    for m in messages:
        m = {k: v for k, v in m.items() if v is not None}
        if m.get("tool_calls"):
            m["tool_calls"] = [{**tc, "function": {**(tc.get("function") or {}), "arguments": _arguments(tc)}}
                               for tc in m["tool_calls"]]
        m.setdefault("content", "")
        out.append(m)
    return out


def _text(content) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content or ""
