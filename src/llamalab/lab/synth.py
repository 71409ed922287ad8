"""Synthetic models: random weights with real shapes, written as GGUF or as a llama2.c checkpoint.

Tests and benchmarks use them where a real model is unavailable or too large. Weights are
N(0, 1/cols) so that every matrix-vector product keeps unit-scale activations, and RMSNorm
gains are 1 plus a little noise. The same (config, seed, tied) gives the same float32
weights whichever format they are written in, so the two loaders can be checked against
each other.
"""

from __future__ import annotations

import functools
import os
import struct
from pathlib import Path
from typing import Callable

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType

from .. import quants
from ..runtime.config import ModelConfig
from ..errors import InvalidArgumentError
from ..text.tokenizer.bytes_unicode import BYTE_TO_UNICODE
from ..text.tokenizer.spec import BYTE, CONTROL, NORMAL, UNKNOWN, TokenizerSpec

TINY_VOCAB = 384  # both tiny tokenizers have exactly this many tokens


def _llama(name: str, **kw) -> ModelConfig:
    return ModelConfig(arch="llama", name=name, **kw)


def arch_config(arch: str, name: str, **kw) -> ModelConfig:
    """A config of `arch` with the switches its spec fixes (RoPE layout, norms, activation)."""
    from ..arch import spec_for

    spec = spec_for(arch)
    fields = {"rope_neox": spec.rope_neox, **spec.defaults, **kw}
    if spec.embed_scale_sqrt_dim:
        fields["embed_scale"] = float(fields["dim"]) ** 0.5
    return ModelConfig(arch=spec.name, name=name, **fields)


# Llama 3.1+'s rope scaling (written as the rope_freqs tensor): factor, low/high frequency factors,
# original context (the Llama 3.2 1B/3B values; the tiny one scales within a test's positions)
LLAMA3_ROPE = {"llama-3.2-1b": (32.0, 1.0, 4.0, 8192), "llama-3.2-3b": (32.0, 1.0, 4.0, 8192),
               "tiny-llama3": (8.0, 1.0, 4.0, 32)}  # fmt: skip


def llama3_rope_factors(config: ModelConfig, factor: float, low: float, high: float, orig: int) -> np.ndarray:
    """Per-pair frequency divisors (n_rot/2,) as llama.cpp's converter computes them."""
    freqs = 1.0 / config.rope_base ** (np.arange(0, config.n_rot, 2, dtype=np.float64) / config.n_rot)
    wavelen = 2 * np.pi / freqs
    smooth = (orig / wavelen - low) / (high - low)
    mid = 1 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < orig / high, 1.0, np.where(wavelen > orig / low, factor, mid)).astype(np.float32)


PRESETS: dict[str, ModelConfig] = {
    # llama2.c's TinyStories models (README "models" table; ffn from model.py: 2/3 * 4 * dim, rounded up
    # to 32; classifier shared with the embedding, as model.py ties them)
    "stories15M": _llama("stories15M", dim=288, n_layers=6, n_heads=6, n_kv_heads=6, ffn_dim=768,
                         vocab_size=32000, context_length=256, tied_output=True),
    "stories42M": _llama("stories42M", dim=512, n_layers=8, n_heads=8, n_kv_heads=8, ffn_dim=1376,
                         vocab_size=32000, context_length=1024, tied_output=True),
    "stories110M": _llama("stories110M", dim=768, n_layers=12, n_heads=12, n_kv_heads=12, ffn_dim=2048,
                          vocab_size=32000, context_length=1024, tied_output=True),
    # the default real model's shapes (SmolLM2-135M-Instruct)
    "smollm2-135m": _llama("smollm2-135m", dim=576, n_layers=30, n_heads=9, n_kv_heads=3, ffn_dim=1536,
                           vocab_size=49152, context_length=8192, rope_base=100000.0, tied_output=True),
    # for tests: rows of 64/128 suit the 32-value formats; "tiny256" suits every format (K-quants need 256)
    "tiny": _llama("tiny", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128,
                   vocab_size=TINY_VOCAB, context_length=128),
    "tiny256": _llama("tiny256", dim=256, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=512,
                      vocab_size=TINY_VOCAB, context_length=128),
    # the seeds' and the popular families' shapes (from each model's config.json)
    "llama-3.2-1b": _llama("llama-3.2-1b", dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192,
                           vocab_size=128256, context_length=131072, rope_base=500000.0, tied_output=True),
    "llama-3.2-3b": _llama("llama-3.2-3b", dim=3072, n_layers=28, n_heads=24, n_kv_heads=8, ffn_dim=8192,
                           vocab_size=128256, context_length=131072, rope_base=500000.0, tied_output=True),
    "llama-3-8b": _llama("llama-3-8b", dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336,
                         vocab_size=128256, context_length=8192, rope_base=500000.0),
    "qwen2.5-0.5b": arch_config("qwen2", "qwen2.5-0.5b", dim=896, n_layers=24, n_heads=14, n_kv_heads=2,
                                ffn_dim=4864, vocab_size=151936, context_length=32768, rope_base=1e6,
                                norm_eps=1e-6, tied_output=True, qkv_bias=True),
    "qwen3-0.6b": arch_config("qwen3", "qwen3-0.6b", dim=1024, n_layers=28, n_heads=16, n_kv_heads=8, head_size=128,
                              ffn_dim=3072, vocab_size=151936, context_length=40960, rope_base=1e6, norm_eps=1e-6,
                              tied_output=True),
    "gemma3-270m": arch_config("gemma3", "gemma3-270m", dim=640, n_layers=18, n_heads=4, n_kv_heads=1, head_size=256,
                               ffn_dim=2048, vocab_size=262144, context_length=32768, rope_base=1e6, norm_eps=1e-6,
                               sliding_window=512, tied_output=True),
    "phi-3-mini": arch_config("phi3", "phi-3-mini", dim=3072, n_layers=32, n_heads=32, n_kv_heads=32, ffn_dim=8192,
                              vocab_size=32064, context_length=4096),
    # tiny ones of each family, for tests (rows of 64 suit the 32-value formats)
    "tiny-llama3": _llama("tiny-llama3", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128,
                          vocab_size=TINY_VOCAB, context_length=2048, rope_base=500000.0),
    "tiny-qwen2": arch_config("qwen2", "tiny-qwen2", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128,
                              vocab_size=TINY_VOCAB, context_length=2048, rope_base=1e6, qkv_bias=True),
    "tiny-qwen3": arch_config("qwen3", "tiny-qwen3", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_size=32,
                              ffn_dim=128, vocab_size=TINY_VOCAB, context_length=2048, rope_base=1e6),
    "tiny-gemma3": arch_config("gemma3", "tiny-gemma3", dim=64, n_layers=4, n_heads=4, n_kv_heads=1, head_size=32,
                               ffn_dim=128, vocab_size=TINY_VOCAB, context_length=2048, rope_base=1e6,
                               norm_eps=1e-6, sliding_window=16, swa_pattern=2, tied_output=True),
    "tiny-phi3": arch_config("phi3", "tiny-phi",  # not "phi3": llama.cpp then wants Phi-3's special tokens
                             dim=64, n_layers=2, n_heads=4, n_kv_heads=4, ffn_dim=128,
                             vocab_size=TINY_VOCAB, context_length=2048),
}  # fmt: skip


# ---- tiny tokenizers ---------------------------------------------------------------------------------

# words whose prefixes become merged tokens, most frequent first (TinyStories flavour)
_WORDS = (
    "the and was to a she he they it Once upon time there little girl named Lily day big her his said "
    "with play happy dog cat sun tree ball went saw you for what very in on of is had mom fun Tim Ben "
    "friend jump park toy red blue help"
).split()
_SPM_SINGLES = "▁" + "abcdefghijklmnopqrstuvwxyz" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "0123456789" + ".,!?'\"-:;()"
_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _prefix_merges(space: str, n: int) -> list[tuple[str, str]]:
    """The first n merges (left, right) that build each word of _WORDS, space-prefixed, one character at a time."""
    merges, made = [], set()
    for word in _WORDS:
        text = space + word
        for end in range(2, len(text) + 1):
            piece = text[:end]
            if piece not in made:
                made.add(piece)
                merges.append((text[: end - 1], text[end - 1]))
    assert len(merges) >= n, f"_WORDS yields only {len(merges)} merges, {n} needed"
    return merges[:n]


def tiny_spm_tokenizer() -> TokenizerSpec:
    """A 384-token SentencePiece-style ('llama') vocabulary laid out like Llama 2's.

    ids 0-2: <unk>, <s>, </s>; 3-258: byte tokens <0x00>..<0xFF>; then merged pieces
    ("▁t", "▁th", "▁the", ...) scored by merge order; then single characters.
    """
    n_merges = TINY_VOCAB - 3 - 256 - len(_SPM_SINGLES)
    merged = [a + b for a, b in _prefix_merges("▁", n_merges)]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + merged + list(_SPM_SINGLES)
    scores = [0.0] * 259 + [-float(i) for i in range(len(merged))] + [-1000.0 - i for i in range(len(_SPM_SINGLES))]
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256 + [NORMAL] * (len(merged) + len(_SPM_SINGLES))
    return TokenizerSpec(
        kind="llama",
        tokens=tokens,
        scores=np.asarray(scores, dtype=np.float32),
        token_types=np.asarray(types, dtype=np.int32),
        unk_id=0,
        bos_id=1,
        eos_id=2,
        add_bos=True,
        add_space_prefix=True,
    )


def tiny_bpe_tokenizer() -> TokenizerSpec:
    """A 384-token byte-level BPE ('gpt2') vocabulary laid out like SmolLM2's, with a ChatML template.

    ids 0-2: <|endoftext|>, <|im_start|> (bos), <|im_end|> (eos); 3-258: the 256 byte
    tokens in byte order (GPT-2's printable stand-ins: 'Ġ' is a space); then one token per merge.
    """
    n_merges = TINY_VOCAB - 3 - 256
    merges = _prefix_merges(BYTE_TO_UNICODE[ord(" ")], n_merges)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + [BYTE_TO_UNICODE[b] for b in range(256)] + [a + b for a, b in merges]
    types = [CONTROL] * 3 + [NORMAL] * (len(tokens) - 3)
    return TokenizerSpec(
        kind="gpt2",
        tokens=tokens,
        token_types=np.asarray(types, dtype=np.int32),
        merges=[f"{a} {b}" for a, b in merges],
        pre="smollm",
        bos_id=1,
        eos_id=2,
        add_bos=False,
        add_space_prefix=False,
        chat_template=_CHATML,
    )


# ---- weights -----------------------------------------------------------------------------------------------


def _check_config(config: ModelConfig) -> None:
    ok = (
        min(config.dim, config.n_layers, config.n_heads, config.n_kv_heads, config.ffn_dim) > 0
        and config.vocab_size > 0 and config.context_length > 0
        and (config.head_size > 0 or config.dim % config.n_heads == 0) and config.n_heads % config.n_kv_heads == 0
        and config.head_dim % 2 == 0
    )  # fmt: skip
    if not ok:
        raise InvalidArgumentError(
            f"config: need positive sizes, dim divisible by n_heads (or a head_size), n_heads by n_kv_heads and "
            f"an even head size; got {config}"
        )


def _wanted(config: ModelConfig, t) -> bool:
    """Whether this config has the layer tensor t (an optional one: the q/k/v biases, when qkv_bias)."""
    return t.required or (t.name.endswith(".bias") and config.qkv_bias)


def weight_shapes(config: ModelConfig, tied: bool) -> dict[str, tuple[int, ...]]:
    """GGUF tensor name -> numpy shape (rows = output features), from the architecture's spec.
    rope_freqs (Llama 3.1+) is added by write_gguf, not drawn at random."""
    from ..arch import spec_for

    c, spec = config, spec_for(config.arch)
    dims = lambda shape: tuple(getattr(c, d) for d in shape)  # noqa: E731
    shapes = {"token_embd.weight": (c.vocab_size, c.dim)}
    for i in range(c.n_layers):
        shapes |= {f"blk.{i}.{t.name}": dims(t.shape) for t in spec.layer_tensors if _wanted(c, t)}
    shapes["output_norm.weight"] = (c.dim,)
    if not tied:
        shapes["output.weight"] = (c.vocab_size, c.dim)
    return shapes


def random_weights(config: ModelConfig, seed: int = 0, tied: bool | None = None) -> dict[str, np.ndarray]:
    """float32 weights by GGUF name: matrices N(0, 1/cols), norms 1 + N(0, 0.02^2). Deterministic in seed."""
    return {name: draw() for name, (_, draw) in weight_draws(config, seed, tied).items()}


_SKIP_VALUES = 1 << 24  # values drawn (and dropped) at a time while finding where each tensor's draws start


def weight_draws(config: ModelConfig, seed: int = 0, tied: bool | None = None) -> dict[str, tuple[tuple[int, ...], Callable]]:
    """GGUF name -> (shape, a function that draws that tensor of ``random_weights``), so that one tensor at a
    time is in memory (an 8B model's float32 weights are 32 GB). The tensors are drawn from one
    stream in name order; the stream's state where each one starts is found by drawing the stream
    once in bounded chunks (the same numbers: PCG64's state carries its half-used words)."""
    _check_config(config)
    tied = config.tied_output if tied is None else tied
    rng = np.random.default_rng(seed)
    draws = {}
    for name, shape in weight_shapes(config, tied).items():
        draws[name] = shape, functools.partial(_draw, name, shape, rng.bit_generator.state)
        left = int(np.prod(shape))
        while left:
            step = min(left, _SKIP_VALUES)
            rng.standard_normal(step, dtype=np.float32)
            left -= step
    return draws


def _draw(name: str, shape: tuple[int, ...], state: dict) -> np.ndarray:
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    x = rng.standard_normal(shape, dtype=np.float32)
    if name.endswith(".bias"):
        return np.float32(0.1) * x
    if len(shape) == 1:
        return np.float32(1) + np.float32(0.02) * x  # RMSNorm gain
    x *= np.float32(1 / np.sqrt(shape[1]))
    return x


# ---- GGUF ---------------------------------------------------------------------------------------------------

_FILE_TYPES = {  # general.file_type, informational (llama.cpp names the "all tensors alike" variant)
    GGMLQuantizationType.F32: LlamaFileType.ALL_F32, GGMLQuantizationType.F16: LlamaFileType.MOSTLY_F16,
    GGMLQuantizationType.BF16: LlamaFileType.MOSTLY_BF16, GGMLQuantizationType.Q8_0: LlamaFileType.MOSTLY_Q8_0,
    GGMLQuantizationType.Q4_0: LlamaFileType.MOSTLY_Q4_0, GGMLQuantizationType.Q4_1: LlamaFileType.MOSTLY_Q4_1,
    GGMLQuantizationType.Q5_0: LlamaFileType.MOSTLY_Q5_0, GGMLQuantizationType.Q5_1: LlamaFileType.MOSTLY_Q5_1,
    GGMLQuantizationType.Q2_K: LlamaFileType.MOSTLY_Q2_K, GGMLQuantizationType.Q3_K: LlamaFileType.MOSTLY_Q3_K_S,
    GGMLQuantizationType.Q4_K: LlamaFileType.MOSTLY_Q4_K_S, GGMLQuantizationType.Q5_K: LlamaFileType.MOSTLY_Q5_K_S,
    GGMLQuantizationType.Q6_K: LlamaFileType.MOSTLY_Q6_K,
}  # fmt: skip

_FALLBACK = {  # llama.cpp's llama_tensor_get_type, for rows that are not whole 256-value super-blocks
    GGMLQuantizationType.Q2_K: GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q3_K: GGMLQuantizationType.Q4_0,
    GGMLQuantizationType.Q4_K: GGMLQuantizationType.Q5_0, GGMLQuantizationType.Q5_K: GGMLQuantizationType.Q5_1,
    GGMLQuantizationType.Q6_K: GGMLQuantizationType.Q8_0,
}  # fmt: skip


def _add_model_keys(w: GGUFWriter, c: ModelConfig) -> None:
    """The `{arch}.` keys llama.cpp's converter writes for this config."""
    a = c.arch
    if c.head_size:
        w.add_key_length(c.head_size)
        w.add_value_length(c.head_size)
    if c.sliding_window:
        w.add_sliding_window(c.sliding_window)
        if c.swa_pattern != 6:
            w.add_uint32(f"{a}.attention.sliding_window_pattern", c.swa_pattern)
        if c.rope_base_local != 10000.0:
            w.add_float32(f"{a}.rope.freq_base_swa", c.rope_base_local)
    if c.final_softcap:
        w.add_final_logit_softcapping(c.final_softcap)
    if c.rope_scaling in ("linear", "yarn"):
        w.add_string(f"{a}.rope.scaling.type", c.rope_scaling)
        w.add_rope_scaling_factor(1.0 / c.rope_scale)
        if c.rope_orig_context:
            w.add_rope_scaling_orig_ctx_len(c.rope_orig_context)
    w.add_name(c.name or "synthetic")
    w.add_block_count(c.n_layers)
    w.add_context_length(c.context_length)
    w.add_embedding_length(c.dim)
    w.add_feed_forward_length(c.ffn_dim)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    w.add_rope_freq_base(float(c.rope_base))
    w.add_rope_dimension_count(c.n_rot)
    w.add_layer_norm_rms_eps(float(c.norm_eps))
    w.add_vocab_size(c.vocab_size)


def _add_tokenizer_keys(w: GGUFWriter, t: TokenizerSpec) -> None:
    w.add_tokenizer_model(t.kind)
    if t.pre is not None:
        w.add_tokenizer_pre(t.pre)
    w.add_token_list(list(t.tokens))
    if t.scores is not None:
        w.add_token_scores([float(s) for s in t.scores])
    if t.token_types is not None:
        w.add_token_types([int(v) for v in t.token_types])
    if t.merges:
        w.add_token_merges(list(t.merges))
    for key, value in (("bos", t.bos_id), ("eos", t.eos_id), ("eot", t.eot_id), ("unk", t.unk_id), ("pad", t.pad_id)):
        if value is not None:
            getattr(w, f"add_{key}_token_id")(value)
    w.add_add_bos_token(t.add_bos)
    w.add_add_eos_token(t.add_eos)
    w.add_add_space_prefix(t.add_space_prefix)
    if t.chat_template is not None:
        w.add_chat_template(t.chat_template)


def write_gguf(
    path: str | os.PathLike,
    config: ModelConfig,
    qtype: GGMLQuantizationType,
    tokenizer: TokenizerSpec | None = None,
    seed: int = 0,
    tied: bool | None = None,
    fallback: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write a GGUF of config.arch with random weights; returns the path.

    Every matrix (token_embd included) is stored in ``qtype``, the 1-D norms in F32.
    ``tied`` (default: config.tied_output) leaves out output.weight, as llama.cpp does
    for models whose output projection is the embedding. Without a tokenizer the file
    has no tokenizer.* keys (llamalab loads it; llama.cpp would not).

    A K-quant needs rows of a multiple of 256 values. With ``fallback=True`` a matrix
    whose rows are not (SmolLM2's 576) gets llama.cpp's fallback type instead (Q4_K ->
    Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; Q2_K, Q3_K -> Q4_0 where llama.cpp picks IQ4_NL);
    without it such a config is an InvalidArgumentError.

    Tensors are drawn, encoded and written one at a time (memory: the largest tensor), and
    ``progress(name)`` is called after each.
    """
    qtype = GGMLQuantizationType(qtype)
    fmt = quants.format_of(qtype)
    _check_config(config)
    if tokenizer is not None and len(tokenizer.tokens) != config.vocab_size:
        raise InvalidArgumentError(
            f"tokenizer has {len(tokenizer.tokens)} tokens but config.vocab_size is {config.vocab_size}"
        )
    for what, cols in (("dim", config.dim), ("ffn_dim", config.ffn_dim)):
        if cols % fmt.block_size and not (fallback and cols % quants.block_size(_FALLBACK.get(qtype, qtype)) == 0):
            raise InvalidArgumentError(f"{qtype.name} needs rows that are a multiple of {fmt.block_size}; {what} is {cols}")

    path = Path(path)
    tensors = _file_layout(config, weight_draws(config, seed, tied))
    writer = GGUFWriter(path, arch=config.arch)
    _add_model_keys(writer, config)
    writer.add_file_type(int(_FILE_TYPES[qtype]))
    writer.add_quantization_version(2)
    if tokenizer is not None:
        _add_tokenizer_keys(writer, tokenizer)
    stored = {name: _stored_type(shape, qtype, fmt) for name, (shape, _) in tensors.items()}
    for name, (shape, _) in tensors.items():
        t = stored[name]
        row = np.zeros((1, shape[-1]), np.float32) if t is not None else np.zeros(shape[-1:], np.float32)
        sample = row if t is None else quants.quantize(row, t)  # one row: the stored dtype and row bytes
        full = shape[:-1] + sample.shape[1:] if t is not None else shape
        writer.add_tensor_info(name, full, sample.dtype, int(np.prod(full)) * sample.dtype.itemsize, raw_dtype=t)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for name, (_, draw) in tensors.items():
            x = draw()
            writer.write_tensor_data(x if stored[name] is None else quants.quantize(x, stored[name]))
            if progress is not None:
                progress(name)
    finally:
        writer.close()
    return path


def _stored_type(shape: tuple[int, ...], qtype, fmt):
    """None for a 1-D tensor (float32), else the matrix's type: qtype, or its fallback where rows do not fit."""
    if len(shape) == 1:
        return None
    return qtype if shape[1] % fmt.block_size == 0 else _FALLBACK[qtype]


def _file_layout(config: ModelConfig, draws: dict[str, tuple[tuple[int, ...], Callable]]) -> dict[str, tuple[tuple[int, ...], Callable[[], np.ndarray]]]:
    """name -> (shape, draw) of the tensors as a real file of this architecture holds them, in
    file order: Llama 3.1+'s rope_freqs added, Phi-3's q/k/v and gate/up fused (the loader cuts
    them apart again)."""
    from ..arch import spec_for

    out = dict(draws)
    if config.name in LLAMA3_ROPE:
        factors = llama3_rope_factors(config, *LLAMA3_ROPE[config.name])
        out = {"rope_freqs.weight": (factors.shape, lambda: factors), **out}
    for split in spec_for(config.arch).splits:
        for i in range(config.n_layers):
            p = f"blk.{i}."
            parts = [out.pop(p + name) for name, _ in split.parts]
            shape = (sum(s[0] for s, _ in parts),) + parts[0][0][1:]
            out[p + split.source] = (shape, functools.partial(_concat, [d for _, d in parts]))
    return out


def file_tensor_count(config: ModelConfig, tied: bool | None = None) -> int:
    """How many tensors write_gguf writes for this config (its progress steps)."""
    from ..arch import spec_for

    n = len(weight_shapes(config, config.tied_output if tied is None else tied)) + (config.name in LLAMA3_ROPE)
    return n - sum(len(split.parts) - 1 for split in spec_for(config.arch).splits) * config.n_layers


def _concat(draws: list) -> np.ndarray:
    return np.concatenate([d() for d in draws])


# ---- llama2.c ------------------------------------------------------------------------------------------------

# llama2.c's legacy checkpoint (export version 0), as run.c reads it:
#   int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
#   (vocab_size negative: the classifier wcls is stored at the end, not shared with the embedding)
# then these float32 arrays, in this order, each row-major with rows = output features
# (run.c's matmul is W (d,n) @ x (n,)), with the GGUF names llama2c_loader maps them to:
LLAMA2C_ORDER = (
    "token_embedding_table",  # (vocab, dim)                    -> token_embd.weight
    "rms_att_weight",  # (n_layers, dim)                         -> blk.N.attn_norm.weight
    "wq",  # (n_layers, dim, dim)                                -> blk.N.attn_q.weight
    "wk",  # (n_layers, kv_dim, dim)                             -> blk.N.attn_k.weight
    "wv",  # (n_layers, kv_dim, dim)                             -> blk.N.attn_v.weight
    "wo",  # (n_layers, dim, dim)                                -> blk.N.attn_output.weight
    "rms_ffn_weight",  # (n_layers, dim)                         -> blk.N.ffn_norm.weight
    "w1",  # (n_layers, hidden, dim)                             -> blk.N.ffn_gate.weight
    "w2",  # (n_layers, dim, hidden)                             -> blk.N.ffn_down.weight
    "w3",  # (n_layers, hidden, dim)                             -> blk.N.ffn_up.weight
    "rms_final_weight",  # (dim,)                                -> output_norm.weight
    "freq_cis_real",  # (seq_len, head_size / 2) cos, unused by run.c since GQA support
    "freq_cis_imag",  # (seq_len, head_size / 2) sin
    "wcls",  # (vocab, dim), only when vocab_size < 0            -> output.weight
)
LLAMA2C_LAYER_NAMES = {
    "rms_att_weight": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output",
    "rms_ffn_weight": "ffn_norm", "w1": "ffn_gate", "w2": "ffn_down", "w3": "ffn_up",
}  # fmt: skip


def _rope_tables(config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """The cos/sin tables the old export wrote: (seq_len, head_size / 2) each."""
    hs = config.head_dim
    freqs = 1.0 / (10000.0 ** (np.arange(0, hs, 2, dtype=np.float64) / hs))  # (hs/2,)
    angles = np.outer(np.arange(config.context_length, dtype=np.float64), freqs)  # (seq_len, hs/2)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def write_llama2c_tokenizer(path: str | os.PathLike, spec: TokenizerSpec) -> Path:
    """llama2.c's tokenizer.bin for a SentencePiece spec (what formats.llama2c reads back): int32
    max_token_length, then per token float32 score, int32 length, bytes; '▁' as ' ', <s>/</s> as
    '\n<s>\n'/'\n</s>\n', as llama2.c's tokenizer.py exports them."""
    special = {spec.bos_id: "\n<s>\n", spec.eos_id: "\n</s>\n"}
    pieces = [special.get(i, t.replace("\u2581", " ")).encode() for i, t in enumerate(spec.tokens)]
    scores = spec.scores if spec.scores is not None else np.zeros(len(pieces), np.float32)
    body = b"".join(struct.pack("<fi", float(s), len(b)) + b for s, b in zip(scores, pieces))
    path = Path(path)
    path.write_bytes(struct.pack("<i", max(map(len, pieces))) + body)
    return path


def write_llama2c(
    path: str | os.PathLike, config: ModelConfig, dtype: str = "f32", shared_classifier: bool = True, seed: int = 0
) -> Path:
    """Write a legacy llama2.c checkpoint (version 0, float32) with random_weights(config, seed, tied=shared_classifier)."""
    if dtype != "f32":
        raise InvalidArgumentError(f"write_llama2c: dtype {dtype!r} is not supported; the version-0 format is 'f32'")
    _check_config(config)
    c = config
    w = random_weights(c, seed, tied=shared_classifier)
    layers = lambda short: np.stack([w[f"blk.{i}.{short}.weight"] for i in range(c.n_layers)])  # noqa: E731
    cos, sin = _rope_tables(c)
    arrays = {
        "token_embedding_table": w["token_embd.weight"],
        **{name: layers(short) for name, short in LLAMA2C_LAYER_NAMES.items()},
        "rms_final_weight": w["output_norm.weight"],
        "freq_cis_real": cos,
        "freq_cis_imag": sin,
    }
    if not shared_classifier:
        arrays["wcls"] = w["output.weight"]
    vocab = c.vocab_size if shared_classifier else -c.vocab_size
    path = Path(path)
    with open(path, "wb") as f:
        f.write(struct.pack("<7i", c.dim, c.ffn_dim, c.n_layers, c.n_heads, c.n_kv_heads, vocab, c.context_length))
        for name in LLAMA2C_ORDER:
            if name in arrays:
                f.write(np.ascontiguousarray(arrays[name], dtype="<f4").tobytes())
    return path
