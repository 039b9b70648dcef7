"""Consent statements and transcript matching (gateway/voices/statement.py)."""

from __future__ import annotations

from gateway.voices.statement import code_spoken, make_statement, match_score, new_code, tokens


def statement(language: str = "en", code: str = "472915") -> str:
    return make_statement(
        tenant="acme", purpose="customer service greetings", operator="Talkgate Ltd", code=code,
        language=language, speaker="Jane Doe",
    )  # fmt: skip


def test_statement_names_tenant_purpose_operator_and_code() -> None:
    text = statement()
    for part in ("acme", "customer service greetings", "Talkgate Ltd", "Jane Doe", "4 7 2 9 1 5"):
        assert part in text
    assert "472915" in statement("zh") and "acme" in statement("zh")


def test_codes_are_six_random_digits() -> None:
    codes = {new_code() for _ in range(50)}
    assert all(len(c) == 6 and c.isdigit() for c in codes) and len(codes) > 45


def test_asr_spellings_of_the_same_reading_match() -> None:
    text = statement()
    heard = (
        "I, Jane Doe, agree that Talkgate Ltd may create a synthetic copy of my voice and use it for Acme "
        "for this purpose, customer service greetings. My consent code is 472915."
    )
    assert match_score(text, heard) > 0.95 and code_spoken("472915", heard)
    spelled = heard.replace("472915", "four seven two nine one five")
    assert match_score(text, spelled) > 0.95 and code_spoken("472915", spelled)


def test_another_text_or_another_code_does_not_match() -> None:
    text = statement()
    other = "The quick brown fox jumps over the lazy dog, and then it runs away into the forest."
    assert match_score(text, other) < 0.3
    replay = statement(code="111111")
    assert not code_spoken("472915", replay)
    assert match_score(text, "") == 0.0


def test_one_misheard_digit_is_tolerated_two_are_not() -> None:
    assert code_spoken("472915", "my code is 4 7 2 9 1 6")  # one substituted
    assert code_spoken("472915", "my code is 4 7 9 1 5")  # one dropped
    assert code_spoken("472915", "my code is 4 7 2 2 9 1 5")  # one added
    assert not code_spoken("472915", "my code is 4 7 3 9 1 6")  # two wrong
    assert not code_spoken("472915", "my code is 4 7")


def test_chinese_numerals_and_characters() -> None:
    assert tokens("同意码是四七二九一五") == [*"同意码是", *"472915"]
    text = statement("zh")
    assert match_score(text, text.replace("472915", "四七二九一五")) > 0.95
