"""Phi-3 / Phi-3.5 / Phi-4-mini: Llama's layer with q, k, v fused in one ``attn_qkv`` and gate
and up fused in one ``ffn_up`` (gate first), both cut into row views at load; NEOX RoPE.
The 128k variants carry LongRoPE factors: short ones up to the trained context, long beyond.
"""

from .spec import ATTENTION, EMBEDDINGS, FFN, ATTN_NORM, FFN_NORM, ArchSpec, Split, Tensor

SPEC = ArchSpec(
    name="phi3",
    rope_neox=True,
    layer_tensors=ATTN_NORM + ATTENTION + FFN_NORM + FFN,
    global_tensors=EMBEDDINGS + (
        Tensor("rope_factors_short.weight", ("rope_pairs",), required=False),
        Tensor("rope_factors_long.weight", ("rope_pairs",), required=False),
    ),
    splits=(
        Split("attn_qkv.weight", (("attn_q.weight", "q_dim"), ("attn_k.weight", "kv_dim"), ("attn_v.weight", "kv_dim"))),
        Split("ffn_up.weight", (("ffn_gate.weight", "ffn_dim"), ("ffn_up.weight", "ffn_dim"))),
    ),
)
