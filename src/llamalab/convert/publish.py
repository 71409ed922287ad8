"""Moving a finished output file into place."""

from __future__ import annotations

import os
from pathlib import Path


def publish(tmp: Path, dst: Path) -> None:
    """Rename the finished temporary file onto dst with the mode a new file gets here: mkstemp
    makes it 0600, which would leave a model that other users (or a server's account) cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dst)
