"""Writing an output file so that it appears whole or not at all."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def staged(dst: Path) -> Iterator[Path]:
    """A temporary path beside dst to write into. When the block ends it becomes dst, with the
    mode a new file gets here (mkstemp makes it 0600, which would leave a model that other
    users, or a server's account, cannot read); when the block fails it is removed, so dst is
    never half-written."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
