"""The OpenAI-compatible HTTP server (``llamalab serve``): routes, continuous batching, chat page.

Names are imported on first use, so `llamalab.server.cli` (loaded by every CLI command)
does not pay for FastAPI.
"""

__all__ = ["create_app", "Settings", "serve_in_thread", "RunningServer"]

_HOMES = {"create_app": ".app", "Settings": ".service", "serve_in_thread": ".launch", "RunningServer": ".launch"}


def __getattr__(name):
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(_HOMES[name], __name__), name)
    raise AttributeError(name)
