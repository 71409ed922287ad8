"""The chat page in a real headless Chromium (Debian's `chromium`, driven by Playwright):
send a message, watch the answer stream in, stop a generation, start a new chat.
A screenshot is kept in test-artifacts/."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from server_helpers import SlowModel
from gguf import GGMLQuantizationType

from llamalab import LLM
from llamalab.server import Settings, create_app, serve_in_thread
from llamalab.lab.synth import PRESETS, tiny_bpe_tokenizer, write_gguf

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if CHROMIUM is None:
    pytest.skip("chromium is not installed (run scripts/install-browser.sh)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (run scripts/install-browser.sh)")


def backend() -> str:
    from llamalab import kernels

    return "fast" if hasattr(kernels, "set_threads") else "reference"


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    cfg = dataclasses.replace(PRESETS["tiny"], context_length=512)
    return write_gguf(tmp_path_factory.mktemp("web") / "tiny.gguf", cfg, GGMLQuantizationType.Q8_0,
                      tokenizer=tiny_bpe_tokenizer(), seed=11)


@pytest.fixture(scope="module")
def solo(tiny_path):
    return LLM(tiny_path, backend=backend(), progress=False)


@pytest.fixture(scope="module")
def server(tiny_path):
    def load():
        llm = LLM(tiny_path, backend=backend(), progress=False)
        llm.model = SlowModel(llm.model, 0.01)  # ~100 tokens/s: visibly streaming, and stoppable
        return llm

    srv = serve_in_thread(create_app(load, Settings(parallel=2, model_id="tiny-test-model")))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(server):
    with playwright_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=FLAGS, headless=True,
                                                   viewport={"width": 1100, "height": 760})
        pg = ctx.new_page()
        pg.goto(server.url + "/")
        pg.wait_for_selector("#status.ok", timeout=30_000)
        yield pg
        ctx.close()


RECORD_LENGTHS = """() => {
  window.__lengths = [];
  new MutationObserver(() => {
    const b = document.querySelectorAll('.msg.assistant .bubble');
    if (b.length) window.__lengths.push(b[b.length - 1].textContent.length);
  }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
}"""


def set_controls(page, temperature: str, max_tokens: str) -> None:
    page.eval_on_selector("#temp", f"(e) => {{ e.value = '{temperature}'; e.dispatchEvent(new Event('input')); }}")
    page.fill("#max-tokens", max_tokens)


def test_chat_streams_an_answer(page, solo):
    assert "tiny-test-model" in page.inner_text("#model")
    set_controls(page, "0", "60")
    page.evaluate(RECORD_LENGTHS)
    question = "Once upon a time there was a dog"
    page.fill("#input", question)
    page.press("#input", "Enter")
    page.wait_for_selector(".msg.assistant .bubble.streaming", timeout=10_000)
    assert page.inner_text("#send") == "Stop"
    page.wait_for_function("document.querySelector('.msg.assistant .meta').textContent.length > 0", timeout=60_000)
    answer = page.inner_text(".msg.assistant .bubble")
    expected = "".join(c.text for c in solo.chat([{"role": "user", "content": question}], max_tokens=60, temperature=0))
    assert answer == (expected or "(empty reply)")
    lengths = page.evaluate("window.__lengths")
    assert len(set(lengths)) >= 5, f"the answer did not stream in: {lengths}"
    meta = page.inner_text(".msg.assistant .meta")
    assert "tok/s" in meta and "token" in meta
    assert page.inner_text(".msg.user .bubble") == question
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat-page.png"))
    assert (ARTIFACTS / "chat-page.png").stat().st_size > 10_000


def test_stop_and_new_chat(page, server):
    # greedy: this reply runs 88 tokens, so Stop always has something to stop (at 0.8 a sampled
    # end-of-text within the first tokens made the test fail now and then)
    set_controls(page, "0", "400")
    page.fill("#input", "Tell me a long story")
    page.press("#input", "Enter")
    page.wait_for_function("(document.querySelectorAll('.msg.assistant .bubble')[1]?.textContent.length || 0) > 5",
                           timeout=20_000)
    page.click("#send")  # the Send button is the Stop button while generating
    page.wait_for_function("document.querySelector('#send').textContent === 'Send'", timeout=10_000)
    assert "stopped" in page.inner_text(".msg.assistant:nth-of-type(4) .meta")
    engine = server.app.state.llamalab.engine
    deadline = time.monotonic() + 10
    while engine.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.busy == 0, "stopping in the page did not free the server's slot"
    page.click("#new-chat")
    assert page.locator(".msg").count() == 0
    assert page.is_visible("#empty")
