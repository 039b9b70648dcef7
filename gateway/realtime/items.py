"""The conversation of one realtime session: its items and the client events that edit them.

Items are kept in memory for the life of the connection (a session is sticky to one replica,
design.md round 2), at most ``MAX_ITEMS``; the oldest drop out of the history sent to the
LLM. ``history()`` is what the model sees: text, transcripts, function calls and their
outputs in chat's shape (gateway/realtime/tools.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from gateway.realtime.events import BadEvent, message_item, new_id, server_event
from gateway.realtime.tools import function_output_item, history, parse_call_output

#: Items kept in the conversation.
MAX_ITEMS = 200
Send = Any  # Callable[[dict[str, Any]], Awaitable[None]] (gateway/realtime/response.py)


@dataclass(slots=True)
class Item:
    id: str
    role: str
    text: str
    kind: str = "text"  # text | input_audio | audio | function_call | function_call_output
    audio_ms: int = 0  # assistant audio sent, for conversation.item.truncate
    transcription: asyncio.Task[None] | None = None
    call_id: str = ""  # function_call(_output): the call; ``text`` holds arguments / output
    name: str = ""  # function_call: the function


class Conversation:
    def __init__(self, send: Send) -> None:
        self.send = send
        self.items: list[Item] = []

    def add(self, item: Item) -> str | None:
        """Appends ``item``; returns the id of the item before it (``previous_item_id``)."""
        previous = self.items[-1].id if self.items else None
        self.items.append(item)
        del self.items[:-MAX_ITEMS]
        return previous

    def messages(self) -> list[dict[str, Any]]:
        """The conversation as chat messages, for the next response."""
        return history(self.items)

    def input_messages(self, value: Any, eid: str | None) -> list[dict[str, Any]]:
        """The chat messages of a ``response.input`` list (an out-of-band response's own context):
        message items, and ``item_reference`` items naming items of this conversation."""
        if not isinstance(value, list) or len(value) > MAX_ITEMS:
            raise BadEvent(
                f"'response.input' must be a list of at most {MAX_ITEMS} items.",
                "invalid_value",
                "response.input",
                eid,
            )
        items: list[Item] = []
        for index, entry in enumerate(value):
            param = f"response.input[{index}]"
            kind = entry.get("type", "message") if isinstance(entry, dict) else None
            if kind == "item_reference":
                found = [i for i in self.items if i.id == entry.get("id")]
                if not found:
                    message = f"No item with id '{str(entry.get('id'))[:64]}'."
                    raise BadEvent(message, "item_not_found", f"{param}.id", eid)
                items.append(found[0])
            elif kind == "message":
                role, text = parse_message(entry, param, eid)
                items.append(Item(new_id("item"), role, text))
            else:
                raise BadEvent(
                    f"'{param}' must be a message or an item_reference.",
                    "invalid_value",
                    f"{param}.type",
                    eid,
                )
        return history(items)

    def response_scope(
        self, options: dict[str, Any], eid: str | None
    ) -> tuple[bool, list[dict[str, Any]] | None, dict[str, Any] | None]:
        """(out of band, its own context as chat messages or None, metadata) of a response.create.

        ``conversation: "none"`` keeps the response out of the conversation; ``input`` gives it its
        own context (message items, references to items of the conversation) instead of the
        conversation's history; ``metadata`` is echoed in the response, so the client can tell it."""
        conversation = options.get("conversation", "auto")
        if conversation not in ("auto", "none"):
            raise BadEvent(
                "'response.conversation' must be 'auto' or 'none'.",
                "invalid_value",
                "response.conversation",
                eid,
            )
        context = None
        if options.get("input") is not None:
            context = self.input_messages(options["input"], eid)
        metadata = options.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or not all(
                isinstance(k, str) and isinstance(v, str) and len(v) <= 512 for k, v in metadata.items()
            )
        ):
            raise BadEvent(
                "'response.metadata' must map at most 16 keys to strings.",
                "invalid_value",
                "response.metadata",
                eid,
            )
        return conversation == "none", context, metadata

    def pending_transcriptions(self) -> list[asyncio.Task[None]]:
        return [i.transcription for i in self.items if i.transcription and not i.transcription.done()]

    async def create(self, event: dict[str, Any]) -> None:
        item, eid = event.get("item"), event.get("event_id")
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            await self._create_call_output(item, eid)
            return
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            raise BadEvent(
                "Only 'message' and 'function_call_output' items can be created.",
                "invalid_value",
                "item.type",
                eid,
            )
        role, text = parse_message(item, "item", eid)
        item_id = item.get("id") if isinstance(item.get("id"), str) and item["id"] else new_id("item")
        if any(i.id == item_id for i in self.items):
            raise BadEvent(
                f"An item with id '{item_id[:64]}' exists already.", "duplicate_item_id", "item.id", eid
            )
        previous = self.add(Item(item_id, role, text))
        wire = message_item(item_id, role, text)
        if role == "assistant":
            wire["content"] = [{"type": "output_text", "text": text}]
        await self.send(server_event("conversation.item.added", previous_item_id=previous, item=wire))
        await self.send(server_event("conversation.item.done", previous_item_id=previous, item=wire))

    async def _create_call_output(self, item: dict[str, Any], eid: str | None) -> None:
        """The client's result of a function call the model made."""
        calls = {i.call_id for i in self.items if i.kind == "function_call"}
        call_id, output = parse_call_output(item, calls, eid)
        item_id = item.get("id") if isinstance(item.get("id"), str) and item["id"] else new_id("item")
        if any(i.id == item_id for i in self.items):
            raise BadEvent(
                f"An item with id '{item_id[:64]}' exists already.", "duplicate_item_id", "item.id", eid
            )
        previous = self.add(Item(item_id, "tool", output, kind="function_call_output", call_id=call_id))
        wire = function_output_item(item_id, call_id, output)
        await self.send(server_event("conversation.item.added", previous_item_id=previous, item=wire))
        await self.send(server_event("conversation.item.done", previous_item_id=previous, item=wire))

    async def delete(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        found = [i for i in self.items if i.id == item_id]
        if not found:
            raise BadEvent(
                f"No item with id '{str(item_id)[:64]}'.", "item_not_found", "item_id", event.get("event_id")
            )
        self.items.remove(found[0])
        await self.send(server_event("conversation.item.deleted", item_id=item_id))

    async def truncate(self, event: dict[str, Any]) -> None:
        """Cuts an assistant item's remembered text to about what the user heard of its audio."""
        eid, item_id = event.get("event_id"), event.get("item_id")
        found = [i for i in self.items if i.id == item_id]
        if not found:
            raise BadEvent(f"No item with id '{str(item_id)[:64]}'.", "item_not_found", "item_id", eid)
        item = found[0]
        if item.role != "assistant" or item.kind != "audio":
            raise BadEvent("Only assistant audio items can be truncated.", "invalid_value", "item_id", eid)
        if event.get("content_index") != 0:
            raise BadEvent("'content_index' must be 0.", "invalid_value", "content_index", eid)
        end = event.get("audio_end_ms")
        if isinstance(end, bool) or not isinstance(end, int) or end < 0:
            raise BadEvent(
                "'audio_end_ms' must be a non-negative integer.", "invalid_value", "audio_end_ms", eid
            )
        if end > item.audio_ms:
            raise BadEvent(
                f"Audio content of {item.audio_ms}ms is already shorter than {end}ms.",
                "invalid_value",
                "audio_end_ms",
                eid,
            )
        if item.audio_ms:
            item.text = item.text[: round(len(item.text) * end / item.audio_ms)]
        item.audio_ms = end
        await self.send(
            server_event("conversation.item.truncated", item_id=item.id, content_index=0, audio_end_ms=end)
        )


def parse_message(item: dict[str, Any], param: str, eid: str | None) -> tuple[str, str]:
    """(role, text) of a client's ``message`` item; ``param`` names it in errors."""
    role = item.get("role")
    if role not in ("user", "assistant", "system"):
        raise BadEvent(
            f"'{param}.role' must be user, assistant or system.", "invalid_value", f"{param}.role", eid
        )
    content = item.get("content")
    if not isinstance(content, list) or not content:
        raise BadEvent(
            f"'{param}.content' must be a non-empty list.", "invalid_value", f"{param}.content", eid
        )
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        value = part.get("transcript" if kind == "input_audio" else "text") if kind else None
        if kind not in ("input_text", "text", "output_text", "input_audio") or not isinstance(value, str):
            raise BadEvent(
                "Content parts must be input_text/output_text with 'text' (or input_audio with a 'transcript').",
                "invalid_value",
                f"{param}.content",
                eid,
            )
        texts.append(value)
    return str(role), "\n".join(texts)
