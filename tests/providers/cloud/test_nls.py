"""The NLS providers and their token source against the simulated NLS (CreateToken and /ws/v1)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from providers.base import AudioData, ErrorKind, ProviderError, SynthesizeRequest, TranscribeRequest
from providers.cloud.nls import NlsASRProvider, NlsTTSProvider, build_client, speech_rate
from tests.conftest import SimHandle
from tests.nls_support import NLS_APPKEY, NLS_APPKEY_8K, NLS_SECRET, nls_settings, reset_nls
from tests.sounds import sine_pcm


@pytest.fixture
async def make_nls(sim: SimHandle, gateway_settings: Callable[..., Any]) -> AsyncIterator[Callable[..., Any]]:
    """Loaded (asr, tts) providers on one client for given ``nls`` overrides; unloaded at teardown."""
    reset_nls(sim)
    built: list[tuple[NlsASRProvider, NlsTTSProvider]] = []

    async def make(**nls: Any) -> tuple[NlsASRProvider, NlsTTSProvider]:
        settings = gateway_settings(nls=nls_settings(sim.nls_port, **nls), upstream_timeout_s=10.0)
        client = build_client(settings)
        pair = (NlsASRProvider(settings, client), NlsTTSProvider(settings, client))
        for provider in pair:
            await provider.load()
        built.append(pair)
        return pair

    yield make
    for pair in built:
        for provider in pair:
            await provider.unload()
    reset_nls(sim)


def speech(seconds: float, rate: int) -> AudioData:
    return AudioData(sine_pcm(seconds, rate), rate)


async def test_concurrent_requests_share_one_create_token(sim: SimHandle, make_nls: Any) -> None:
    asr, _ = await make_nls()
    tokens = asr.client.tokens
    got = await asyncio.gather(*(tokens.get() for _ in range(50)))
    assert len(set(got)) == 1 and sim.nls.created == 1
    assert tokens.stats.fetches == 1 and tokens.stats.waits == 50
    assert await tokens.get() == got[0] and tokens.stats.hits == 1


async def test_token_is_refreshed_in_the_background_before_it_expires(sim: SimHandle, make_nls: Any) -> None:
    sim.nls.config.token_ttl_s = 12.0  # shorter than twice the 600 s margin: refreshed at half life
    asr, _ = await make_nls()
    tokens = asr.client.tokens
    first = await tokens.get()
    assert sim.nls.created == 1
    deadline = time.monotonic() + 10
    while sim.nls.created < 2 and time.monotonic() < deadline:  # noqa: ASYNC110 - polls another thread
        await asyncio.sleep(0.1)
    assert sim.nls.created == 2, "the refresher did not replace the token at half its life"
    second = await tokens.get()
    assert second != first and tokens.stats.waits == 1  # no caller waited for the refresh
    assert sim.nls.token_problem(first) is None  # the old token stays valid (as on NLS)


async def test_transient_token_failures_are_retried_and_bad_credentials_are_not(
    sim: SimHandle, make_nls: Any
) -> None:
    sim.fault(service="nls-token", status=503, times=2)
    asr, _ = await make_nls()
    assert await asr.client.tokens.get()
    assert [r["status"] for r in sim.requests("nls-token")] == [503, 503, 200]
    assert asr.client.tokens.stats.failures == 2
    sim.clear_requests()
    bad, _ = await make_nls(access_key_secret="wrong-secret")
    with pytest.raises(ProviderError) as caught:
        await bad.client.tokens.get()
    assert caught.value.kind is ErrorKind.AUTH and caught.value.code == "SignatureDoesNotMatch"
    assert len(sim.requests("nls-token")) == 1  # one attempt: retrying cannot fix a secret


async def test_transcribe_16k_and_8k_projects(sim: SimHandle, make_nls: Any) -> None:
    sim.control("PUT", "/sim/config", json={"asr_transcript": "Hello there. Order number four."})
    try:
        asr, _ = await make_nls()
        audio = speech(2.0, 16000)
        for model, appkey, rate in (
            ("transcriber-16k", NLS_APPKEY, 16000),
            ("transcriber-8k", NLS_APPKEY_8K, 8000),
        ):
            result = await asr.transcribe(TranscribeRequest(model=model, audio=audio))
            assert result.text == "Hello there. Order number four."
            assert [s.text for s in result.segments] == ["Hello there.", "Order number four."]
            assert 0 <= result.segments[0].start < result.segments[0].end <= result.segments[1].start
            assert result.segments[1].words and result.segments[1].words[-1].end <= 2.0
            logged = sim.requests("nls-asr")[-1]
            assert logged["model"] == appkey
            assert logged["body"]["payload"]["sample_rate"] == rate
            assert logged["audio_bytes"] == 2 * rate * 2  # resampled to the project's rate
        assert sim.nls.created == 1
    finally:
        sim.control("DELETE", "/sim/config")


async def test_synthesize_splits_text_beyond_300_characters(sim: SimHandle, make_nls: Any) -> None:
    _, tts = await make_nls()
    text = "Your order has shipped and will arrive tomorrow. " * 8  # 392 characters
    result = await tts.synthesize(
        SynthesizeRequest(model="synthesizer", text=text, voice="alloy", speed=1.25, sample_rate=16000)
    )
    samples = np.frombuffer(result.audio.pcm, "<i2")
    assert result.audio.sample_rate == 16000 and len(samples) / 16000 > 10 and np.abs(samples).max() > 1000
    tasks = sim.requests("nls-tts")
    assert len(tasks) == 2 and sum(t["text_chars"] for t in tasks) == len(text)
    payload = tasks[0]["body"]["payload"]
    assert payload["voice"] == "xiaoyun" and payload["speech_rate"] == speech_rate(1.25) == 100
    chunks = [c async for c in tts.synthesize_stream(SynthesizeRequest("synthesizer", "Hi there.", "siqi"))]
    assert len(chunks) >= 2 and sim.requests("nls-tts")[-1]["body"]["payload"]["voice"] == "siqi"


@pytest.mark.parametrize(
    ("fault", "kind", "code"),
    [
        ({"status": 429}, ErrorKind.RATE_LIMITED, "40000005"),
        ({"status": 500}, ErrorKind.RETRYABLE, "50000000"),
        ({"status": 403, "code": "40020106"}, ErrorKind.AUTH, "40020106"),
        ({"status": 400, "code": "41010101"}, ErrorKind.BAD_REQUEST, "41010101"),
    ],
)
async def test_task_failures_map_to_the_taxonomy(
    sim: SimHandle, make_nls: Any, fault: dict[str, Any], kind: ErrorKind, code: str
) -> None:
    asr, _ = await make_nls()
    sim.fault(service="nls-asr", times=1, **fault)
    with pytest.raises(ProviderError) as caught:
        await asr.transcribe(TranscribeRequest(model="transcriber-16k", audio=speech(0.5, 16000)))
    assert (caught.value.kind, caught.value.code, caught.value.provider) == (kind, code, "nls")


async def test_a_refused_token_is_dropped_and_refetched(sim: SimHandle, make_nls: Any) -> None:
    asr, _ = await make_nls()
    request = TranscribeRequest(model="transcriber-16k", audio=speech(0.5, 16000))
    await asr.transcribe(request)
    sim.nls.tokens.clear()  # NLS forgot the token (revoked): the next handshake gets 403
    with pytest.raises(ProviderError) as caught:
        await asr.transcribe(request)
    assert caught.value.kind is ErrorKind.AUTH and caught.value.status == 403
    await asr.transcribe(request)  # a fresh token, fetched because the old one was dropped
    assert sim.nls.created == 2


async def test_secrets_never_reach_logs_or_reprs(
    sim: SimHandle, make_nls: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    asr, _ = await make_nls()
    sim.fault(service="nls-token", status=500, times=1)
    await asr.transcribe(TranscribeRequest(model="transcriber-16k", audio=speech(0.3, 16000)))
    bad, _ = await make_nls(access_key_secret="wrong-secret-value")
    with pytest.raises(ProviderError):
        await bad.client.tokens.get()
    text = caplog.text + repr(asr.settings) + repr(asr.settings.nls)
    for secret in (NLS_SECRET, "wrong-secret-value", NLS_APPKEY, *sim.nls.tokens):
        assert secret not in text


async def test_a_short_lived_token_is_still_served_from_the_cache(sim: SimHandle, make_nls: Any) -> None:
    sim.nls.config.token_ttl_s = 4.0  # shorter than the 5 s expiry slack: a tenth of its life applies
    asr, _ = await make_nls()
    tokens = asr.client.tokens
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        await tokens.get()
        await asyncio.sleep(0.02)
    assert tokens.stats.waits == 1 and tokens.stats.hits > 50
    assert sim.nls.created >= 2  # replaced in the background at half its life
