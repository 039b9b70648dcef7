"""Implicit "AI-generated" labels for every synthesised file (WAV, MP3 and the other speech formats, MP4).

Why: China's labelling measures (GB 45438-2025, in force since September 2025) and the EU AI Act
(Article 50(2), from August 2026) require synthetic audio and video to carry a machine-readable
mark naming it AI-generated and its producer; a cloned voice also names its consent record.
The label is file metadata (the "implicit" label); responses repeat it in headers, and the
video renderer can add a visible mark (``media_labels.visible_video_mark``).

Where it goes, per container: MP3 → ID3v2 (TXXX frames: comment, ai_generated, consent_id...; TENC); MP4 → ``udta``/``mdta`` keys
(``movflags=use_metadata_tags``); Ogg/FLAC → Vorbis comments; WAV → a RIFF ``LIST/INFO`` chunk
(ICMT comment, ISFT software) before the data. Raw PCM and ADTS AAC have no metadata: only the
response header labels them.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

LABEL_TEXT = "AI-generated"
HEADER = "x-talkgate-ai-generated"
CONSENT_HEADER = "x-talkgate-consent-id"


@dataclass(frozen=True)
class MediaLabel:
    producer: str = "talkgate"
    consent_id: str | None = None
    content_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    @property
    def comment(self) -> str:
        """One line that survives every container that has a comment field."""
        parts = [LABEL_TEXT, f"producer={self.producer}", f"content_id={self.content_id}"]
        if self.consent_id:
            parts.append(f"consent_id={self.consent_id}")
        return "; ".join(parts)

    def metadata(self) -> dict[str, str]:
        """Container metadata (FFmpeg keys: ``comment`` is standard, the others become custom tags)."""
        tags = {
            "comment": self.comment,
            "ai_generated": "true",
            "producer": self.producer,
            "content_id": self.content_id,
            "creation_time": self.created,
            "encoded_by": self.producer,
        }
        if self.consent_id:
            tags["consent_id"] = self.consent_id
        return tags

    def headers(self) -> dict[str, str]:
        out = {HEADER: f"true; producer={self.producer}; content_id={self.content_id}"}
        if self.consent_id:
            out[CONSENT_HEADER] = self.consent_id
        return out


def _info_item(tag: bytes, text: str) -> bytes:
    data = text.encode("utf-8") + b"\x00"
    if len(data) % 2:
        data += b"\x00"
    return tag + struct.pack("<I", len(data)) + data


def wav_info_chunk(label: MediaLabel) -> bytes:
    """A RIFF ``LIST/INFO`` chunk (ICMT comment, ISFT software) to put before the ``data`` chunk."""
    body = b"INFO" + _info_item(b"ICMT", label.comment) + _info_item(b"ISFT", label.producer)
    return b"LIST" + struct.pack("<I", len(body)) + body


def labelled_wav_header(header: bytes, label: MediaLabel) -> bytes:
    """``header`` (a 44-byte PCM header from providers.wav) with the INFO chunk inserted before ``data``.

    The RIFF size grows by the chunk's length unless it is the open-ended-stream sentinel.
    """
    info = wav_info_chunk(label)
    riff_size = struct.unpack("<I", header[4:8])[0]
    if riff_size != 0xFFFFFFFF:
        riff_size += len(info)
    return header[:4] + struct.pack("<I", riff_size) + header[8:36] + info + header[36:]


def draw_ai_mark(frame: Any) -> Any:
    """The visible label: "AI" in a dark box at the top-right corner, about 6 % of the short side
    (GB 45438 asks ≥ 5 % for images). Drawn in place on a BGR frame; returns it."""
    import cv2

    h, w = frame.shape[:2]
    size = max(12, round(0.06 * min(h, w)))
    scale = size / 22.0
    thickness = max(1, round(scale * 1.5))
    (tw, th), base = cv2.getTextSize("AI", cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, size // 4)
    x2, y1 = w - pad, pad
    x1, y2 = x2 - tw - 2 * pad, y1 + th + base + 2 * pad
    roi = frame[y1:y2, x1:x2]
    roi[:] = (roi * 0.35).astype(frame.dtype)
    cv2.putText(
        frame,
        "AI",
        (x1 + pad, y2 - pad - base),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        thickness,
        cv2.LINE_AA,
    )
    return frame
