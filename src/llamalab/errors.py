"""Errors that reach users as one line: what is wrong and where.

Every error llamalab raises on purpose derives from LlamalabError; the CLI and the
server print ``str(err)`` and nothing else (no traceback).
"""


class LlamalabError(Exception):
    """Base class: the message is a complete, user-facing sentence."""


class ModelFormatError(LlamalabError):
    """A model file is malformed: bad magic, truncated, shape or offset out of range."""


class UnsupportedModelError(LlamalabError):
    """A well-formed file that llamalab cannot run (architecture, block format)."""


class InvalidArgumentError(LlamalabError, ValueError):
    """A parameter is out of range or of the wrong kind."""


class ContextOverflowError(LlamalabError):
    """The prompt (plus requested tokens) does not fit the context window."""

    def __init__(self, n_prompt: int, n_ctx: int):
        self.n_prompt = n_prompt
        self.n_ctx = n_ctx
        super().__init__(
            f"prompt has {n_prompt} tokens but the context holds {n_ctx}; "
            f"shorten the prompt or raise the context size (--ctx; n_ctx= in Python)"
        )


class ModelNotFoundError(LlamalabError):
    """An unknown model name, or a path that does not exist."""
