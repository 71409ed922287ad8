"""The `llamalab quantize` and `llamalab convert` commands (registered by cli.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

import typer

from ..errors import LlamalabError


def quantize(
    src: Path = typer.Argument(..., help="Input .gguf (F32/F16/BF16, or quantized: it is dequantized first)."),
    dst: Path = typer.Argument(..., help="Output .gguf."),
    qtype: str = typer.Argument(..., metavar="TYPE", help="F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K_S Q3_K_M "
                                "Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K (Q3_K/Q4_K/Q5_K = the _M mixes, as llama-quantize)."),
    pure: bool = typer.Option(False, "--pure", help="Every tensor in TYPE: no mix, only the fallbacks for odd row sizes."),
    output_tensor_type: Optional[str] = typer.Option(None, "--output-tensor-type", help="Type for output.weight."),
    token_embedding_type: Optional[str] = typer.Option(None, "--token-embedding-type", help="Type for token_embd.weight."),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", min=1, help="Encoder threads (default: all cores)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
):
    """Quantize a GGUF file to TYPE, block for block as llama.cpp's llama-quantize does."""
    from .quantize import quantize_file

    if src.resolve() == dst.resolve():
        raise LlamalabError(f"{dst}: output would overwrite the input; choose another path")
    res = quantize_file(src, dst, qtype, pure=pure, output_type=output_tensor_type,
                        token_embedding_type=token_embedding_type, threads=threads, progress=not no_progress)
    counts = ", ".join(f"{t} {n}" for t, n in Counter(res.types.values()).most_common())
    print(f"wrote {res.path}: {res.file_type}, {len(res.types)} tensors ({counts}), "
          f"{res.in_bytes / 2**20:.1f} MiB -> {res.out_bytes / 2**20:.1f} MiB in {res.seconds:.1f} s")
