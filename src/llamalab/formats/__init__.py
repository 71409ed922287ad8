"""File formats: the only code that knows GGUF keys or llama2.c headers.

``gguf`` (validated, memory-mapped GGUF) and ``llama2c`` (llama2.c checkpoints) each turn a
file into a ``LoadedModel``: a frozen config, zero-copy weights and a tokenizer spec.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelFormatError


def load(path: str | os.PathLike, tokenizer: str | os.PathLike | None = None, runnable: bool = True):
    """Pick the loader by the file's first bytes: GGUF, else a llama2.c checkpoint. With
    runnable=False a GGUF llamalab cannot run still opens, to be described (config None)."""
    path = Path(path)
    if path.is_dir():
        raise ModelFormatError(f"{path}: is a directory, expected a model file (.gguf or llama2.c .bin)")
    if not path.exists():
        raise ModelFormatError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF" or path.suffix == ".gguf":
        from .gguf import load_gguf

        return load_gguf(path, runnable)
    if path.suffix == ".bin":
        from .llama2c import load_llama2c

        return load_llama2c(path, tokenizer)
    raise ModelFormatError(f"{path}: not a model file (starts with {magic!r}; expected a GGUF file or a llama2.c .bin)")
