"""Joining a run's output events from any process: as they come, until the run ends; resumed
after the last event id seen; refused clearly for unknown runs, expired or trimmed events."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from core_support import FAST, Pools

from nervenet import ConfigurationError, Pool


async def chatty_run(pool: Pool, run_id: str, chunks: int, release: asyncio.Event):  # type: ignore[no-untyped-def]
    async def body() -> bytes:
        for i in range(chunks):
            pool.runs.publish(run_id, f"chunk-{i}".encode())
            if i == chunks // 2:
                await release.wait()
        return b"done"

    return await pool.workflows.start("join/app", run_id, b"", body)


async def collect(pool: Pool, run_id: str, last: str | None = None) -> list[tuple[str, bytes]]:
    return [(e.event_id, e.data) async for e in pool.runs.join(run_id, last)]


async def test_a_joiner_gets_every_event_live_and_stops_when_the_run_ends(pool: Pool) -> None:
    release = asyncio.Event()
    handle = await chatty_run(pool, "run-j", 6, release)
    joiner = asyncio.ensure_future(collect(pool, "run-j"))
    await asyncio.sleep(0.2)
    assert not joiner.done()  # the run waits halfway: so does the joiner

    release.set()
    await handle.result(timeout=10)
    events = await asyncio.wait_for(joiner, 10)

    assert [data for _, data in events] == [f"chunk-{i}".encode() for i in range(6)]
    assert [i for i, _ in events] == sorted(i for i, _ in events)


async def test_resuming_from_the_last_event_id_gives_only_the_rest(pool: Pool) -> None:
    release = asyncio.Event()
    release.set()
    await (await chatty_run(pool, "run-r", 5, release)).result(timeout=10)
    events = await collect(pool, "run-r")

    rest = await collect(pool, "run-r", events[1][0])

    assert rest == events[2:]


@pytest.mark.redis
async def test_another_process_joins(pools: Pools, redis_url: str) -> None:
    runner = await pools.open(Pool.from_url(redis_url, settings=FAST))
    watcher = await pools.open(Pool.from_url(redis_url, settings=FAST))
    release = asyncio.Event()
    handle = await chatty_run(runner, "run-x", 4, release)
    joiner = asyncio.ensure_future(collect(watcher, "run-x"))
    await asyncio.sleep(0.2)
    release.set()
    await handle.result(timeout=10)

    assert [d for _, d in await asyncio.wait_for(joiner, 10)] == [
        b"chunk-0",
        b"chunk-1",
        b"chunk-2",
        b"chunk-3",
    ]


async def test_a_join_after_the_retention_is_refused(pool: Pool) -> None:
    pool.settings = replace(pool.settings, join_retention=1)
    release = asyncio.Event()
    release.set()
    await (await chatty_run(pool, "run-old", 2, release)).result(timeout=10)
    await asyncio.sleep(1.5)

    with pytest.raises(ConfigurationError, match=r"the events of run 'run-old' expired \(kept 1 s"):
        await collect(pool, "run-old")


async def test_resuming_from_a_trimmed_event_is_refused(pool: Pool) -> None:
    pool.settings = replace(pool.settings, run_events_kept=1)
    release = asyncio.Event()
    release.set()
    await (await chatty_run(pool, "run-t", 300, release)).result(timeout=10)

    with pytest.raises(ConfigurationError, match="were trimmed"):
        await collect(pool, "run-t", "1-0")


@pytest.mark.parametrize(("run_id", "last"), [("nobody", None), ("run-q", "garbage")])
async def test_unknown_runs_and_garbage_event_ids_are_refused(
    pool: Pool, run_id: str, last: str | None
) -> None:
    await pool.workflows.enqueue("join/app", "run-q", b"")

    with pytest.raises(ConfigurationError, match=r"no run 'nobody'|is not an event id"):
        await collect(pool, run_id, last)
