"""Errors with a machine code, an HTTP status and a human message.

Every failure a client can cause is one of these: REST turns it into a JSON body with
the status, WebSocket signalling into an `error` message. Nothing else leaks out.
"""

from __future__ import annotations

from typing import Any, ClassVar


class TellerError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.details = details

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class BadRequest(TellerError):
    status = 400
    code = "bad_request"


class Unauthorized(TellerError):
    status = 401
    code = "token_invalid"


class Forbidden(TellerError):
    status = 403
    code = "forbidden"


class NotFound(TellerError):
    status = 404
    code = "not_found"


class Conflict(TellerError):
    status = 409
    code = "conflict"


class PayloadTooLarge(TellerError):
    status = 413
    code = "message_too_large"


class UnsupportedMediaType(TellerError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(TellerError):
    status = 422
    code = "unprocessable"


class RateLimited(TellerError):
    status = 429
    code = "rate_limited"


class Unavailable(TellerError):
    status = 503
    code = "unavailable"
