"""DashScope's native error answer: ``{"code", "message", "request_id"}`` with Bailian's HTTP status.

Why one exception type: request parsing (generation input, tools, JSON mode, images, audio data
URLs) lives in several modules, for the simulator and the gateway's front door alike, and every
refusal must end in the same body with the status Bailian uses (reference §6.1).
"""

from __future__ import annotations

import orjson
from starlette.responses import Response

#: What Bailian answers a missing or unknown API key with (HTTP 401).
INVALID_KEY = ("InvalidApiKey", "Invalid API-key provided.")


class DashScopeError(Exception):
    """A request refused with HTTP ``status``, Bailian ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def invalid(message: str) -> DashScopeError:
    """The common case: 400 InvalidParameter."""
    return DashScopeError(400, "InvalidParameter", message)


def error_body(code: str, message: str, request_id: str) -> dict[str, str]:
    return {"code": code, "message": message, "request_id": request_id}


def native_error(
    status: int, code: str, message: str, request_id: str, headers: dict[str, str] | None = None
) -> Response:
    """Bailian's native error response (reference §6.1)."""
    body = orjson.dumps(error_body(code, message, request_id))
    return Response(body, status_code=status, headers=headers, media_type="application/json")
