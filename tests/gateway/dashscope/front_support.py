"""Constants and helpers shared by the front-door tests (the fixture is in conftest.py)."""

from __future__ import annotations

import time
from typing import Any

from tests.servers import ServerThread

ADMIN_KEY = "tg-admin-front-door-91c2"
ANSWER = "Our store opens at nine in the morning and closes at eight."
QUESTION = "When does the store open?"
TRANSCRIPT = "Hello from the front door. It works."


def usage_rows(server: ServerThread, at_least: int = 1) -> list[dict[str, Any]]:
    """The usage rows the gateway wrote (its writer flushes every second), oldest first."""
    from tests.gateway.saas_support import query

    url = str(server.server.config.app.state.services.settings.database_url)
    deadline = time.monotonic() + 15
    while True:
        rows = [dict(r._mapping) for r in query(url, "SELECT * FROM usage_records ORDER BY ts_ms")]
        if len(rows) >= at_least or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)
