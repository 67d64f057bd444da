"""The one error type of the server: every refusal is JSON that names the field and what is accepted."""

from __future__ import annotations

from typing import Any


class RequestError(Exception):
    """A request the server refuses or could not finish; becomes `{"error": {...}}` with `status`.

    field: the request field at fault (`max_new_tokens`, `model`, ...) or None; accepted: what would
    be accepted, in words ("an integer in [1, 256]"); received: the value sent (echoed, truncated).
    """

    def __init__(self, status: int, message: str, *, field: str | None = None, accepted: Any = None,
                 received: Any = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.accepted, self.received = status, message, field, accepted, received

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"status": self.status, "message": self.message, "field": self.field}
        if self.accepted is not None:
            error["accepted"] = self.accepted
        if self.received is not None:
            text = repr(self.received)
            error["received"] = self.received if len(text) <= 200 else text[:200] + "..."
        return {"error": error}


def bad_field(field: str, message: str, accepted: Any = None, received: Any = None) -> RequestError:
    """422: `field` has a value the server cannot use."""
    return RequestError(422, f"{field}: {message}", field=field, accepted=accepted, received=received)
