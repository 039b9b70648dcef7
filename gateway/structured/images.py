"""Images in chat messages: checked from their header, inlined as data URLs, never fetched blindly.

Why: an ``image_url`` part is either a data URL (the bytes are in the request) or an http(s)
URL the gateway would have to fetch. Both are untrusted: a data URL goes through the same
header-first checks as avatars (``gateway/inputs/images.py``: dimensions and pixels before any
decoding) plus a byte limit; a URL is fetched only from hosts on ``vision.url_allow``, never from
a private, loopback or link-local address (unless ``vision.allow_private_addresses``), with a
size, type and time limit, and then sent upstream as a data URL, so the upstream never fetches
anything on the gateway's behalf. The fetch is an outbound call like the cloud's: aiohttp, through
the egress proxy and CA that ``providers/cloud/proxy.py`` chooses (README "HTTP libraries").
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from gateway.errors import APIError
from gateway.inputs.data_url import DataUrlError, decode_data_url
from gateway.inputs.echo import echo
from gateway.inputs.hosts import HostCheck
from gateway.inputs.images import check_image
from lipsync.errors import ImageError
from providers.cloud.proxy import EgressProxy


def _bad(message: str, param: str) -> APIError:
    return APIError(400, message, param=param, code="invalid_image")


def has_images(messages: list[dict[str, Any]]) -> bool:
    return any(
        isinstance(m.get("content"), list) and any(p.get("type") == "image_url" for p in m["content"])
        for m in messages
    )


def content_parts(parts: list[Any], where: str) -> list[dict[str, Any]] | str:
    """Text parts joined to one string; with an image among them, the normalised list."""
    out: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise APIError(
                    400,
                    f"{where}[{j}]: a content part of type 'text' needs a 'text' string",
                    param=f"{where}[{j}]",
                )
            out.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                raise _bad(f"{where}[{j}].image_url needs a 'url'.", f"{where}[{j}].image_url")
            out.append({"type": "image_url", "image_url": {"url": url}})
        else:
            raise APIError(
                400,
                f"{where}[{j}]: content part type '{echo(kind)}' is not supported (only 'text' and 'image_url')",
                param=f"{where}[{j}]",
            )
    if all(p["type"] == "text" for p in out):
        return "".join(p["text"] for p in out)
    return out


async def inline_images(messages: list[dict[str, Any]], settings: Any) -> int:
    """Check every image (fetching allowed URLs) and replace it with a checked data URL; the count."""
    count = 0
    for i, message in enumerate(messages):
        parts = message.get("content")
        if not isinstance(parts, list):
            continue
        for j, part in enumerate(parts):
            if part["type"] != "image_url":
                continue
            where = f"messages[{i}].content[{j}].image_url.url"
            url = part["image_url"]["url"]
            data = (
                _data_url_bytes(url, where) if url.startswith("data:") else await _fetch(url, settings, where)
            )
            if len(data) > settings.vision.max_image_bytes:
                raise _bad(
                    f"{where}: the image is larger than {settings.vision.max_image_bytes} bytes.", where
                )
            try:
                header = check_image(data, settings.limits)
            except ImageError as exc:
                raise _bad(f"{where}: {exc.message}", where) from None
            mime = "image/jpeg" if header.format in ("JPEG", "MPO") else f"image/{header.format.lower()}"
            part["image_url"]["url"] = f"data:{mime};base64,{base64.b64encode(data).decode()}"
            count += 1
    return count


def _data_url_bytes(url: str, where: str) -> bytes:
    try:
        return decode_data_url(url).data
    except DataUrlError as exc:
        if exc.reason == "bad_base64":
            raise _bad(f"{where}: the data URL is not valid base64.", where) from None
        raise _bad(f"{where}: a data URL must be base64 (data:image/png;base64,...).", where) from None


async def _fetch(url: str, settings: Any, where: str) -> bytes:
    config = settings.vision
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad(f"{where}: only data: URLs, or http(s) URLs of allowed hosts, are accepted.", where)
    if not config.url_allow or not HostCheck(config.url_allow).allows(parts.hostname):
        raise _bad(
            f"{where}: images are not fetched from '{echo(parts.hostname)}' (not on vision.url_allow); "
            "send the image as a data URL.",
            where,
        )
    resolver = None
    if not config.allow_private_addresses:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        resolver = PinnedResolver(parts.hostname, await _public_addresses(parts.hostname, port, where))
    egress = EgressProxy.from_settings(settings)
    timeout = aiohttp.ClientTimeout(total=config.fetch_timeout_s)
    connector = aiohttp.TCPConnector(resolver=resolver) if resolver is not None else None
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=False, connector=connector) as session,
            session.get(
                url, allow_redirects=False, proxy=egress.for_url(url), ssl=egress.ssl_context() or True
            ) as response,
        ):
            if response.status != 200:
                raise _bad(f"{where}: fetching the image answered HTTP {response.status}.", where)
            if not response.headers.get("content-type", "").startswith("image/"):
                raise _bad(f"{where}: the URL did not answer with an image content type.", where)
            data = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > config.max_image_bytes:
                    raise _bad(f"{where}: the image is larger than {config.max_image_bytes} bytes.", where)
            return bytes(data)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _bad(f"{where}: the image could not be fetched ({type(exc).__name__}).", where) from None


async def _public_addresses(host: str, port: int, where: str) -> list[tuple[int, str]]:
    """(family, address) of every address ``host`` resolves to; all must be public (no SSRF into
    the gateway's network)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise _bad(f"{where}: the host '{echo(host)}' does not resolve.", where) from None
    found = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise _bad(f"{where}: '{echo(host)}' resolves to a private address; it is not fetched.", where)
        found.append((info[0], str(address)))
    return found


class PinnedResolver(AbstractResolver):
    """Answers the fetch's connection with the addresses that were checked, so a second DNS
    lookup between the check and the connection (DNS rebinding: public first, 127.0.0.1 next)
    cannot send the request into the gateway's own network. Through an egress proxy the proxy
    resolves the name, as it does for every outbound call."""

    def __init__(self, host: str, addresses: list[tuple[int, str]]) -> None:
        self.host = host
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        if host != self.host:
            raise OSError(f"{host!r} was not checked for this fetch")
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=fam, proto=0, flags=socket.AI_NUMERICHOST
            )
            for fam, address in self.addresses
        ]

    async def close(self) -> None:
        return None
