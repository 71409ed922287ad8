"""Gemma 3 (text): q/k RMSNorm, RMSNorm after attention and after the FFN, GeGLU (tanh GELU),
embeddings times sqrt(dim), NEOX RoPE; five sliding-window layers (window from the file,
RoPE base 10,000) for every global one (the file's rope.freq_base). GGUF norms already
include Gemma's "1 +" offset (the converter adds it), so they are plain RMSNorm gains.
The file carries no chat template: llama.cpp's built-in Gemma format is used.
"""

from .spec import ATTENTION, ATTN_NORM, EMBEDDINGS, FFN, FFN_NORM, POST_NORMS, QK_NORM, ArchSpec

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first = messages[0]['content'] + '\n\n' -%}{%- set messages = messages[1:] -%}"
    "{%- else -%}{%- set first = '' -%}{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- set role = 'model' if m['role'] == 'assistant' else m['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first if loop.first else '') + m['content'] | trim + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

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
