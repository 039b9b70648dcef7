"""Real headless Chromium for the live-avatar page: Debian's ``chromium`` driven by Playwright.

The fake-media switches make ``getUserMedia`` play a WAV file as the microphone (it starts
when the page opens the microphone). ``CI=true`` turns a missing browser into a failure:
a test that silently skips in CI proves nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from providers.wav import float_to_pcm16, resample
from tests.sounds import piper_speech, wav_of

#: Where screenshots go for a person to look at (build/ is ignored by git).
ARTIFACTS = Path(os.environ.get("TALKGATE_TEST_ARTIFACTS", "build/test-artifacts"))
FAKE_MIC_RATE = 48000


def chromium_path() -> str:
    """The system Chromium, or skip (fail under CI=true) with what to install."""
    found = (
        os.environ.get("TALKGATE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        found = None
    if found:
        return found
    message = "needs Debian's chromium (apt-get install -y chromium) and playwright (pip install playwright)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI=true: " + message)
    pytest.skip(message)


def launch_args(wav: Path) -> list[str]:
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
        "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox",
        "--disable-gpu",
    ]


def question_wav(path: Path, questions: list[str], lead_s: float = 3.0, gap_s: float = 10.0) -> list[float]:
    """A microphone recording: ``lead_s`` of silence, then each question spoken by piper
    followed by ``gap_s`` of silence (time to answer). Returns where each question ends (s)."""
    pieces = [np.zeros(int(lead_s * FAKE_MIC_RATE), np.float32)]
    ends = []
    t = lead_s
    for text in questions:
        signal, rate = piper_speech(text)
        speech = resample(signal, rate, FAKE_MIC_RATE).astype(np.float32)
        pieces += [speech, np.zeros(int(gap_s * FAKE_MIC_RATE), np.float32)]
        t += speech.size / FAKE_MIC_RATE
        ends.append(t)
        t += gap_s
    pcm = float_to_pcm16(np.concatenate(pieces)).tobytes()
    path.write_bytes(wav_of(pcm, FAKE_MIC_RATE))
    return ends
