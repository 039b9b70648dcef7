"""Sentences cut from a streamed answer, and the per-tenant conversation memory of /v1/talk."""

from __future__ import annotations

from gateway.conversation.memory import ConversationMemory
from gateway.conversation.sentences import SentenceSplitter, clean_for_speech, speakable


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


def _stream(splitter: SentenceSplitter, text: str) -> list[str]:
    """Feeds ``text`` a few characters at a time, as a model streams it."""
    out: list[str] = []
    for i in range(0, len(text), 3):
        out += splitter.feed(text[i : i + 3])
    return out + splitter.flush()


def test_the_first_piece_may_end_at_a_clause_once_long_enough() -> None:
    reply = "Our hours today, as on every weekday, run from nine to five. Come by!"
    assert _stream(SentenceSplitter(first_phrase_chars=12), reply) == [
        "Our hours today,",
        "as on every weekday, run from nine to five.",  # only the first piece is cut early
        "Come by!",
    ]
    assert (
        _stream(SentenceSplitter(), reply)[0]
        == "Our hours today, as on every weekday, run from nine to five."
    )


def test_the_first_piece_may_end_before_a_phrase_opening_word() -> None:
    reply = "The store is open from 9:00 AM to 12:00 PM, with late hours on Friday. Come by!"
    assert _stream(SentenceSplitter(first_phrase_chars=12), reply) == [
        "The store is open",  # before "from": no clause mark needed ("9:00" is none)
        "from 9:00 AM to 12:00 PM, with late hours on Friday.",
        "Come by!",
    ]
    # whole words only: "today" and "tomorrow" hold "to" but do not cut
    assert (
        _stream(SentenceSplitter(first_phrase_chars=12), "We are closed today because of the holiday.")[0]
        == "We are closed today"
    )
    assert _stream(SentenceSplitter(first_phrase_chars=12), "Come back tomorrow morning please.") == [
        "Come back tomorrow morning please."
    ]
    assert (
        _stream(SentenceSplitter(), reply)[0]
        == "The store is open from 9:00 AM to 12:00 PM, with late hours on Friday."
    )


def test_a_short_opening_stays_with_its_sentence() -> None:
    assert _stream(SentenceSplitter(first_phrase_chars=12), "Yes, we open at nine. Welcome.") == [
        "Yes, we open at nine.",
        "Welcome.",
    ]
    assert _stream(SentenceSplitter(first_phrase_chars=4), "您好，我们明天九点开门。欢迎光临。") == [
        "您好，我们明天九点开门。",
        "欢迎光临。",
    ]
    assert (
        _stream(SentenceSplitter(first_phrase_chars=4), "我们明天九点开门，欢迎光临。")[0]
        == "我们明天九点开门，"
    )


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
