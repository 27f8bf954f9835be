"""Calls into the pool's home loop from sync code and other loops: results, errors, cancellation,
and no leak of the caller's context variables into the pool's loop."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from nervenet.portal import Portal

caller_value: contextvars.ContextVar[str] = contextvars.ContextVar("caller_value", default="unset")


def test_sync_call_returns_results_and_raises_errors() -> None:
    portal = Portal()
    try:

        async def double() -> int:
            return 21 * 2

        async def fail() -> None:
            raise KeyError("nope")

        assert portal.call(double) == 42
        with pytest.raises(KeyError):
            portal.call(fail)
    finally:
        portal.close()


def test_the_callers_context_does_not_reach_the_home_loop() -> None:
    portal = Portal()
    try:
        caller_value.set("caller's")

        async def read() -> str:
            return caller_value.get()

        assert portal.call(read) == "unset"
    finally:
        portal.close()


async def test_cancelling_a_cross_loop_caller_cancels_the_call_on_the_home_loop() -> None:
    portal = Portal()
    started, cancelled = threading.Event(), threading.Event()

    async def wait_forever() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    try:
        portal._home_for_sync_caller()  # a home loop in its private thread, not ours
        call = asyncio.ensure_future(portal.run(wait_forever))
        await asyncio.to_thread(started.wait, 5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await asyncio.to_thread(cancelled.wait, 5)
    finally:
        portal.close()
