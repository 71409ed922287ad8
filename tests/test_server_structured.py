"""Structured output, tools, logit_bias, n, embeddings and /metrics, through the official
`openai` client against a real uvicorn on a tiny synthetic model (random weights: the
text is gibberish, so what is checked is what the constraints promise: the JSON validates,
the banned token never comes, the calls parse, the numbers match a solo run)."""

from __future__ import annotations

import base64
import dataclasses
import json

import httpx
import numpy as np
import pytest
from gguf import GGMLQuantizationType

from llamalab import LLM
from llamalab.lab.synth import PRESETS, tiny_bpe_tokenizer, write_gguf
from llamalab.server import Settings, create_app, serve_in_thread

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

N_CTX = 1024  # the generic tool prompt needs room: the tiny vocabulary spends a token per byte or two
BACKEND = "reference"

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "minItems": 1, "maxItems": 3},
        "address": {"type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 10},
                                   "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"], "additionalProperties": False},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "role", "tags", "address", "active"],
    "additionalProperties": False,
}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                    "unit": {"enum": ["C", "F"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string", "maxLength": 8}},
                                       "required": ["tz"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    cfg = dataclasses.replace(PRESETS["tiny"], context_length=N_CTX)
    return write_gguf(tmp_path_factory.mktemp("structured") / "tiny.gguf", cfg, GGMLQuantizationType.Q8_0,
                      tokenizer=tiny_bpe_tokenizer(), seed=5)


@pytest.fixture(scope="module")
def solo(tiny_path):
    return LLM(tiny_path, backend=BACKEND, progress=False)


@pytest.fixture(scope="module")
def server(tiny_path):
    srv = serve_in_thread(create_app(lambda: LLM(tiny_path, backend=BACKEND, progress=False),
                                     Settings(model_id="tiny", parallel=4)))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def metrics(http) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(http.get("/metrics").text):
        for s in fam.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}" if s.labels else "")
            out[key] = s.value
    return out


# ---- structured output ------------------------------------------------------------------------------


def test_json_schema_always_validates(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for seed in range(12):
        r = client.chat.completions.create(model="tiny", messages=ASK, response_format=fmt, seed=seed,
                                           temperature=1.0, max_tokens=300)
        assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
        jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)


def test_json_schema_streamed_and_on_completions(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    for seed in range(3):
        stream = client.chat.completions.create(model="tiny", messages=ASK, response_format=fmt, seed=seed,
                                                temperature=1.0, max_tokens=300, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        jsonschema.validate(json.loads(text), PERSON)
        r = client.completions.create(model="tiny", prompt="A person:", max_tokens=300, seed=seed, temperature=1.0,
                                      extra_body={"response_format": fmt})
        jsonschema.validate(json.loads(r.choices[0].text), PERSON)


def test_json_object(client):
    for seed in range(4):
        r = client.chat.completions.create(model="tiny", messages=ASK, response_format={"type": "json_object"},
                                           seed=seed, temperature=0.7, max_tokens=200)
        content = r.choices[0].message.content
        if r.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(content), dict)
        else:  # cut by max_tokens: still a JSON object's beginning
            assert content.startswith("{")


def test_gbnf_and_lark_grammars(client):
    for seed in range(6):
        r = client.completions.create(model="tiny", prompt="Answer:", max_tokens=10, seed=seed, temperature=1.0,
                                      extra_body={"grammar": 'root ::= "yes" | "no" | "maybe"'})
        assert r.choices[0].text in ("yes", "no", "maybe")
        r = client.completions.create(model="tiny", prompt="Number:", max_tokens=20, seed=seed, temperature=1.0,
                                      extra_body={"grammar": "start: /[0-9]{3}-[a-z]{2}/"})
        text = r.choices[0].text
        assert len(text) == 6 and text[:3].isdigit() and text[3] == "-" and text[4:].isalpha(), text


def test_python_api_json_schema(solo):
    for seed in range(3):
        out = solo.complete("A person:", json_schema=PERSON, seed=seed, temperature=1.0, max_tokens=300)
        jsonschema.validate(json.loads(out), PERSON)


@pytest.mark.parametrize("schema, keyword", [
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
    ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not"),
    ({"if": {"type": "integer"}, "then": {"minimum": 1}}, "if"),
])
def test_unsupported_schema_keyword_is_400_naming_it(http, schema, keyword):
    body = {"messages": ASK, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "response_format.json_schema.schema" and repr(keyword) in err["message"]
    r = http.post("/v1/completions", json={"prompt": "x", "json_schema": schema})
    assert r.status_code == 400 and repr(keyword) in r.json()["error"]["message"]


def test_bad_grammar_is_400(http):
    r = http.post("/v1/completions", json={"prompt": "x", "grammar": "root ::= ((("})
    assert r.status_code == 400 and r.json()["error"]["param"] == "grammar"
    r = http.post("/v1/completions", json={"prompt": "x", "grammar": "root ::= \"a\"", "json_schema": {"type": "object"}})
    assert r.status_code == 400 and "one constraint" in r.json()["error"]["message"]


# ---- tools -----------------------------------------------------------------------------------------


def test_required_tool_call_parses(client):
    finished = 0
    for seed, parallel in [(s, False) for s in range(5)] + [(s, True) for s in range(3)]:
        r = client.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                           seed=seed, temperature=1.0, max_tokens=400, parallel_tool_calls=parallel)
        ch = r.choices[0]
        if parallel and ch.finish_reason == "length":  # a random model may keep adding calls
            continue
        finished += parallel
        assert ch.finish_reason == "tool_calls" and ch.message.content is None
        assert len(ch.message.tool_calls) == 1 or parallel
        assert ch.message.tool_calls, "no tool_calls"
        for call in ch.message.tool_calls:
            assert call.id.startswith("call_") and call.type == "function"
            spec = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]
            jsonschema.validate(json.loads(call.function.arguments), spec["function"]["parameters"])
    assert finished >= 1


def test_named_tool_choice_and_single_call(client):
    choice = {"type": "function", "function": {"name": "get_time"}}
    r = client.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER, TIME], tool_choice=choice,
                                       parallel_tool_calls=False, seed=3, temperature=1.0, max_tokens=300)
    calls = r.choices[0].message.tool_calls
    assert len(calls) == 1 and calls[0].function.name == "get_time"
    jsonschema.validate(json.loads(calls[0].function.arguments), TIME["function"]["parameters"])


def test_tool_calls_stream_as_deltas_and_results_go_back(client):
    stream = client.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER], tool_choice="required",
                                            parallel_tool_calls=False, seed=1, temperature=1.0, max_tokens=300,
                                            stream=True)
    deltas, finish = [], None
    for c in stream:
        if c.choices:
            deltas += c.choices[0].delta.tool_calls or []
            finish = c.choices[0].finish_reason or finish
    assert finish == "tool_calls" and deltas and deltas[0].function.name == "get_weather"
    args = json.loads(deltas[0].function.arguments)
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": deltas[0].id, "type": "function",
                                                               "function": {"name": "get_weather",
                                                                            "arguments": json.dumps(args)}}]},
        {"role": "tool", "tool_call_id": deltas[0].id, "content": '{"temp": 21}'},
    ]
    r = client.chat.completions.create(model="tiny", messages=history, tools=[WEATHER], seed=2, max_tokens=200,
                                       temperature=1.0)
    msg = r.choices[0].message
    assert msg.tool_calls or msg.content is not None  # auto: an answer or another call, parsed either way
    r = client.chat.completions.create(model="tiny", messages=history, tools=[WEATHER], tool_choice="none",
                                       max_tokens=5)
    assert r.choices[0].message.tool_calls is None


def test_tool_errors_are_400(http):
    cases = [
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice.function.name"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}}, "tools"),
    ]
    for extra, param in cases:
        r = http.post("/v1/chat/completions", json={"messages": ASK, **extra})
        assert r.status_code == 400, (extra, r.text)
        assert param in r.json()["error"]["message"], (param, r.text)


# ---- logit_bias, n, seed -----------------------------------------------------------------------------


def test_logit_bias_minus_100_removes_the_token(client, solo):
    prompt = solo.tokenize("Once upon a time")
    top = [c.token for c in solo.generate(prompt, max_tokens=24, temperature=0)]
    banned = max(set(top), key=top.count)  # the greedy run's most frequent token
    for seed in range(3):
        out = [c.token for c in solo.generate(prompt, max_tokens=48, temperature=1.0, seed=seed, top_k=0, min_p=0,
                                              logit_bias={banned: -100})]
        assert banned not in out
        r = client.completions.create(model="tiny", prompt=prompt, max_tokens=48, temperature=1.0, seed=seed,
                                      logit_bias={str(banned): -100}, extra_body={"top_k": 0, "min_p": 0})
        assert r.choices[0].text == solo.detokenize(out) or r.choices[0].text == solo.tokenizer.decode(
            out, strip_prefix_space=False)
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=4, temperature=0,
                                  logit_bias={str(top[0]): 100, str(banned): -100} if top[0] != banned else {})
    assert r.choices[0].text


def test_n_choices_share_the_prefill(client, http, solo):
    prompt = solo.tokenize("A fresh prompt about n choices that no other test sends, " * 3)
    before = metrics(http)
    r = client.completions.create(model="tiny", prompt=prompt, n=3, max_tokens=12, seed=7, temperature=1.0)
    assert [c.index for c in r.choices] == [0, 1, 2]
    for i, c in enumerate(r.choices):  # choice i is the solo run with seed + i
        want = solo.tokenizer.decode([t.token for t in solo.generate(prompt, max_tokens=12, seed=7 + i, temperature=1.0)],
                                     strip_prefix_space=False)
        assert c.text == want
    assert len({c.text for c in r.choices}) > 1
    after = metrics(http)
    computed = after["llamalab_prompt_tokens_computed_total"] - before.get("llamalab_prompt_tokens_computed_total", 0)
    assert computed <= len(prompt) + 2  # the prompt once, then one token per later choice
    assert r.usage.prompt_tokens == len(prompt) and 3 <= r.usage.completion_tokens <= 36


def test_n_streamed_chat(client):
    stream = client.chat.completions.create(model="tiny", messages=ASK, n=3, max_tokens=6, seed=1, stream=True,
                                            stream_options={"include_usage": True})
    text, finish, usage = {0: "", 1: "", 2: ""}, {}, None
    for c in stream:
        for ch in c.choices:
            text[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
        usage = c.usage or usage
    assert set(finish) == {0, 1, 2} and 3 <= usage.completion_tokens <= 18
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    r = client.chat.completions.create(model="tiny", messages=ASK, n=3, max_tokens=6, seed=1)
    assert [c.message.content for c in r.choices] == [text[0], text[1], text[2]]


def test_chat_logprobs(client):
    r = client.chat.completions.create(model="tiny", messages=ASK, max_tokens=5, logprobs=True, top_logprobs=3,
                                       temperature=0)
    content = r.choices[0].logprobs.content
    assert len(content) == 5 and all(len(t.top_logprobs) == 3 for t in content)
    assert all(t.logprob == pytest.approx(t.top_logprobs[0].logprob) for t in content)  # greedy: the top one


# ---- strict types, unsupported fields ------------------------------------------------------------------


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", {"prompt": "x", "max_tokens": True}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "stream": "yes"}, "stream"),
    ("/v1/completions", {"prompt": "x", "suffix": "end"}, "suffix"),
    ("/v1/completions", {"prompt": "x", "best_of": 3}, "best_of"),
    ("/v1/completions", {"prompt": "x", "echo": True}, "echo"),
    ("/v1/completions", {"prompt": "x", "frobnicate": 1}, "frobnicate"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"x": 1}}, "logit_bias"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"5": -500}}, "logit_bias"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"99999": 1}}, "logit_bias"),
    ("/v1/completions", {"prompt": "x", "n": 99}, "n"),
    ("/v1/chat/completions", {"messages": ASK, "logprobs": 1}, "logprobs"),
    ("/v1/chat/completions", {"messages": ASK, "response_format": {"type": "xml"}}, "response_format.type"),
    ("/v1/chat/completions", {"messages": ASK, "response_format": {"type": "json_schema"}}, "response_format"),
    ("/v1/chat/completions", {"messages": ASK, "functions": [{"name": "f"}]}, "functions"),
    ("/v1/chat/completions", {"messages": ASK, "parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x", "colour": "red"}]}, "messages.0.colour"),
    ("/v1/chat/completions", {"messages": ASK, "ignore_eos": True, "response_format": {"type": "json_object"}},
     "ignore_eos"),
    ("/v1/embeddings", {"input": "x", "dimensions": 3}, "dimensions"),
    ("/v1/embeddings", {"input": []}, "input"),
    ("/v1/embeddings", {"input": [[1, 2, 99999]]}, "input"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "int8"}, "encoding_format"),
])
def test_unsupported_or_mistyped_is_400_naming_it(http, path, body, param):
    r = http.post(path, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert param in err["message"], err
    if err["param"] is not None:
        assert err["param"].startswith(param.split(".")[0])


# ---- embeddings ---------------------------------------------------------------------------------------


def test_embeddings(client, solo):
    texts = ["the cat sat on the mat", "a dog", "the cat sat on the mat"]
    r = client.embeddings.create(model="tiny", input=texts)
    vecs = np.array([d.embedding for d in r.data], dtype=np.float32)
    assert vecs.shape == (3, solo.config.dim) and [d.index for d in r.data] == [0, 1, 2]
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vecs[0], vecs[2])  # deterministic
    np.testing.assert_allclose(vecs, solo.embed(texts), rtol=1e-5, atol=1e-6)
    assert r.usage.prompt_tokens == sum(len(solo.tokenize(t)) for t in texts)
    again = client.embeddings.create(model="tiny", input=texts[1])
    np.testing.assert_array_equal(np.array(again.data[0].embedding, dtype=np.float32), vecs[1])
    ids = solo.tokenize("a dog")
    by_ids = client.embeddings.create(model="tiny", input=[ids])  # token arrays
    np.testing.assert_array_equal(np.array(by_ids.data[0].embedding, dtype=np.float32), vecs[1])
    b64 = client.embeddings.create(model="tiny", input="a dog", encoding_format="base64")
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(b64.data[0].embedding), dtype="<f4"), vecs[1])


def test_embedding_pooling(solo):
    ids = solo.tokenize("one two three")
    h = solo.model.forward(np.asarray(ids), solo.model.new_cache(len(ids), solo.cache.k.dtype), hidden=True)  # (T, dim)
    for kind, v in (("mean", h.mean(0)), ("cls", h[0]), ("last", h[-1])):
        np.testing.assert_allclose(solo.embed(ids, pooling=kind)[0], v / np.linalg.norm(v), rtol=1e-5, atol=1e-6)
    assert solo.pooling == "mean"  # the synthetic file carries no pooling_type


# ---- metrics, request ids --------------------------------------------------------------------------------


def test_metrics_parse_and_move(http, client):
    before = metrics(http)
    client.completions.create(model="tiny", prompt="counting tokens", max_tokens=5, temperature=0, extra_body={
        "ignore_eos": True})
    http.post("/v1/completions", json={"prompt": "x", "temperature": -1})
    after = metrics(http)
    ok = 'llamalab_requests_total{route=/v1/completions,status=200}'
    bad = 'llamalab_requests_total{route=/v1/completions,status=400}'
    assert after[ok] == before.get(ok, 0) + 1 and after[bad] == before.get(bad, 0) + 1
    assert after["llamalab_generation_tokens_total"] - before.get("llamalab_generation_tokens_total", 0) == 5
    assert after["llamalab_prompt_tokens_total"] > before.get("llamalab_prompt_tokens_total", 0)
    assert after["llamalab_time_to_first_token_seconds_count"] == before.get(
        "llamalab_time_to_first_token_seconds_count", 0) + 1
    assert after["llamalab_slots"] == 4 and after["llamalab_slots_busy"] == 0 and after["llamalab_queue_depth"] == 0
    assert after["llamalab_kv_cache_bytes"] > 0 and "llamalab_prompt_store_bytes" in after
    assert after["llamalab_decode_tokens_per_second"] > 0


def test_request_id_header(http):
    r = http.get("/v1/models")
    assert r.headers["x-request-id"].startswith("req-")
    r = http.get("/v1/models", headers={"X-Request-Id": "my-id-42"})
    assert r.headers["x-request-id"] == "my-id-42"


# ---- CLI ------------------------------------------------------------------------------------------------


def test_cli_run_json_schema_and_grammar(tiny_path, tmp_path, capsys):
    from llamalab.cli import main

    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "maximum": 9}},
              "required": ["ok", "n"], "additionalProperties": False}
    base = ["run", "A:", "-m", str(tiny_path), "--backend", "reference", "--temp", "1", "--seed", "2", "-n", "60"]
    assert main(base + ["--json-schema", json.dumps(schema)]) == 0
    jsonschema.validate(json.loads(capsys.readouterr().out), schema)
    (tmp_path / "g.gbnf").write_text('root ::= "yes" | "no"\n')
    assert main(base + ["--grammar", str(tmp_path / "g.gbnf")]) == 0
    assert capsys.readouterr().out.strip() in ("yes", "no")
    assert main(base + ["--json-schema", '{"type": "array", "uniqueItems": true}']) == 1
    assert "unsupported JSON-schema keyword 'uniqueItems'" in capsys.readouterr().err


HERMES = (  # a template that renders tools itself (the Hermes / Qwen 2.5 style), in ChatML
    "{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}\nCall one as <tool_call>{\"name\": ..., "
    "\"arguments\": ...}</tool_call><|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}{% for tc in m.tool_calls %}<tool_call>"
    "{{ {'name': tc.function.name, 'arguments': tc.function.arguments} | tojson }}</tool_call>{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_native_tool_template(tmp_path):
    cfg = dataclasses.replace(PRESETS["tiny"], context_length=N_CTX)
    tok = dataclasses.replace(tiny_bpe_tokenizer(), chat_template=HERMES)
    llm = LLM(write_gguf(tmp_path / "hermes.gguf", cfg, GGMLQuantizationType.Q8_0, tokenizer=tok, seed=5),
              backend=BACKEND, progress=False)
    plan = llm.tool_plan(ASK, [WEATHER], "required", parallel_tool_calls=False)
    assert plan.mode == "native" and plan.lark is not None
    prompt = llm.apply_chat_template(plan.messages, tools=plan.template_tools)
    assert '"get_weather"' in prompt and prompt.endswith("<|im_start|>assistant\n")
    for seed in range(3):
        content, calls = llm.chat_with_tools(ASK, [WEATHER], tool_choice="required", parallel_tool_calls=False,
                                             seed=seed, temperature=1.0, max_tokens=300)
        assert content is None and len(calls) == 1 and calls[0]["function"]["name"] == "get_weather"
        jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), WEATHER["function"]["parameters"])
    back = ASK + [{"role": "assistant", "tool_calls": calls}, {"role": "tool", "tool_call_id": calls[0]["id"],
                                                              "content": "21 C"}]
    assert "<tool_call>" in llm.apply_chat_template(llm.tool_plan(back, [WEATHER]).messages, tools=[WEATHER])
