"""Gemma 3 (text): q/k RMSNorm, RMSNorm after attention and after the FFN, GeGLU (tanh GELU),
embeddings times sqrt(dim), NEOX RoPE; five sliding-window layers (window from the file,
RoPE base 10,000) for every global one (the file's rope.freq_base). GGUF norms already
include Gemma's "1 +" offset (the converter adds it), so they are plain RMSNorm gains.
The GGUF files carry no chat template: Gemma 3 instruct's own (gemma3.jinja) is used.
"""

from pathlib import Path

from .spec import ATTENTION, ATTN_NORM, EMBEDDINGS, FFN, FFN_NORM, POST_NORMS, QK_NORM, ArchSpec

# Gemma 3 instruct's own template (the GGUF files leave it out); llama.cpp would fall back to ChatML
CHAT_TEMPLATE = (Path(__file__).parent / "gemma3.jinja").read_text()

SPEC = ArchSpec(
    name="gemma3",
    rope_neox=True,
    layer_tensors=ATTN_NORM + ATTENTION + QK_NORM + (POST_NORMS[0],) + FFN_NORM + FFN + (POST_NORMS[1],),
    global_tensors=EMBEDDINGS,
    keys={
        "attention.sliding_window": "sliding_window",
        "attention.sliding_window_pattern": "swa_pattern",
        "rope.freq_base_swa": "rope_base_local",
        "final_logit_softcapping": "final_softcap",
    },
    defaults={"qk_norm": True, "post_norms": True, "activation": "gelu_tanh", "swa_pattern": 6,
              "rope_base_local": 10000.0},
    embed_scale_sqrt_dim=True,
    chat_template=CHAT_TEMPLATE,
)
