"""``talkgate sim --nls-port``: the NLS port as a real process, and its exposure guard."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx

from gateway.sim.nls.state import ACCESS_KEYS_ENV
from tests.servers import free_port
from tests.sim.test_exposure import CONTROL_TOKEN_ENV, KEYS_ENV, ROOT, TOKEN, _sim_env


def test_cli_serves_nls_on_its_own_port() -> None:
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcore.request import CommonRequest

    port, nls_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "sim", "--port", str(port), "--nls-port", str(nls_port)],
        env=_sim_env(**{ACCESS_KEYS_ENV: "LTAI-cli:cli-secret"}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/sim/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "simulator did not start"
            time.sleep(0.1)
        request = CommonRequest()
        request.set_method("POST")
        request.set_domain(f"127.0.0.1:{nls_port}")
        request.set_version("2019-02-28")
        request.set_action_name("CreateToken")
        client = AcsClient("LTAI-cli", "cli-secret", "cn-shanghai", proxy={"http": None, "https": None})
        token = json.loads(client.do_action_with_exception(request))["Token"]["Id"]
        requests = httpx.get(f"http://127.0.0.1:{port}/sim/requests?service=nls-token", timeout=5).json()
        assert len(token) == 32 and [r["status"] for r in requests["requests"]] == [200]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()


def test_cli_refuses_nls_on_a_wildcard_bind_with_the_built_in_access_key() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "sim", "--host", "0.0.0.0", "--port", str(free_port()),
         "--nls-port", str(free_port())],
        env=_sim_env(**{KEYS_ENV: "sk-a", CONTROL_TOKEN_ENV: TOKEN}),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert ACCESS_KEYS_ENV in out.stderr and "built-in AccessKey" in out.stderr
