"""``convert_hf``: a Hugging Face checkpoint directory -> one GGUF file, as llama.cpp's convert_hf_to_gguf.py.

An architecture is data (``ARCHS``): the GGUF architecture name, which tokenizer kind it
prefers, and its fix-ups. For each one the hyper-parameter keys, the tensor names (from
gguf-py's ``TensorNameMap``, the table convert_hf_to_gguf.py itself uses) and the tensor
fix-ups are llama.cpp's:

- llama: Q and K rows permuted from HF's half-split RoPE layout to GGML's interleaved one;
- gemma3: RMSNorm weights stored as ``1 + w`` (HF's Gemma3RMSNorm multiplies by 1 + w),
  embedding rows beyond the real vocabulary dropped;
- qwen2 / qwen3 / phi3: tensors renamed only (phi3 keeps its fused qkv and gate_up).

1-D tensors, norms and biases are F32; matrices take ``outtype`` (f32, f16, bf16, or any
``quantize`` type: then llama.cpp's mix picks each tensor's type, in the same pass).
Tensors stream one at a time from the memory-mapped safetensors into a temporary file,
renamed into place at the end.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

from .. import quants
from ..errors import InvalidArgumentError, ModelFormatError, UnsupportedModelError
from ..quants.encode import encode
from .mixes import MixPlanner, ModelShape, parse_file_type
from .publish import staged
from .quantize import _progress
from .safetensors_io import Checkpoint
from .tokenizer import Vocab, bpe_vocab, spm_vocab


@dataclass(frozen=True)
class ArchSpec:
    gguf_arch: str
    model_arch: gguf.MODEL_ARCH
    tokenizer: str  # "spm-first" (tokenizer.model if present, else tokenizer.json) or "phi3"


ARCHS: dict[str, ArchSpec] = {
    "LlamaForCausalLM": ArchSpec("llama", gguf.MODEL_ARCH.LLAMA, "spm-first"),
    "MistralForCausalLM": ArchSpec("llama", gguf.MODEL_ARCH.LLAMA, "spm-first"),
    "Qwen2ForCausalLM": ArchSpec("qwen2", gguf.MODEL_ARCH.QWEN2, "spm-first"),
    "Qwen3ForCausalLM": ArchSpec("qwen3", gguf.MODEL_ARCH.QWEN3, "spm-first"),
    "Gemma3ForCausalLM": ArchSpec("gemma3", gguf.MODEL_ARCH.GEMMA3, "spm-first"),
    "Phi3ForCausalLM": ArchSpec("phi3", gguf.MODEL_ARCH.PHI3, "phi3"),
}
OUTTYPES = ("auto", "f32", "f16", "bf16")  # plus every quantize type name
_SKIP_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")


@dataclass
class ConvertResult:
    path: Path
    arch: str
    n_tensors: int
    tokenizer: str  # "gpt2/<pre>" or "llama"
    out_bytes: int
    seconds: float


def load_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not directory.is_dir():
        raise InvalidArgumentError(f"{directory}: not a directory (expected a Hugging Face model folder with config.json)")
    if not path.is_file():
        raise ModelFormatError(f"{directory}: no config.json (expected a Hugging Face model folder)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelFormatError(f"{path}: not valid JSON ({e})") from None
    if "text_config" in cfg:  # multimodal wrappers keep the language model's keys here
        cfg = {**cfg, **cfg["text_config"]}
    return cfg


def arch_of(cfg: dict) -> tuple[str, ArchSpec]:
    names = cfg.get("architectures") or []
    for n in names:
        if n in ARCHS:
            return n, ARCHS[n]
    raise UnsupportedModelError(f"architecture {names or 'missing'} is not supported by llamalab convert "
                                f"(supported: {', '.join(ARCHS)})")


def _find(cfg: dict, *keys, default=None):
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def _rope_params(cfg: dict) -> dict:
    """transformers 5's rope_parameters (or the older rope_scaling + rope_theta), as llama.cpp's TextModel reads it."""
    rp = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    if "full_attention" not in rp and "sliding_attention" not in rp:
        if (local := _find(cfg, "local_rope_theta", "rope_local_theta", "rope_local_base_freq")) is not None:
            rp["sliding_attention"] = {"rope_theta": local}  # transformers 4's Gemma 3 key
        if "rope_theta" not in rp and (theta := _find(cfg, "rope_theta", "rotary_emb_base")) is not None:
            rp["rope_theta"] = theta
        if "rope_type" not in rp and rp.get("type") is not None:
            rp["rope_type"] = rp["type"]
        if "partial_rotary_factor" not in rp and cfg.get("partial_rotary_factor") is not None:
            rp["partial_rotary_factor"] = cfg["partial_rotary_factor"]
        if "original_max_position_embeddings" not in rp and cfg.get("original_max_position_embeddings") is not None:
            rp["original_max_position_embeddings"] = cfg["original_max_position_embeddings"]
    return rp


def write_hparams(w: gguf.GGUFWriter, arch: str, cfg: dict, n_layers: int) -> None:
    """The {arch}.* keys llama.cpp's set_gguf_parameters writes for these architectures."""
    rp = _rope_params(cfg)
    full = rp.get("full_attention", rp)
    if arch == "phi3":
        n_embd, n_head = cfg["hidden_size"], cfg["num_attention_heads"]
        w.add_context_length(_find(cfg, "n_positions", "max_position_embeddings"))
        w.add_rope_scaling_orig_ctx_len(rp.get("original_max_position_embeddings", cfg.get("original_max_position_embeddings", 4096)))
        w.add_embedding_length(n_embd)
        w.add_feed_forward_length(cfg["intermediate_size"])
        w.add_block_count(n_layers)
        w.add_head_count(n_head)
        w.add_head_count_kv(_find(cfg, "num_key_value_heads", default=n_head))
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        w.add_rope_dimension_count(int(rp.get("partial_rotary_factor", 1.0) * n_embd) // n_head)
        w.add_rope_freq_base(full.get("rope_theta", 10000.0))
        w.add_sliding_window(cfg.get("sliding_window") or 0)
        if rp.get("long_factor"):
            raise UnsupportedModelError("phi3 with LongRoPE factors (128k models) is not supported by llamalab convert yet")
        return
    w.add_block_count(n_layers)
    if (n_ctx := _find(cfg, "max_position_embeddings", "n_ctx", "n_positions")) is not None:
        w.add_context_length(n_ctx)
    w.add_embedding_length(cfg["hidden_size"])
    if (n_ff := cfg.get("intermediate_size")) is not None:
        w.add_feed_forward_length(n_ff)
    w.add_head_count(cfg["num_attention_heads"])
    if (n_kv := cfg.get("num_key_value_heads")) is not None:
        w.add_head_count_kv(n_kv)
    rope_type = full.get("rope_type")
    if rope_type == "linear" and full.get("factor") is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(full["factor"])
    elif rope_type == "yarn" and full.get("factor") is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(full["factor"])
        w.add_rope_scaling_orig_ctx_len(full["original_max_position_embeddings"])
    if arch != "gemma3" and (theta := full.get("rope_theta")) is not None:
        w.add_rope_freq_base(theta)
    if (local := rp.get("sliding_attention", {}).get("rope_theta")) is not None:
        w.add_rope_freq_base_swa(local)
    if arch != "gemma3" and (eps := _find(cfg, "rms_norm_eps", "norm_eps")) is not None:
        w.add_layer_norm_rms_eps(eps)
    if arch != "gemma3" and (head_dim := cfg.get("head_dim")) is not None:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    if arch == "llama":
        w.add_vocab_size(cfg["vocab_size"])
        w.add_rope_dimension_count(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    if arch == "gemma3":  # Gemma3Model.set_gguf_parameters (its defaults where config.json is silent) overrides these
        for key in (gguf.Keys.LLM.CONTEXT_LENGTH, gguf.Keys.Attention.HEAD_COUNT, gguf.Keys.Attention.HEAD_COUNT_KV):
            w.kv_data[0].pop(key.format(arch=arch), None)
        w.add_context_length(cfg.get("max_position_embeddings", 131072))
        w.add_head_count(cfg.get("num_attention_heads", 8))
        w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
        w.add_key_length(cfg.get("head_dim", 256))
        w.add_value_length(cfg.get("head_dim", 256))
        w.add_rope_freq_base(full.get("rope_theta", 1_000_000.0))
        if cfg.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(cfg["final_logit_softcapping"])
        if cfg.get("sliding_window_pattern") != 1:
            w.add_sliding_window(cfg["sliding_window"])
        w.add_head_count_kv(cfg.get("num_key_value_heads", 4))


def load_vocab(directory: Path, cfg: dict, spec: ArchSpec, pre: str | None) -> Vocab:
    n_vocab = cfg.get("vocab_size")
    has_spm = (directory / "tokenizer.model").is_file()
    has_json = (directory / "tokenizer.json").is_file()
    tcfg = {}
    if (directory / "tokenizer_config.json").is_file():
        tcfg = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    if spec.tokenizer == "phi3" and tcfg.get("tokenizer_class") == "GPT2Tokenizer":
        has_spm = False
    if has_spm:
        v = spm_vocab(directory, n_vocab, phi3=spec.tokenizer == "phi3")
        if spec.gguf_arch == "gemma3":
            v.add_space_prefix = False
    elif has_json and spec.tokenizer != "phi3":
        v = bpe_vocab(directory, n_vocab, pre)
    else:
        raise ModelFormatError(f"{directory}: no tokenizer.model or tokenizer.json")
    if spec.gguf_arch == "llama" and tcfg.get("add_prefix_space") is not None:
        v.add_space_prefix = tcfg["add_prefix_space"]
    return v


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's RoPE halves -> GGML's interleaved pairs, per head: (rows, ...) rows = n_head * head_dim."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(ckpt: Checkpoint, cfg: dict, spec: ArchSpec, n_vocab_real: int):
    """(gguf name, float array) in checkpoint order, with the architecture's fix-ups."""
    n_layers = cfg["num_hidden_layers"]
    tmap = gguf.get_tensor_name_map(spec.model_arch, n_layers)
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    for hf_name in ckpt.tensors:
        if hf_name.endswith(_SKIP_SUFFIXES):
            continue
        name = hf_name.replace("language_model.", "")
        new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise UnsupportedModelError(f"tensor {hf_name!r} has no GGUF name for {spec.gguf_arch} (llamalab convert "
                                        "handles the text model only)")
        yield new, hf_name, name


def convert_hf(directory: str | os.PathLike, out: str | os.PathLike, outtype: str = "auto", *, pre: str | None = None,
               progress: bool = True) -> ConvertResult:
    """Write ``out``: the checkpoint in ``directory`` as a GGUF for llama.cpp and llamalab."""
    directory, out = Path(directory), Path(out)
    cfg = load_config(directory)
    hf_arch, spec = arch_of(cfg)
    ckpt = Checkpoint(directory)
    vocab = load_vocab(directory, cfg, spec, pre)
    n_layers = cfg["num_hidden_layers"]

    first = next(iter(ckpt.tensors.values()))
    kind = outtype.lower()
    if kind == "auto":
        kind = "bf16" if first.dtype == "BF16" else "f16"
    if kind in ("f32", "f16", "bf16"):
        mix_name = kind.upper()
    else:
        mix_name = parse_file_type(kind)[0]
    _, ftype, _ = parse_file_type(mix_name)

    names = [(new, hf, n) for new, hf, n in _tensors(ckpt, cfg, spec, len(vocab.tokens))]
    planner = MixPlanner(mix_name, ModelShape(arch=spec.gguf_arch, n_layers=n_layers, n_heads=cfg["num_attention_heads"],
                                              n_kv_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"])),
                         [new for new, _, _ in names])

    start = time.perf_counter()
    with staged(out) as tmp:
        w = gguf.GGUFWriter(tmp, arch=spec.gguf_arch)
        w.add_type(gguf.GGUFType.MODEL)
        w.add_name(directory.name)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        write_hparams(w, spec.gguf_arch, cfg, n_layers)
        w.add_file_type(int(ftype))
        vocab.add_to(w, directory)

        plan = []
        for new, hf_name, _ in names:
            ref = ckpt.tensors[hf_name]
            shape = ref.shape
            if spec.gguf_arch == "gemma3" and "embed_tokens.weight" in hf_name:
                shape = (min(shape[0], len(vocab.tokens)), *shape[1:])
            if len(shape) <= 1 or new.endswith("_norm.weight") or not new.endswith(".weight"):
                qtype = T.F32
            else:
                qtype = planner.choose(new, shape, T.F32)
            fmt = quants.format_of(qtype)
            row_bytes = shape[-1] // fmt.block_size * fmt.type_size
            rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            w.add_tensor_info(new, (*shape[:-1], row_bytes), np.dtype(np.uint8), rows * row_bytes, raw_dtype=qtype)
            plan.append((new, hf_name, shape, qtype))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        total = sum(int(np.prod(s)) for _, _, s, _ in plan)
        n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
        with _progress(progress, total, f"convert {directory.name} -> {mix_name}") as advance:
            for new, hf_name, shape, qtype in plan:
                x = ckpt.get(hf_name)
                if spec.gguf_arch == "llama":
                    if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                        x = _permute(x, n_head)
                    elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                        x = _permute(x, n_kv)
                if spec.gguf_arch == "gemma3":
                    if "embed_tokens.weight" in hf_name:
                        x = x[: shape[0]]
                    if hf_name.endswith("norm.weight"):
                        x = x.astype(np.float32) + np.float32(1.0)
                w.write_tensor_data(_encode_rows(x, qtype).reshape(-1))
                advance(int(np.prod(shape)))
        w.close()
    tok = f"gpt2/{vocab.pre}" if vocab.model == "gpt2" else "llama (SentencePiece)"
    return ConvertResult(path=out, arch=spec.gguf_arch, n_tensors=len(plan), tokenizer=tok,
                         out_bytes=out.stat().st_size, seconds=time.perf_counter() - start)


def _encode_rows(x: np.ndarray, qtype: T, slice_values: int = 1 << 22) -> np.ndarray:
    """float array (..., cols) -> uint8 (rows, row_bytes) in qtype, in slices of rows (bounded temporaries)."""
    x2 = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)
    if qtype == T.F16 and x2.dtype == np.float16:
        return np.ascontiguousarray(x2).view(np.uint8)
    fmt = quants.format_of(qtype)
    out = np.empty((x2.shape[0], x2.shape[1] // fmt.block_size * fmt.type_size), np.uint8)
    step = max(1, slice_values // x2.shape[1])
    for r in range(0, x2.shape[0], step):
        out[r : r + step] = encode(np.asarray(x2[r : r + step], dtype=np.float32), qtype)
    return out
