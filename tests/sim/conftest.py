"""Point the official dashscope SDK at the simulator for one test, then restore its globals."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import SimHandle


@pytest.fixture
def ds(sim: SimHandle) -> Iterator[SimHandle]:
    import dashscope

    saved = (dashscope.base_http_api_url, dashscope.base_websocket_api_url, dashscope.api_key)
    dashscope.base_http_api_url = sim.http_base
    dashscope.base_websocket_api_url = sim.ws_base
    dashscope.api_key = sim.api_key
    sim.control("DELETE", "/sim/config").raise_for_status()
    try:
        yield sim
    finally:
        dashscope.base_http_api_url, dashscope.base_websocket_api_url, dashscope.api_key = saved
        sim.control("DELETE", "/sim/config").raise_for_status()
