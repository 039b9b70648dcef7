"""The wire between the gateway and an engine worker: pickled tuples over one socket pair.

Messages (parent → child): ``("load", LoadSpec)`` once, then ``("call", id, method, args)``,
``("cancel", id)`` and ``("stop",)``. Child → parent: ``("ready", info)`` or
``("load_failed", error)``, then per call any number of ``("item", id, value)`` followed by
exactly one ``("done", id, value)`` or ``("error", id, error)``.

Errors cross as plain tuples, not pickled exceptions: ``ProviderError`` takes keyword
arguments that exception pickling drops, and an engine's own exception class may not even
be importable in the gateway.
"""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from providers.base import ErrorKind, ProviderError

#: Wire form of an error: (kind, message, code, status).
WireError = tuple[str, str, str | None, int | None]


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What a worker loads: ``engine`` is "module:Class" of a class with the Engine shape."""

    engine: str
    name: str
    config: Any
    files: Any
    options: dict[str, Any] = field(default_factory=dict)


class Channel:
    """One end of the socket pair. Sends are serialised; only one thread may receive."""

    def __init__(self, fd: int) -> None:
        self._conn = Connection(fd)
        self._send_lock = threading.Lock()

    @staticmethod
    def encode(message: tuple[Any, ...]) -> bytes:
        return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)

    def send(self, message: tuple[Any, ...]) -> None:
        self.send_bytes(self.encode(message))

    def send_bytes(self, data: bytes) -> None:
        with self._send_lock:
            self._conn.send_bytes(data)

    def poll(self, timeout: float) -> bool:
        """Whether a message is waiting (within ``timeout`` seconds)."""
        return self._conn.poll(timeout)

    def recv(self) -> tuple[Any, ...]:
        """The next message; EOFError/OSError once the other side is gone."""
        return pickle.loads(self._conn.recv_bytes())

    def close(self) -> None:
        self._conn.close()


def error_to_wire(exc: BaseException) -> WireError:
    if isinstance(exc, ProviderError):
        return (exc.kind.value, exc.message, exc.code, exc.status)
    return (ErrorKind.UNAVAILABLE.value, f"{type(exc).__name__}: {exc}", "LocalEngineError", None)


def error_from_wire(wire: WireError, provider: str = "local") -> ProviderError:
    kind, message, code, status = wire
    return ProviderError(ErrorKind(kind), message, code=code, status=status, provider=provider)
