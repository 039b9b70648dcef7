"""Avatar persistence, sentence cutting and the bounded conversation memory."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from lipsync.artifacts import ArtifactStore
from lipsync.avatars import AvatarStore
from lipsync.conversations import ConversationMemory
from lipsync.errors import FaceError
from lipsync.sentences import SentenceSplitter, clean_for_speech, speakable
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


def test_sentences_are_cut_as_the_stream_arrives() -> None:
    s = SentenceSplitter()
    assert s.feed("Hello there") == []
    assert s.feed(".") == []  # the end mark needs the following space
    assert s.feed(" How are") == ["Hello there."]
    assert s.feed(" you? I cost $3.50 today") == ["How are you?"]
    assert s.feed(", e.g. on Mondays. Bye") == ["I cost $3.50 today, e.g. on Mondays."]
    assert s.flush() == ["Bye"]
    assert s.flush() == []


def test_cjk_and_run_on_sentences() -> None:
    s = SentenceSplitter(soft_limit=40, hard_limit=80)
    assert s.feed("你好。今天天气很好！") == ["你好。", "今天天气很好！"]
    long = "word " * 30
    parts = s.feed(long)
    assert parts and all(len(p) <= 80 for p in parts)


def test_speech_cleaning() -> None:
    assert clean_for_speech("**Sure!** Here's `code`  # now") == "Sure! Here's code now"
    assert not speakable("... --- !!!")
    assert speakable("ok")


def test_conversation_memory_is_bounded_and_per_tenant() -> None:
    mem = ConversationMemory(max_conversations=2, max_turns=2)
    for i in range(3):
        mem.append("t1", "c1", f"q{i}", f"a{i}")
    assert [m["content"] for m in mem.history("t1", "c1")] == ["q1", "a1", "q2", "a2"]
    assert mem.history("t2", "c1") == []
    assert mem.history("t1", None) == []
    mem.append("t1", "c2", "x", "y")
    mem.append("t1", "c3", "x", "y")
    assert len(mem) == 2 and mem.history("t1", "c1") == []  # oldest evicted


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
