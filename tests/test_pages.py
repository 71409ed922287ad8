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
from smaps import vm_flags

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")


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
    assert "hg" in vm_flags(path=path.resolve())


def test_advice_starts_at_the_page_holding_the_first_byte():
    buf = np.zeros(3 * 4096 + 100, np.uint8)
    part = buf[10:5000]
    page_start = part.ctypes.data // 4096 * 4096
    assert advise_huge_pages(part) == part.ctypes.data + part.nbytes - page_start  # madvise takes whole pages
    assert advise_huge_pages(buf[:0]) == 0


def test_rehouse_reads_a_just_written_file_back_in_2_mib_folios(tmp_path):
    from llamalab.formats.pages import HUGE, pmd_mapped_bytes, rehouse

    path = tmp_path / "weights.bin"
    data = np.random.default_rng(0).integers(0, 256, 8 * HUGE + 12345, dtype=np.uint8)
    with open(path, "wb", buffering=0) as f:  # written 4 KiB at a time, as a copy or a download does:
        for i in range(0, data.size, 4096):  # cached in 4 KiB folios (one large write would make large ones)
            f.write(data[i:i + 4096].tobytes())
    before, after = rehouse(path, min_bytes=0)
    if after == 0:
        pytest.skip("this kernel or file system does not map file pages 2 MiB at a time")
    assert before < after, "a file cached by its writes already mapped huge: nothing was tested"
    assert after >= 7 * HUGE  # of its 8 whole 2 MiB pages
    assert rehouse(path, min_bytes=0) == (after, after)  # nothing left to do: no second read
    assert np.array_equal(np.fromfile(path, np.uint8), data)
    assert pmd_mapped_bytes(path) == 0  # rehouse's own mappings are gone


def test_rehouse_leaves_small_files_alone(tmp_path):
    from llamalab.formats.pages import rehouse

    path = tmp_path / "small.bin"
    path.write_bytes(b"x" * 4096)
    assert rehouse(path) == (0, 0)
