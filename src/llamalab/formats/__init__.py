"""File formats: the only code that knows GGUF keys or llama2.c headers.

``gguf`` (validated, memory-mapped GGUF) and ``llama2c`` (llama2.c checkpoints) each turn a
file into a ``LoadedModel``: a frozen config, zero-copy weights and a tokenizer spec.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..errors import ModelFormatError

_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def not_a_model_file(path: str | os.PathLike, expected: str = "a regular model file (.gguf or llama2.c .bin)",
                     allow_fifo: bool = False) -> str | None:
    """Why `path` cannot be a model file before opening it (missing, a folder, a FIFO, a device,
    a symbolic link loop), as the end of a sentence; None for a regular file (or, with
    `allow_fifo`, a pipe such as bash's <(...))."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop (too many levels of symbolic links)"
        if e.errno == errno.ENOENT:
            return "no such file" if not os.path.islink(path) else "is a symbolic link to a file that does not exist"
        return f"cannot be read ({e.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return f"is a directory, expected {expected.replace('a regular ', 'a ')}"
    if allow_fifo and stat.S_ISFIFO(st.st_mode):
        return None
    kind = next((name for test, name in _KINDS if test(st.st_mode)), None)
    return f"is {kind}, expected {expected}" if kind else None


def read_magic(path: Path) -> bytes:
    """The first 4 bytes, or ModelFormatError saying why the file cannot be read (permissions,
    /proc/self/mem and other files that refuse reads)."""
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError as e:
        raise ModelFormatError(f"{path}: cannot read it ({e.strerror or type(e).__name__})") from None


def load(path: str | os.PathLike, tokenizer: str | os.PathLike | None = None, runnable: bool = True):
    """Pick the loader by the file's first bytes: GGUF, else a llama2.c checkpoint. With
    runnable=False a GGUF llamalab cannot run still opens, to be described (config None)."""
    path = Path(path)
    why = not_a_model_file(path)
    if why:
        raise ModelFormatError(f"{path}: {why}")
    magic = read_magic(path)
    if magic == b"GGUF" or path.suffix == ".gguf":
        from .gguf import load_gguf

        return load_gguf(path, runnable)
    if path.suffix == ".bin":
        from .llama2c import load_llama2c

        return load_llama2c(path, tokenizer)
    raise ModelFormatError(f"{path}: not a model file (starts with {magic!r}; expected a GGUF file or a llama2.c .bin)")
