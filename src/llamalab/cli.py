"""The `llamalab` command line. Every failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from typer._click import exceptions as cli_errors  # typer vendors click; its errors live here

from .errors import LlamalabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fast LLM inference for Llama-family models, and a benchmark lab.")

ModelOpt = typer.Option(None, "--model", "-m", help="Path to a .gguf / llama2.c .bin file, or a known name (see `llamalab list`).")
ThreadsOpt = typer.Option(None, "--threads", "-t", min=1, help="Compute threads (default: physical cores).")
BackendOpt = typer.Option("fast", "--backend", help="fast (compiled quantized kernels) or reference (plain NumPy).")
CtxOpt = typer.Option(None, "--ctx", "-c", min=1, help="Context size in tokens (default: the model's).")
TokenizerOpt = typer.Option(None, "--tokenizer", help="llama2.c tokenizer.bin, for llama2.c checkpoints.")


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def _load(model, threads=None, backend="fast", ctx=None, tokenizer=None):
    from .api import LLM

    return LLM(model, threads=threads, n_ctx=ctx, backend=backend, tokenizer=tokenizer)


def _stats_line(c) -> str:
    if c is None:
        return "no tokens generated"
    return (f"prompt: {c.n_prompt} tokens ({c.n_cached} cached), {c.prompt_tps:.1f} tok/s | "
            f"generated: {c.n_generated} tokens, {c.decode_tps:.1f} tok/s | "
            f"time to first token: {c.prompt_s * 1000:.0f} ms")


def _stream(chunks) -> object:
    last = None
    for last in chunks:
        sys.stdout.write(last.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()  # the stats line goes to stderr after the text, not into it
    return last


@app.command()
def run(
    prompt: str = typer.Argument(..., help="The prompt text."),
    model: Optional[str] = ModelOpt,
    n: int = typer.Option(128, "-n", "--max-tokens", min=0, help="Tokens to generate."),
    temp: float = typer.Option(0.0, "--temp", min=0.0, help="Temperature (0 = greedy)."),
    top_k: int = typer.Option(40, "--top-k", min=0),
    top_p: float = typer.Option(0.95, "--top-p", min=0.0, max=1.0),
    min_p: float = typer.Option(0.05, "--min-p", min=0.0, max=1.0),
    repeat_penalty: float = typer.Option(1.0, "--repeat-penalty", min=0.0),
    seed: Optional[int] = typer.Option(None, "--seed", min=0),
    stop: Optional[list[str]] = typer.Option(None, "--stop", help="Stop string (repeatable)."),
    chat: bool = typer.Option(False, "--chat", help="Wrap the prompt in the model's chat template."),
    ignore_eos: bool = typer.Option(False, "--ignore-eos"),
    threads: Optional[int] = ThreadsOpt,
    backend: str = BackendOpt,
    ctx: Optional[int] = CtxOpt,
    tokenizer: Optional[Path] = TokenizerOpt,
):
    """Generate text from PROMPT, streamed to stdout; stats on stderr."""
    llm = _load(model, threads, backend, ctx, tokenizer)
    kw = dict(max_tokens=n, temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p,
              repeat_penalty=repeat_penalty, seed=seed, stop=stop, ignore_eos=ignore_eos)
    chunks = llm.chat([{"role": "user", "content": prompt}], **kw) if chat else llm.generate(prompt, **kw)
    last = _stream(chunks)
    print(_stats_line(last), file=sys.stderr)


@app.command()
def chat(
    model: Optional[str] = ModelOpt,
    system: Optional[str] = typer.Option(None, "--system", help="System prompt."),
    n: int = typer.Option(512, "-n", "--max-tokens", min=1),
    temp: float = typer.Option(0.7, "--temp", min=0.0),
    seed: Optional[int] = typer.Option(None, "--seed", min=0),
    threads: Optional[int] = ThreadsOpt,
    backend: str = BackendOpt,
    ctx: Optional[int] = CtxOpt,
):
    """Talk with the model. Empty line or Ctrl-D quits; /reset starts over."""
    llm = _load(model, threads, backend, ctx)
    messages = [{"role": "system", "content": system}] if system else []
    print(f"llamalab chat — {Path(llm.path).name}. Empty line or Ctrl-D to quit, /reset to start over.", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return
        if not line.strip():
            return
        if line.strip() == "/reset":
            messages = messages[:1] if system else []
            continue
        messages.append({"role": "user", "content": line})
        try:
            last = _stream(llm.chat(messages, max_tokens=n, temperature=temp, seed=seed))
        except KeyboardInterrupt:
            print("\n[interrupted]", file=sys.stderr)
            messages.pop()
            continue
        reply = llm.tokenizer.decode(llm.cache.tokens[-(last.n_generated if last else 0):]) if last else ""
        messages.append({"role": "assistant", "content": reply.strip()})
        print(_stats_line(last), file=sys.stderr)


@app.command()
def inspect(
    model: str = typer.Argument(..., help="Model path or known name."),
    tensors: bool = typer.Option(True, "--tensors/--no-tensors", help="List every tensor."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Show a model file's metadata, tensors and tokenizer."""
    from .inspect_model import describe

    describe(model, tensors=tensors, as_json=as_json)


@app.command()
def tokenize(
    text: str = typer.Argument(...),
    model: Optional[str] = ModelOpt,
    special: bool = typer.Option(False, "--special", help="Parse special tokens such as <|im_start|> in the text."),
    no_bos: bool = typer.Option(False, "--no-bos", help="Never add the BOS token."),
    tokenizer: Optional[Path] = TokenizerOpt,
):
    """Print the token ids of TEXT as JSON."""
    from .store import resolve_model
    from .formats import load as load_model_file
    from .text.tokenizer import Tokenizer

    loaded = load_model_file(resolve_model(model), tokenizer)
    if loaded.tokenizer is None:
        raise LlamalabError("the model file has no tokenizer; pass --tokenizer")
    tok = Tokenizer.from_spec(loaded.tokenizer)
    print(json.dumps(tok.encode(text, add_bos=False if no_bos else None, special=special)))


@app.command()
def perplexity(
    file: Path = typer.Argument(..., help="A UTF-8 text file."),
    model: Optional[str] = ModelOpt,
    window: int = typer.Option(512, "--window", min=2, help="Tokens per evaluation window."),
    threads: Optional[int] = ThreadsOpt,
    backend: str = BackendOpt,
):
    """Perplexity of the model on FILE (lower is better)."""
    if not file.is_file():
        raise LlamalabError(f"{file}: no such file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LlamalabError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    llm = _load(model, threads, backend)
    ppl, n = llm.perplexity(text, window)
    print(f"perplexity: {ppl:.4f} over {n} tokens")


@app.command()
def pull(name: str = typer.Argument("smollm2-135m", help="A known model name or hf://owner/repo/file.gguf."),
         force: bool = typer.Option(False, "--force", help="Fetch again even if cached.")):
    """Fetch a model into the local cache (verified by SHA-256)."""
    from .store import pull as do_pull

    print(do_pull(name, progress=True, force=force))


@app.command("list")
def list_models():
    """Known model names and whether they are cached."""
    from rich.console import Console
    from rich.table import Table

    from .store import list_models as known

    table = Table("name", "arch", "size", "cached", "runs", "description")
    for m in known():
        table.add_row(m.name, m.arch, f"{m.size / 1e6:.0f} MB", "yes" if m.cached else "no",
                      "yes" if m.supported else "not yet", m.description)
    Console().print(table)


def _register_optional_commands() -> None:
    """Commands whose modules live elsewhere (server, bench lab); each imports lazily."""
    import importlib

    for module, names in (("llamalab.server.cli", ("serve",)),
                          ("llamalab.lab.cli", ("bench", "study", "runtimes", "profile", "synth"))):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        for name in names:
            fn = getattr(mod, name, None)
            if fn is not None:
                app.command(name)(fn)


_register_optional_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point: errors become one line on stderr and exit status 1 (usage errors: 2)."""
    try:
        app(args=argv, standalone_mode=False)
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        _err("aborted")
        return 130
    except cli_errors.NoArgsIsHelpError as e:
        e.show()
        return 2
    except cli_errors.ClickException as e:
        where = f" (llamalab {e.ctx.command.name})" if getattr(e, "ctx", None) and e.ctx and e.ctx.command else ""
        _err(e.format_message().replace("\n", " ") + where)
        return 2
    except LlamalabError as e:
        _err(str(e))
        return 1
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
