"""An engine worker process: loads one local model and serves calls on it until told to stop.

Started by ``EngineProcess`` as ``python -m providers.local.workers.child <fd>`` with one end of
a socket pair; protocol in ``ipc.py``. The main thread reads messages; each call runs on one of
``concurrency`` threads, so a model configured for N concurrent calls serves N at once.

Streams are sent item by item as the engine produces them. A cancel sets the call's event: the
engine checks it between tokens, segments or sentences, and the stream loop stops at its next
item. When the gateway goes away (the socket reaches EOF, even after SIGKILL of the gateway)
the worker exits at once, so it never outlives its parent.
"""

from __future__ import annotations

import faulthandler
import importlib
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from providers.local.workers.faults import Fault
from providers.local.workers.ipc import Channel, LoadSpec, error_to_wire


def load_engine(spec: LoadSpec) -> Any:
    module_name, _, class_name = spec.engine.partition(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class(spec)


class Server:
    """Serves calls on one loaded engine; see the module docstring."""

    def __init__(self, channel: Channel, engine: Any, concurrency: int, fault: Fault | None) -> None:
        self.channel = channel
        self.engine = engine
        self.fault = fault
        self.cancels: dict[int, threading.Event] = {}
        self.executor = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="engine")

    def run(self) -> None:
        while True:
            try:
                message = self.channel.recv()
            except (EOFError, OSError):
                os._exit(0)  # the gateway is gone
            kind = message[0]
            if kind == "call":
                _, call_id, method, args = message
                cancelled = self.cancels[call_id] = threading.Event()
                self.executor.submit(self.serve, call_id, method, args, cancelled)
            elif kind == "cancel":
                event = self.cancels.get(message[1])
                if event is not None:
                    event.set()
            elif kind == "stop":
                os._exit(0)  # skip native destructors: nothing is left to flush

    def serve(self, call_id: int, method: str, args: tuple[Any, ...], cancelled: threading.Event) -> None:
        send = self.channel.send
        try:
            if method not in self.engine.methods:
                raise ValueError(f"the engine has no method {method!r}")
            if self.fault is not None:
                self.fault.check(method, 0)
            result = getattr(self.engine, method)(*args, cancelled=cancelled)
            if isinstance(result, Iterator):
                self.stream(call_id, method, result, cancelled)
                send(("done", call_id, None))
            else:
                send(("done", call_id, result))
        except BaseException as exc:
            send(("error", call_id, error_to_wire(exc)))
        finally:
            self.cancels.pop(call_id, None)

    def stream(self, call_id: int, method: str, items: Iterator[Any], cancelled: threading.Event) -> None:
        sent = 0
        try:
            for item in items:
                if cancelled.is_set():
                    return
                self.channel.send(("item", call_id, item))
                sent += 1
                if self.fault is not None:
                    self.fault.check(method, sent)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()


def main(argv: list[str]) -> int:
    faulthandler.enable()  # a native crash leaves its Python stack in the stderr tail
    os.dup2(2, 1)  # stray native prints to stdout land in the logged stderr
    channel = Channel(int(argv[1]))
    kind, spec = channel.recv()
    assert kind == "load", kind
    try:
        engine = load_engine(spec)
    except BaseException as exc:
        channel.send(("load_failed", error_to_wire(exc)))
        return 1
    channel.send(("ready", engine.info()))
    concurrency = getattr(spec.config, "concurrency", 1)
    Server(channel, engine, concurrency, Fault.from_env(spec.name)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
