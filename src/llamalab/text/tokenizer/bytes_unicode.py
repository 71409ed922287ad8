"""GPT-2's reversible map between the 256 byte values and printable unicode characters.

Byte-level BPE vocabularies store every token as a string of these stand-in characters
(a space is stored as 'Ġ', a newline as 'Ċ'), so that no token holds whitespace or
control characters. Printable Latin-1 bytes map to themselves; the other 68 bytes map
to U+0100 and up, in byte order.
"""

from __future__ import annotations


def _build_byte_to_unicode() -> dict[int, str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    n_moved = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n_moved)
            n_moved += 1
    return table


BYTE_TO_UNICODE: dict[int, str] = _build_byte_to_unicode()
UNICODE_TO_BYTE: dict[str, int] = {c: b for b, c in BYTE_TO_UNICODE.items()}


def bytes_to_unicode_str(data: bytes) -> str:
    """Map raw bytes to the stand-in string a byte-level BPE vocabulary uses."""
    return data.decode("latin-1").translate(BYTE_TO_UNICODE)  # latin-1: char ordinal == byte value


def unicode_str_to_bytes(text: str) -> bytes:
    """Inverse of bytes_to_unicode_str; a character outside the map stands for its own UTF-8 bytes."""
    out = bytearray()
    for ch in text:
        b = UNICODE_TO_BYTE.get(ch)
        if b is None:
            out += ch.encode("utf-8", "surrogatepass")
        else:
            out.append(b)
    return bytes(out)
