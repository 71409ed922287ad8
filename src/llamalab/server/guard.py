"""ASGI middleware in front of every route: API key check, request-body size and time limits.

Runs before FastAPI parses anything, so an oversized or unauthorised body is refused
without being read into memory, and a body that stops arriving half-way (a slow or stalled
client) is answered with 408 instead of holding the connection open forever.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time

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
    bodies over `max_body` bytes with 413, bodies not in within `read_timeout` seconds with 408,
    and non-JSON bodies with 400 naming the Content-Type header."""

    def __init__(self, app, api_key: str | None = None, max_body: int = 2 * 2**20, read_timeout: float = 30.0):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body = max_body
        self.read_timeout = read_timeout

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
        if scope["method"] in ("GET", "HEAD", "OPTIONS") or length == b"0":
            return await self.app(scope, receive, send)
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype and ctype != b"application/json" and not ctype.endswith(b"+json"):
            return await send_json(send, 400, error_body(
                f"the request body must be JSON sent with 'Content-Type: application/json' "
                f"(got Content-Type: {ctype.decode('latin-1')!r}; with curl, add -H 'Content-Type: application/json')",
                code=400))
        if not ctype:  # no header at all: the API only takes JSON, so read it as JSON
            scope = {**scope, "headers": [*scope.get("headers", ()), (b"content-type", b"application/json")]}
        return await self._read_body(scope, receive, send)

    async def _read_body(self, scope, receive, send):
        """Read the whole body (bounded in bytes and in time), then replay it to the app."""
        parts, size = [], 0
        deadline = time.monotonic() + self.read_timeout
        while True:
            try:
                msg = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                return await send_json(send, 408, error_body(
                    f"request body not received within {self.read_timeout:g} s ({size} bytes arrived)", code=408),
                    [(b"connection", b"close")])
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
