"""OpenAI wire types: validated request bodies and the response/chunk objects, defined once.

Requests are pydantic models whose field bounds are the API's contract; a violation becomes
an HTTP 400 naming the field (see app.py). Responses are plain dicts built by the small
functions below, so the streaming and the non-streaming paths share every field.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..text.chat import ROLES
from ..generate import Chunk

MAX_STOPS = 16  # stop strings per request (OpenAI allows 4; llama.cpp more)
MAX_STOP_CHARS = 256  # characters per stop string
MAX_N = 16  # choices per request

# fields OpenAI defines that this server does not honour: a 400 naming them, never a silent drop
UNSUPPORTED = {
    "suffix": "suffix (fill-in-the-middle) is not supported",
    "functions": "functions is deprecated and not supported; use tools",
    "function_call": "function_call is deprecated and not supported; use tool_choice",
    "audio": "audio output is not supported", "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported", "web_search_options": "web search is not supported",
}


class _Request(BaseModel):
    """Sampling and length fields shared by /v1/completions and /v1/chat/completions.

    Strict types (`max_tokens: true` and `stream: "yes"` are 400s, not 1 and True), and no
    unknown fields: a field this server does not know would otherwise be silently ignored.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    model: Optional[str] = Field(None, description="Ignored: the server runs one model.")
    max_tokens: Optional[int] = Field(None, ge=1, description="Tokens to generate; capped by the context.")
    temperature: float = Field(0.8, ge=0.0, le=2.0, description="0 = greedy.")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0, description="0 = off (llama.cpp extension).")
    min_p: float = Field(0.05, ge=0.0, le=1.0, description="llama.cpp extension.")
    repeat_penalty: float = Field(1.0, gt=0.0, le=10.0, description="1 = off (llama.cpp extension).")
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    seed: Optional[int] = Field(None, ge=0, lt=2**64)
    stop: Optional[Union[str, list[str]]] = Field(None, description=f"Up to {MAX_STOPS} strings.")
    n: int = Field(1, ge=1, le=MAX_N, description="Choices; they share the prompt's prefill.")
    logit_bias: Optional[dict[str, float]] = Field(None, description="{token id: bias in [-100, 100]}; -100 bans it.")
    response_format: Optional["ResponseFormat"] = None
    grammar: Optional[str] = Field(None, description="GBNF or Lark grammar the output must match (llama.cpp extension).")
    json_schema: Optional[dict[str, Any]] = Field(None, description="JSON schema the output must match (llama.cpp extension).")
    stream: bool = False
    stream_options: Optional["StreamOptions"] = None
    ignore_eos: bool = Field(False, description="Keep going past end-of-sequence (llama.cpp extension).")
    cache_prompt: bool = Field(True, description="Reuse a cached prompt prefix (llama.cpp extension). Reuse "
                               "can change the numbers slightly, as the cached part was computed in other passes.")
    user: Optional[str] = None
    metadata: Optional[dict[str, str]] = Field(None, description="Accepted; has no effect on the output.")
    store: Optional[bool] = Field(None, description="Accepted; nothing is stored.")

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data):
        if isinstance(data, dict):
            for key, why in UNSUPPORTED.items():
                if data.get(key) is not None:
                    raise PydanticCustomError("unsupported", why, {"field": key})
        return data

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings, got {len(stops)}")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"stop strings must be at most {MAX_STOP_CHARS} characters")
        return v

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling_kwargs(self) -> dict:
        """The fields SamplingParams takes."""
        return dict(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p,
                    repeat_penalty=self.repeat_penalty, frequency_penalty=self.frequency_penalty,
                    presence_penalty=self.presence_penalty, seed=self.seed)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = False
    include_obfuscation: Optional[bool] = Field(None, description="Accepted; no padding is added.")


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    name: str = Field("response", max_length=64)
    description: Optional[str] = None
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: Optional[bool] = Field(None, description="Always enforced here, strict or not.")


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JsonSchemaFormat] = None

    @model_validator(mode="after")
    def _schema_given(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs a json_schema object {name, schema}")
        return self


class CompletionRequest(_Request):
    """POST /v1/completions."""

    prompt: Union[str, list[int], list[str], list[list[int]]]
    max_tokens: Optional[int] = Field(16, ge=1, description="Tokens to generate (OpenAI's default: 16).")
    logprobs: Optional[int] = Field(None, ge=0, le=20, description="Top alternatives per token.")
    echo: bool = Field(False, description="Not supported (must be false).")
    best_of: Optional[int] = Field(None, ge=1, description="Only best_of = n (or absent) is supported.")

    @model_validator(mode="after")
    def _best_of(self):
        if self.best_of is not None and self.best_of != self.n:
            raise PydanticCustomError("unsupported", "best_of other than n is not supported", {"field": "best_of"})
        return self

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v):
        if isinstance(v, list) and v and isinstance(v[0], (str, list)):
            if len(v) != 1:
                raise ValueError("only one prompt per request is supported")
            return v[0]
        return v

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v):
        if v:
            raise ValueError("echo is not supported")
        return v


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal[ROLES]  # type: ignore[valid-type]
    content: Optional[Union[str, list[dict[str, Any]]]] = None
    name: Optional[str] = None
    tool_calls: Optional[list[dict[str, Any]]] = Field(None, description="An assistant turn's earlier calls.")
    tool_call_id: Optional[str] = Field(None, description="A tool turn: the call it answers.")
    refusal: Optional[str] = None


class ChatRequest(_Request):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="Newer name for max_tokens.")
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    tools: Optional[list[dict[str, Any]]] = Field(None, description="Functions the model may call.")
    tool_choice: Optional[Union[Literal["auto", "none", "required"], dict[str, Any]]] = None
    parallel_tool_calls: bool = True

    @property
    def token_limit(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens


class EmbeddingRequest(BaseModel):
    """POST /v1/embeddings."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input: Union[str, list[str], list[int], list[list[int]]]
    model: Optional[str] = Field(None, description="Ignored: the server runs one model.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(None, ge=1, description="Must equal the model's width if given.")
    user: Optional[str] = None

    @property
    def items(self) -> list:
        v = self.input
        if isinstance(v, str) or (v and isinstance(v[0], int)):
            return [v]
        return list(v)


class TokenizeRequest(BaseModel):
    content: str
    add_special: bool = Field(False, description="Add BOS (and EOS) as the model's tokenizer would.")
    parse_special: bool = Field(True, description="Recognise special tokens such as <|im_start|> in the text.")
    with_pieces: bool = False


class DetokenizeRequest(BaseModel):
    tokens: list[int]


_Request.model_rebuild()
EmbeddingRequest.model_rebuild()
CompletionRequest.model_rebuild()
ChatRequest.model_rebuild()


# ---- responses --------------------------------------------------------------------------------------


def new_id(kind: str) -> str:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: int | str | None = None, **extra) -> dict:
    """The OpenAI error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code, **extra}}


def usage(last: Chunk | None, n_prompt: int) -> dict:
    n_gen = last.n_generated if last else 0
    cached = last.n_cached if last else 0
    return {"prompt_tokens": n_prompt, "completion_tokens": n_gen, "total_tokens": n_prompt + n_gen,
            "prompt_tokens_details": {"cached_tokens": cached}}


def timings(last: Chunk | None, n_prompt: int) -> dict:
    """llama-server's timings: prompt = tokens actually computed (cached ones excluded)."""
    if last is None:
        return {"prompt_n": 0, "prompt_ms": 0.0, "prompt_per_second": 0.0,
                "predicted_n": 0, "predicted_ms": 0.0, "predicted_per_second": 0.0, "cache_n": 0}
    return {
        "cache_n": last.n_cached,
        "prompt_n": n_prompt - last.n_cached,
        "prompt_ms": last.prompt_s * 1000,
        "prompt_per_second": last.prompt_tps,
        "predicted_n": last.n_generated,
        "predicted_ms": last.decode_s * 1000,
        "predicted_per_second": last.decode_tps,  # tokens after the first / time after the first
    }


class Envelope:
    """The fields every chunk of one response shares (id, created, model, object)."""

    def __init__(self, kind: Literal["chat", "text"], model: str):
        self.kind = kind
        self.id = new_id(kind)
        self.created = int(time.time())
        self.model = model
        self.object = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def chunk(self, choices: list[dict], **extra) -> dict:
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "choices": choices, **extra}

    def choice(self, text: str | None = None, finish_reason: str | None = None, logprobs: dict | None = None,
               role: str | None = None, index: int = 0, tool_calls: list[dict] | None = None) -> dict:
        """One streamed choice: a chat `delta`, or a completion `text`."""
        if self.kind == "chat":
            delta: dict = {}
            if role:
                delta["role"] = role
            if text is not None:
                delta["content"] = text
            if tool_calls:
                delta["tool_calls"] = tool_calls
            return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish_reason}


def fold(chunks: list[dict]) -> dict:
    """The non-streaming response: every streamed chunk folded into one object, per choice."""
    first = chunks[0]
    chat = first["object"] == "chat.completion.chunk"
    out: dict = {"id": first["id"], "object": "chat.completion" if chat else "text_completion",
                 "created": first["created"], "model": first["model"]}
    acc: dict[int, dict] = {}
    for c in chunks:
        for ch in c["choices"]:
            a = acc.setdefault(ch["index"], {"text": [], "finish": None, "content_lp": [], "calls": [], "has_lp": False,
                                             "legacy_lp": {"tokens": [], "token_logprobs": [], "top_logprobs": [],
                                                           "text_offset": []}})
            piece = ch["delta"].get("content") if chat else ch["text"]
            a["text"].append(piece or "")
            if chat and ch["delta"].get("tool_calls"):
                a["calls"].extend({k: v for k, v in tc.items() if k != "index"} for tc in ch["delta"]["tool_calls"])
            a["finish"] = ch["finish_reason"] or a["finish"]
            lp = ch.get("logprobs")
            if lp:
                a["has_lp"] = True
                if chat:
                    a["content_lp"].extend(lp["content"])
                else:
                    for k in a["legacy_lp"]:
                        a["legacy_lp"][k].extend(lp[k])
        for key in ("usage", "timings"):
            if c.get(key):
                out[key] = c[key]
    choices = []
    for i in sorted(acc):
        a = acc[i]
        body = "".join(a["text"])
        if chat:
            msg = {"role": "assistant", "content": body if body or not a["calls"] else None}
            if a["calls"]:
                msg["tool_calls"] = a["calls"]
            choices.append({"index": i, "message": msg, "logprobs": {"content": a["content_lp"]} if a["has_lp"] else None,
                            "finish_reason": a["finish"]})
        else:
            choices.append({"index": i, "text": body, "logprobs": a["legacy_lp"] if a["has_lp"] else None,
                            "finish_reason": a["finish"]})
    return {**out, "choices": choices}
