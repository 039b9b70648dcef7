"""Enrolment of a cloned voice: statement → recordings → local checks → consent record → provider.

Order matters: every local check runs (and all their results are reported) before the sample
leaves the gateway, and the consent record is written, using up the one-time code, before the
provider is called. A retried request (same tenant, code and recordings: the request hash) finds
its record and resumes it, and the provider call reuses the voice already under the record's
prefix, so retries never create two provider voices. Nothing but hashes of the recordings is
kept: the sample is sent to the provider inline and dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.db.models import Voice
from gateway.voices import checks
from gateway.voices.provider import EnrollmentClient, EnrollmentError, is_qwen_target
from gateway.voices.statement import LANGUAGES, make_statement, new_code
from gateway.voices.store import VoiceStore, challenge_row, new_voice_id, now, provider_prefix
from providers.base import AudioData, TranscribeRequest
from providers.wav import float_to_pcm16, pcm16_to_float, pcm_to_wav, resample

CHECK_RATE = checks.RATE
#: the sample is decoded at 24 kHz for the provider (Qwen-TTS cloning needs ≥ 24 kHz, CosyVoice ≥ 16 kHz)
UPLOAD_RATE = 24000
FALLBACKS = ("local", "refuse")


class EnrolmentRefused(Exception):
    """A request-level refusal with its HTTP status and error code (the route makes the API error)."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


@dataclass
class Recording:
    data: bytes
    audio: AudioData  # decoded, mono PCM16

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def request_hash(tenant: str, code: str, sample: bytes, consent: bytes) -> str:
    h = hashlib.sha256()
    for part in (
        tenant.encode(),
        code.encode(),
        hashlib.sha256(sample).digest(),
        hashlib.sha256(consent).digest(),
    ):
        h.update(len(part).to_bytes(4, "big") + part)
    return h.hexdigest()


async def issue_statement(
    store: VoiceStore,
    config: Any,
    *,
    tenant: str,
    key_id: str | None,
    purpose: str,
    language: str,
    speaker: str,
) -> dict[str, Any]:
    if language not in LANGUAGES:
        raise EnrolmentRefused(
            400, f"language must be one of {', '.join(LANGUAGES)}", "invalid_language", "language"
        )
    code = new_code()
    statement = make_statement(
        tenant=tenant,
        purpose=purpose,
        operator=config.operator_name,
        code=code,
        language=language,
        speaker=speaker,
    )
    row = challenge_row(
        code=code, tenant=tenant, key_id=key_id, purpose=purpose, language=language, statement=statement,
        ttl_s=config.statement_ttl_s,
    )  # fmt: skip
    await store.add_challenge(row)
    return {
        "object": "voice.consent_statement",
        "code": code,
        "statement": statement,
        "language": language,
        "purpose": purpose,
        "tenant": tenant,
        "expires_at": row.expires_at.isoformat(),
    }


def _to_check_rate(audio: AudioData) -> AudioData:
    if audio.sample_rate == CHECK_RATE:
        return audio
    samples = resample(pcm16_to_float(audio.pcm), audio.sample_rate, CHECK_RATE)
    return AudioData(float_to_pcm16(samples).tobytes(), CHECK_RATE)


class AsrAccount(Protocol):
    """The tenant's ASR quota and usage for the consent transcription (the route's request)."""

    async def admit(self, seconds: float) -> None:
        """Refuse (429) before any check runs when ``seconds`` do not fit the tenant's quota."""

    def book(self, seconds: float, provider: str | None) -> None:
        """Add the transcribed seconds (and the ASR target) to the request's usage row."""


async def run_checks(
    router: Any,
    ctx: Any,
    config: Any,
    statement: str,
    code: str,
    language: str,
    sample: AudioData,
    consent: AudioData,
    asr: AsrAccount | None = None,
) -> dict[str, Any]:
    """Every local check, each with its figures; ``ok`` is False if any check failed.

    The consent transcription is ASR like any other: admitted against the tenant's ``asr_seconds``
    quota before anything runs, booked on the request's usage row once it ran.
    """
    if asr is not None:
        await asr.admit(consent.duration_s)
    sample16 = _to_check_rate(sample)
    results: dict[str, Any] = {
        "sample_duration": checks.duration_check(sample, config.sample_min_s, config.sample_max_s),
        "consent_duration": checks.duration_check(consent, config.consent_min_s, config.sample_max_s),
        "sample_speech": await checks.speech_check(sample16, config.min_speech_s),
        "consent_speech": await checks.speech_check(consent, config.min_speech_s),
    }
    transcript = await router.transcribe(TranscribeRequest(model="", audio=consent, language=language), ctx)
    provider = getattr(ctx, "provider", None)
    if asr is not None:
        asr.book(consent.duration_s, provider)
    results["consent_transcript"] = checks.transcript_check(
        statement, code, transcript.text, config.transcript_match_threshold
    )
    results["consent_transcript"]["asr_provider"] = provider
    results["consent_transcript"]["asr_seconds"] = round(consent.duration_s, 3)
    results["speaker"] = await checks.speaker_check(
        sample16, consent, config.speaker_check, config.speaker_threshold
    )
    return results


def failed_checks(results: dict[str, Any]) -> list[str]:
    return [name for name, result in results.items() if result.get("ok") is False]


def describe_failures(results: dict[str, Any]) -> str:
    parts = []
    for name in failed_checks(results):
        r = results[name]
        if name == "speaker":
            parts.append(
                f"speaker: the two recordings are not the same voice (similarity {r['similarity']} < {r['threshold']})"
            )
        elif name == "consent_transcript":
            if r["score"] < r["threshold"]:
                parts.append(
                    f"consent_transcript: the recording does not match the statement "
                    f"(score {r['score']} < {r['threshold']})"
                )
            if not r["code_spoken"]:
                parts.append("consent_transcript: the one-time code was not heard in the recording")
        elif name.endswith("_speech"):
            parts.append(f"{name}: {r['speech_s']} s of speech, at least {r['min_speech_s']} s needed")
        else:
            parts.append(f"{name}: {r['seconds']} s, must be within {r['min_s']}-{r['max_s']} s")
    return "; ".join(parts)


async def enrol(
    *,
    store: VoiceStore,
    client: EnrollmentClient,
    router: Any,
    ctx: Any,
    config: Any,
    tenant: str,
    key_id: str | None,
    code: str,
    name: str,
    fallback: str,
    sample: Recording,
    consent: Recording,
    asr: AsrAccount | None = None,
) -> tuple[Any, bool]:
    """The voice (a ``Voice`` row) and whether it is new (False: a retried request found its record).

    ``asr``: the tenant's quota and usage for the consent transcription (a replay runs no ASR)."""
    rhash = request_hash(tenant, code, sample.data, consent.data)
    voice = await store.by_request(tenant, rhash)
    if voice is not None:
        if voice.status == "pending":
            await _provision(store, client, config, voice, sample, key_id)
        return voice, False
    challenge = await store.challenge(tenant, code)
    if challenge is None:
        raise EnrolmentRefused(
            400,
            "unknown consent code: get a statement from /v1/voices/consent first",
            "invalid_consent_code",
            "code",
        )
    if challenge.used_at is not None:
        raise EnrolmentRefused(
            400, "this consent code was already used: get a new statement", "consent_code_used", "code"
        )
    if challenge.expires_at <= now():
        raise EnrolmentRefused(
            400, "this consent code has expired: get a new statement", "consent_code_expired", "code"
        )
    if await store.count(tenant) >= config.max_voices_per_tenant:
        raise EnrolmentRefused(
            403,
            f"this tenant already has {config.max_voices_per_tenant} voices: delete one first",
            "voice_limit",
        )
    results = await run_checks(
        router, ctx, config, challenge.statement, code, challenge.language, sample.audio, consent.audio, asr
    )
    if results["speaker"].get("status") == "error":
        raise EnrolmentRefused(503, "the speaker check could not run; try again", "speaker_check_error")
    if failed_checks(results):
        raise EnrolmentRefused(
            422, "consent checks failed: " + describe_failures(results), "consent_check_failed"
        )
    voice_id = new_voice_id()
    voice = Voice(
        id=voice_id, tenant=tenant, key_id=key_id, name=name, purpose=challenge.purpose,
        language=challenge.language, statement=challenge.statement, code=code, request_hash=rhash,
        sample_sha256=sample.sha256, consent_sha256=consent.sha256, checks=results, provider="bailian",
        target_model=config.target_model, provider_prefix=provider_prefix(voice_id), provider_voice_id=None,
        provider_status=None, fallback=fallback, status="pending", created_at=now(), use_count=0,
    )  # fmt: skip
    detail = {
        "sample_sha256": sample.sha256, "consent_sha256": consent.sha256, "checks": _verdicts(results),
        # the usage row that booked the consent transcription is this request's
        "request_id": getattr(ctx, "request_id", None), "asr_seconds": round(consent.audio.duration_s, 3),
    }  # fmt: skip
    if not await store.create(voice, code, detail):
        again = await store.by_request(tenant, rhash)  # a concurrent retry got there first
        if again is None:
            raise EnrolmentRefused(
                400, "this consent code was already used: get a new statement", "consent_code_used", "code"
            )
        return again, False
    await _provision(store, client, config, voice, sample, key_id)
    return voice, True


def _verdicts(results: dict[str, Any]) -> dict[str, Any]:
    return {name: r.get("ok") if r.get("ok") is not None else r.get("status") for name, r in results.items()}


#: Qwen-TTS clones only from recordings of at least 24 kHz (reference voice-emotion.md §1.10).
QWEN_MIN_RATE = 24000


def _provider_wav(audio: AudioData, target_model: str) -> bytes:
    """The sample as the provider takes it: a 16-bit mono WAV, raised to 24 kHz for Qwen-TTS
    (upsampling adds no detail, it only meets the format rule)."""
    pcm, rate = audio.pcm, audio.sample_rate
    if is_qwen_target(target_model) and rate < QWEN_MIN_RATE:
        pcm = float_to_pcm16(resample(pcm16_to_float(pcm), rate, QWEN_MIN_RATE)).tobytes()
        rate = QWEN_MIN_RATE
    return pcm_to_wav(pcm, rate)


async def _provision(
    store: VoiceStore,
    client: EnrollmentClient,
    config: Any,
    voice: Any,
    sample: Recording,
    key_id: str | None,
) -> None:
    """Create the provider voice once and wait (a bounded time) for its review to end."""
    if voice.provider_voice_id is None:
        wav = _provider_wav(sample.audio, config.target_model)
        try:
            voice_id = await client.create_once(
                config.target_model, voice.provider_prefix, wav, voice.language
            )
        except EnrollmentError as exc:
            if exc.status == 0:  # uncertain: stay pending, a retry reconciles by prefix
                await store.set(voice, "provider_error", {"error": str(exc)}, key_id)
                raise EnrolmentRefused(
                    502, f"voice enrollment could not reach the provider: {exc}", "provider_unreachable"
                ) from None
            await store.set(
                voice, "failed", {"error": str(exc), "status": exc.status}, key_id, status="failed"
            )
            raise EnrolmentRefused(
                502, f"the provider refused the voice: {exc}", "provider_refused"
            ) from None
        await store.set(
            voice, "provider_create", {"provider_voice_id": voice_id, "target_model": config.target_model},
            key_id, provider_voice_id=voice_id, provider_status="DEPLOYING",
        )  # fmt: skip
    await refresh(store, client, voice, key_id, config.poll_interval_s, config.inline_wait_s)


async def refresh(
    store: VoiceStore,
    client: EnrollmentClient,
    voice: Any,
    key_id: str | None,
    interval_s: float,
    wait_s: float,
) -> None:
    """Bring a pending voice's status up to date from the provider (polling up to ``wait_s``)."""
    if voice.status != "pending" or voice.provider_voice_id is None:
        return
    try:
        status = await client.wait_ready(voice.provider_voice_id, interval_s, wait_s)
    except EnrollmentError:
        return  # still pending; the next GET asks again
    if status == "OK":
        await store.set(
            voice,
            "ready",
            {"provider_status": status},
            key_id,
            status="active",
            provider_status=status,
            ready_at=now(),
        )
    elif status and status != "DEPLOYING":
        await store.set(
            voice, "failed", {"provider_status": status}, key_id, status="failed", provider_status=status
        )
