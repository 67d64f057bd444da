"""A cap on request bodies, enforced while they arrive: a body past `max_bytes` is a 413 before more of it
is read, and a body not complete within `timeout_s` is a 408.

`await request.json()` reads the whole body into memory first: a 300 MB prompt cost 780 MB of resident
memory before its 422. This ASGI middleware sits outside the routes:

* a declared `Content-Length` past the cap is answered at once, nothing of the body read (uvicorn has not
  even sent `100 Continue`);
* otherwise (chunked bodies, or a client that sends more than it declared) the bytes are counted as the app
  reads them, and the read that crosses the cap raises `RequestError(413)`, which the app's handlers render
  in its own error shape (zoo's or OpenAI's). uvicorn buffers at most 64 KiB of unread body per connection
  (it stops reading the socket past that), so memory stays bounded by the cap, not by the client;
* a 413 or 408 closes the connection (`connection: close`), so the rest of the body is never read.

Why not Starlette's `RequestBodyLimitMiddleware` (FastAPI's `max_body_size`): it answers a declared
oversize with a plain-text "Content Too Large" that replaces whatever the app renders, which would break
the server's one JSON error shape (and OpenAI's on its routes), and it has no deadline for slow bodies.

Slow clients cost a connection, not a worker: uvicorn reads bodies asynchronously, and the deadline frees
the connection of a client that sends a byte a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from zoo.serve.errors import RequestError

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


def too_large(received: int, max_bytes: int, declared: bool) -> RequestError:
    what = "declares" if declared else "has more than"
    shown = received if declared else max_bytes
    return RequestError(413, f"body: the request {what} {shown} bytes; this server reads at most {max_bytes} "
                        "(limits.max_body_bytes)", field="body", accepted=f"at most {max_bytes} bytes",
                        received=received)


def too_slow(received: int, timeout_s: float) -> RequestError:
    return RequestError(408, f"body: not complete after {timeout_s:g} s ({received} bytes received); send the "
                        "whole request within timeout_s", field="body", received=received)


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # uvicorn answers a malformed length itself
    return None


class BodyLimit:
    """ASGI middleware: bodies over `max_bytes` get a 413, bodies slower than `timeout_s` a 408 (see the
    module docstring). `render(path, error)` makes the response, so that the 413 of a declared length has the
    route's error shape too."""

    def __init__(self, app: Any, *, max_bytes: int, timeout_s: float,
                 render: Callable[[str, RequestError], Any]) -> None:
        if max_bytes < 1:
            raise ValueError(f"limits.max_body_bytes must be >= 1, got {max_bytes}")
        self.app, self.max_bytes, self.timeout_s, self.render = app, max_bytes, timeout_s, render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = declared_length(scope)
        if length is not None and length > self.max_bytes:
            response = self.render(scope["path"], too_large(length, self.max_bytes, True))
            return await response(scope, receive, _closing(send))
        received, done, refused = 0, False, False
        deadline = time.monotonic() + self.timeout_s

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, done, refused
            if done:  # the body is in: later reads wait for a disconnect (streaming responses), no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                refused = True
                raise too_slow(received, self.timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    raise too_large(received, self.max_bytes, False)
                done = not message.get("more_body", False)
            return message

        async def checked_send(message: dict[str, Any]) -> None:
            await send(_with_close(message) if refused and message["type"] == "http.response.start" else message)

        await self.app(scope, limited_receive, checked_send)


def _with_close(message: dict[str, Any]) -> dict[str, Any]:
    headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
    return {**message, "headers": [*headers, (b"connection", b"close")]}


def _closing(send: Send) -> Send:
    async def closing_send(message: dict[str, Any]) -> None:
        await send(_with_close(message) if message["type"] == "http.response.start" else message)
    return closing_send
