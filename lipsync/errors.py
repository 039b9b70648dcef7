"""Typed lip-sync failures. Routes map them to HTTP; none of them is ever rendered or spoken."""

from __future__ import annotations


class LipsyncError(Exception):
    """Base class; ``reason`` is a stable machine-readable code, the message is for humans."""

    reason: str = "lipsync_error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason


class FaceError(LipsyncError):
    """The portrait cannot be animated (no face, several faces, too small, cut off) → HTTP 422."""

    reason = "face_error"


class ImageError(LipsyncError):
    """The upload is not a decodable image or is out of bounds → HTTP 400."""

    reason = "bad_image"


class CheckpointError(LipsyncError):
    """The Wav2Lip checkpoint file is missing, corrupt, or not a Wav2Lip generator."""

    reason = "bad_checkpoint"
