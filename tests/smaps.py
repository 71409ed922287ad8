"""The VmFlags of one of this process's mappings, from Linux's /proc/self/smaps."""

from __future__ import annotations


def vm_flags(*, path=None, address: int | None = None) -> list[str]:
    """The VmFlags of the mapping of file ``path``, or of the mapping that holds ``address``.
    smaps lists each mapping as a header line (range, perms, offset, dev, inode[, path]) and then its fields."""
    found = False
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and ":" not in fields[0] and len(fields) >= 5:  # a mapping's header line
                if path is not None:
                    found = len(fields) >= 6 and fields[5] == str(path)
                else:
                    lo, hi = (int(v, 16) for v in fields[0].split("-"))
                    found = lo <= address < hi
            elif fields[0] == "VmFlags:" and found:
                return fields[1:]
    raise AssertionError(f"{path} is not mapped" if path is not None else f"no mapping holds {address:#x}")
