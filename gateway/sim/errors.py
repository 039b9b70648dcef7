"""The one exception simulated request parsers raise: becomes Bailian's native error body.

Why a shared type: tools, JSON mode and image checks live in separate modules but must all end in
the same ``{"code","message","request_id"}`` answer, with the status Bailian uses.
"""

from __future__ import annotations


class SimRequestError(Exception):
    """A request the simulated service refuses: HTTP ``status``, Bailian ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def invalid(message: str) -> SimRequestError:
    """The common case: 400 InvalidParameter."""
    return SimRequestError(400, "InvalidParameter", message)
