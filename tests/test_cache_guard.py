"""The kernel cache guard drops compiled caches (kernels' and decode.py's) when a source changes."""

from llamalab.kernels import cache_guard


def _tree(tmp_path):
    pkg = tmp_path / "llamalab"
    kern = pkg / "kernels"
    (kern / "__pycache__").mkdir(parents=True)
    (pkg / "__pycache__").mkdir()
    (kern / "simd.py").write_text("A = 1\n")
    (pkg / "decode.py").write_text("B = 1\n")
    return pkg, kern


def _cached(pkg, kern):
    files = [kern / "__pycache__" / "simd.f-1.py311.nbi", pkg / "__pycache__" / "decode._step-9.py311.1.nbc"]
    for f in files:
        f.write_bytes(b"machine code")
    return files


def test_edit_of_a_kernel_or_of_decode_drops_both_caches(tmp_path, monkeypatch):
    pkg, kern = _tree(tmp_path)
    monkeypatch.setattr(cache_guard, "_HERE", kern)
    monkeypatch.setattr(cache_guard, "_USERS", [pkg / "decode.py"])
    cache_guard.drop_stale_cache()  # first run records the hash
    files = _cached(pkg, kern)
    cache_guard.drop_stale_cache()
    assert all(f.exists() for f in files), "unchanged sources must keep the cache"

    (kern / "simd.py").write_text("A = 2\n")
    cache_guard.drop_stale_cache()
    assert not any(f.exists() for f in files)

    files = _cached(pkg, kern)
    (pkg / "decode.py").write_text("B = 2\n")
    cache_guard.drop_stale_cache()
    assert not any(f.exists() for f in files)

