"""Client values quoted back in error messages: cut short and made printable.

An error that names the bad value ("the model 'gpt-17' does not exist") is easier to act on
than one that does not, so messages quote what the client sent. Quoted whole, though, the
value makes the gateway reflect whatever a client chooses: a 1 MB model name came back in a
1 MB 404, and a value with line breaks or terminal escapes forged lines in logs and consoles
that show error bodies. Every error message that quotes a client value builds the quote with
``echo`` (limit: ``settings.limits.echo_max_chars``, 128 by default); ``bound_message`` is the
last line of defence applied to every error body, for text we compose from parts we do not
control (provider messages, other modules' errors).
"""

from __future__ import annotations

from typing import Any

#: Characters of a client value quoted in an error message (``settings.limits.echo_max_chars``).
DEFAULT_ECHO_MAX_CHARS = 128

#: Characters of a whole error message, however it was composed (a safety net; our own
#: messages are far shorter, and quoted values are already cut by ``echo``).
MESSAGE_MAX_CHARS = 1024

#: Shown where a value was cut.
ELLIPSIS = "…"


def _printable(ch: str) -> str:
    """One character as it may appear in a message: control and line-breaking characters
    (C0, DEL, C1, U+2028/U+2029) are written as escapes, everything else as itself."""
    code = ord(ch)
    if code < 0x20 or 0x7F <= code < 0xA0 or code in (0x2028, 0x2029):
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch) or (
            f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
        )
    return ch


def _cut(text: str, limit: int) -> tuple[str, bool]:
    """At most ``limit`` characters of ``text`` made printable (escapes count with their
    length, and are never split); True when something was left out."""
    out: list[str] = []
    used = 0
    for ch in text:
        piece = _printable(ch)
        if used + len(piece) > limit:
            return "".join(out), True
        out.append(piece)
        used += len(piece)
    return "".join(out), False


def echo(value: Any, limit: int | None = None) -> str:
    """``value`` as an error message may quote it: printable, at most ``limit`` characters
    (default 128), and, when cut, followed by an ellipsis and the original length, so the
    client still learns which value was wrong and how long it was.

    ``echo("x" * 1000, 4)`` is ``xxxx… (1000 characters)``; a line break is shown as ``\\n``.
    """
    text = value if isinstance(value, str) else str(value)
    limit = DEFAULT_ECHO_MAX_CHARS if limit is None else max(1, int(limit))
    shown, cut = _cut(text, limit)
    return f"{shown}{ELLIPSIS} ({len(text)} characters)" if cut else shown


def bound_message(message: str, limit: int = MESSAGE_MAX_CHARS) -> str:
    """A whole error message, printable and at most about ``limit`` characters (cut with an
    ellipsis). Applied to every error body, whoever composed the message."""
    shown, cut = _cut(message, limit)
    return shown + ELLIPSIS if cut else shown


def echo_list(names: list[str], limit: int | None = None, max_items: int = 24) -> str:
    """A list of names for a message ("Available: a, b, c and 12 more"): each name echoed,
    at most ``max_items`` of them."""
    shown = ", ".join(echo(n, limit) for n in names[:max_items])
    rest = len(names) - max_items
    return f"{shown} and {rest} more" if rest > 0 else shown
