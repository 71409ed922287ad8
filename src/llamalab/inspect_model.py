"""`llamalab inspect`: what a model file holds, without running it."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
from rich.console import Console
from rich.table import Table

from .formats import load as load_model_file
from .store import resolve_model


class StdoutConsole(Console):
    """rich's console, except that a closed pipe (`llamalab inspect | head`) is a BrokenPipeError
    for the CLI to end quietly with 141, not rich's own SystemExit(1)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


def summarize(path: str) -> dict:
    """Metadata (long arrays abbreviated), config, tensors and tokenizer of a model file."""
    loaded = load_model_file(path, runnable=False)
    meta = {k: (f"[{len(v)} items]" if isinstance(v, list) and len(v) > 16 else v) for k, v in loaded.metadata.items()}
    meta = {k: (v[:200] + "…" if isinstance(v, str) and len(v) > 200 else v) for k, v in meta.items()}
    tensors = [
        {"name": t.name, "type": t.qtype.name, "shape": list(t.shape), "bytes": int(t.nbytes)}
        for t in loaded.weights.values()
    ]
    tok = loaded.tokenizer
    cfg = loaded.config
    return {
        "path": str(path),
        "config": None if cfg is None else {**cfg.__dict__, "head_dim": cfg.head_dim, "n_params": cfg.n_params()},
        "runnable": cfg is not None,
        "unsupported": loaded.metadata.get("llamalab.unsupported"),
        "metadata": meta,
        "tensor_types": dict(Counter(t["type"] for t in tensors)),
        "tensor_bytes": sum(t["bytes"] for t in tensors),
        "tensors": tensors,
        "tokenizer": None if tok is None else {
            "kind": tok.kind, "pre": tok.pre, "vocab": len(tok.tokens), "merges": len(tok.merges),
            "bos_id": tok.bos_id, "eos_id": tok.eos_id, "eot_id": tok.eot_id, "add_bos": tok.add_bos,
            "chat_template": tok.chat_template is not None,
        },
    }


def describe(model: str, tensors: bool = True, as_json: bool = False) -> None:
    info = summarize(str(resolve_model(model)))
    if as_json:
        print(json.dumps(info, indent=2, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
        return
    con = StdoutConsole()
    cfg = info["config"]
    con.print(f"[bold]{info['path']}[/bold]")
    if cfg is None:
        con.print(f"not runnable by llamalab: {info['unsupported']}")
    else:
        con.print(f"{cfg['arch']} · {cfg['n_params'] / 1e6:.1f}M params · {cfg['n_layers']} layers · dim {cfg['dim']} · "
                  f"ffn {cfg['ffn_dim']} · heads {cfg['n_heads']}/{cfg['n_kv_heads']} kv × {cfg['head_size'] or cfg['dim'] // cfg['n_heads']} · "
                  f"ctx {cfg['context_length']} · vocab {cfg['vocab_size']} · tied output {cfg['tied_output']}")
    con.print(f"weights: {info['tensor_bytes'] / 2**20:.1f} MiB · types {info['tensor_types']}")
    if info["tokenizer"]:
        con.print(f"tokenizer: {info['tokenizer']}")
    meta = Table("key", "value", title="metadata")
    for k, v in info["metadata"].items():
        meta.add_row(k, str(v))
    con.print(meta)
    if tensors:
        tab = Table("name", "type", "shape", "bytes", title="tensors")
        for t in info["tensors"]:
            tab.add_row(t["name"], t["type"], "×".join(map(str, t["shape"])), f"{t['bytes']:,}")
        con.print(tab)
