"""Write a Llama-3.2-1B-shaped F16 GGUF with random weights, streamed (for timing `llamalab quantize`).

    python scripts/make_llama1b_f16.py /tmp/llama1b-f16.gguf     # 2.4 GB; no tokenizer (llama-quantize needs none)
"""
import numpy as np, sys
from gguf import GGUFWriter, GGMLQuantizationType as T
path=sys.argv[1]
V,D,L,F,H,KV=128256,2048,16,8192,32,8
hd=D//H
shapes={"token_embd.weight":(V,D)}
for i in range(L):
    b=f"blk.{i}."
    shapes|={b+"attn_norm.weight":(D,),b+"attn_q.weight":(D,D),b+"attn_k.weight":(KV*hd,D),b+"attn_v.weight":(KV*hd,D),
             b+"attn_output.weight":(D,D),b+"ffn_norm.weight":(D,),b+"ffn_gate.weight":(F,D),b+"ffn_up.weight":(F,D),b+"ffn_down.weight":(D,F)}
shapes["output_norm.weight"]=(D,)
w=GGUFWriter(path,arch="llama")
w.add_block_count(L); w.add_context_length(2048); w.add_embedding_length(D); w.add_feed_forward_length(F)
w.add_head_count(H); w.add_head_count_kv(KV); w.add_layer_norm_rms_eps(1e-5); w.add_file_type(1)
for n,s in shapes.items():
    dt=np.float32 if len(s)==1 else np.float16
    w.add_tensor_info(n,s,np.dtype(dt),int(np.prod(s))*np.dtype(dt).itemsize)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_ti_data_to_file()
rng=np.random.default_rng(0)
for n,s in shapes.items():
    if len(s)==1: w.write_tensor_data(np.ones(s,np.float32)); continue
    x=np.empty(s,np.float16)
    for r in range(0,s[0],4096):
        x[r:r+4096]=(rng.standard_normal((min(4096,s[0]-r),s[1]),dtype=np.float32)*(1/np.sqrt(s[1]))).astype(np.float16)
    w.write_tensor_data(x)
w.close()
