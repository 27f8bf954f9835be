"""Redis goes away: a restart during a run is ridden out by coordinators and worker processes alike,
with or without persistence; a pool that cannot connect or log in at start says so plainly."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis.asyncio
import redis.exceptions
from core_apps import STARTED
from core_support import FAST, WorkerProcesses, registered, run_cli
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from nervenet import Pool, PoolConnectionError
from nervenet.testing import RedisServer, free_port

pytestmark = pytest.mark.redis


def nap(key: str, seconds: float) -> bytes:
    return orjson.dumps({"key": key, "sleep": seconds})


WORKFLOWS = 40
STEPS = 8


@pytest.fixture(params=["persistent", "volatile"])
def restartable_redis(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A private redis-server the test restarts: with appendonly persistence (``own_redis``),
    or without, so that a restart loses every key: streams, groups, registry, results."""
    if request.param == "persistent":
        yield request.getfixturevalue("own_redis")
    else:
        with RedisServer(appendonly=False) as server:
            yield server


async def start_workers(server: RedisServer, processes: WorkerProcesses, pool: Pool) -> None:
    for _ in range(2):
        await registered(pool, processes.cli(server.url))


async def test_tasks_in_flight_during_a_restart_complete(
    restartable_redis: RedisServer, worker_processes: WorkerProcesses
) -> None:
    server = restartable_redis
    async with Pool.from_url(server.url, settings=FAST) as pool:
        await start_workers(server, worker_processes, pool)
        dispatches = [
            asyncio.ensure_future(
                pool.dispatch("core/nap", nap(f"in-flight-{i}", 1.0), timeout=20, retries=0)
            )
            for i in range(10)
        ]
        for _ in dispatches:  # every task is running on a worker
            assert await pool.transport.redis.blpop([STARTED], timeout=10) is not None

        await asyncio.to_thread(server.restart, 0.3)

        results = await asyncio.wait_for(asyncio.gather(*dispatches), 30)
    assert sorted(orjson.loads(r)["key"] for r in results) == sorted(
        f"in-flight-{i}" for i in range(10)
    )


async def test_workflows_complete_across_a_restart(
    restartable_redis: RedisServer, worker_processes: WorkerProcesses
) -> None:
    """WORKFLOWS workflows of STEPS steps; the server restarts once a third of all steps are
    done. Between steps each coordinator "thinks" a little (as one that calls a model itself
    would), so some dispatch while the server is down."""
    server = restartable_redis
    done_steps = 0
    third_done = asyncio.Event()

    async def workflow(pool: Pool, index: int) -> Any:
        nonlocal done_steps
        coordinator = pool.coordinator(f"wf-{index}")
        state: dict[str, Any] = {"wf": index, "steps": [], "sleep": 0.05}
        for step in range(STEPS):
            await asyncio.sleep(random.uniform(0, 0.1))
            state["steps"].append(step)
            result = await coordinator.dispatch(
                "core/sleep",
                orjson.dumps(state),
                task_id=f"wf-{index}-step-{step}",
                timeout=5,
                retries=5,
            )
            state = orjson.loads(result)
            done_steps += 1
            if done_steps >= WORKFLOWS * STEPS // 3:
                third_done.set()
        return state

    async with Pool.from_url(server.url, settings=FAST) as pool:
        await start_workers(server, worker_processes, pool)
        runs = [asyncio.ensure_future(workflow(pool, i)) for i in range(WORKFLOWS)]
        try:
            await third_done.wait()
            await asyncio.to_thread(server.restart, 0.5)
            states = await asyncio.wait_for(asyncio.gather(*runs), 60)
        finally:
            for run in runs:
                run.cancel()
            await asyncio.gather(*runs, return_exceptions=True)

    assert states == [
        {"wf": i, "steps": list(range(STEPS)), "sleep": 0.05} for i in range(WORKFLOWS)
    ]


async def test_a_dispatch_made_while_redis_is_down_rides_out_a_short_outage(
    own_redis: RedisServer, worker_processes: WorkerProcesses
) -> None:
    async with Pool.from_url(own_redis.url, settings=FAST) as pool:
        await registered(pool, worker_processes.cli(own_redis.url))
        own_redis.kill()
        pool.registry.invalidate()  # as if the one-second cache had just expired

        dispatch = asyncio.ensure_future(pool.dispatch("core/echo", b"1", timeout=10))
        await asyncio.sleep(0.5)  # the outage
        await asyncio.to_thread(own_redis.start)

        assert orjson.loads(await dispatch) == {"echo": 1}


# --- failing at start --------------------------------------------------------------------------


@pytest.fixture
def password_redis() -> Iterator[RedisServer]:
    with RedisServer(password="the-right-password") as server:
        yield server


async def test_a_wrong_password_fails_at_start_with_a_message_about_credentials(
    password_redis: RedisServer,
) -> None:
    pool = Pool.from_url(f"redis://:wrong-password@127.0.0.1:{password_redis.port}/0")

    with pytest.raises(PoolConnectionError) as caught:
        await pool.ensure_started()
    await pool.aclose()

    message = str(caught.value)
    assert "credentials" in message or "password" in message
    assert "wrong-password" not in message  # the URL is shown masked


async def test_a_missing_password_fails_at_start_saying_one_is_needed(
    password_redis: RedisServer,
) -> None:
    pool = Pool.from_url(f"redis://127.0.0.1:{password_redis.port}/0")

    with pytest.raises(PoolConnectionError, match="password"):
        await pool.ensure_started()
    await pool.aclose()


async def test_an_unreachable_server_fails_at_start_with_pool_connection_error() -> None:
    port = free_port()  # nothing listens there
    pool = Pool.from_url(f"redis://127.0.0.1:{port}/0")

    with pytest.raises(
        PoolConnectionError, match=f"cannot reach Redis at redis://127.0.0.1:{port}"
    ):
        await pool.ensure_started()
    await pool.aclose()


async def test_the_cli_reports_a_wrong_password_in_one_line_without_a_traceback(
    password_redis: RedisServer,
) -> None:
    status = await run_cli(
        "status", "--redis", f"redis://:wrong-password@127.0.0.1:{password_redis.port}/0"
    )

    assert status.returncode == 2
    assert "error:" in status.output
    assert "password" in status.output or "credentials" in status.output
    assert "Traceback" not in status.output


async def test_a_pool_that_failed_to_start_starts_once_redis_is_up() -> None:
    server = RedisServer()
    pool = Pool.from_url(server.url, settings=FAST)
    try:
        with pytest.raises(PoolConnectionError):
            await pool.ensure_started()

        server.start()
        await pool.ensure_started()

        assert await pool.transport.redis.ping()
    finally:
        await pool.aclose()
        server.close()


async def test_a_pool_started_while_redis_loads_its_data_waits_until_it_is_loaded() -> None:
    # key-load-delay (µs per key, a Redis debug setting) stretches the AOF replay of a restart
    # to a few seconds, the window in which the server answers LOADING (between batches of
    # 1,024 commands replayed).
    with RedisServer(appendonly=True, extra_args=["--key-load-delay", "100"]) as server:
        writer = redis.asyncio.Redis(port=server.port)
        async with writer.pipeline(transaction=False) as pipe:
            for i in range(20_000):
                pipe.set(f"k{i}", i)  # one AOF command (one load delay) per key
            await pipe.execute()
        await writer.aclose()
        server.restart(until_loaded=False)

        once = redis.asyncio.Redis(port=server.port, retry=Retry(NoBackoff(), 0))
        with pytest.raises(redis.exceptions.BusyLoadingError):
            await once.ping()  # the window is real
        await once.aclose()
        async with Pool.from_url(server.url, settings=FAST) as pool:
            assert await pool.transport.redis.get("k19999") == b"19999"
