"""Both loaders advise huge pages on the file's mapping, so weights can map 2 MiB at a time, uncopied."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from llamalab.formats.gguf import load_gguf
from llamalab.formats.llama2c import load_llama2c
from llamalab.formats.pages import advise_huge_pages
from llamalab.lab.synth import PRESETS, write_gguf, write_llama2c

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")


def vm_flags(path) -> list[str]:
    """The VmFlags of this process's mapping of ``path`` (smaps: a header line, then its fields)."""
    current = None
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 6:
                current = fields[5]
            elif fields[0] == "VmFlags:" and current == str(path):
                return fields[1:]
    raise AssertionError(f"{path} is not mapped")


@pytest.mark.parametrize("kind", ["gguf", "llama2c"])
def test_the_weights_mapping_is_advised_huge_pages(tmp_path, kind):
    if kind == "gguf":
        path = write_gguf(tmp_path / "m.gguf", PRESETS["tiny"], T.F32)
        loaded = load_gguf(path)
    else:
        path = write_llama2c(tmp_path / "m.bin", PRESETS["tiny"])
        loaded = load_llama2c(path)
    weight = loaded.weights["blk.0.ffn_down.weight"].data
    assert not weight.flags.owndata and not weight.flags.writeable  # still a view of the read-only map
    assert "hg" in vm_flags(path.resolve())


def test_advice_starts_at_the_page_holding_the_first_byte():
    buf = np.zeros(3 * 4096 + 100, np.uint8)
    part = buf[10:5000]
    page_start = part.ctypes.data // 4096 * 4096
    assert advise_huge_pages(part) == part.ctypes.data + part.nbytes - page_start  # madvise takes whole pages
    assert advise_huge_pages(buf[:0]) == 0
