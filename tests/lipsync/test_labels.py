"""Implicit AI-generated labels in produced media, read back with mutagen and PyAV."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from mutagen.id3 import ID3
from mutagen.mp3 import MP3

from gateway.audio import StreamEncoder
from lipsync.encode import Mp4Writer
from lipsync.labels import MediaLabel, draw_ai_mark, labelled_wav_header
from providers.wav import pcm_to_wav, read_wav
from tests.sounds import sine_pcm


def encode(fmt: str, label: MediaLabel | None) -> bytes:
    encoder = StreamEncoder(fmt, 22050, label)
    pcm = sine_pcm(1.0, 22050)
    out = encoder.feed(pcm[:10000]) + encoder.feed(pcm[10000:]) + encoder.finish()
    encoder.close()
    return out


def pyav_metadata(data: bytes, min_samples: int = 20000) -> dict[str, str]:
    """Container and audio-stream metadata (Ogg keeps Vorbis comments on the stream)."""
    with av.open(io.BytesIO(data)) as c:
        meta = {**dict(c.streams.audio[0].metadata), **dict(c.metadata)}
        assert sum(f.samples for f in c.decode(audio=0)) >= min_samples  # still a playable file
    return {k.lower(): v for k, v in meta.items()}


def test_mp3_carries_id3_label_with_consent_id() -> None:
    label = MediaLabel("talkgate", "v0123456789abcdef")
    data = encode("mp3", label)
    tags = ID3(io.BytesIO(data))
    custom = {f.desc.lower(): str(f) for f in tags.getall("TXXX")}  # FFmpeg writes the comment as TXXX
    assert custom["comment"].startswith("AI-generated; producer=talkgate")
    assert "consent_id=v0123456789abcdef" in custom["comment"]
    assert str(tags["TENC"]) == "talkgate"
    assert custom["ai_generated"] == "true" and custom["consent_id"] == "v0123456789abcdef"
    assert custom["content_id"] == label.content_id
    assert MP3(io.BytesIO(data)).info.length == pytest.approx(1.0, abs=0.1)


def test_unlabelled_mp3_has_no_label() -> None:
    data = encode("mp3", None)
    try:
        tags = ID3(io.BytesIO(data))
    except Exception:  # no ID3 header at all
        return
    assert not any("AI-generated" in str(f) for f in tags.values())


@pytest.mark.parametrize("fmt", ["wav", "flac", "opus"])
def test_other_containers_carry_the_comment(fmt: str) -> None:
    label = MediaLabel("talkgate")
    meta = pyav_metadata(encode(fmt, label))
    assert meta["comment"] == label.comment and "AI-generated" in meta["comment"]


def test_complete_wav_stays_valid_with_its_info_chunk() -> None:
    pcm = sine_pcm(0.5, 16000)
    wav = pcm_to_wav(pcm, 16000)
    labelled = labelled_wav_header(wav[:44], MediaLabel("talkgate", "v1")) + wav[44:]
    assert read_wav(labelled) == (pcm, 16000)
    assert int.from_bytes(labelled[4:8], "little") == len(labelled) - 8
    assert "consent_id=v1" in pyav_metadata(labelled, 8000)["comment"]


def test_mp4_carries_the_label_and_the_visible_mark(tmp_path: Path) -> None:
    label = MediaLabel("talkgate", "v42")
    path = tmp_path / "labelled.mp4"
    writer = Mp4Writer(path, 320, 240, fps=25, label=label)
    frames = [draw_ai_mark(np.full((240, 320, 3), 180, np.uint8)) for _ in range(25)]
    writer.write(frames, np.zeros(16000, np.float32))
    writer.close()
    with av.open(str(path)) as c:
        meta = {k.lower(): v for k, v in c.metadata.items()}
        first = next(c.decode(video=0)).to_ndarray(format="bgr24")
    assert meta["comment"] == label.comment and meta["ai_generated"] == "true" and meta["consent_id"] == "v42"
    # the mark: a dark box with light text in the top-right corner, the rest untouched
    corner = first[:30, -50:].astype(int)
    assert corner.min() < 90 and corner.max() > 200
    assert abs(int(first[200, 100].mean()) - 180) < 8
