"""The model a benchmark script names: a path, a known name or synth:PRESET:DTYPE, or the default model."""

from __future__ import annotations

import sys


def load_or_exit(spec: str | None, script: str):
    """(path, LoadedModel) for spec (None: the default model), or exit with one line naming what was wrong."""
    from llamalab.errors import LlamalabError
    from llamalab.lab.models import resolve

    try:
        info, loaded = resolve(spec)
    except LlamalabError as e:
        sys.exit(f"{script}: error: {e}")
    return info.path, loaded
