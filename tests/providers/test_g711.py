"""G.711 against the standard library's reference codec (``audioop``, still shipped with 3.11)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from providers.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    audioop = pytest.importorskip("audioop")

EVERY_SAMPLE = np.arange(-32768, 32768, dtype=np.int64).astype("<i2").tobytes()
EVERY_CODE = bytes(range(256))


@pytest.mark.parametrize(
    ("encode", "decode", "ref_encode", "ref_decode"),
    [
        (ulaw_encode, ulaw_decode, "lin2ulaw", "ulaw2lin"),
        (alaw_encode, alaw_decode, "lin2alaw", "alaw2lin"),
    ],
)
def test_bit_exact_with_the_reference(encode, decode, ref_encode, ref_decode) -> None:  # type: ignore[no-untyped-def]
    assert encode(EVERY_SAMPLE) == getattr(audioop, ref_encode)(EVERY_SAMPLE, 2)
    assert decode(EVERY_CODE) == getattr(audioop, ref_decode)(EVERY_CODE, 2)


def test_round_trip_keeps_a_tone() -> None:
    t = np.arange(8000) / 8000
    tone = (np.sin(2 * np.pi * 440 * t) * 12000).astype("<i2")
    for encode, decode in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        back = np.frombuffer(decode(encode(tone.tobytes())), dtype="<i2").astype(np.float64)
        snr = 10 * np.log10(np.sum(tone.astype(np.float64) ** 2) / np.sum((back - tone) ** 2))
        assert snr > 30, snr  # G.711's ~38 dB for a loud tone
