"""The simulator and the gateway as separate processes, for benchmarks that load them from outside.

A benchmark client in the same process would share the event loop and the GIL with the server it
measures; each server here runs in its own interpreter with uvloop and httptools, as deployed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

#: ``python -c`` source of a simulator accepting the API key ``{key}`` on port ``{port}``.
SIM_CODE = textwrap.dedent(
    """
    import uvicorn
    from gateway.sim.app import create_app
    from gateway.sim.config import SimConfig
    uvicorn.run(create_app(SimConfig(api_keys=[{key!r}])), host="127.0.0.1", port={port},
                loop="uvloop", http="httptools", log_level="warning", access_log=False)
    """
)

_GATEWAY_CODE = textwrap.dedent(
    """
    import logging, uvicorn
    from gateway.app import create_app
    from gateway.settings import Settings
    logging.basicConfig(level=logging.{log_level})
    settings = Settings()
    uvicorn.run(create_app(settings), host="127.0.0.1", port={port},
                loop="uvloop", http="httptools", log_level="warning", access_log=False,
                timeout_keep_alive=int(settings.keep_alive_s))  # as `talkgate serve` does
    """
)


def gateway_env(sim_port: int, key: str, data_dir: Path | str, log_level: str = "WARNING") -> dict[str, str]:
    """TALKGATE_* / DASHSCOPE_* variables of a gateway whose Bailian providers call the simulator."""
    return {
        "DASHSCOPE_API_KEY": key,
        "DASHSCOPE_HTTP_BASE_URL": f"http://127.0.0.1:{sim_port}/api/v1",
        "DASHSCOPE_WEBSOCKET_BASE_URL": f"ws://127.0.0.1:{sim_port}/api-ws/v1/inference",
        "TALKGATE_DATA_DIR": str(data_dir),
        "TALKGATE_LOG_LEVEL": log_level,
    }


def gateway_code(port: int, log_level: str = "WARNING") -> str:
    """``python -c`` source of a gateway on ``port``, configured from the TALKGATE_* environment."""
    return _GATEWAY_CODE.format(port=port, log_level=log_level)


def start(code: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Run ``code`` in a fresh interpreter from the repository root, output to ``log``."""
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parent.parent,
    )


def stop(procs: list[subprocess.Popen], timeout_s: float = 30.0) -> None:
    """Terminate every process, then wait for each; one that ignores SIGTERM is killed."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
