"""The answer's emotion: a tag the LLM puts first, validated and stripped, or an offline lexicon guess.

Why a leading tag: the LLM knows the context ("I'm sorry to hear that" is gentle, not sad) and a
tag at the very start is known before the first sentence is spoken, so the voice and the face
can follow it from the first word; one small fixed set keeps every backend's mapping total.
The tag never reaches TTS, subtitles or the transcript: ``TagStripper`` holds back the first
characters of the stream until it knows whether they are a tag. When the tag is missing or not
in the set, a bilingual (English/Chinese) keyword and emoji lexicon decides; it is deterministic
and runs in microseconds, and says "neutral" when nothing matches.

``voice_params`` maps an emotion to each TTS backend: CosyVoice gets an ``instruction`` in the
fixed format its v3 voices accept plus rate/pitch/volume deltas (reference voice-emotion.md
§2.1-2.2; conservative, so voices that ignore the instruction still differ); piper has no pitch,
so it gets tempo and a volume multiplier (§2.6).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.conversation.sentences import SentenceSplitter

EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised", "gentle")
NEUTRAL = "neutral"
#: what a request may ask for: "auto" (the tag, else the lexicon), "off", or one emotion
MODES = ("auto", "off", *EMOTIONS)

PROMPT = (
    "Start every answer with an emotion tag for how the answer should sound, exactly one of "
    "[emotion:neutral] [emotion:happy] [emotion:sad] [emotion:angry] [emotion:surprised] "
    "[emotion:gentle], then the answer itself."
)

#: ``[emotion:happy]``, ``[emo=happy]``, ``<emotion:happy>``, ``[happy]`` (case-insensitive).
_TAG = re.compile(r"^\s*[\[<(]\s*(?:emotion|emo|mood)?\s*[:=]?\s*([A-Za-z\u4e00-\u9fff]{1,16})\s*[\]>)]\s*")
#: a prefix that may still become a tag: keep holding it back
_MAYBE = re.compile(r"^\s*[\[<(][^\]>)\n]{0,30}$")
_ALIASES = {"joy": "happy", "excited": "happy", "calm": "gentle", "soft": "gentle", "warm": "gentle",
            "surprise": "surprised", "anger": "angry", "sadness": "sad",
            "中性": "neutral", "平静": "neutral", "开心": "happy", "高兴": "happy", "难过": "sad", "悲伤": "sad",
            "生气": "angry", "愤怒": "angry", "惊讶": "surprised", "温柔": "gentle"}  # fmt: skip


def normalise(name: str | None) -> str | None:
    """``name`` as one of EMOTIONS, or None when it is not one (nor a known alias)."""
    if not name:
        return None
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in EMOTIONS else None


@dataclass
class TagStripper:
    """Feed the LLM stream; get the text without a leading emotion tag.

    ``tag`` is the tag's emotion once seen (None: no tag, or one outside the set: ``invalid``
    keeps what it said). Text is held back only while it could still be the start of a tag
    (at most ~32 characters), so sentence cutting is not delayed beyond that.
    """

    tag: str | None = None
    invalid: str | None = None
    decided: bool = False
    _held: str = ""

    _after_tag: bool = False

    def feed(self, delta: str) -> str:
        if self.decided:
            if self._after_tag:  # the blank after a tag may arrive in a later piece
                delta = delta.lstrip()
                self._after_tag = not delta
            return delta
        self._held += delta
        match = _TAG.match(self._held)
        if match:
            self.tag = normalise(match.group(1))
            if self.tag is None:
                self.invalid = match.group(1)
            rest = self._held[match.end() :]
            self._after_tag = not rest
            return self._release(rest)
        if _MAYBE.match(self._held) or not self._held.strip():
            return ""
        return self._release(self._held)

    def flush(self) -> str:
        return "" if self.decided else self._release(self._held)

    def _release(self, text: str) -> str:
        self.decided, self._held = True, ""
        return text


def strip_tag(text: str) -> tuple[str | None, str]:
    """(emotion or None, text without a leading tag) for a whole answer."""
    stripper = TagStripper()
    out = stripper.feed(text) + stripper.flush()
    return stripper.tag, out


def decide(mode: str, text: str) -> tuple[str, str, str]:
    """(emotion, source, text to speak) for a whole text, decided as ``SpokenAnswer`` decides an answer.

    ``mode`` "auto": a leading tag (cut from the text), else the lexicon over the first sentence;
    one of EMOTIONS: that one, the text as it is ("request"); "off": neutral, nothing applied.
    """
    if mode == "off":
        return NEUTRAL, "off", text
    if mode != "auto":
        return mode, "request", text
    tag, rest = strip_tag(text)
    if tag is not None:
        return tag, "tag", rest
    splitter = SentenceSplitter()
    first = (splitter.feed(rest) + splitter.flush() or [""])[0]
    return classify(first), "lexicon", rest


# --------------------------------------------------------------------------- offline lexicon

_LEXICON: dict[str, tuple[str, ...]] = {
    "happy": ("great", "glad", "happy", "wonderful", "awesome", "congratulations", "congrats", "love",
              "fantastic", "excellent", "yay", "delighted", "haha", "恭喜", "太好了", "开心", "高兴",
              "哈哈", "棒", "喜欢", "祝贺", "😀", "😄", "😊", "🎉", "👍"),
    "sad": ("sad", "sorry for your loss", "unfortunately", "miss", "lost", "grief", "cry", "regret",
            "heartbroken", "难过", "伤心", "遗憾", "可惜", "去世", "哭", "😢", "😭", "💔"),
    "angry": ("angry", "furious", "outrageous", "unacceptable", "hate", "annoying", "damn",
              "生气", "愤怒", "气死", "可恶", "讨厌", "😠", "😡"),
    "surprised": ("wow", "really?", "amazing", "incredible", "unbelievable", "no way", "surprising",
                  "what a surprise", "哇", "竟然", "居然", "真的吗", "没想到", "😮", "😲"),
    "gentle": ("take care", "don't worry", "it's okay", "it's ok", "i understand", "sorry to hear",
               "gently", "rest", "breathe", "别担心", "没关系", "慢慢来", "照顾好", "抱抱", "理解你", "🤗"),
}  # fmt: skip


def classify(text: str) -> str:
    """The lexicon's emotion for ``text``: the category with most keyword hits ("neutral" if none).

    Ties go to the earlier category in EMOTIONS order after "gentle", which is checked first:
    comforting phrases ("sorry to hear") also contain sad words, and gentle is the better voice.
    """
    lowered = text.lower()
    counts = {name: sum(lowered.count(word) for word in words) for name, words in _LEXICON.items()}
    if counts["gentle"] and counts["gentle"] >= counts["sad"]:
        return "gentle"
    best = max(EMOTIONS[1:], key=lambda name: counts.get(name, 0))
    return best if counts.get(best, 0) else NEUTRAL


# --------------------------------------------------------------------------- voice parameters

#: rate (× speed), CosyVoice pitch, CosyVoice volume (0-100), piper volume multiplier
_VOICE: dict[str, tuple[float, float, int, float]] = {
    "neutral": (1.0, 1.0, 50, 1.0),
    "happy": (1.08, 1.05, 58, 1.0),
    "sad": (0.9, 0.95, 42, 0.7),
    "angry": (1.05, 1.03, 62, 1.0),
    "surprised": (1.1, 1.06, 58, 1.0),
    "gentle": (0.93, 0.98, 44, 0.8),
}
#: CosyVoice's instruction vocabulary has no "gentle": it is spoken as neutral, slower and softer
_INSTRUCTION_WORD = {"gentle": "neutral"}


def voice_params(emotion: str) -> dict[str, float | int | str]:
    """``SynthesizeRequest.extra`` entries for ``emotion`` (both backends read their own keys).

    ``speed`` multiplies the request's speed (CosyVoice ``rate``, piper tempo); ``instruction``,
    ``pitch`` and ``volume`` go to CosyVoice's run-task; ``local_volume`` scales piper's output.
    """
    rate, pitch, volume, local_volume = _VOICE.get(emotion, _VOICE[NEUTRAL])
    word = _INSTRUCTION_WORD.get(emotion, emotion)
    return {
        "speed": rate,
        "instruction": f"你正在进行闲聊互动，你说话的情感是{word}。",
        "pitch": pitch,
        "volume": volume,
        "local_volume": local_volume,
    }
