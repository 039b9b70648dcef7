"""The Host header is checked against ``allowed_hosts`` and never used to build a URL.

Why: URLs the gateway hands out (``/v1/talk`` artifacts) were built from the request's Host
header, so ``Host: evil.example.com`` produced a link to another server, and a client that
followed it sent its bearer key there. ``public_url`` builds them from the configured
``public_base_url`` (or leaves them relative); ``HostCheck`` refuses requests whose Host is not
allowed, before routing (so the lean chat path is covered too).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import Scope

from gateway.errors import APIError


def public_url(base: str | None, path: str) -> str:
    """``path`` under the configured public base URL, or ``path`` itself (relative to the API)."""
    return f"{base.rstrip('/')}{path}" if base else path


class HostCheck:
    """``allowed_hosts`` entries: exact names, ``*.example.com`` for subdomains, or ``*`` (any)."""

    def __init__(self, allowed: list[str]) -> None:
        self.any = "*" in allowed
        self.exact = {h.lower() for h in allowed if not h.startswith("*.")}
        self.suffixes = tuple(h[1:].lower() for h in allowed if h.startswith("*."))

    def allows(self, host: str) -> bool:
        name = host.lower()
        if name.startswith("["):  # [v6]:port
            name = name.split("]", 1)[0] + "]"
        else:
            name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
        return self.any or name in self.exact or (bool(self.suffixes) and name.endswith(self.suffixes))

    def check(self, scope: Scope) -> None:
        if self.any:
            return
        host = Headers(scope=scope).get("host", "")
        if not self.allows(host):
            raise APIError(
                400, "The Host header names a host this gateway does not serve.", code="invalid_host"
            )
