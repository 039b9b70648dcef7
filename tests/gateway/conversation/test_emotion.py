"""The answer's emotion: leading tag parsing and stripping, lexicon fallback, voice parameters."""

from __future__ import annotations

import pytest

from gateway.conversation.emotion import EMOTIONS, TagStripper, classify, strip_tag, voice_params


def stream(text: str, size: int) -> tuple[str | None, str]:
    stripper = TagStripper()
    out = "".join(stripper.feed(text[i : i + size]) for i in range(0, len(text), size)) + stripper.flush()
    return stripper.tag, out


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
@pytest.mark.parametrize(
    ("text", "tag", "rest"),
    [
        ("[emotion:happy] Great news!", "happy", "Great news!"),
        ("  [emo=SAD]I'm sorry.", "sad", "I'm sorry."),
        ("<emotion: surprised> Wow.", "surprised", "Wow."),
        ("[gentle] Take care.", "gentle", "Take care."),
        ("[开心] 太好了。", "happy", "太好了。"),
        ("No tag here.", None, "No tag here."),
        ("[1] is a footnote-like start", None, "[1] is a footnote-like start"),
    ],
)
def test_leading_tag_is_parsed_and_stripped_in_any_chunking(
    size: int, text: str, tag: str | None, rest: str
) -> None:
    assert stream(text, size) == (tag, rest)


def test_a_tag_outside_the_set_is_stripped_but_not_used() -> None:
    stripper = TagStripper()
    assert stripper.feed("[emotion:sarcastic] Sure.") == "Sure."
    assert stripper.tag is None and stripper.invalid == "sarcastic"


def test_only_a_leading_tag_is_a_tag() -> None:
    assert strip_tag("Hello [emotion:happy] there") == (None, "Hello [emotion:happy] there")


def test_text_is_held_back_only_while_it_may_be_a_tag() -> None:
    stripper = TagStripper()
    assert stripper.feed("[emo") == ""
    assert stripper.feed("tion is long and not closed at all, so") != ""


@pytest.mark.parametrize(
    ("text", "emotion"),
    [
        ("Congratulations, that is wonderful news!", "happy"),
        ("I'm so sorry to hear that, don't worry, it's okay.", "gentle"),
        ("Unfortunately the shop lost your order and I regret it.", "sad"),
        ("That is outrageous and unacceptable.", "angry"),
        ("Wow, really? That is incredible.", "surprised"),
        ("The store opens at nine.", "neutral"),
        ("太好了，恭喜你！", "happy"),
        ("别担心，慢慢来。", "gentle"),
        ("真是太可恶了，我很生气。", "angry"),
    ],
)
def test_lexicon_fallback(text: str, emotion: str) -> None:
    assert classify(text) == emotion


def test_voice_parameters_per_backend_differ_by_emotion() -> None:
    params = {e: voice_params(e) for e in EMOTIONS}
    assert params["neutral"] == {
        "speed": 1.0, "instruction": "你正在进行闲聊互动，你说话的情感是neutral。", "pitch": 1.0, "volume": 50,
        "local_volume": 1.0,
    }  # fmt: skip
    assert params["happy"]["instruction"].endswith("情感是happy。") and params["happy"]["speed"] > 1.0
    assert (
        params["sad"]["speed"] < 1.0 and params["sad"]["pitch"] < 1.0 and params["sad"]["local_volume"] < 1.0
    )
    assert params["angry"]["volume"] > params["neutral"]["volume"] > params["sad"]["volume"]
    # CosyVoice has no "gentle": spoken as neutral, but slower and softer
    assert params["gentle"]["instruction"].endswith("情感是neutral。") and params["gentle"]["speed"] < 1.0
    for p in params.values():
        assert 0.5 <= p["speed"] <= 2.0 and 0.5 <= p["pitch"] <= 2.0 and 0 <= p["volume"] <= 100
        assert len(p["instruction"]) <= 128
