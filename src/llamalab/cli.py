"""The `llamalab` command line. Every failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from typer._click import exceptions as cli_errors  # typer vendors click; its errors live here

from .errors import InvalidArgumentError, LlamalabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fast LLM inference for Llama-family models, and a benchmark lab.")

ModelOpt = typer.Option(None, "--model", "-m", help="Path to a .gguf / llama2.c .bin file, or a known name (see `llamalab list`).")
ThreadsOpt = typer.Option(None, "--threads", "-t", min=1,
                          help="Compute threads (default: physical cores, less those other processes keep busy).")
BackendOpt = typer.Option("fast", "--backend", help="fast (compiled quantized kernels) or reference (plain NumPy).")
CtxOpt = typer.Option(None, "--ctx", "-c", min=1, help="Context size in tokens (default: the model's).")
TokenizerOpt = typer.Option(None, "--tokenizer", help="llama2.c tokenizer.bin, for llama2.c checkpoints.")
KvTypeOpt = typer.Option("f16", "--kv-type", help="KV cache type, keys and values: f16 (llama.cpp's default) or f32 (exact, twice the memory).")
HELP_WIDTH = 140  # columns of --help when stdout is not a terminal (rich would cut at 80)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"llamalab {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_version,
                                          help="Print the version and exit.")):
    """Fast LLM inference for Llama-family models, and a benchmark lab."""


def read_text_arg(text: str, what: str = "prompt") -> str:
    """The text itself, or all of stdin for '-' (a prompt too long for the command line)."""
    if text != "-":
        return text
    if sys.stdin is None or sys.stdin.isatty():
        raise InvalidArgumentError(f"{what} '-' reads standard input, but it is a terminal; pipe the text in "
                                   f"(llamalab ... - < file.txt)")
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidArgumentError(f"{what} on standard input is not UTF-8 ({e.reason} at byte {e.start})") from None


def pick_model(positional: str | None, option: str | None) -> str | None:
    """`llamalab CMD MODEL` and `llamalab CMD --model MODEL` mean the same; both at once must agree."""
    if positional and option and positional != option:
        raise InvalidArgumentError(f"two models given: {positional!r} and --model {option!r}; give one")
    return option or positional


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def _load(model, threads=None, backend="fast", ctx=None, tokenizer=None, kv_type="f16"):
    from .api import LLM

    return LLM(model, threads=threads, n_ctx=ctx, backend=backend, kv_type=kv_type, tokenizer=tokenizer)


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


def _text_arg(value: str) -> str:
    """A flag's text, or the contents of the file it names."""
    p = Path(value)
    try:
        return p.read_text("utf-8") if len(value) < 4096 and "\n" not in value and p.is_file() else value
    except OSError as e:
        raise InvalidArgumentError(f"cannot read {value}: {e.strerror}") from None


def _json_arg(value: str, flag: str) -> dict:
    try:
        obj = json.loads(_text_arg(value))
    except ValueError as e:
        raise InvalidArgumentError(f"{flag}: not valid JSON (or a file of it): {e}") from None
    if not isinstance(obj, dict):
        raise InvalidArgumentError(f"{flag}: must be a JSON object (a schema)")
    return obj


@app.command()
def run(
    prompt: str = typer.Argument(..., help="The prompt text; '-' reads it from standard input."),
    model: Optional[str] = ModelOpt,
    n: int = typer.Option(128, "-n", "--max-tokens", min=0, help="Tokens to generate."),
    temp: float = typer.Option(0.0, "--temp", min=0.0, help="Temperature (0 = greedy)."),
    top_k: int = typer.Option(40, "--top-k", min=0, help="Sample among the K most likely tokens (0 = all)."),
    top_p: float = typer.Option(0.95, "--top-p", min=0.0, max=1.0, help="Nucleus sampling: the smallest set with this much probability."),
    min_p: float = typer.Option(0.05, "--min-p", min=0.0, max=1.0, help="Drop tokens below this fraction of the top token's probability."),
    repeat_penalty: float = typer.Option(1.0, "--repeat-penalty", min=0.0, help="Penalty on tokens already seen (1 = none)."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Random seed, for reproducible sampling."),
    stop: Optional[list[str]] = typer.Option(None, "--stop", help="Stop string (repeatable)."),
    chat: bool = typer.Option(False, "--chat", help="Wrap the prompt in the model's chat template."),
    ignore_eos: bool = typer.Option(False, "--ignore-eos", help="Keep generating past the end-of-sequence token."),
    threads: Optional[int] = ThreadsOpt,
    backend: str = BackendOpt,
    ctx: Optional[int] = CtxOpt,
    kv_type: str = KvTypeOpt,
    tokenizer: Optional[Path] = TokenizerOpt,
    json_schema: Optional[str] = typer.Option(None, "--json-schema", help="JSON schema the output must match: JSON text or a file."),
    grammar: Optional[str] = typer.Option(None, "--grammar", help="GBNF or Lark grammar the output must match: text or a file."),
):
    """Generate text from PROMPT, streamed to stdout; stats on stderr."""
    schema = _json_arg(json_schema, "--json-schema") if json_schema is not None else None
    grammar = _text_arg(grammar) if grammar is not None else None
    prompt = read_text_arg(prompt)
    llm = _load(model, threads, backend, ctx, tokenizer, kv_type)
    kw = dict(max_tokens=n, temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p,
              repeat_penalty=repeat_penalty, seed=seed, stop=stop, ignore_eos=ignore_eos)
    kw.update({k: v for k, v in (("json_schema", schema), ("grammar", grammar)) if v is not None})
    chunks = llm.chat([{"role": "user", "content": prompt}], **kw) if chat else llm.generate(prompt, **kw)
    last = _stream(chunks)
    print(_stats_line(last), file=sys.stderr)


@app.command()
def chat(
    model: Optional[str] = ModelOpt,
    system: Optional[str] = typer.Option(None, "--system", help="System prompt."),
    n: int = typer.Option(512, "-n", "--max-tokens", min=1, help="Most tokens per reply."),
    temp: float = typer.Option(0.7, "--temp", min=0.0, help="Temperature (0 = greedy)."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Random seed, for reproducible sampling."),
    threads: Optional[int] = ThreadsOpt,
    backend: str = BackendOpt,
    ctx: Optional[int] = CtxOpt,
    kv_type: str = KvTypeOpt,
    tokenizer: Optional[Path] = TokenizerOpt,
):
    """Talk with the model. Empty line or Ctrl-D quits; /reset starts over."""
    llm = _load(model, threads, backend, ctx, tokenizer, kv_type)
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
    model_arg: Optional[str] = typer.Argument(None, metavar="[MODEL]", help="Same as --model."),
    model: Optional[str] = ModelOpt,
    tensors: bool = typer.Option(True, "--tensors/--no-tensors", help="List every tensor."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Show a model file's metadata, tensors and tokenizer (default: the default model)."""
    from .inspect_model import describe

    describe(pick_model(model_arg, model), tensors=tensors, as_json=as_json)


@app.command()
def tokenize(
    text: str = typer.Argument(..., help="The text; '-' reads it from standard input."),
    model: Optional[str] = ModelOpt,
    special: bool = typer.Option(False, "--special", help="Parse special tokens such as <|im_start|> in the text."),
    no_bos: bool = typer.Option(False, "--no-bos", help="Never add the BOS token."),
    tokenizer: Optional[Path] = TokenizerOpt,
):
    """Print the token ids of TEXT as JSON."""
    from .store import resolve_model
    from .formats import load as load_model_file
    from .text.tokenizer import Tokenizer

    text = read_text_arg(text, "text")
    loaded = load_model_file(resolve_model(model), tokenizer, runnable=False)
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
    ctx: Optional[int] = CtxOpt,
    kv_type: str = KvTypeOpt,
    tokenizer: Optional[Path] = TokenizerOpt,
):
    """Perplexity of the model on FILE (lower is better; '-' reads standard input)."""
    if str(file) == "-":
        text = read_text_arg("-", "text")
    else:
        from .formats import not_a_model_file

        why = not_a_model_file(file, expected="a UTF-8 text file", allow_fifo=True)
        if why:
            raise LlamalabError(f"{file}: {why}")
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise LlamalabError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise LlamalabError(f"{file}: cannot read it ({e.strerror})") from None
    llm = _load(model, threads, backend, ctx, tokenizer, kv_type)
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
    from rich.table import Table

    from .inspect_model import StdoutConsole as Console
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
                          ("llamalab.lab.cli", ("bench", "study", "runtimes", "profile", "synth")),
                          ("llamalab.convert.commands", ("quantize", "convert", "quant-table"))):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        for name in names:
            fn = getattr(mod, name.replace("-", "_"), None)
            if fn is not None:
                app.command(name)(fn)


_register_optional_commands()


def _interrupted() -> int:
    try:
        sys.stdout.write("\n")  # end a line of streamed text before the message
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    _err("interrupted")
    return 130


def _closed_pipe() -> int:
    """The reader went away (`llamalab ... | head`): stop quietly with 141 (128 + SIGPIPE), as a
    process killed by SIGPIPE would, and point stdout at /dev/null so the exit flush is silent."""
    from typer._click.utils import PacifyFlushWrapper

    out = sys.stdout.wrapped if isinstance(sys.stdout, PacifyFlushWrapper) else sys.stdout
    try:
        fd = out.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (tests capture stdout)
    return 141


def _help_width() -> None:
    """Wide --help where nothing says how wide to be: typer's rich help cuts at 80 columns off a terminal."""
    from typer import rich_utils

    if rich_utils.MAX_WIDTH is None and "COLUMNS" not in os.environ and not sys.stdout.isatty():
        rich_utils.MAX_WIDTH = HELP_WIDTH


def main(argv: list[str] | None = None) -> int:
    """Entry point: errors become one line on stderr and exit status 1 (usage errors: 2);
    Ctrl-C: a message and 130; a closed output pipe: 141, silently."""
    from typer._click.utils import PacifyFlushWrapper

    _help_width()
    try:
        code = app(args=argv, standalone_mode=False)
    except SystemExit as e:  # typer's own handling of a closed pipe: sys.exit(1) after wrapping stdout
        if isinstance(sys.stdout, PacifyFlushWrapper):
            return _closed_pipe()
        raise
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        return _interrupted()
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
        return _interrupted()
    except BrokenPipeError:
        return _closed_pipe()
    if code == 130:  # typer turns KeyboardInterrupt into Exit(130), returned as the value here
        return _interrupted()
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
