"""llama.cpp's quantization mixes: which ggml type each tensor of a model gets for a file type.

A "mix" (llama-quantize's ``Q4_K_M``, ``Q3_K_M``, ...) is a default type plus rules that
give some tensors more bits: the output projection (and a tied embedding) gets Q6_K, the
value projections and ``ffn_down`` get Q5_K/Q6_K in the first and last layers and every
third one between (``use_more_bits``), Q2_K's attention output gets Q3_K, and so on.
Rows whose length is not a multiple of the type's block fall back to a 32-value type
(Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0), and to F16 when even that
does not divide them. These are the rules of ``llama_tensor_get_type`` in llama.cpp's
``src/llama-quant.cpp`` for the non-IQ file types, checked against llama-quantize's choices
for tiny models in ``tests/data/quantize/mixes.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGMLQuantizationType as T
from gguf import LlamaFileType as F

from ..errors import InvalidArgumentError
from ..quants import block_size

# user-facing name -> (general.file_type, default tensor type); the K names without a size are llama-quantize's aliases
FILE_TYPES: dict[str, tuple[F, T]] = {
    "F32": (F.ALL_F32, T.F32), "F16": (F.MOSTLY_F16, T.F16), "BF16": (F.MOSTLY_BF16, T.BF16),
    "Q8_0": (F.MOSTLY_Q8_0, T.Q8_0), "Q4_0": (F.MOSTLY_Q4_0, T.Q4_0), "Q4_1": (F.MOSTLY_Q4_1, T.Q4_1),
    "Q5_0": (F.MOSTLY_Q5_0, T.Q5_0), "Q5_1": (F.MOSTLY_Q5_1, T.Q5_1),
    "Q2_K": (F.MOSTLY_Q2_K, T.Q2_K),
    "Q3_K_S": (F.MOSTLY_Q3_K_S, T.Q3_K), "Q3_K_M": (F.MOSTLY_Q3_K_M, T.Q3_K), "Q3_K_L": (F.MOSTLY_Q3_K_L, T.Q3_K),
    "Q4_K_S": (F.MOSTLY_Q4_K_S, T.Q4_K), "Q4_K_M": (F.MOSTLY_Q4_K_M, T.Q4_K),
    "Q5_K_S": (F.MOSTLY_Q5_K_S, T.Q5_K), "Q5_K_M": (F.MOSTLY_Q5_K_M, T.Q5_K),
    "Q6_K": (F.MOSTLY_Q6_K, T.Q6_K),
}  # fmt: skip
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}

_FALLBACK = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}
_FLOATS = (T.F32, T.F16, T.BF16)


def parse_file_type(name: str) -> tuple[str, F, T]:
    """'q4_k_m' / 'Q4_K' / ... -> (canonical name, file type, default tensor type)."""
    key = name.strip().upper()
    key = ALIASES.get(key, key)
    if key not in FILE_TYPES:
        known = ", ".join(list(FILE_TYPES) + list(ALIASES))
        raise InvalidArgumentError(f"unknown quantization type {name!r} (expected one of: {known})")
    return (key, *FILE_TYPES[key])


@dataclass(frozen=True)
class ModelShape:
    """The hyper-parameters the mix rules read."""

    arch: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    n_experts: int = 0

    @property
    def n_gqa(self) -> int:
        return self.n_heads // self.n_kv_heads if self.n_kv_heads else 0

    @property
    def is_70b(self) -> bool:  # llama.cpp's LLM_TYPE_70B: 80 llama layers with grouped KV heads
        return self.arch == "llama" and self.n_layers == 80 and self.n_heads != self.n_kv_heads


def category(name: str) -> str:
    """llama.cpp's tensor_get_category: a broad role from the GGUF name (first match wins)."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"), ("attn_v.weight", "attn_v"),
                      ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                      ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):  # fmt: skip
        if part in name:
            return cat
    return "other"


_NOT_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj",
                  "ssm_conv1d", "time_mix_", "attn_rel_b.weight", ".position_embd", "position_embd.weight",
                  "token_types.weight")  # fmt: skip


def allows_quantization(name: str, n_dims: int) -> bool:
    """llama.cpp's tensor_allows_quantization (the parts that concern text models)."""
    return n_dims >= 2 and name.endswith("weight") and not any(p in name for p in _NOT_QUANTIZED)


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def fallback(qtype: T, cols: int) -> T:
    """The type llama.cpp uses when rows of ``cols`` values are not whole blocks of ``qtype``."""
    if cols % block_size(qtype) == 0:
        return qtype
    new = _FALLBACK.get(qtype, qtype)
    return new if cols % block_size(new) == 0 else T.F16


class MixPlanner:
    """Walks a model's tensors in file order and picks each one's type, as llama-quantize does.

    The counters (how many value projections and ffn_down tensors came before) make the
    choice depend on order, so call ``choose`` once per tensor, in file order."""

    def __init__(self, file_type: str, model: ModelShape, tensor_names: list[str], pure: bool = False,
                 output_type: T | None = None, token_embedding_type: T | None = None):
        self.name, self.ftype, self.default = parse_file_type(file_type)
        self.model, self.pure = model, pure
        self.output_type, self.embd_type = output_type, token_embedding_type
        cats = [category(n) for n in tensor_names]
        self.n_attention_wv = sum(c in ("attn_v", "attn_qkv", "attn_kv_b") for c in cats)
        self.tied = "output" not in cats
        self.i_attention_wv = self.i_ffn_down = 0

    def choose(self, name: str, shape: tuple[int, ...], current: T) -> T:
        """shape: numpy order (..., rows, cols). Returns the ggml type this tensor is written in."""
        if not allows_quantization(name, len(shape)):
            return current
        cat = category(name)
        if self.embd_type is not None and cat == "token_embd":
            return self.embd_type
        if self.output_type is not None and cat == "output":
            return self.output_type
        new = self.default
        if new in _FLOATS:
            return new
        if not self.pure:
            new = self._mix_rule(new, cat, shape[-1])
        return fallback(new, shape[-1])

    def _mix_rule(self, new: T, cat: str, cols: int) -> T:  # llama_tensor_get_type_impl
        F_, m = self.ftype, self.model
        if cat == "output" or (self.tied and cat == "token_embd"):
            if m.arch == "falcon" or cols % block_size(new):
                return T.Q8_0
            return new if new == T.Q8_0 else T.Q6_K
        if cat == "token_embd":
            return new
        if cat in ("attn_v", "attn_qkv", "attn_kv_b"):
            i, n = self.i_attention_wv, self.n_attention_wv
            if F_ == F.MOSTLY_Q2_K:
                new = T.Q4_K if m.n_gqa >= 4 else T.Q3_K
            elif F_ == F.MOSTLY_Q3_K_M:
                new = T.Q5_K if i < 2 else T.Q4_K
            elif F_ == F.MOSTLY_Q3_K_L:
                new = T.Q5_K
            elif F_ in (F.MOSTLY_Q4_K_M, F.MOSTLY_Q5_K_M) and _use_more_bits(i, n):
                new = T.Q6_K
            elif F_ == F.MOSTLY_Q4_K_S and i < 4:
                new = T.Q5_K
            if m.is_70b and new in (T.Q3_K, T.Q4_K):
                new = T.Q5_K
            if m.n_experts == 8:
                new = T.Q8_0
            self.i_attention_wv += 1
        elif cat == "attn_k":
            if m.n_experts == 8:
                new = T.Q8_0
        elif cat == "ffn_down":
            i, n = self.i_ffn_down, m.n_layers
            falcon = m.arch == "falcon"
            if F_ == F.MOSTLY_Q2_K:
                new = T.Q3_K
            elif F_ == F.MOSTLY_Q3_K_M:
                new = T.Q5_K if i < n // 16 else T.Q4_K if (not falcon or _use_more_bits(i, n)) else T.Q3_K
            elif F_ == F.MOSTLY_Q3_K_L:
                new = T.Q4_K if falcon else T.Q5_K
            elif F_ == F.MOSTLY_Q4_K_M:
                if falcon:
                    new = T.Q6_K if i < n // 16 else T.Q5_K if _use_more_bits(i, n) else T.Q4_K
                elif _use_more_bits(i, n):
                    new = T.Q6_K
            elif F_ == F.MOSTLY_Q5_K_M and _use_more_bits(i, n):
                new = T.Q6_K
            elif F_ == F.MOSTLY_Q4_K_S and not falcon and i < n // 8:
                new = T.Q5_K
            self.i_ffn_down += 1
        elif cat == "attn_output":
            if m.arch != "falcon":
                if m.n_experts == 8:
                    if F_ in (F.MOSTLY_Q2_K, F.MOSTLY_Q3_K_S, F.MOSTLY_Q3_K_M, F.MOSTLY_Q4_K_S, F.MOSTLY_Q4_K_M):
                        new = T.Q5_K
                elif F_ == F.MOSTLY_Q2_K:
                    new = T.Q3_K
                elif F_ == F.MOSTLY_Q3_K_M:
                    new = T.Q4_K
                elif F_ == F.MOSTLY_Q3_K_L:
                    new = T.Q5_K
            elif F_ == F.MOSTLY_Q3_K_L:
                new = T.Q4_K
        elif cat == "attn_qkv":
            if F_ in (F.MOSTLY_Q3_K_M, F.MOSTLY_Q3_K_L):
                new = T.Q4_K
            elif F_ == F.MOSTLY_Q4_K_M:
                new = T.Q5_K
            elif F_ == F.MOSTLY_Q5_K_M:
                new = T.Q6_K
        return new
