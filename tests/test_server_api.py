"""The HTTP server, driven by the official `openai` client against a real uvicorn on a free
loopback port, on a tiny synthetic model (random weights: the text is gibberish, but every
token is checked against the same request run alone through ``LLM.generate``).

These tests run the reference backend (float32 BLAS): token-exact comparisons between a
batched server and a solo run need products whose result does not depend on the batch
size; the fast kernels' int8 paths differ by batch size and prompt length (see
test_server_batching.py for the fast backend, with a tolerance)."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from server_helpers import SlowModel
from gguf import GGMLQuantizationType

from llamalab import LLM
from llamalab.server import Settings, create_app, serve_in_thread
from llamalab.lab.synth import PRESETS, tiny_bpe_tokenizer, write_gguf

openai = pytest.importorskip("openai")

N_CTX = 256
CHAT = [{"role": "user", "content": "Once upon a time there was a little girl named Lily."}]


BACKEND = "reference"


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    cfg = dataclasses.replace(PRESETS["tiny"], context_length=N_CTX)
    return write_gguf(tmp_path_factory.mktemp("srv") / "tiny.gguf", cfg, GGMLQuantizationType.Q8_0,
                      tokenizer=tiny_bpe_tokenizer(), seed=3)


@pytest.fixture(scope="module")
def solo(tiny_path):
    """The same model outside the server: the reference for every generated token."""
    return LLM(tiny_path, backend=BACKEND, progress=False)


def start(tiny_path, delay: float = 0.0, **settings):
    def load():
        llm = LLM(tiny_path, backend=BACKEND, progress=False)
        if delay:
            llm.model = SlowModel(llm.model, delay)
        return llm

    return serve_in_thread(create_app(load, Settings(model_id="tiny", **settings)))


@pytest.fixture(scope="module")
def server(tiny_path):
    srv = start(tiny_path, parallel=8)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def solo_text(solo, prompt, **kw) -> tuple[str, str]:
    """(text, finish_reason) of one request run alone through the library."""
    chunks = list(solo.generate(prompt, **kw))
    return "".join(c.text for c in chunks), chunks[-1].finish_reason


# ---- shapes -----------------------------------------------------------------------------------------


def test_health_and_models(http, client):
    assert http.get("/health").json() == {"status": "ok"}
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert http.get("/v1/models").json()["data"][0]["meta"]["n_ctx"] == N_CTX


def test_chat_nonstreaming_shape_and_text(client, solo):
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, temperature=0)
    text, finish = solo_text(solo, solo.chat_tokens(CHAT), max_tokens=12, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == text
    assert r.choices[0].finish_reason == finish
    n_prompt = len(solo.chat_tokens(CHAT))
    assert r.usage.prompt_tokens == n_prompt
    assert r.usage.completion_tokens == 12 if finish == "length" else r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == n_prompt + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details.cached_tokens >= 0
    t = r.model_extra["timings"]
    assert set(t) >= {"prompt_n", "prompt_ms", "prompt_per_second", "predicted_n", "predicted_ms", "predicted_per_second"}
    assert t["predicted_n"] == r.usage.completion_tokens
    assert t["prompt_n"] == n_prompt - r.usage.prompt_tokens_details.cached_tokens


def test_stream_equals_nonstream(client):
    kw = dict(model="tiny", messages=CHAT, max_tokens=20, temperature=0.9, seed=7)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason and not any(finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stream_without_usage_ends_with_done(http):
    body = {"messages": CHAT, "max_tokens": 5, "temperature": 0, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert all(p["choices"] for p in payloads)  # no usage chunk unless asked
    assert payloads[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_completion_greedy_matches_library(client, solo):
    prompt = "Once upon a time"
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=24, temperature=0)
    text, finish = solo_text(solo, prompt, max_tokens=24, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].text == text and r.choices[0].finish_reason == finish


def test_completion_stream_and_token_prompt(client, solo):
    ids = solo.tokenize("the little dog")
    parts = list(client.completions.create(model="tiny", prompt=ids, max_tokens=10, temperature=0, stream=True))
    text, _ = solo_text(solo, ids, max_tokens=10, temperature=0)
    assert "".join(p.choices[0].text for p in parts) == text


def test_seed_reproducible(client):
    kw = dict(model="tiny", prompt="She said", max_tokens=30, temperature=1.0, top_p=1.0,
              extra_body={"top_k": 0, "min_p": 0.0})
    a = client.completions.create(seed=1234, **kw).choices[0].text
    b = client.completions.create(seed=1234, **kw).choices[0].text
    c = client.completions.create(seed=4321, **kw).choices[0].text
    assert a == b
    assert a != c  # 30 tokens from a near-uniform 384-way distribution: equal only by a ~0 chance


def test_sampling_params_reach_the_sampler(client, solo):
    kw = dict(temperature=0.7, top_k=5, top_p=0.9, min_p=0.01, repeat_penalty=1.3, frequency_penalty=0.5,
              presence_penalty=0.4, seed=99)
    r = client.completions.create(model="tiny", prompt="a big red ball", max_tokens=25,
                                  extra_body={k: kw[k] for k in ("top_k", "min_p", "repeat_penalty")},
                                  **{k: kw[k] for k in ("temperature", "top_p", "frequency_penalty", "presence_penalty", "seed")})
    text, _ = solo_text(solo, "a big red ball", max_tokens=25, **kw)
    assert r.choices[0].text == text


def test_stop_strings(client, solo):
    full, _ = solo_text(solo, "Once upon a time", max_tokens=40, temperature=0, ignore_eos=True)
    visible = [m.start() for m in re.finditer(r"[a-z]{2}", full)]
    assert visible, f"no stop candidate in {full!r}"
    at = visible[len(visible) // 2]
    stop = full[at : at + 2]
    cut = full.index(stop)
    for stops in (stop, ["zzzz-never", stop]):
        r = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=40, temperature=0,
                                      stop=stops, extra_body={"ignore_eos": True})
        assert r.choices[0].text == full[:cut]
        assert r.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=40, temperature=0,
                                            stop=stop, stream=True, extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].text for c in chunks) == full[:cut]


def test_logprobs(client, solo):
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=6, temperature=0, logprobs=True,
                                       top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    ref = list(solo.generate(solo.chat_tokens(CHAT), max_tokens=6, temperature=0, logprobs=3))
    for entry, c in zip(content, ref):
        assert len(entry.top_logprobs) == 3
        assert entry.logprob == pytest.approx(c.logprob, abs=1e-4)
        assert entry.top_logprobs[0].logprob == pytest.approx(max(c.top_logprobs.values()), abs=1e-4)
        assert entry.token == solo.tokenizer.token_bytes(c.token).decode("utf-8", "replace")
    t = client.completions.create(model="tiny", prompt="hi", max_tokens=4, temperature=0, logprobs=2)
    lp = t.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert all(len(d) <= 2 for d in lp.top_logprobs)
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)


def test_max_tokens_capped_by_context(client, solo):
    n_prompt = len(solo.tokenize("Once upon a time"))
    r = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=100000, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == N_CTX - n_prompt + 1  # the last token is sampled, not stored


def test_prefix_reuse_across_turns(client):
    first = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8, temperature=0)
    turn2 = CHAT + [{"role": "assistant", "content": first.choices[0].message.content},
                    {"role": "user", "content": "and then?"}]
    second = client.chat.completions.create(model="tiny", messages=turn2, max_tokens=8, temperature=0)
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens
    assert second.model_extra["timings"]["prompt_n"] == (second.usage.prompt_tokens
                                                         - second.usage.prompt_tokens_details.cached_tokens)


def test_cache_prompt_false_recomputes(client):
    kw = dict(model="tiny", prompt="the sun and the tree", max_tokens=10, temperature=0.8, seed=5)
    first = client.completions.create(**kw)
    again = client.completions.create(extra_body={"cache_prompt": False}, **kw)
    assert again.usage.prompt_tokens_details.cached_tokens == 0
    assert again.model_extra["timings"]["prompt_n"] == again.usage.prompt_tokens
    assert again.choices[0].text == first.choices[0].text


def test_tokenize_detokenize(http, solo):
    r = http.post("/tokenize", json={"content": "the big dog"}).json()
    assert r["tokens"] == solo.tokenize("the big dog", add_bos=False)
    assert http.post("/detokenize", json={"tokens": r["tokens"]}).json() == {"content": "the big dog"}
    pieces = http.post("/tokenize", json={"content": "the", "with_pieces": True}).json()["tokens"]
    assert "".join(p["piece"] for p in pieces) == "the"
    bad = http.post("/detokenize", json={"tokens": [0, 10**6]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"


# ---- concurrency --------------------------------------------------------------------------------------


def test_eight_concurrent_streams_match_solo_runs(server, client, solo):
    """8 clients at once: each stream equals the same request run alone; decode steps were batched."""
    jobs = [dict(prompt=f"{w} went to the park", seed=i, temperature=(0.0 if i % 2 else 0.8), max_tokens=40)
            for i, w in enumerate(["Lily", "Tim", "Ben", "the dog", "the cat", "mom", "she", "he"])]
    expected = [solo_text(solo, j["prompt"], max_tokens=j["max_tokens"], temperature=j["temperature"], seed=j["seed"],
                          ignore_eos=True)[0] for j in jobs]
    engine = server.app.state.llamalab.engine
    before = dict(engine.stats)
    got: list = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def run(i):
        j = jobs[i]
        barrier.wait()
        stream = client.completions.create(model="tiny", stream=True, extra_body={"ignore_eos": True}, **j)
        got[i] = "".join(c.choices[0].text for c in stream)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got == expected
    rows = engine.stats["decode_rows"] - before["decode_rows"]
    batches = engine.stats["decode_batches"] - before["decode_batches"]
    assert rows == sum(j["max_tokens"] - 1 for j in jobs)  # every token after the first is one decode row
    assert rows / batches > 2, f"decode steps were not batched: {rows} rows in {batches} batches"
    assert engine.stats["max_batch"] >= 4


def test_queue_full_gives_503(tiny_path):
    srv = start(tiny_path, delay=0.01, parallel=1, queue_size=0)
    try:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=60)
        long = c.completions.create(model="tiny", prompt="hi", max_tokens=200, stream=True, temperature=0,
                                    extra_body={"ignore_eos": True})
        next(iter(long))  # the only slot is busy now
        with pytest.raises(openai.APIStatusError) as e:
            c.completions.create(model="tiny", prompt="hi", max_tokens=2)
        assert e.value.status_code == 503
        long.close()
    finally:
        srv.stop()


def test_disconnect_frees_the_slot(tiny_path):
    srv = start(tiny_path, delay=0.01, parallel=1, queue_size=0)
    try:
        engine = srv.app.state.llamalab.engine
        body = {"prompt": "hi", "max_tokens": 10**6, "stream": True, "ignore_eos": True, "temperature": 0}
        with httpx.Client(base_url=srv.url, timeout=30) as h:
            with h.stream("POST", "/v1/completions", json=body) as r:
                lines = r.iter_lines()
                for _ in range(3):
                    next(lines)
            # the connection is closed: generation must stop and the slot come back
            deadline = time.monotonic() + 10
            while engine.busy and time.monotonic() < deadline:
                time.sleep(0.02)
            assert engine.busy == 0
            r = h.post("/v1/completions", json={"prompt": "hi", "max_tokens": 3})
            assert r.status_code == 200
    finally:
        srv.stop()


def test_nonstreaming_disconnect_cancels(tiny_path):
    srv = start(tiny_path, delay=0.01, parallel=1, queue_size=0)
    try:
        engine = srv.app.state.llamalab.engine
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(srv.url + "/v1/completions", timeout=0.3,
                       json={"prompt": "hi", "max_tokens": 10**6, "ignore_eos": True})
        deadline = time.monotonic() + 10
        while engine.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.busy == 0
    finally:
        srv.stop()


# ---- errors ------------------------------------------------------------------------------------------


def test_context_overflow_is_400(client, http):
    prompt = "the " * (N_CTX + 10)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt=prompt, max_tokens=4)
    err = e.value.body
    assert str(N_CTX) in err["message"] and str(err["n_prompt_tokens"]) in err["message"]
    assert err["n_ctx"] == N_CTX and err["n_prompt_tokens"] > N_CTX
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": prompt}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("body, param", [
    ({"prompt": "x", "temperature": -1}, "temperature"),
    ({"prompt": "x", "temperature": "hot"}, "temperature"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "top_k": -3}, "top_k"),
    ({"prompt": "x", "min_p": 1.5}, "min_p"),
    ({"prompt": "x", "repeat_penalty": 0}, "repeat_penalty"),
    ({"prompt": "x", "frequency_penalty": 3}, "frequency_penalty"),
    ({"prompt": "x", "presence_penalty": -2.5}, "presence_penalty"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "seed": -1}, "seed"),
    ({"prompt": "x", "n": 99}, "n"),
    ({"prompt": "x", "stop": 5}, "stop"),
    ({"prompt": "x", "stop": ["a"] * 50}, "stop"),
    ({"prompt": "x", "logprobs": 99}, "logprobs"),
    ({"prompt": [1, 2, 10**6]}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({}, "prompt"),
])
def test_bad_completion_values_are_400(http, body, param):
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param and param in err["message"]


@pytest.mark.parametrize("body, param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 50}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -1}, "max_completion_tokens"),
    ({"messages": "hello"}, "messages"),
])
def test_bad_chat_values_are_400(http, body, param):
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2", b"\xff\xfe", b"null"])
def test_malformed_json_is_400(http, raw):
    r = http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "error" in r.json()


def test_openai_client_sees_400_with_field(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=CHAT, temperature=9)
    assert e.value.body["param"] == "temperature"


def test_body_limit_413(tiny_path):
    srv = start(tiny_path, max_body=4096)
    try:
        big = {"prompt": "x" * 5000, "max_tokens": 1}
        r = httpx.post(srv.url + "/v1/completions", json=big)
        assert r.status_code == 413 and "4096" in r.json()["error"]["message"]

        def chunked():  # no Content-Length: the limit still holds
            yield json.dumps(big).encode()

        r = httpx.post(srv.url + "/v1/completions", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert httpx.post(srv.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 1}).status_code == 200
    finally:
        srv.stop()


def test_unknown_route_is_openai_error(http):
    r = http.get("/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()


# ---- API key, loading --------------------------------------------------------------------------------


def test_api_key(tiny_path):
    srv = start(tiny_path, api_key="s3cret")
    try:
        assert httpx.get(srv.url + "/health").status_code == 200
        assert httpx.get(srv.url + "/").status_code == 200  # the page holds no data; it asks for the key
        for path in ("/v1/models", "/slots"):
            assert httpx.get(srv.url + path).status_code == 401
        r = httpx.post(srv.url + "/v1/completions", json={"prompt": "hi"}, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert httpx.post(srv.url + "/tokenize", json={"content": "hi"}).status_code == 401
        bad = openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=srv.url + "/v1", api_key="s3cret", max_retries=0)
        assert good.completions.create(model="tiny", prompt="hi", max_tokens=2).usage.completion_tokens >= 1
    finally:
        srv.stop()


def test_health_503_while_loading(tiny_path):
    gate = threading.Event()

    def slow_loader():
        gate.wait(30)
        return LLM(tiny_path, backend=BACKEND, progress=False)

    srv = serve_in_thread(create_app(slow_loader), ready=False)
    try:
        r = httpx.get(srv.url + "/health")
        assert r.status_code == 503 and r.json()["error"]["code"] == 503
        assert httpx.post(srv.url + "/v1/completions", json={"prompt": "hi"}).status_code == 503
        gate.set()
        srv.wait_ready()
        assert httpx.get(srv.url + "/health").json() == {"status": "ok"}
    finally:
        srv.stop()


def test_load_failure_reported(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00")
    srv = serve_in_thread(create_app(lambda: LLM(bad, progress=False)), ready=False)
    try:
        with pytest.raises(RuntimeError, match="bad.gguf"):
            srv.wait_ready(30)
        r = httpx.get(srv.url + "/health")
        assert r.status_code == 500 and "bad.gguf" in r.json()["error"]["message"]
    finally:
        srv.stop()


def test_cli_serve(tiny_path):
    """`llamalab serve MODEL --port 0` binds loopback, loads, answers, and stops on SIGTERM."""
    cmd = [sys.executable, "-m", "llamalab.cli", "serve", str(tiny_path), "--port", "0", "--parallel", "2",
           "--backend", BACKEND, "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        m = re.search(r"http://(127\.0\.0\.1):(\d+)", line)
        assert m, line
        url = f"http://{m[1]}:{m[2]}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        r = httpx.post(url + "/v1/completions", json={"prompt": "hi", "max_tokens": 3})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
    finally:
        proc.terminate()  # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(20) in (0, -signal.SIGTERM)


def test_cli_serve_bad_model(tmp_path):
    r = subprocess.run([sys.executable, "-m", "llamalab.cli", "serve", str(tmp_path / "missing.gguf"), "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "missing.gguf" in r.stderr and "Traceback" not in r.stderr
