"""Voice enrollment over DashScope's customization endpoint, for CosyVoice and for Qwen-TTS.

Both flavours post one envelope ``{"model", "input": {"action", ...}}`` to the same path
(reference voice-emotion.md §1.1-1.10) through the gateway's DashScope client (its keep-alive
pool and egress proxy, like every other cloud call):

- CosyVoice (model ``voice-enrollment``): ``create_voice`` answers a ``voice_id`` that is under
  review (``DEPLOYING``) until ``query_voice`` says ``OK`` or ``UNDEPLOYED``.
- Qwen-TTS (model ``qwen-voice-enrollment``, targets ``qwen3-tts-vc-*``): ``create`` answers the
  voice name at once and it is usable at once; ``list`` pages through the account's voices and
  ``delete`` takes the name.

Why not the SDK's ``VoiceEnrollmentService``: it retries every action, ``create_voice`` included,
on transport errors, so a create that timed out but succeeded server-side makes a second voice
(§1.8). Here a create is sent once; after a transport failure the caller reconciles by the
enrolment's unique prefix (``find``), so a retry never makes two provider voices. The sample goes
inline as a base64 data URI: no third-party hosting of a biometric recording.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from typing import Any

from providers.base import ErrorKind, ProviderError

PATH = "services/audio/tts/customization"
MODEL = "voice-enrollment"
QWEN_MODEL = "qwen-voice-enrollment"
#: Qwen-TTS lists its voices in pages of at most this many (the reconciliation scans them all).
QWEN_PAGE = 100
#: Kinds of failure after which a create may still have landed at the provider.
_UNCERTAIN = frozenset({ErrorKind.TIMEOUT, ErrorKind.UNAVAILABLE, ErrorKind.RETRYABLE})


def is_qwen_target(target_model: str) -> bool:
    """Qwen-TTS clone targets (``qwen3-tts-vc-…``); everything else is enrolled as CosyVoice."""
    return target_model.startswith("qwen")


@dataclass
class EnrollmentError(Exception):
    """The provider refused or could not be reached (``status`` 0: the outcome is unknown)."""

    status: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


class EnrollmentClient:
    """CosyVoice enrollment; ``dashscope`` is the gateway's providers.cloud.client.DashScopeClient
    (None when no cloud key is configured: every call is refused with ``NoApiKey``)."""

    model = MODEL

    def __init__(self, dashscope: Any | None) -> None:
        self.dashscope = dashscope

    async def _call(self, action: str, **fields: Any) -> dict[str, Any]:
        if self.dashscope is None or not self.dashscope.configured:
            raise EnrollmentError(
                0, "NoApiKey", "no DashScope API key is configured: cloud voice enrollment is off"
            )
        body = {"model": self.model, "input": {"action": action, **fields}, "parameters": {}}
        try:
            reply = await self.dashscope.post_json(PATH, body)
        except ProviderError as exc:
            status = 0 if exc.status is None and exc.kind in _UNCERTAIN else exc.status or 502
            raise EnrollmentError(status, exc.code or "", exc.message) from None
        output = reply.get("output")
        return output if isinstance(output, dict) else {}

    async def create(self, target_model: str, prefix: str, wav: bytes, language: str) -> str:
        url = "data:audio/wav;base64," + base64.b64encode(wav).decode()
        out = await self._call(
            "create_voice", target_model=target_model, prefix=prefix, url=url, language_hints=[language]
        )
        return str(out["voice_id"])

    async def find(self, prefix: str) -> str | None:
        """The voice created under ``prefix`` (reconciliation after an uncertain create), or None."""
        out = await self._call("list_voice", prefix=prefix, page_index=0, page_size=10)
        found = [v.get("voice_id") for v in out.get("voice_list") or [] if isinstance(v, dict)]
        return str(found[0]) if found else None

    async def status(self, voice_id: str) -> str:
        out = await self._call("query_voice", voice_id=voice_id)
        return str(out.get("status") or "")

    async def delete(self, voice_id: str) -> None:
        await self._call("delete_voice", voice_id=voice_id)

    async def create_once(self, target_model: str, prefix: str, wav: bytes, language: str) -> str:
        """Reuse the voice already under ``prefix``; else create it; after a transport failure
        look again before giving up (the create may have landed)."""
        existing = await self.find(prefix)
        if existing:
            return existing
        try:
            return await self.create(target_model, prefix, wav, language)
        except EnrollmentError as exc:
            if exc.status != 0:
                raise
            landed = await self.find(prefix)
            if landed:
                return landed
            raise

    async def wait_ready(self, voice_id: str, interval_s: float, timeout_s: float) -> str:
        """Poll ``query_voice`` until the review ends: returns "OK" or "UNDEPLOYED" (or the last
        status seen when ``timeout_s`` runs out)."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = await self.status(voice_id)
            if status != "DEPLOYING" or time.monotonic() >= deadline:
                return status
            await asyncio.sleep(interval_s)


class QwenEnrollmentClient(EnrollmentClient):
    """Qwen-TTS enrollment: the same reconciliation by prefix, no review to wait for.

    The prefix is sent as ``preferred_name``, which Bailian puts inside the voice name it makes
    (``qwen-tts-vc-<name>-voice-<timestamp>-<hex>``): ``find`` recognises the enrolment's voice
    by it. The sample must be at least 24 kHz mono (the caller resamples).
    """

    model = QWEN_MODEL

    async def create(self, target_model: str, prefix: str, wav: bytes, language: str) -> str:
        data = "data:audio/wav;base64," + base64.b64encode(wav).decode()
        out = await self._call(
            "create", target_model=target_model, preferred_name=prefix, audio={"data": data}
        )
        return str(out["voice"])

    async def _voices(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in range(1000):  # bounded: the account holds at most a few thousand voices
            out = await self._call("list", page_index=page, page_size=QWEN_PAGE)
            batch = [v for v in out.get("voice_list") or [] if isinstance(v, dict)]
            found += batch
            if len(batch) < QWEN_PAGE:
                break
        return found

    async def find(self, prefix: str) -> str | None:
        marker = f"-{prefix}-"
        names = [str(v.get("voice")) for v in await self._voices() if marker in str(v.get("voice"))]
        return names[0] if names else None

    async def status(self, voice_id: str) -> str:
        """ "OK" while the account lists the voice (Qwen-TTS voices need no review), else ""."""
        return "OK" if any(v.get("voice") == voice_id for v in await self._voices()) else ""

    async def delete(self, voice_id: str) -> None:
        await self._call("delete", voice=voice_id)


def client_for(target_model: str, dashscope: Any | None) -> EnrollmentClient:
    """The enrollment flavour of ``target_model``, over the gateway's DashScope client."""
    return (QwenEnrollmentClient if is_qwen_target(target_model) else EnrollmentClient)(dashscope)
