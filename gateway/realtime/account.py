"""What a realtime session may use and what it used: admission, per-turn limits, usage rows.

A session is one long connection, not a request. It takes its key's concurrency slot when it
opens and holds it until it closes (renewing the slot's lease in Redis while it lives); it is
checked against the tenant's quotas and the key's tokens-per-minute limit before every turn,
and books a usage row per turn (and per transcription) as soon as that turn ends, its
request id carrying the session id, so a dropped connection has already billed what was
produced. Anonymous sessions (auth off) and the admin key are booked but never limited,
as on the other routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from gateway.auth import Principal, rate_limited
from gateway.costs import check_quota
from gateway.errors import APIError
from policies.quota import QUOTAS_FOR_SCOPE
from policies.ratelimit import Limits

log = logging.getLogger("talkgate.realtime")

ROUTE = "/v1/realtime"
SCOPE = "realtime"
#: Renew the slot well inside the Redis lease (15 min by default).
RENEW_EVERY_S = 240.0


def estimate_tokens(messages: list[dict[str, Any]], budget: int) -> int:
    """Prompt characters / 4 plus the completion budget, as /v1/chat/completions charges up front."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return chars // 4 + len(messages) * 4 + max(0, budget)


class SessionAccount:
    def __init__(self, services: Any, principal: Principal, session_id: str) -> None:
        self.services = services
        self.principal = principal
        self.session_id = session_id
        self.limited = principal.key_id is not None and services.limiter is not None
        limits = principal.limits
        self.tpm = limits.get("tpm") if self.limited else None
        self.slot: str | None = None
        self._renewer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Quotas, then one request against rpm and the session's concurrency slot. Raises APIError."""
        principal = self.principal
        if principal.key_id is None:
            return
        await self._quota(QUOTAS_FOR_SCOPE[SCOPE])
        limits = Limits(principal.limits.get("rpm"), None, principal.limits.get("concurrency"))
        if not self.limited or not limits.any:
            return
        decision = await self.services.limiter.acquire(principal.key_id, limits)
        if not decision.allowed:
            self._count_refusal(decision.reason)
            raise rate_limited(decision.reason, decision, limits)
        self.slot = decision.slot
        if self.slot:
            self._renewer = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            with contextlib.suppress(Exception):
                await self.services.limiter.renew(self.principal.key_id, self.slot)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
        if self.slot:
            try:
                await self.services.limiter.release(self.principal.key_id, self.slot)
            except Exception:
                log.exception("releasing the realtime session's slot failed")
            self.slot = None

    async def _quota(self, names: tuple[str, ...], needed: dict[str, float] | None = None) -> None:
        quotas = self.principal.limits.get("quotas") or {}
        if self.principal.key_id is not None and self.services.quota is not None and quotas:
            await check_quota(self.services, self.principal, quotas, names, needed)

    def _count_refusal(self, reason: str | None) -> None:
        if self.services.metrics is not None:
            self.services.metrics.rate_limited(self.principal.tenant, reason or "requests")

    async def admit_transcription(self, seconds: float) -> None:
        await self._quota(("asr_seconds",), {"asr_seconds": seconds})

    async def admit_stream(self) -> None:
        """Before speech is streamed to a recogniser: refused once less than the shortest
        committable turn (100 ms) is left of the ASR seconds, e.g. spent by the tenant's other
        sessions or requests. The turn's length is known only at its commit, checked again there."""
        await self._quota(("asr_seconds",), {"asr_seconds": 0.1})

    async def admit_response(self, tokens: int) -> int:
        """Quota and tokens-per-minute check before a response; returns the tokens charged."""
        await self._quota(("tokens", "tts_chars"))
        if not self.tpm:
            return 0
        if tokens > self.tpm:
            raise APIError(
                400,
                f"This response needs about {tokens} tokens (conversation and max_output_tokens), more "
                f"than this API key may use in a minute ({self.tpm}); shorten the conversation or lower "
                "max_output_tokens.",
                code="request_exceeds_tpm",
            )
        limits = Limits(None, self.tpm, None)
        decision = await self.services.limiter.acquire(self.principal.key_id, limits, tokens)
        if not decision.allowed:
            self._count_refusal(decision.reason)
            raise rate_limited(decision.reason, decision, limits)
        return tokens

    async def book(self, turn_id: str, charged: int = 0, **row: Any) -> None:
        """One usage row; reconciles the tokens charged up front. Never raises."""
        actual = int(row.get("tokens_in", 0)) + int(row.get("tokens_out", 0))
        if self.tpm and actual != charged:
            try:
                await self.services.limiter.adjust_tokens(
                    self.principal.key_id, Limits(None, self.tpm, None), actual - charged
                )
            except Exception:
                log.exception("reconciling a realtime turn's tokens failed")
        if self.services.usage is None:
            return
        self.services.usage.add(
            {
                **row,
                "request_id": f"{self.session_id}:{turn_id}",
                "ts_ms": row.get("ts_ms") or int(time.time() * 1000),
                "key_id": self.principal.key_id,
                "tenant": self.principal.tenant,
                "route": ROUTE,
            }
        )


async def account_turn(
    account: SessionAccount | None,
    metrics: Any,
    turn: Any,
    status: str,
    charged: int,
    *,
    model: str | None,
    speech_end: float | None,
    transcribed: float | None,
) -> None:
    """The usage row of one response (``turn``: gateway/realtime/response.py), whatever its end (a
    dropped session books what was produced), and its metrics: per-stage latency from the end of
    the user's speech (``speech_end``) to the final transcript and to the first audio sent."""
    stats = turn.answer.stats if turn.answer is not None else None
    if account is not None:
        await account.book(
            turn.id,
            charged,
            tokens_in=turn.tokens_in,
            tokens_out=turn.tokens_out,
            characters=stats.tts_chars if stats else 0,
            provider=stats.providers.get("chat") if stats else None,
            model=model,
            fallback=stats.fallback if stats else False,
            latency_ms=(time.perf_counter() - turn.t0) * 1000.0,
            status={"completed": 200, "cancelled": 499}.get(status, 502),
        )
    if metrics is None or stats is None:
        return
    stages = {k: v for k, v in stats.marks.items() if k in ("llm_first_token", "tts_first_audio")}
    if speech_end is not None:
        if transcribed is not None and transcribed >= speech_end:
            stages["asr"] = transcribed - speech_end
        if turn.first_audio is not None:
            stages["first_audio"] = turn.first_audio - speech_end
    metrics.turn(status, stats.backend(), stats.fallback, stages)
