"""Which egress proxy (if any) a cloud call goes through: one rule for every client.

Enterprise networks reach the cloud only through an HTTP proxy. Every cloud call asks
``EgressProxy.for_url`` (the HTTP pool in ``http1.py``, the WebSockets and downloads on aiohttp, the
NLS token fetch in ``aliyun-python-sdk-core``), so all of them agree; ``aliyunsdkcore`` in
particular ignores ``NO_PROXY`` on its own and would send a loopback call through the proxy.

Source of the proxy, first found wins: the explicit setting (``TALKGATE_EGRESS__PROXY``, with
``TALKGATE_EGRESS__NO_PROXY``), else ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` (either case), as
curl and requests read them. ``https://`` and ``wss://`` use the https proxy through a CONNECT
tunnel (TLS stays end to end); ``http://`` and ``ws://`` use the http proxy. Loopback hosts
(127.0.0.0/8, ::1, localhost) never go through a proxy unless ``proxy_loopback`` is set.

``ca_file`` (``TALKGATE_EGRESS__CA_FILE``) adds a CA bundle that every client trusts besides the
system's, for proxies that inspect TLS with a corporate CA (and for tests over a local CA).
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import ssl
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

_SECURE = {"https": True, "wss": True, "http": False, "ws": False}


def is_loopback_host(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class EgressProxy:
    http: str | None = None
    https: str | None = None
    no_proxy: str = ""
    proxy_loopback: bool = False
    ca_file: str | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> EgressProxy:
        """From ``settings.egress`` (proxy, no_proxy, proxy_loopback), else the environment."""
        egress = getattr(settings, "egress", None)
        loopback = bool(getattr(egress, "proxy_loopback", False))
        ca = getattr(egress, "ca_file", None)
        ca_file = str(ca) if ca else None
        explicit = getattr(egress, "proxy", None)
        env = urllib.request.getproxies_environment()  # lower- and upper-case names, like curl
        no_proxy = getattr(egress, "no_proxy", None)
        no = ",".join(no_proxy) if no_proxy is not None else env.get("no", "")
        if explicit:
            return cls(explicit, explicit, no, loopback, ca_file)
        return cls(env.get("http"), env.get("https"), no, loopback, ca_file)

    @property
    def configured(self) -> bool:
        return bool(self.http or self.https)

    def for_url(self, url: str) -> str | None:
        """The proxy URL for a call to ``url``, or None for a direct connection."""
        parts = urlsplit(url)
        secure = _SECURE.get(parts.scheme.lower())
        host = parts.hostname or ""
        if secure is None or not host:
            return None
        proxy = self.https if secure else self.http
        if not proxy:
            return None
        if is_loopback_host(host) and not self.proxy_loopback:
            return None
        if self.no_proxy and urllib.request.proxy_bypass_environment(host, {"no": self.no_proxy}):
            return None
        return proxy

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for https/wss calls when ``ca_file`` is set (None: the client's default)."""
        return _context(self.ca_file) if self.ca_file else None

    def requests_proxies(self, url: str) -> dict[str, str | None]:
        """For ``requests``-style clients (aliyunsdkcore): always explicit, so that they do not
        read the environment themselves (a None value means: connect directly)."""
        proxy = self.for_url(url)
        return {"http": proxy, "https": proxy}


def proxy_address(proxy: str) -> tuple[str, int, dict[str, str]]:
    """``http://user:pass@host:port`` -> (host, port, headers for the proxy: Proxy-Authorization)."""
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.scheme not in ("http", ""):
        raise ValueError(f"only http:// proxies are supported, not {parts.scheme}://")
    if not parts.hostname:
        raise ValueError("the proxy URL has no host")
    headers = {}
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return parts.hostname, parts.port or 80, headers


@functools.lru_cache(maxsize=8)
def _context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=ca_file)
    return context
