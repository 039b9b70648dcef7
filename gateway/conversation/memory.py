"""Short in-memory history per conversation, bounded in turns, conversations and idle time.

Keys include the tenant, so two tenants using the same conversation_id never share text.
History is process-local by design: it is a convenience for demos and kiosks, not a store.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any


class ConversationMemory:
    def __init__(self, max_conversations: int = 1000, max_turns: int = 6, idle_ttl_s: float = 3600.0) -> None:
        self.max_conversations = max_conversations
        self.max_messages = 2 * max_turns
        self.idle_ttl_s = idle_ttl_s
        self._data: OrderedDict[tuple[str, str], tuple[float, list[dict[str, Any]]]] = OrderedDict()
        self._lock = threading.Lock()

    def history(self, tenant: str, conversation_id: str | None) -> list[dict[str, Any]]:
        if not conversation_id:
            return []
        key = (tenant, conversation_id)
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return []
            if time.monotonic() - entry[0] > self.idle_ttl_s:
                del self._data[key]
                return []
            return [dict(m) for m in entry[1]]

    def append(self, tenant: str, conversation_id: str | None, user: str, assistant: str) -> None:
        if not conversation_id:
            return
        key = (tenant, conversation_id)
        with self._lock:
            _, messages = self._data.pop(key, (0.0, []))
            messages = [
                *messages,
                {"role": "user", "content": user},
                {"role": "assistant", "content": assistant},
            ]
            self._data[key] = (time.monotonic(), messages[-self.max_messages :])
            while len(self._data) > self.max_conversations:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
