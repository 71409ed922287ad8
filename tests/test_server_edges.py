"""Rough edges of the HTTP server a new user hits: stalled bodies, curl's default content type,
content parts of the wrong type, a bad --log-level."""

from __future__ import annotations

import dataclasses
import socket
import time

import httpx
import pytest
from gguf import GGMLQuantizationType

from llamalab import LLM
from llamalab.cli import main
from llamalab.lab.synth import PRESETS, tiny_bpe_tokenizer, write_gguf
from llamalab.server import Settings, create_app, serve_in_thread


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cfg = dataclasses.replace(PRESETS["tiny"], context_length=64)
    path = write_gguf(tmp_path_factory.mktemp("edges") / "tiny.gguf", cfg, GGMLQuantizationType.F32,
                      tokenizer=tiny_bpe_tokenizer())
    srv = serve_in_thread(create_app(lambda: LLM(path, backend="reference", threads=1, progress=False),
                                     Settings(model_id="tiny"), read_timeout=0.5))
    yield srv
    srv.stop()


def raw_request(url: str, data: bytes, wait: float = 5.0) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)


def test_partial_body_times_out_with_408(server):
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{\"prompt\": ")
    t0 = time.monotonic()
    reply = raw_request(server.url, head)
    assert time.monotonic() - t0 < 4.0
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"request body not received within 0.5 s (11 bytes arrived)" in reply


def test_chunked_body_that_stalls_times_out(server):
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"pro\r\n")
    assert raw_request(server.url, head).startswith(b"HTTP/1.1 408")


def test_a_slow_but_complete_body_is_fine(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 1})
    assert r.status_code == 200


def test_curl_default_content_type_names_the_header(server):
    # what `curl -d '{...}' URL` sends
    r = httpx.post(server.url + "/v1/completions", content=b'{"prompt": "hi"}',
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert "Content-Type: application/json" in msg and "application/x-www-form-urlencoded" in msg


def test_no_content_type_is_read_as_json(server):
    r = httpx.post(server.url + "/v1/completions", content=b'{"prompt": "hi", "max_tokens": 1}')
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("text", [42, 1.5, None, ["a"], {"x": 1}])
def test_content_part_text_of_the_wrong_type_is_400(server, text):
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": text}]}], "max_tokens": 1}
    r = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert "text must be a string" in r.json()["error"]["message"]


def test_serve_rejects_a_bogus_log_level(capsys):
    code = main(["serve", "--log-level", "bogus", "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2 or code == 1
    assert err.strip().splitlines() == [err.strip()] and "--log-level must be one of" in err and "bogus" in err


def test_memory_bound_of_the_default_settings():
    """SmolLM2-135M (30 layers, kv_dim 192, 8,192 tokens), 4 slots, 512 MiB prompt store."""
    from llamalab.server.cli import RUNTIME_MIB, memory_bound

    cfg = dataclasses.replace(PRESETS["smollm2-135m"], context_length=8192)
    b = memory_bound(cfg, 98_000_000, 8192, 4, 512)
    kv = 2 * 30 * 192 * 8192 * 2 / 2**20  # 180 MiB per slot: the default f16 cache
    assert cfg.n_layers == 30 and cfg.kv_dim == 192
    assert b["KV cache (4 x 180)"] == pytest.approx(4 * kv)
    assert b["total"] == pytest.approx(98_000_000 / 2**20 + 4 * kv + 512 + RUNTIME_MIB)
    assert 1600 < b["total"] < 1650  # what the README states
    assert 2300 < memory_bound(cfg, 98_000_000, 8192, 4, 512, kv_itemsize=4)["total"] < 2400  # --kv-type f32
