"""Llama 1/2/3/3.1+ (and Mistral, SmolLM2, TinyLlama, which GGUF calls llama).

Adjacent-pair RoPE: llama.cpp's converter permutes Q/K rows so that GGUF's layout rotates
(x[2i], x[2i+1]). Llama 3.1+ files carry ``rope_freqs`` (the llama3 rope scaling, as divisors
of each pair's frequency). Biases on q/k/v are optional, as llama.cpp allows them.
"""

from .spec import ATTENTION, EMBEDDINGS, FFN, ATTN_NORM, FFN_NORM, QKV_BIAS, ROPE_FREQS, ArchSpec, optional

SPEC = ArchSpec(
    name="llama",
    rope_neox=False,
    layer_tensors=ATTN_NORM + ATTENTION + optional(QKV_BIAS) + FFN_NORM + FFN,
    global_tensors=EMBEDDINGS + (ROPE_FREQS,),
)
