"""Avatars: a checked portrait, its face box and 96×96 crop, kept on disk across restarts.

Layout: ``<data_dir>/avatars/<id>/{image.png, crop.png, meta.json}``. Detection runs once
at upload (the "detect once and cache" trick), so rendering never runs the detector.
All methods are synchronous (disk + OpenCV); callers run them in a worker thread.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lipsync.errors import ImageError
from lipsync.faces import Box, decode_image, face_crop, precheck

#: Larger portraits are scaled down: the model works at 96×96 and encoding cost grows with pixels.
MAX_RENDER_SIDE = 1280
_ID_RE = re.compile(r"^av_[0-9a-f]{32}$")


@dataclass(slots=True)
class Avatar:
    id: str
    image: np.ndarray  # BGR uint8, even width and height (H.264 4:2:0)
    box: Box
    crop: np.ndarray  # 96×96 BGR uint8 model input
    created: int
    face_index: int | None = None
    owner: str | None = None  # tenant that created it; other tenants cannot see it

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "avatar",
            "box": self.box.as_list(),
            "width": self.width,
            "height": self.height,
            "created": self.created,
        }


def _fit(image: np.ndarray) -> np.ndarray:
    """Scale down to MAX_RENDER_SIDE and trim to even dimensions."""
    h, w = image.shape[:2]
    scale = min(1.0, MAX_RENDER_SIDE / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
    return np.ascontiguousarray(image[: h - h % 2, : w - w % 2])


def prepare_avatar(
    data: bytes,
    *,
    face_index: int | None = None,
    pads: Sequence[int] = (0, 10, 0, 0),
    min_face_px: int = 64,
    avatar_id: str | None = None,
) -> Avatar:
    """Decode, fit and pre-check an uploaded portrait (ImageError → 400, FaceError → 422)."""
    image = _fit(decode_image(data))
    box = precheck(image, face_index=face_index, pads=pads, min_face_px=min_face_px)
    return Avatar(
        id=avatar_id or f"av_{uuid.uuid4().hex}",
        image=image,
        box=box,
        crop=face_crop(image, box),
        created=int(time.time()),
        face_index=face_index,
    )


class AvatarStore:
    """Avatars on disk with a small in-memory LRU of decoded ones."""

    def __init__(self, root: Path, *, pads: Sequence[int] = (0, 10, 0, 0), min_face_px: int = 64) -> None:
        self.root = Path(root)
        self.pads = tuple(pads)
        self.min_face_px = min_face_px
        self._cache: OrderedDict[str, Avatar] = OrderedDict()
        self._lock = threading.Lock()
        self._cache_size = 32

    @staticmethod
    def valid_id(avatar_id: str) -> bool:
        return bool(_ID_RE.match(avatar_id))

    def prepare(self, data: bytes, face_index: int | None = None) -> Avatar:
        """A checked avatar that is not stored (inline images in /v1/talk)."""
        return prepare_avatar(data, face_index=face_index, pads=self.pads, min_face_px=self.min_face_px)

    def create(self, data: bytes, face_index: int | None = None, owner: str | None = None) -> Avatar:
        avatar = self.prepare(data, face_index)
        avatar.owner = owner
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".tmp-{avatar.id}"
        staging.mkdir()
        try:
            for name, img in (("image.png", avatar.image), ("crop.png", avatar.crop)):
                if not cv2.imwrite(str(staging / name), img):
                    raise OSError(f"could not write {name}")
            meta = {
                **avatar.public(),
                "face_index": avatar.face_index,
                "owner": owner,
                "pads": list(self.pads),
            }
            (staging / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
            staging.rename(self.root / avatar.id)  # atomic: a half-written avatar is never visible
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._remember(avatar)
        return avatar

    def get(self, avatar_id: str, owner: str | None = None) -> Avatar | None:
        """The avatar, or None if unknown (or, with ``owner``, created by another tenant)."""
        avatar = self._load(avatar_id)
        if avatar is None or (owner is not None and avatar.owner not in (None, owner)):
            return None
        return avatar

    def _load(self, avatar_id: str) -> Avatar | None:
        if not self.valid_id(avatar_id):
            return None
        with self._lock:
            if avatar_id in self._cache:
                self._cache.move_to_end(avatar_id)
                return self._cache[avatar_id]
        folder = self.root / avatar_id
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        image = cv2.imread(str(folder / "image.png"), cv2.IMREAD_COLOR)
        crop = cv2.imread(str(folder / "crop.png"), cv2.IMREAD_COLOR)
        if image is None or crop is None:
            raise ImageError(f"avatar {avatar_id} is damaged on disk")
        avatar = Avatar(
            id=avatar_id,
            image=image,
            box=Box(*meta["box"]),
            crop=crop,
            created=int(meta["created"]),
            face_index=meta.get("face_index"),
            owner=meta.get("owner"),
        )
        self._remember(avatar)
        return avatar

    def delete(self, avatar_id: str, owner: str | None = None) -> bool:
        if self.get(avatar_id, owner) is None:
            return False
        with self._lock:
            self._cache.pop(avatar_id, None)
        folder = self.root / avatar_id
        if not folder.is_dir():
            return False
        shutil.rmtree(folder)
        return True

    def _remember(self, avatar: Avatar) -> None:
        with self._lock:
            self._cache[avatar.id] = avatar
            self._cache.move_to_end(avatar.id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
