"""One decoder for base64 ``data:`` URLs, shared by every surface that takes inline media.

The chat image parts, ``/v1/talk``'s inline audio and image, the DashScope front door and the
simulator all accept ``data:<mime>;base64,<payload>``. The rules (what counts as base64, the size
cap checked before decoding, the MIME hint) live here once; each surface turns a
``DataUrlError`` into its own error shape and wording (OpenAI-shaped on ``/v1``, DashScope-shaped
on the front door).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

Reason = Literal["not_data_url", "not_base64_url", "bad_base64", "too_large"]


class DataUrlError(ValueError):
    """Why a reference could not be decoded; ``reason`` lets the caller pick its wording."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DataUrl:
    data: bytes
    mime: str  # lower-case, "" when the URL named none

    @property
    def subtype(self) -> str | None:
        """``png`` of ``image/png``: the format hint decoders take."""
        return self.mime.rsplit("/", 1)[-1] or None


def decode_data_url(ref: str, *, max_chars: int | None = None, allow_bare: bool = False) -> DataUrl:
    """Bytes and MIME type of ``ref``.

    ``max_chars`` refuses a reference longer than that before any decoding (base64 grows the data
    by a third, so a 10 MB cap on characters is a ~7.5 MB cap on bytes). ``allow_bare`` also
    takes plain base64 with no ``data:`` prefix (``/v1/talk``'s JSON fields accept both).
    """
    if max_chars is not None and len(ref) > max_chars:
        raise DataUrlError("too_large", f"the data URL is longer than {max_chars} characters")
    if ref.startswith("data:"):
        head, comma, payload = ref.partition(",")
        if not comma or ";base64" not in head:
            raise DataUrlError("not_base64_url", "a data URL must be base64 (data:<type>;base64,...)")
        mime = head[5:].split(";", 1)[0].strip().lower()
    elif allow_bare:
        payload, mime = ref, ""
    else:
        raise DataUrlError("not_data_url", "not a data: URL")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise DataUrlError("bad_base64", "the payload is not valid base64") from None
    return DataUrl(data, mime)
