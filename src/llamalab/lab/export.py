"""Same weights in every runtime's format: what the ports, llama.cpp, mlx-lm and llama3.np read.

The study's models are synthesized (``synth.random_weights``: deterministic in the seed),
so each format is written from the same float32 arrays:

- ``llama2c``     llama2.c's legacy checkpoint (version 0, float32, with the old
                  ``freq_cis`` tables that early ports still read) — ``synth.write_llama2c``
- ``gguf``        any ggml type — ``synth.write_gguf``
- ``hf``          a Hugging-Face-style folder: ``config.json`` + ``model.safetensors`` +
                  ``tokenizer.json`` (mlx-lm, transformers). Q and K rows are permuted
                  back to Hugging Face's rotate-half order, as ``convert_hf_to_gguf`` undoes.
- ``npz``         llama3.np's ``stories15M.model.npz`` (HF names, llama2.c's row order)
                  with its JSON ``tokenizer.model.np``

The tokenizer every port gets is the **id vocabulary**: token ``i`` is the piece ``[i]``
(0-2 are ``<unk>``, ``<s>``, ``</s>``, as in Llama 2). Whatever a port prints when it
decodes, ``[(\\d+)]`` reads the token ids back, so the study compares ids, not text.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

ID_SPECIALS = ("<unk>", "<s>", "</s>")
BOS_ID, EOS_ID = 1, 2


def id_pieces(vocab_size: int) -> list[str]:
    """['<unk>', '<s>', '</s>', '[3]', '[4]', ...]: every token prints as its id."""
    return list(ID_SPECIALS) + [f"[{i}]" for i in range(len(ID_SPECIALS), vocab_size)]


def id_tokenizer_spec(vocab_size: int):
    """The id vocabulary as llamalab's TokenizerSpec (an SPM 'llama' vocabulary, for GGUF files)."""
    from ..text.tokenizer.spec import CONTROL, NORMAL, UNKNOWN, TokenizerSpec

    tokens = id_pieces(vocab_size)
    types = [UNKNOWN, CONTROL, CONTROL] + [NORMAL] * (vocab_size - 3)
    return TokenizerSpec(kind="llama", tokens=tokens, scores=np.zeros(vocab_size, np.float32),
                         token_types=np.asarray(types, np.int32), unk_id=0, bos_id=BOS_ID, eos_id=EOS_ID,
                         add_bos=True, add_space_prefix=False)


def _atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


# ---- tokenizers ---------------------------------------------------------------------------------------------


def write_llama2c_tokenizer(path, pieces: list[str], scores=None, legacy: bool = False) -> Path:
    """llama2.c's tokenizer.bin.

    current (run.c since Aug 2023):  int32 max_token_length, then per token: float32 score, int32 len, bytes
    legacy  (llama2.cpp's run.cpp):  per token: int32 len, bytes (no header, no scores)
    """
    scores = np.zeros(len(pieces), np.float32) if scores is None else np.asarray(scores, np.float32)
    raw = [p.encode("utf-8") for p in pieces]
    out = bytearray() if legacy else bytearray(struct.pack("<i", max(len(b) for b in raw)))
    for b, s in zip(raw, scores):
        out += (struct.pack("<i", len(b)) if legacy else struct.pack("<fi", float(s), len(b))) + b
    return _atomic(Path(path), bytes(out))


def write_npz_tokenizer(path, pieces: list[str], scores=None) -> Path:
    """llama3.np's tokenizer.model.np: JSON {"tokens": [...], "scores": [...]}."""
    scores = [0.0] * len(pieces) if scores is None else [float(s) for s in scores]
    return _atomic(Path(path), json.dumps({"tokens": pieces, "scores": scores}).encode())


def hf_tokenizer_json(pieces: list[str]) -> dict:
    """A tokenizers-library WordLevel tokenizer for the id vocabulary: '[1] [17]' <-> [1, 17]
    (split on whitespace; decoding joins the pieces, which the id regex reads back)."""
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, t in enumerate(ID_SPECIALS)],
        "normalizer": None, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": {t: i for i, t in enumerate(pieces)}, "unk_token": "<unk>"},
    }  # fmt: skip


# ---- weights -------------------------------------------------------------------------------------------------


def _weights(config, seed: int):
    from .synth import random_weights

    return random_weights(config, seed)


def hf_unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """GGUF / llama2.c (interleaved RoPE pairs) rows -> Hugging Face's rotate-half order.
    The inverse of convert_hf_to_gguf's permute: (n_head, 2, hd/2, cols) -> (n_head, hd/2, 2, cols)."""
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def write_safetensors(path, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> Path:
    """The safetensors layout (u64 header size, JSON header of dtype/shape/offsets, raw data), written
    directly so the core needs no extra package; the readers (mlx, transformers) ship the library."""
    names = {np.dtype("float32"): "F32", np.dtype("float16"): "F16"}
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        t = np.ascontiguousarray(t)
        b = t.astype(t.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
    return path


def write_hf_folder(folder, config, seed: int = 0, dtype: str = "f32") -> Path:
    """config.json + model.safetensors + tokenizer.json / tokenizer_config.json (id vocabulary)."""
    c = config
    w = _weights(c, seed)
    np_dtype = {"f32": np.float32, "f16": np.float16}[dtype]
    t = {"model.embed_tokens.weight": w["token_embd.weight"], "model.norm.weight": w["output_norm.weight"]}
    if "output.weight" in w:
        t["lm_head.weight"] = w["output.weight"]
    for i in range(c.n_layers):
        b, h = f"blk.{i}.", f"model.layers.{i}."
        t[h + "self_attn.q_proj.weight"] = hf_unpermute(w[b + "attn_q.weight"], c.n_heads)
        t[h + "self_attn.k_proj.weight"] = hf_unpermute(w[b + "attn_k.weight"], c.n_kv_heads)
        t[h + "self_attn.v_proj.weight"] = w[b + "attn_v.weight"]
        t[h + "self_attn.o_proj.weight"] = w[b + "attn_output.weight"]
        t[h + "mlp.gate_proj.weight"] = w[b + "ffn_gate.weight"]
        t[h + "mlp.up_proj.weight"] = w[b + "ffn_up.weight"]
        t[h + "mlp.down_proj.weight"] = w[b + "ffn_down.weight"]
        t[h + "input_layernorm.weight"] = w[b + "attn_norm.weight"]
        t[h + "post_attention_layernorm.weight"] = w[b + "ffn_norm.weight"]
    folder = Path(folder)
    write_safetensors(folder / "model.safetensors", {k: v.astype(np_dtype) for k, v in t.items()}, {"format": "pt"})
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c.dim,
        "intermediate_size": c.ffn_dim, "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads, "head_dim": c.head_dim, "vocab_size": c.vocab_size,
        "max_position_embeddings": c.context_length, "rms_norm_eps": float(c.norm_eps),
        "rope_theta": float(c.rope_base), "tie_word_embeddings": "output.weight" not in w, "hidden_act": "silu",
        "bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "torch_dtype": {"f32": "float32", "f16": "float16"}[dtype],
    }  # fmt: skip
    pieces = id_pieces(c.vocab_size)
    _atomic(folder / "tokenizer.json", json.dumps(hf_tokenizer_json(pieces)).encode())
    tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
               "unk_token": "<unk>", "model_max_length": c.context_length, "clean_up_tokenization_spaces": False}
    _atomic(folder / "tokenizer_config.json", json.dumps(tok_cfg).encode())
    _atomic(folder / "config.json", json.dumps(cfg, indent=1).encode())  # last: its presence marks the folder done
    return folder


def write_npz(path, config, seed: int = 0) -> Path:
    """llama3.np's weights: HF tensor names over llama2.c's arrays (llama3.np rotates interleaved pairs,
    as llama2.c does, so no Q/K permutation), float32, lm_head written out even when tied."""
    c = config
    w = _weights(c, seed)
    t = {"model.embed_tokens.weight": w["token_embd.weight"], "model.norm.weight": w["output_norm.weight"],
         "lm_head.weight": w.get("output.weight", w["token_embd.weight"])}
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    for i in range(c.n_layers):
        for g, h in names.items():
            t[f"model.layers.{i}.{h}.weight"] = w[f"blk.{i}.{g}.weight"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **t)
    os.replace(tmp, path)
    return path


# ---- the cache -----------------------------------------------------------------------------------------------

FORMATS = ("llama2c", "gguf", "hf", "npz", "tokenizer.bin", "tokenizer.bin-legacy", "tokenizer.model.np")


def export_dir(preset: str, ctx: int, seed: int) -> Path:
    from .models import synth_dir

    return synth_dir() / "export" / f"{preset}-ctx{ctx}-s{seed}"


def export(preset: str, fmt: str, *, ctx: int | None = None, seed: int = 0, dtype: str = "f32") -> Path:
    """The path of ``preset``'s weights (or id vocabulary) in ``fmt``, written once into the synth cache.

    ctx: the context length recorded in the file (llama2.cpp runs exactly that many steps).
    """
    from ..errors import InvalidArgumentError
    from .models import synth_config

    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    cfg = synth_config(preset, ctx=ctx)
    d = export_dir(preset, cfg.context_length, seed)
    pieces = id_pieces(cfg.vocab_size)
    if fmt == "tokenizer.bin":
        p = d / "tokenizer.bin"
        return p if p.is_file() else write_llama2c_tokenizer(p, pieces)
    if fmt == "tokenizer.bin-legacy":
        p = d / "legacy" / "tokenizer.bin"
        return p if p.is_file() else write_llama2c_tokenizer(p, pieces, legacy=True)
    if fmt == "tokenizer.model.np":
        p = d / "npz" / "tokenizer.model.np"
        return p if p.is_file() else write_npz_tokenizer(p, pieces)
    if fmt == "llama2c":
        from .models import synthesize

        return synthesize(preset, "f32", fmt="llama2c", ctx=cfg.context_length, seed=seed)
    if fmt == "gguf":
        from . import synth
        from .models import parse_dtype

        p = d / f"{preset}-{dtype.lower()}-ids.gguf"
        if not p.is_file():
            tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
            p.parent.mkdir(parents=True, exist_ok=True)
            try:
                synth.write_gguf(tmp, cfg, parse_dtype(dtype), tokenizer=id_tokenizer_spec(cfg.vocab_size), seed=seed,
                                 fallback=True)
                os.replace(tmp, p)
            finally:
                tmp.unlink(missing_ok=True)
        return p
    if fmt == "hf":
        p = d / f"hf-{dtype}"
        return p if (p / "config.json").is_file() else write_hf_folder(p, cfg, seed, dtype)
    p = d / "npz" / "stories15M.model.npz"  # the name llama3.np opens
    if not p.is_file():
        write_npz(p, cfg, seed)
        write_npz_tokenizer(p.parent / "tokenizer.model.np", pieces)
    return p
