"""Run real ASGI servers (gateway, simulator) on loopback ports inside the test process, and
real ``talkgate serve`` processes for tests that need separate interpreters."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """A uvicorn server on its own thread and event loop; ``stop()`` is a graceful shutdown."""

    def __init__(self, app: Any, port: int | None = None, **kw: Any) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", access_log=False, **kw
        )
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("server thread died during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start within 30 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextlib.contextmanager
def serving(app: Any, port: int | None = None) -> Iterator[ServerThread]:
    server = ServerThread(app, port=port).start()
    try:
        yield server
    finally:
        server.stop()


def _talkgate_command() -> list[str]:
    """The installed ``talkgate`` script next to this interpreter, else ``python -m gateway.cli``."""
    script = Path(sys.executable).with_name("talkgate")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "gateway.cli"]


class GatewayProcess:
    """``talkgate serve --port P`` as its own OS process, configured only through the environment.

    Unlike ``ServerThread``, two of these share nothing but what they are given (Redis, a
    database, the simulator): no module globals, no event loop, no thread pool. The inherited
    TALKGATE_* and DASHSCOPE_* variables are dropped so only ``env`` configures the gateway.
    Output goes to a log file, shown when start-up fails.
    """

    def __init__(self, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("TALKGATE_", "DASHSCOPE_"))}
        self.env = {**base, **env}
        self.log = Path(tempfile.mkstemp(prefix="talkgate-gw-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        command = [*_talkgate_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"talkgate serve exited with {self.process.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"talkgate serve did not answer /healthz within {timeout:g} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), then SIGKILL if it has not exited after 30 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.unlink(missing_ok=True)
