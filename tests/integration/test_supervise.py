"""actors.runtime.supervise: what an on-call engineer reads when a background actor stops."""

from __future__ import annotations

import logging

from actors.runtime import supervise
from domain.errors import Unavailable


async def _run_failing_once(exc: Exception) -> int:
    calls = 0

    async def body() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise exc

    await supervise("test-actor", body, first_backoff=0.01)
    return calls


async def test_a_database_outage_is_one_line_without_a_traceback(caplog):
    caplog.set_level(logging.WARNING, logger="paycast")
    assert await _run_failing_once(Unavailable("The database is unavailable; retry shortly.")) == 2
    (record,) = [r for r in caplog.records if "test-actor" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert "database is unavailable" in record.getMessage()
    assert "restarting" in record.getMessage()


async def test_a_bug_is_logged_with_its_traceback(caplog):
    caplog.set_level(logging.WARNING, logger="paycast")
    assert await _run_failing_once(KeyError("oops")) == 2
    (record,) = [r for r in caplog.records if "test-actor" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
