"""A heartbeat late because its own process was busy says so, not that Redis is unavailable:
an operator must look at the process's load, not at the server."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from core_support import MakePool

from nervenet import PoolSettings
from nervenet.outages import Outages

BUSY = "too busy to keep its heartbeats on time"
OUTAGE = "unavailable or failing over"


def spin(seconds: float) -> None:
    """Hold the event loop's thread with work (a sleep would cost it no CPU)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


async def test_a_pool_whose_loop_is_busy_says_it_is_too_busy_once(
    make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await make_pool(
        settings=PoolSettings(heartbeat_interval=0.1, lease_ttl=0.3, visibility_timeout=0.5)
    )
    with caplog.at_level(logging.WARNING, logger="nervenet"):
        end = time.monotonic() + 1.5
        while time.monotonic() < end:  # each await of a heartbeat waits behind a burst
            spin(0.25)
            await asyncio.sleep(0)
        await asyncio.sleep(0.3)

    assert pool.outages.incidents == 0
    assert OUTAGE not in caplog.text
    assert caplog.text.count(BUSY) == 1  # several late heartbeats, one warning


def test_a_late_heartbeat_that_waited_on_redis_is_an_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outages = Outages("redis://somewhere")
    with caplog.at_level(logging.WARNING, logger="nervenet"):
        outages.slow("a pool heartbeat", 2.0, busy=0.1)  # waited, idle, for an answer

    assert outages.ongoing
    assert OUTAGE in caplog.text
    assert BUSY not in caplog.text
