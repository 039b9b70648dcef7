"""G.711 μ-law and A-law (ITU-T G.711), the 8 kHz telephony codecs, in numpy.

Written here because the standard library's ``audioop`` is deprecated (removed in Python
3.13). Encoding follows the standard's segment tables; decode(encode(x)) is within the
codec's quantisation step. The NLS telephony models and the realtime protocol's
``audio/pcmu`` and ``audio/pcma`` formats use these.
"""

from __future__ import annotations

import numpy as np

_BIAS = 0x84  # μ-law bias on the 16-bit scale
_BIAS14 = 0x21  # ... and on the 14-bit scale the encoder works on
_CLIP14 = 8159


def ulaw_encode(pcm: bytes) -> bytes:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.int32) >> 2  # μ-law works on 14 bits
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), _CLIP14) + _BIAS14
    seg = np.maximum(np.floor(np.log2(magnitude)).astype(np.int32) - 5, 0)
    mantissa = np.where(seg > 7, 0x0F, (magnitude >> (np.minimum(seg, 7) + 1)) & 0x0F)
    seg = np.minimum(seg, 7)  # the clipped maximum is the top code
    return (~(sign | (seg << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> bytes:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    seg = (u >> 4) & 0x07
    magnitude = (((u & 0x0F) << 3) + _BIAS) << seg
    pcm = np.where(u & 0x80, _BIAS - magnitude, magnitude - _BIAS)
    return pcm.astype("<i2").tobytes()


def alaw_encode(pcm: bytes) -> bytes:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.int32) >> 3  # A-law works on 13 bits
    sign = np.where(x >= 0, 0x80, 0)
    magnitude = np.where(x >= 0, x, -x - 1)
    magnitude = np.minimum(magnitude, 0x0FFF)
    seg = np.clip(np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) - 4, 0, 7)
    mantissa = np.where(seg == 0, magnitude >> 1, magnitude >> seg) & 0x0F
    return ((sign | (seg << 4) | mantissa) ^ 0x55).astype(np.uint8).tobytes()


def alaw_decode(data: bytes) -> bytes:
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    seg = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(seg == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(seg - 1, 0))
    pcm = np.where(a & 0x80, magnitude, -magnitude)
    return pcm.astype("<i2").tobytes()
