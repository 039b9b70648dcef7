"""The simulated Alibaba Cloud NLS account the tests use, and gateway settings pointed at it."""

from __future__ import annotations

import copy
from typing import Any

NLS_AK = "LTAI-test-access-key"
NLS_SECRET = "test-access-key-secret-0123456789"
NLS_APPKEY = "appkey-16k-test"
NLS_APPKEY_8K = "appkey-8k-test"


def nls_sim_config() -> Any:
    from gateway.sim.nls.state import NlsSimConfig

    return NlsSimConfig(access_keys={NLS_AK: NLS_SECRET}, appkeys=[NLS_APPKEY, NLS_APPKEY_8K])


def nls_settings(nls_port: int, **overrides: Any) -> dict[str, Any]:
    """The ``nls`` section of Settings for the simulator on ``nls_port`` (plain http/ws on loopback)."""
    section = {
        "access_key_id": NLS_AK,
        "access_key_secret": NLS_SECRET,
        "appkey": NLS_APPKEY,
        "appkey_8k": NLS_APPKEY_8K,
        "token_endpoint": f"http://127.0.0.1:{nls_port}",
        "gateway_url": f"ws://127.0.0.1:{nls_port}/ws/v1",
    }
    section.update(overrides)
    return section


def reset_nls(sim: Any) -> None:
    """Back to the fixture's NLS configuration, with no issued tokens or running tasks."""
    sim.nls.config = copy.deepcopy(nls_sim_config())
    sim.nls.tokens.clear()
    sim.nls.nonces.clear()
    sim.nls.running.clear()
    sim.nls.created = 0
