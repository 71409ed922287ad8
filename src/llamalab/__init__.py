"""llamalab: fast LLM inference for Llama-family models in Python."""

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `import llamalab` stays cheap for the CLI
    if name == "LLM":
        from .api import LLM

        return LLM
    raise AttributeError(name)


__all__ = ["LLM", "__version__"]
