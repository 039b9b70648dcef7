"""Avatar persistence and the per-tenant talk artifacts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from lipsync.artifacts import ArtifactStore
from lipsync.avatars import AvatarStore
from lipsync.errors import FaceError
from tests.lipsync.media import astronaut_png, faceless_png


def test_avatars_survive_a_new_store_and_can_be_deleted(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path / "avatars")
    avatar = store.create(astronaut_png(), owner="t1")
    assert AvatarStore.valid_id(avatar.id)
    assert (tmp_path / "avatars" / avatar.id / "meta.json").is_file()
    again = AvatarStore(tmp_path / "avatars").get(avatar.id)  # as after a restart
    assert again is not None
    assert again.box == avatar.box and again.crop.shape == (96, 96, 3)
    assert np.array_equal(again.image, avatar.image)
    assert store.get(avatar.id, owner="t2") is None  # other tenants cannot see it
    assert not store.delete(avatar.id, owner="t2")
    assert store.delete(avatar.id, owner="t1")
    assert store.get(avatar.id) is None and not (tmp_path / "avatars" / avatar.id).exists()


def test_failed_upload_leaves_nothing_behind(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path / "avatars")
    with pytest.raises(FaceError):
        store.create(faceless_png())
    assert not (tmp_path / "avatars").exists() or not any((tmp_path / "avatars").iterdir())


def test_ids_cannot_escape_the_store(tmp_path: Path) -> None:
    store = AvatarStore(tmp_path / "avatars")
    for bad in ("../etc", "av_../../x", "av_" + "g" * 32, ""):
        assert store.get(bad) is None
        assert not store.delete(bad)


def test_artifacts_are_found_only_for_their_tenant_and_swept_when_expired(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts", ttl_s=60)
    name = f"{store.new_stem()}.mp4"
    store.path_for(name, "beta").write_bytes(b"video")
    assert store.lookup(name, "beta") == store.path_for(name, "beta")
    assert store.lookup(name, "gamma") is None
    assert store.lookup(name, "../beta") is None
    old = f"{store.new_stem()}.wav"
    stale = store.path_for(old, "gamma")
    stale.write_bytes(b"audio")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    assert store.sweep() == 1
    assert not stale.exists() and store.lookup(name, "beta") is not None
