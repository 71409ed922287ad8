"""The OpenAI-compatible HTTP server (``llamalab serve``): routes, continuous batching, chat page."""

from .app import create_app
from .launch import RunningServer, serve_in_thread
from .service import Settings

__all__ = ["create_app", "Settings", "serve_in_thread", "RunningServer"]
