"""``PoolSettings.max_runs``: a process runs at most that many workflow runs at once, the rest
wait their turn in the order they came (``nervenet.run_slots``). The slots themselves, then
durable runs started here and runs taken from the queue, on every backend."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import re
import threading
from collections.abc import AsyncIterator

import pytest
from bounded_runs import all_slots_given_back
from core_support import FAST, MakePool, Pools, run_cli, wait_until

from nervenet import ConfigurationError, Pool, PoolSettings
from nervenet.run_slots import RunSlots
from nervenet.status import RunLoad
from nervenet.workflows import RunFunction

# --- the slots --------------------------------------------------------------------------------


async def test_slots_go_to_waiters_in_the_order_they_asked() -> None:
    slots = RunSlots(2)
    await slots.acquire()
    await slots.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        await slots.acquire()
        order.append(i)

    waiters = [asyncio.ensure_future(wait(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert (slots.running, slots.waiting, order) == (2, 3, [])

    for expected in ([0], [0, 1], [0, 1, 2]):
        slots.release()
        await asyncio.sleep(0.01)
        assert order == expected
        assert slots.running == 2  # a released slot is handed over, not freed
    await asyncio.gather(*waiters)
    slots.release(2)
    assert (slots.running, slots.waiting) == (0, 0)


async def test_a_cancelled_waiter_leaves_no_slot_behind() -> None:
    """Cancelled while waiting: it leaves the line. Cancelled just after a slot was handed to
    it (before it woke up): the slot goes on to the next waiter instead of being lost."""
    slots = RunSlots(1)
    await slots.acquire()
    first = asyncio.ensure_future(slots.acquire())
    second = asyncio.ensure_future(slots.acquire())
    third = asyncio.ensure_future(slots.acquire())
    await asyncio.sleep(0.01)

    first.cancel()  # still waiting
    await asyncio.sleep(0.01)
    assert slots.waiting == 2

    slots.release()  # handed to `second`...
    second.cancel()  # ...which is cancelled before it wakes up: `third` gets it
    await asyncio.sleep(0.01)
    assert first.cancelled() and second.cancelled()
    assert third.done() and not third.cancelled()
    assert (slots.running, slots.waiting) == (1, 0)


async def test_claims_take_only_free_slots_and_never_overtake_waiting_runs() -> None:
    slots = RunSlots(3)
    assert slots.take(2) == 2
    assert slots.take(5) == 1  # only the free one
    assert slots.take(1) == 0
    waiter = asyncio.ensure_future(slots.acquire())
    await asyncio.sleep(0.01)
    slots.release()  # handed to the waiting run, not left for a claim
    assert slots.take(1) == 0
    await waiter
    slots.release(3)
    assert slots.running == 0
    assert RunSlots(None).take(500) == 500  # unbounded: counted only


async def test_a_blocked_thread_gets_its_slot_from_a_release_on_the_loop() -> None:
    """Synchronous callers (``graph.invoke``) wait for a slot in their own thread."""
    slots = RunSlots(1)
    await slots.acquire()
    got = threading.Event()
    thread = threading.Thread(target=_take_and_tell, args=(slots, got))
    thread.start()
    await asyncio.sleep(0.05)
    assert not got.is_set() and slots.waiting == 1
    slots.release()
    assert await asyncio.to_thread(got.wait, 5)
    thread.join()
    assert slots.running == 1


def _take_and_tell(slots: RunSlots, got: threading.Event) -> None:
    """A synchronous caller: block for a slot, then say so."""
    slots.acquire_blocking()
    got.set()


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="max_runs"):
        PoolSettings(max_runs=0)


# --- durable runs ------------------------------------------------------------------------------


async def test_durable_runs_past_the_bound_wait_and_run_in_the_order_they_came(
    make_pool: MakePool,
) -> None:
    pool = await make_pool(settings=dataclasses.replace(FAST, max_runs=2))
    running: set[int] = set()
    most = 0
    started: list[int] = []
    gates = [asyncio.Event() for _ in range(5)]

    def run_of(i: int) -> RunFunction:
        async def run() -> bytes:
            nonlocal most
            started.append(i)
            running.add(i)
            most = max(most, len(running))
            await gates[i].wait()
            running.discard(i)
            return str(i).encode()

        return run

    starts = [
        asyncio.ensure_future(pool.workflows.start("core-kind", f"bounded-{i}", b"", run_of(i)))
        for i in range(5)
    ]

    async def have_started(count: int) -> bool:
        return len(started) == count

    await wait_until(functools.partial(have_started, 2), what="two runs started")
    await asyncio.sleep(0.3)
    # The first two got a slot at once and lease concurrently: which lease's round trip ends
    # first is the network's (on a cluster they reach different primaries), not the bound's.
    assert sorted(started) == [0, 1]
    assert sum(s.done() for s in starts) == 2  # the others wait for a slot, unleased
    assert await pool.transport.redis.zcard(pool.keys.workflows) == 2

    for ended, gate in enumerate(gates):
        gate.set()  # one run ends, one slot frees: the longest waiter's
        if ended + 3 <= len(gates):
            await wait_until(functools.partial(have_started, ended + 3), what="the next run")
    handles = await asyncio.gather(*starts)
    results = [await h.result(timeout=10) for h in handles]
    assert results == [b"0", b"1", b"2", b"3", b"4"]
    assert started[2:] == [2, 3, 4]  # the waiters, in the order they came
    assert most == 2
    await all_slots_given_back(pool)  # (a run's slot goes back once its task is done)


async def test_a_full_process_leaves_queued_runs_in_redis_and_takes_them_oldest_first(
    make_pool: MakePool,
) -> None:
    """``nervenet serve --max-runs 2``: two queued runs at a time are claimed, the rest stay
    queued for a process with room, and are taken in the order they were queued."""
    pool = await make_pool(settings=dataclasses.replace(FAST, max_runs=2))
    started: list[str] = []
    gates = {f"queued-{i}": asyncio.Event() for i in range(5)}

    async def resume(run_id: str, payload: bytes) -> bytes:
        started.append(run_id)
        await gates[run_id].wait()
        return payload

    pool.workflows.register("queued-kind", resume)
    handles = [
        await pool.workflows.enqueue("queued-kind", run_id, run_id.encode()) for run_id in gates
    ]
    pool.workflows.take_queued_runs()

    async def taken(count: int) -> bool:
        return len(started) >= count

    await wait_until(functools.partial(taken, 2), what="two queued runs taken")
    await asyncio.sleep(4 * FAST.heartbeat_interval)  # scans come and claim nothing more
    assert started == ["queued-0", "queued-1"]
    assert await pool.transport.redis.zcard(pool.keys.workflows_queued) == 3
    assert pool.run_slots.running == 2

    for i, run_id in enumerate(gates):
        gates[run_id].set()
        await wait_until(functools.partial(taken, min(5, i + 3)), what=f"run {i + 3} taken")
    assert started == list(gates)
    assert [await h.result(timeout=10) for h in handles] == [r.encode() for r in gates]

    await all_slots_given_back(pool, timeout=10.0)


async def test_serve_bounds_a_pool_only_before_it_runs_anything(make_pool: MakePool) -> None:
    """``nervenet serve --max-runs`` bounds the pool of the app it serves: settings and slots."""
    pool = await make_pool()
    pool.bound_runs(3)
    assert (pool.settings.max_runs, pool.run_slots.limit) == (3, 3)
    await pool.run_slots.acquire()
    with pytest.raises(ConfigurationError, match="before the pool runs anything"):
        pool.bound_runs(5)
    pool.run_slots.release()


def test_a_slot_handed_to_a_waiter_whose_loop_closed_goes_on() -> None:
    """A run that waited on an event loop that is gone (a closed notebook kernel's loop, a
    finished ``asyncio.run``) cannot take its slot: the next waiter gets it."""
    slots = RunSlots(1)
    slots.take(1)
    dead = asyncio.new_event_loop()
    stranded = dead.run_until_complete(_queue_one_waiter(slots))
    dead.close()
    got = threading.Event()
    thread = threading.Thread(target=_take_and_tell, args=(slots, got))
    thread.start()
    while slots.waiting < 2:
        threading.Event().wait(0.01)

    slots.release()

    assert got.wait(5)
    thread.join()
    assert (slots.running, slots.waiting) == (1, 0)
    assert not stranded.done()  # it never learnt of the slot


async def _queue_one_waiter(slots: RunSlots) -> asyncio.Task[None]:
    """A waiter queued on this loop, its task still waiting when the loop closes."""
    waiting = asyncio.ensure_future(slots.acquire())
    await asyncio.sleep(0)
    return waiting


# --- what operators see ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _one_running_one_waiting(pool: Pool) -> AsyncIterator[None]:
    """Two durable runs on a pool with one slot: one runs and one waits, until the block ends
    (then both finish)."""
    done = asyncio.Event()

    async def run() -> bytes:
        await done.wait()
        return b""

    first = await pool.workflows.start("core-kind", "holds-the-slot", b"", run)
    second = asyncio.ensure_future(pool.workflows.start("core-kind", "waits", b"", run))
    try:
        yield
    finally:
        done.set()
        assert await first.result(timeout=10) == b""
        assert await (await second).result(timeout=10) == b""


async def test_status_shows_each_process_runs_under_way_and_waiting_for_a_slot(
    make_pool: MakePool,
) -> None:
    pool = await make_pool(settings=dataclasses.replace(FAST, max_runs=1))

    async def announced() -> list[RunLoad]:
        loads = (await pool.status()).run_loads
        return loads if loads and loads[0].waiting else []

    async with _one_running_one_waiting(pool):
        [load] = await wait_until(announced, what="the process's load announced")
    assert (load.process_id, load.running, load.waiting, load.max_runs) == (
        pool.process_id,
        1,
        1,
        1,
    )


@pytest.mark.redis
async def test_the_status_command_shows_runs_per_process(redis_url: str, pools: Pools) -> None:
    pool = await pools.open(
        Pool.from_url(redis_url, settings=dataclasses.replace(FAST, max_runs=1))
    )
    async with _one_running_one_waiting(pool):
        await asyncio.sleep(2 * FAST.heartbeat_interval)
        status = await run_cli("status", "--redis", redis_url)

    assert status.returncode == 0, status.output
    row = rf"[│|]\s*{pool.process_id[:8]}\s*[│|]\s*1\s*[│|]\s*1\s*[│|]\s*1\s*[│|]"
    assert re.search(row, status.output), status.output
