"""``emotion`` on /v1/audio/speech, through the official ``openai`` SDK (``extra_body``): the same voice
parameters per backend as the spoken answer (CosyVoice run-task parameters on the simulator's wire,
piper's tempo and loudness in the job its worker gets), the tag cut in "auto", bad values 400."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from gateway.conversation.emotion import voice_params
from tests.conftest import SimHandle


@pytest.fixture
def gateway(gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any]) -> Any:
    return run_gateway(gateway_settings())


@pytest.fixture
def sdk(gateway: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key="sk-gateway-unused", max_retries=0, timeout=120
    )


def speak(sdk: openai.OpenAI, text: str, **body: Any) -> Any:
    with sdk.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="alloy",
        input=text,
        response_format="wav",
        extra_body=body or None,
        extra_headers={"cache-control": "no-store"},  # every request reaches the provider
    ) as response:
        response.read()
        return response


def run_tasks(sim: SimHandle) -> list[dict[str, Any]]:
    return [
        q["body"]["payload"]["parameters"]
        for q in sim.requests("tts")
        if (q.get("body") or {}).get("header", {}).get("action") == "run-task"
    ]


@pytest.fixture
def texts(gateway: Any) -> list[str]:
    """The texts the speech route hands the router's TTS (the calls still go through)."""
    router = gateway.server.config.app.state.services.router
    seen: list[str] = []
    real = router.synthesize_stream

    async def synthesize_stream(request: Any, ctx: Any, skip: Any = None) -> Any:
        seen.append(request.text)
        return await real(request, ctx, skip=skip)

    router.synthesize_stream = synthesize_stream
    return seen


def test_emotion_reaches_cosyvoice_as_the_spoken_answer_maps_it(sdk: openai.OpenAI, sim: SimHandle) -> None:
    seen = {}
    for emotion in ("neutral", "happy", "sad", "gentle"):
        sim.clear_requests()
        response = speak(sdk, "The store opens at nine.", emotion=emotion)
        assert response.headers["x-talkgate-emotion"] == f"{emotion}; source=request"
        (params,) = run_tasks(sim)
        seen[emotion] = (params["instruction"], params["rate"], params["pitch"], params["volume"])
    assert seen["sad"] == ("你正在进行闲聊互动，你说话的情感是sad。", 0.9, 0.95, 42)
    assert seen["happy"][1:] == (1.08, 1.05, 58) and seen["gentle"][0].endswith("情感是neutral。")
    assert len(set(seen.values())) == 4  # every emotion its own parameters

    # the request's speed multiplies the emotion's rate (as the spoken answer's base speed 1.0 does)
    sim.clear_requests()
    speak(sdk, "The store opens at nine.", emotion="sad", speed=1.5)
    assert run_tasks(sim)[0]["rate"] == pytest.approx(1.5 * 0.9)

    # without the field (or "off"), speech is what it was: no instruction, neutral prosody
    for body in ({}, {"emotion": "off"}):
        sim.clear_requests()
        response = speak(sdk, "The store opens at nine.", **body)
        assert "x-talkgate-emotion" not in response.headers
        (params,) = run_tasks(sim)
        assert "instruction" not in params and (params["rate"], params["volume"]) == (1.0, 50)


def test_auto_takes_the_leading_tag_and_cuts_it_else_the_lexicon(
    sdk: openai.OpenAI, sim: SimHandle, texts: list[str]
) -> None:
    sim.clear_requests()
    response = speak(sdk, "[emotion:angry] This is unacceptable, frankly.", emotion="auto")
    assert response.headers["x-talkgate-emotion"] == "angry; source=tag"
    assert run_tasks(sim)[0]["volume"] == voice_params("angry")["volume"]
    assert texts == ["This is unacceptable, frankly."]

    sim.clear_requests()
    response = speak(sdk, "Congratulations, that is wonderful news! See you soon.", emotion="auto")
    assert response.headers["x-talkgate-emotion"] == "happy; source=lexicon"
    assert run_tasks(sim)[0]["instruction"].endswith("情感是happy。")

    # a tag is spoken as written unless the request asked for "auto" (as in the spoken answer)
    sim.clear_requests()
    speak(sdk, "[emotion:angry] Hello.", emotion="sad")
    assert texts[-1] == "[emotion:angry] Hello."
    assert run_tasks(sim)[0]["instruction"].endswith("情感是sad。")


def test_bad_emotion_is_an_openai_shaped_400(sdk: openai.OpenAI, sim: SimHandle) -> None:
    sim.clear_requests()
    for bad in ("sarcastic", "HAPPY", ""):
        with pytest.raises(openai.BadRequestError) as info:
            speak(sdk, "Hello.", emotion=bad)
        error = info.value.body
        assert error["param"] == "emotion" and error["code"] == "invalid_value", error
        assert "neutral" in error["message"]
    with pytest.raises(openai.BadRequestError) as info:
        speak(sdk, "[emotion:happy]  ", emotion="auto")  # nothing left to speak
    assert info.value.body["param"] == "input"
    assert sim.requests("tts") == []  # refused before any provider was asked


@pytest.mark.slow
def test_piper_gets_the_emotions_tempo_and_loudness(gateway: Any, sdk: openai.OpenAI, sim: SimHandle) -> None:
    provider = gateway.server.config.app.state.services.registry.get("tts", "local")
    piper = getattr(provider, "inner", provider)  # gateway/inflight.py wraps it
    jobs: list[dict[str, Any]] = []
    prepare = piper._prepare

    async def spy(request: Any) -> Any:
        name, job = await prepare(request)
        jobs.append(job)
        return name, job

    piper._prepare = spy
    sim.fault(service="tts", status=503, times=1000)  # the cloud voice fails: the local one speaks
    for emotion in ("neutral", "sad", "happy"):
        response = speak(sdk, "The museum opens late on Friday.", emotion=emotion)
        assert response.headers["x-talkgate-provider"].startswith("local:")
    neutral, sad, happy = jobs[-3:]
    assert sad["volume"] == 0.7 and neutral["volume"] == 1.0 == happy["volume"]
    # tempo: piper's length scale divided by the emotion's rate
    assert sad["length_scale"] == pytest.approx(neutral["length_scale"] / 0.9)
    assert happy["length_scale"] == pytest.approx(neutral["length_scale"] / 1.08)
