"""CosyVoice voice enrollment over DashScope's customization endpoint (REST, model ``voice-enrollment``).

Why not the SDK's ``VoiceEnrollmentService``: it retries every action, ``create_voice`` included,
on transport errors, so a create that timed out but succeeded server-side makes a second voice
(reference voice-emotion.md §1.8). Here a create is sent once; after a transport failure the
caller reconciles with ``list_voice(prefix)`` (the prefix is unique per enrolment), so a retry
never makes two provider voices. The sample goes inline as a base64 data URI: no third-party
hosting of a biometric recording.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from typing import Any

import httpx

PATH = "/services/audio/tts/customization"
MODEL = "voice-enrollment"


@dataclass
class EnrollmentError(Exception):
    """The provider refused or could not be reached (``status`` 0: transport failure)."""

    status: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


class EnrollmentClient:
    def __init__(self, base_url: str, api_key: str | None, timeout_s: float = 30.0) -> None:
        self.url = base_url.rstrip("/") + PATH
        self.api_key = api_key
        self.timeout_s = timeout_s

    async def _call(self, action: str, **fields: Any) -> dict[str, Any]:
        if not self.api_key:
            raise EnrollmentError(
                0, "NoApiKey", "no DashScope API key is configured: cloud voice enrollment is off"
            )
        body = {"model": MODEL, "input": {"action": action, **fields}, "parameters": {}}
        headers = {"Authorization": f"Bearer {self.api_key}"}
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                reply = await client.post(self.url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise EnrollmentError(0, "TransportError", f"{type(exc).__name__}: {exc}") from None
        try:
            data = reply.json()
        except ValueError:
            data = {}
        if reply.status_code != 200 or not isinstance(data, dict) or data.get("code"):
            raise EnrollmentError(
                reply.status_code, str(data.get("code") or ""), str(data.get("message") or reply.text[:200])
            )
        output = data.get("output")
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
