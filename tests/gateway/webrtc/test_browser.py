"""The live avatar page in real headless Chromium: a spoken question in, a talking face out.

The microphone is a WAV of a question spoken by the local TTS (piper), played by Chromium's
fake capture device; the gateway's server VAD hears it, the simulator transcribes and answers
it, and the answer comes back over WebRTC as Opus audio and VP8 video of the avatar. The test
reads what a person would see (the transcript on the page, the backend label) and what the
browser's WebRTC stack measured (frames decoded, audio energy received).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.webrtc.browser import ARTIFACTS, chromium_path, launch_args, question_wav
from tests.lipsync.media import astronaut_png

QUESTION = "What time does the store open?"
ANSWER = "The store opens at nine in the morning and closes at eight in the evening."

STATS_JS = """async () => {
  const pc = window.talkgate.pc;
  const out = {t: performance.now(), width: document.getElementById('remote').videoWidth};
  if (!pc) return out;
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') out.frames = s.framesDecoded || 0;
    if (s.type === 'inbound-rtp' && s.kind === 'audio') { out.energy = s.totalAudioEnergy || 0; out.samples = s.totalSamplesReceived || 0; }
  });
  return out;
}"""


@pytest.fixture
def live_gateway(
    gateway_settings: Callable[..., Any], run_gateway: Callable[..., Any], sim: Any
) -> Iterator[Any]:
    sim.control(
        "PUT", "/sim/config", json={"answers": {QUESTION: ANSWER}, "asr_transcript": QUESTION}
    ).raise_for_status()
    try:
        yield run_gateway(gateway_settings())
    finally:
        sim.control("DELETE", "/sim/config")


def _avatar(server: Any) -> str:
    r = httpx.post(
        f"{server.url}/v1/avatars", files={"image": ("me.png", astronaut_png(), "image/png")}, timeout=60
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _run_page(server: Any, tmp_path: Path, name: str, check: Callable[[Any], None]) -> None:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    wav = tmp_path / "question.wav"
    question_wav(wav, [QUESTION], lead_s=3.0, gap_s=60.0)
    avatar_id = _avatar(server)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable,
            headless=True,
            args=launch_args(wav),
            ignore_default_args=["--mute-audio"],
        )
        try:
            context = browser.new_context(
                permissions=["microphone"], viewport={"width": 1100, "height": 800}, bypass_csp=True
            )  # the page's CSP forbids eval; Playwright's string predicates need it
            page = context.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text))
            page.goto(f"{server.url}/demo?avatar_id={avatar_id}")
            page.click("#connect")
            try:
                page.wait_for_function(
                    "window.talkgate.dc && window.talkgate.dc.readyState === 'open'", timeout=20000
                )
                check(page)
            finally:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
                print("console:", console[-20:], "errors:", page.evaluate("window.talkgate.errors"))
        finally:
            browser.close()


def _media_flows(page: Any) -> None:
    """Video decodes at >= 20 fps with a real size; audio with energy arrived while it spoke."""
    page.wait_for_function("document.getElementById('remote').videoWidth > 0", timeout=15000)
    first = page.evaluate(STATS_JS)
    page.wait_for_timeout(3000)
    second = page.evaluate(STATS_JS)
    fps = (second["frames"] - first["frames"]) / ((second["t"] - first["t"]) / 1000)
    assert second["width"] > 0
    assert fps >= 20, (first, second)


def test_spoken_question_gets_a_spoken_answer_with_a_live_face(live_gateway: Any, tmp_path: Path) -> None:
    def check(page: Any) -> None:
        _media_flows(page)
        idle = page.evaluate(STATS_JS)
        page.wait_for_selector(f"#transcript li.user >> text={QUESTION}", timeout=30000)
        page.wait_for_function(
            f"[...document.querySelectorAll('#transcript li.assistant .text')].some(e => e.textContent.includes({ANSWER[:30]!r}))",
            timeout=30000,
        )
        page.wait_for_function(
            "window.talkgate.events.some(e => e.type === 'output_audio_buffer.stopped')", timeout=30000
        )
        page.wait_for_timeout(1500)  # the browser's jitter buffer plays the last of it
        spoken = page.evaluate(STATS_JS)
        page.wait_for_timeout(2000)
        after = page.evaluate(STATS_JS)
        speech_energy = spoken["energy"] - idle["energy"]
        silence_energy = after["energy"] - spoken["energy"]
        assert speech_energy > 1e-3, (idle, spoken)
        assert speech_energy > 20 * silence_energy, (idle, spoken, after)
        assistant = page.locator("#transcript li.assistant").first
        assert assistant.get_attribute("data-backend") == "cloud"
        assert assistant.get_attribute("data-latency") is not None  # the per-turn latency is shown
        latencies = page.evaluate("window.talkgate.latencies")
        assert latencies and 0 < latencies[0] < 15000
        _media_flows(page)  # still flowing while it listens again

    _run_page(live_gateway, tmp_path, "live-avatar", check)


@pytest.mark.slow
def test_cloud_failure_is_answered_by_the_local_model_and_the_page_says_so(
    live_gateway: Any, sim: Any, tmp_path: Path
) -> None:
    sim.fault(service="generation", status=500)  # every cloud chat model fails

    def check(page: Any) -> None:
        page.wait_for_selector(f"#transcript li.user >> text={QUESTION}", timeout=30000)
        page.wait_for_function(
            "[...document.querySelectorAll('#transcript li.assistant')].some(e => e.dataset.backend)",
            timeout=120000,
        )
        assistant = page.locator("#transcript li.assistant").first
        assert assistant.get_attribute("data-backend") == "fallback"
        assert (assistant.get_attribute("data-provider") or "").startswith("local:")
        page.wait_for_function(
            "[...document.querySelectorAll('#transcript li.assistant .text')].some(e => e.textContent.trim().length > 3)",
            timeout=120000,
        )
        meta = assistant.locator(".meta").inner_text()
        assert "fallback" in meta and "local model" in meta, meta
        _media_flows(page)

    _run_page(live_gateway, tmp_path, "live-avatar-fallback", check)
