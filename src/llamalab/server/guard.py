"""ASGI middleware in front of every route: API key check and request-body size limit.

Runs before FastAPI parses anything, so an oversized or unauthorised body is refused
without being read into memory.
"""

from __future__ import annotations

import hmac
import json

from .schemas import error_body

OPEN_PATHS = frozenset({"/health", "/", "/favicon.ico"})  # no key needed: liveness and the (data-free) chat page


async def send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """Refuses requests without `Authorization: Bearer <api_key>` (when a key is set) with 401,
    and bodies over `max_body` bytes with 413."""

    def __init__(self, app, api_key: str | None = None, max_body: int = 2 * 2**20):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and scope["path"] not in OPEN_PATHS:
            auth = headers.get(b"authorization", b"")
            scheme, _, token = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
                return await send_json(send, 401, error_body("invalid or missing API key: send 'Authorization: Bearer KEY'",
                                                             "authentication_error", code=401),
                                       [(b"www-authenticate", b"Bearer")])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await send_json(send, 400, error_body("malformed Content-Length header", code=400))
            if int(length) > self.max_body:
                return await self._too_large(send, int(length))
            return await self.app(scope, receive, send)
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        return await self._chunked(scope, receive, send)

    async def _chunked(self, scope, receive, send):
        """A body without Content-Length: read it (bounded), then replay it to the app."""
        parts, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # client gone
            size += len(msg.get("body", b""))
            if size > self.max_body:
                return await self._too_large(send, size)
            parts.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, send, size: int):
        return await send_json(send, 413, error_body(
            f"request body too large: at least {size} bytes, the limit is {self.max_body}", code=413))
