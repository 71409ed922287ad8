"""Drop stale Numba cache files of the kernels package.

Numba keys a cached function on its own source file only, but these kernels are
assembled from several files (the IR in ``simd.py``, the format decoders, the
dispatch chain), and the decode step (``decode.py``) compiles them into its own
cached machine code. A change in one of them must not leave an old compiled kernel
in use, so on import we hash every ``*.py`` here plus ``decode.py`` and, when the
hash differs from the one recorded next to the cache, delete the cache files of this
package and of those modules and record the new hash.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_USERS = [_HERE.parent / "runtime" / "decode.py"]  # modules whose cached functions call the kernels
_STAMP = "llamalab-kernels.stamp"


def sources_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(_HERE.glob("*.py")) + _USERS:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def drop_stale_cache() -> None:
    """Delete ``__pycache__/*.nbi|*.nbc`` of this package if the sources changed."""
    cache = _HERE / "__pycache__"
    stamp = cache / _STAMP
    digest = sources_hash()
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    try:
        for folder in (cache, *(u.parent / "__pycache__" for u in _USERS)):
            for pattern in ("*.nbi", "*.nbc"):
                for f in folder.glob(pattern):
                    f.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:
        pass  # read-only install: Numba then caches elsewhere (or not at all)
