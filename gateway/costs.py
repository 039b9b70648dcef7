"""What a request will cost, and whether its tenant may spend it: checked before any provider runs.

The chat token estimate is charged up front against the key's tokens-per-minute limit and
reconciled after the answer (gateway/auth.py); the quota checks refuse a request whose measured
size (prompt tokens, seconds of decoded audio) does not fit what is left of the tenant's
monthly quota, with OpenAI's ``insufficient_quota`` 429.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from starlette.requests import HTTPConnection

from gateway.errors import APIError
from policies.quota import QuotaExceeded


class Payer(Protocol):
    """What the checks read of the caller: gateway.auth.Principal (not imported: auth uses this)."""

    @property
    def tenant(self) -> str: ...

    @property
    def key_id(self) -> str | None: ...

    @property
    def limits(self) -> dict[str, Any]: ...


#: Up-front estimate per image (Qwen-VL bills by tiles of 28×28 px; a typical photo is ~1,000).
IMAGE_TOKENS = 1024


def estimate_chat_tokens(body: bytes, settings: Any) -> int:
    """Prompt characters / 4 plus the completion budget; charged up front, reconciled after.

    Computed from the body itself, whatever its framing (Content-Length or chunked): a missing
    or lying header must not make a 20,000-word prompt cost the 256-token default.
    """
    default = settings.saas.default_completion_tokens
    try:
        parsed = orjson.loads(body)
        # OpenAI bodies have messages at the top; DashScope's native ones under "input"
        native = parsed.get("input") if isinstance(parsed.get("input"), dict) else {}
        messages = parsed.get("messages") or native.get("messages") or []
        chars, images = 0, 0
        for m in messages:
            if not isinstance(m, dict):
                continue
            content = m.get("content", "")
            if isinstance(content, list):  # an image part counts as IMAGE_TOKENS, not as its bytes
                images += sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
                content = [p for p in content if not (isinstance(p, dict) and p.get("type") == "image_url")]
            chars += len(orjson.dumps(content))
        tools = parsed.get("tools")
        if tools:  # tool definitions are billed as input tokens
            chars += len(orjson.dumps(tools))
        params = parsed.get("parameters") if isinstance(parsed.get("parameters"), dict) else {}
        budget = parsed.get("max_completion_tokens") or parsed.get("max_tokens") or params.get("max_tokens")
        budget = budget or default
        return chars // 4 + len(messages) * 4 + images * IMAGE_TOKENS + max(0, int(budget))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return default  # the route answers the bad body with a 400


def too_large_for_the_key(tokens: int, tpm: int) -> APIError:
    return APIError(
        400,
        f"This request needs about {tokens} tokens (prompt and max_tokens), more than this API key "
        f"may use in a minute ({tpm} tokens per minute); shorten the conversation or lower max_tokens.",
        code="request_exceeds_tpm",
    )


async def check_quota(
    services: Any,
    principal: Payer,
    quotas: dict[str, Any],
    names: tuple[str, ...],
    needed: dict[str, float] | None = None,
) -> None:
    try:
        await services.quota.check(principal.tenant, quotas, names, needed)
    except QuotaExceeded as exc:
        if services.metrics is not None:
            services.metrics.rate_limited(principal.tenant, "quota")
        raise APIError(
            429,
            str(exc),
            type="insufficient_quota",
            code="insufficient_quota",
            headers={"retry-after": str(exc.retry_after_s())},
        ) from None


async def charge_quota(request: HTTPConnection, principal: Payer, needed: dict[str, float]) -> None:
    """Refuse (429) a request whose measured size (e.g. the seconds of a decoded upload) does not
    fit what is left of the tenant's monthly quota, before any provider is called."""
    services = request.app.state.services
    quotas = principal.limits.get("quotas") or {}
    if principal.key_id is not None and services.quota is not None and quotas:
        await check_quota(services, principal, quotas, tuple(needed), needed)
