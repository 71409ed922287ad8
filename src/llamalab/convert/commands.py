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


def convert(
    hf_dir: Optional[Path] = typer.Argument(None, help="A Hugging Face model folder (config.json, *.safetensors, tokenizer)."),
    out: Optional[Path] = typer.Option(None, "--outfile", "-o", help="Output .gguf (default: HF_DIR-OUTTYPE.gguf)."),
    outtype: str = typer.Option("auto", "--outtype", help="auto (bf16 for bf16 weights, else f16), f32, f16, bf16, "
                                "or any quantize TYPE (q8_0, q4_k_m, ...: llama.cpp's mix, in one pass)."),
    pre: Optional[str] = typer.Option(None, "--pre", help="BPE pre-tokenizer name, when the probe-text hash is unknown."),
    list_pre: bool = typer.Option(False, "--list-pre", help="List the pre-tokenizer names llama.cpp knows, and exit."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
):
    """Convert a Hugging Face checkpoint (llama, qwen2, qwen3, gemma3, phi3) to GGUF, as convert_hf_to_gguf.py does."""
    from .tokenizer import known_pre_tokenizers

    if list_pre:
        print("\n".join(known_pre_tokenizers()))
        return
    if hf_dir is None:
        raise LlamalabError("missing HF_DIR (a Hugging Face model folder)")
    if pre is not None and pre not in known_pre_tokenizers():
        raise LlamalabError(f"unknown --pre {pre!r} (`llamalab convert --list-pre` lists the names llama.cpp knows)")
    from .hf import OUTTYPES, convert_hf
    from .mixes import parse_file_type

    if outtype.lower() not in OUTTYPES:
        parse_file_type(outtype)  # a clear error for an unknown type
    out = out or hf_dir.with_name(f"{hf_dir.name}-{outtype.lower()}.gguf")
    res = convert_hf(hf_dir, out, outtype, pre=pre, progress=not no_progress)
    print(f"wrote {res.path}: {res.arch}, {res.n_tensors} tensors, tokenizer {res.tokenizer}, "
          f"{res.out_bytes / 2**20:.1f} MiB in {res.seconds:.1f} s")


def quant_table(
    text: Path = typer.Argument(..., help="A UTF-8 text for perplexity (e.g. src/llamalab/lab/prompts/essay.txt)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Source model (default: the default model); "
                                        "it is first written as F16."),
    out_dir: Path = typer.Option(Path("quant-table"), "--out-dir", help="Where the F16 base and each type's file go."),
    types: Optional[str] = typer.Option(None, "--types", help="Comma-separated types (default: F16,Q8_0,Q6_K,...,Q2_K)."),
    window: int = typer.Option(512, "--window", min=16, help="Perplexity window; KL is over the first window."),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", min=1, help="Threads for quantizing and for the speed runs (default: all cores)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
):
    """Quantize one model to each type and report size, bits/weight, perplexity, KL vs F16 and speed (markdown)."""
    from ..store import resolve_model
    from .mixes import parse_file_type
    from .report import DEFAULT_TYPES, markdown
    from .report import quant_table as run_table

    if not text.is_file():
        raise LlamalabError(f"{text}: no such file")
    chosen = tuple(parse_file_type(t)[0] for t in types.split(",")) if types else DEFAULT_TYPES
    if chosen[0] != "F16":
        chosen = ("F16",) + tuple(t for t in chosen if t != "F16")
    rows = run_table(Path(resolve_model(model)), text, out_dir, chosen, window=window, threads=threads,
                     progress=not no_progress)
    print(markdown(rows))
