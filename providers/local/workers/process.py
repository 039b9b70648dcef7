"""One engine worker process, seen from the gateway: spawn, load, calls, cancel, death.

Loop-agnostic on purpose: a reader thread receives the worker's messages and hands each to
the event loop of the call it belongs to (``call_soon_threadsafe``), so one worker serves
callers on any loop (the gateway has one; tests and benchmarks start several).

A call's ``on_end`` runs exactly once, when the worker has really finished it (done, error,
cancelled and acknowledged) or has died; that is what releases the call's concurrency slots,
so a cancelled caller never frees a model that is still computing for it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from providers.base import ErrorKind, ProviderError
from providers.local.workers.ipc import Channel, LoadSpec, error_from_wire

log = logging.getLogger("talkgate.local.worker")

#: Messages larger than this are sent from a helper thread, so a big audio upload never
#: blocks the event loop while the socket drains.
INLINE_SEND_BYTES = 64 * 1024
#: How many of the worker's last stderr lines are kept for the crash report.
STDERR_TAIL_LINES = 20
_PROJECT_ROOT = str(Path(__file__).resolve().parents[3])


class _Call:
    """A call awaited on an event loop."""

    __slots__ = ("done", "loop", "on_end", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_end: Callable[[], None] | None) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.on_end = on_end
        self.done = False

    def deliver(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
            self.loop.call_soon_threadsafe(self.queue.put_nowait, message)


class _BlockingCall:
    """A call waited for by a plain thread (the render pool)."""

    __slots__ = ("done", "on_end", "queue")

    def __init__(self, on_end: Callable[[], None] | None) -> None:
        self.queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.on_end = on_end
        self.done = False

    def deliver(self, message: tuple[Any, ...]) -> None:
        self.queue.put(message)


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class EngineProcess:
    """A started worker; see the module docstring. ``on_exit(expected, reason)`` runs once."""

    def __init__(
        self,
        spec: LoadSpec,
        *,
        label: str,
        cancel_grace_s: float,
        on_exit: Callable[[bool, str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.label = label  # e.g. "local chat model 'smollm2'"
        self.cancel_grace_s = cancel_grace_s
        self.on_exit = on_exit
        self.info: dict[str, Any] = {}
        self.started_at = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: Channel | None = None
        self._calls: dict[int, _Call | _BlockingCall] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._stopping = False
        self._dead = False
        self._kill_reason: str | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)

    # ------------------------------------------------------------------ life

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        # poll(): a worker that has just died is not alive even before its reader has seen it
        return self._proc is not None and not self._dead and self._proc.poll() is None

    @property
    def busy(self) -> int:
        return len(self._calls)

    def start(self, load_timeout_s: float) -> dict[str, Any]:
        """Spawn the worker and load the model (blocking). Raises ProviderError on failure."""
        parent_end, child_end = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "providers.local.workers.child", str(child_end.fileno())],
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,  # a Ctrl-C at the terminal is the gateway's to handle
            )
        finally:
            child_end.close()
        self.started_at = time.monotonic()
        self._channel = Channel(parent_end.detach())
        threading.Thread(target=self._tail_stderr, name=f"{self.label} stderr", daemon=True).start()
        try:
            self._channel.send(("load", self.spec))
            if not self._channel.poll(load_timeout_s):
                raise ProviderError(
                    ErrorKind.UNAVAILABLE,
                    f"{self.label}: the worker did not load the model within {load_timeout_s:.0f} s",
                    code="ModelLoadTimeout",
                )
            reply = self._channel.recv()
        except (EOFError, OSError):
            self._reap()  # counts as a crash: a model that kills its worker while loading
            raise ProviderError(
                ErrorKind.UNAVAILABLE,
                f"{self.label}: the worker {describe_exit(self._proc.returncode)} while loading the model"
                f"{self._tail_suffix()}",
                code="WorkerCrashed",
            ) from None
        except BaseException:
            self.kill("load failed")
            self._close_channel()
            raise
        if reply[0] == "load_failed":
            self.kill("load failed")
            self._close_channel()
            raise error_from_wire(reply[1])
        self.info = reply[1]
        threading.Thread(target=self._read, name=f"{self.label} reader", daemon=True).start()
        return self.info

    def stop(self, timeout_s: float = 2.0) -> None:
        """Ask the worker to exit; kill it if it has not within ``timeout_s`` (blocking)."""
        self._stopping = True
        if self._proc is None:
            return
        with contextlib.suppress(OSError, AttributeError):
            self._channel.send(("stop",))
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill("did not stop")

    def kill(self, reason: str, *, expected: bool = True) -> None:
        """SIGKILL the worker; its running calls fail with ``reason``."""
        if expected:
            self._stopping = True
        self._kill_reason = self._kill_reason or reason
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()
        # the reader thread sees EOF now and fails the running calls with ``reason``

    # ------------------------------------------------------------------ calls

    async def call(self, method: str, *args: Any, on_end: Callable[[], None] | None = None) -> Any:
        """Run one call to completion in the worker."""
        call_id, call = await self._submit(method, args, on_end)
        try:
            kind, _, value = await call.queue.get()
        except BaseException:
            self._cancel(call_id)
            raise
        if kind == "error":
            raise error_from_wire(value)
        return value

    async def stream(
        self, method: str, *args: Any, on_end: Callable[[], None] | None = None
    ) -> AsyncIterator[Any]:
        """Yield a streaming call's items as the worker produces them."""
        call_id, call = await self._submit(method, args, on_end)
        try:
            while True:
                kind, _, value = await call.queue.get()
                if kind == "item":
                    yield value
                elif kind == "done":
                    return
                else:
                    raise error_from_wire(value)
        finally:
            if not call.done:
                self._cancel(call_id)

    def call_blocking(self, method: str, *args: Any) -> Any:
        """Run one call to completion, waiting on this thread (not on an event loop)."""
        call = _BlockingCall(None)
        call_id = self._register(call)
        with contextlib.suppress(OSError, AttributeError):  # a death is reported by the reader
            self._channel.send(("call", call_id, method, args))
        kind, _, value = call.queue.get()
        if kind == "error":
            raise error_from_wire(value)
        return value

    async def _submit(
        self, method: str, args: tuple[Any, ...], on_end: Callable[[], None] | None
    ) -> tuple[int, _Call]:
        call = _Call(asyncio.get_running_loop(), on_end)
        call_id = self._register(call)
        data = Channel.encode(("call", call_id, method, args))
        try:
            if len(data) > INLINE_SEND_BYTES:
                await asyncio.to_thread(self._channel.send_bytes, data)
            else:
                self._channel.send_bytes(data)
        except (OSError, AttributeError):
            pass  # the reader sees the death and fails this call with the reason
        return call_id, call

    def _register(self, call: _Call | _BlockingCall) -> int:
        with self._lock:
            if not self.alive:
                if call.on_end is not None:
                    call.on_end()
                raise self._dead_error("before this call")
            call_id = next(self._ids)
            self._calls[call_id] = call
        return call_id

    def _cancel(self, call_id: int) -> None:
        """Tell the worker to stop a call; kill the worker if it has not within the grace time."""
        with self._lock:
            if call_id not in self._calls or not self.alive:
                return
        with contextlib.suppress(OSError, AttributeError):
            self._channel.send(("cancel", call_id))
        timer = threading.Timer(self.cancel_grace_s, self._cancel_overdue, (call_id,))
        timer.daemon = True
        timer.start()

    def _cancel_overdue(self, call_id: int) -> None:
        if call_id in self._calls and self.alive:
            log.warning(
                "%s: a cancelled call is still running after %.1f s; killing the worker",
                self.label,
                self.cancel_grace_s,
            )
            self.kill(f"did not stop a cancelled call within {self.cancel_grace_s:.1f} s", expected=False)

    # ------------------------------------------------------------------ reader side

    def _read(self) -> None:
        channel = self._channel
        while True:
            try:
                message = channel.recv()
            except (EOFError, OSError, AttributeError):
                break
            kind, call_id = message[0], message[1]
            call = self._calls.get(call_id)
            if call is None:
                continue
            if kind != "item":
                self._end(call_id)
            call.deliver(message)
        self._reap()

    def _end(self, call_id: int) -> _Call | _BlockingCall | None:
        with self._lock:
            call = self._calls.pop(call_id, None)
        if call is not None and not call.done:
            call.done = True
            if call.on_end is not None:
                call.on_end()
        return call

    def _reap(self) -> None:
        """The worker is gone: fail what it was running, report the exit once."""
        with self._lock:
            if self._dead:
                return
            self._dead = True
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
        expected = self._stopping
        reason = self._kill_reason or describe_exit(self._proc.returncode if self._proc else None)
        if not expected:
            log.error("%s: the worker %s%s", self.label, reason, self._tail_suffix())
        self._close_channel()
        if self.on_exit is not None:  # counted before the callers hear of it
            self.on_exit(expected, reason)
        error = self._dead_error("during this call")
        for call_id in list(self._calls):
            call = self._end(call_id)
            if call is not None:
                call.deliver(("error", call_id, (error.kind.value, error.message, error.code, None)))

    def _dead_error(self, when: str) -> ProviderError:
        reason = self._kill_reason or describe_exit(self._proc.returncode if self._proc else None)
        return ProviderError(
            ErrorKind.UNAVAILABLE,
            f"{self.label}: the worker process {reason} {when}",
            code="WorkerCrashed",
            provider="local",
        )

    def _tail_stderr(self) -> None:
        stream = self._proc.stderr if self._proc is not None else None
        if stream is None:
            return
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr.append(line)
                log.info("%s: %s", self.label, line)
        stream.close()

    def _tail_suffix(self) -> str:
        time.sleep(0.05)  # let the stderr thread catch the crash report
        tail = " | ".join(list(self._stderr)[-4:])
        return f"; last stderr: {tail}" if tail else ""

    def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(OSError):
                channel.close()
