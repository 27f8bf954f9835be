"""Load behaviour: bounded streams under backpressure, and flat memory over a soak."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from nervenet import Handlers, Pool, PoolSettings
from nervenet.testing import ChildProcesses

pytestmark = pytest.mark.redis

APP = Path(__file__).parent


async def test_slow_workers_slow_the_coordinator_down_and_streams_stay_bounded(
    redis_url: str,
) -> None:
    max_in_flight = 40
    handlers = Handlers()

    @handlers.task("load/slow")
    async def slow(value: int) -> int:
        await asyncio.sleep(0.01)
        return value * 2

    settings = PoolSettings(max_in_flight=max_in_flight)
    async with Pool.from_url(redis_url, settings=settings) as pool:
        await pool.serve(handlers, concurrency=4)
        stream = pool.keys.task_stream("load/slow")
        lengths: list[int] = []
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                lengths.append(int(await pool.transport.redis.xlen(stream)))
                await asyncio.sleep(0.005)

        sampler = asyncio.ensure_future(sample())
        results = await asyncio.gather(
            *(pool.dispatch("load/slow", orjson.dumps(i)) for i in range(600))
        )
        done.set()
        await sampler
        # Acknowledgements trail the replies by a pipeline; then every entry is gone.
        for _ in range(100):
            if await pool.transport.redis.xlen(stream) == 0:
                break
            await asyncio.sleep(0.01)
        final_length = int(await pool.transport.redis.xlen(stream))
    assert [orjson.loads(r) for r in results] == [i * 2 for i in range(600)]
    assert max(lengths) <= max_in_flight, "the stream grew past the in-flight bound"
    assert final_length == 0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def soak_workers(redis_url: str) -> Iterator[ChildProcesses]:
    procs = ChildProcesses(APP, {"NERVENET_REDIS_URL": redis_url})
    try:
        yield procs
    finally:
        procs.close()


async def _soak(redis_url: str, procs: ChildProcesses, workflows: int) -> None:
    workers = [procs.worker("soak_app:handlers", redis_url) for _ in range(2)]
    for worker in workers:
        worker.wait_for_line("serving", timeout=30)
    steps = 3

    async def workflow(pool: Pool, n: int) -> None:
        coordinator = pool.coordinator(f"soak-{n}")
        state = orjson.dumps({"n": n, "step": 0})
        for step in range(steps):
            state = await coordinator.dispatch("soak/step", state, task_id=f"soak-{n}-{step}")
        assert orjson.loads(state) == {"n": n, "step": steps}

    samples: list[tuple[int, int, int, int]] = []
    async with Pool.from_url(redis_url) as pool:
        gate = asyncio.Semaphore(200)

        async def bounded(n: int) -> None:
            async with gate:
                await workflow(pool, n)

        quarter = workflows // 4
        for batch in range(4):
            await asyncio.gather(
                *(bounded(n) for n in range(batch * quarter, (batch + 1) * quarter))
            )
            samples.append(
                (
                    (batch + 1) * quarter,
                    _rss_kib(__import__("os").getpid()),
                    _rss_kib(workers[0].pid),
                    _rss_kib(workers[1].pid),
                )
            )
        redis = pool.transport.redis
        await asyncio.sleep(3 * pool.settings.heartbeat_interval)  # the heartbeat trims replies
        stream_length = int(await redis.xlen(pool.keys.task_stream("soak/step")))
        reply_length = int(await redis.xlen(pool.inbox.address))
        ttl = int(await redis.ttl(pool.keys.result("soak-0-0")))
    print(
        f"\nsoak of {workflows} workflows ({workflows * steps} tasks): "
        f"task stream {stream_length}, reply stream {reply_length}, result TTL {ttl} s"
    )
    for done, coordinator, w1, w2 in samples:
        print(f"  after {done:6d}: coordinator {coordinator} KiB, workers {w1} / {w2} KiB")
    assert stream_length == 0
    assert reply_length <= 200, "read replies are trimmed by the heartbeat"
    assert ttl > 0, "result records must expire"
    # Flat: from the second quarter on, no process grows by more than 10 % (warm-up excluded).
    for column in (1, 2, 3):
        second, last = samples[1][column], samples[-1][column]
        assert last <= second * 1.10 + 2048, f"memory grew: {[s[column] for s in samples]}"


async def test_soak_keeps_memory_and_streams_flat(
    redis_url: str, soak_workers: ChildProcesses
) -> None:
    await _soak(redis_url, soak_workers, workflows=2_000)


@pytest.mark.slow
async def test_soak_of_10000_workflows(redis_url: str, soak_workers: ChildProcesses) -> None:
    await _soak(redis_url, soak_workers, workflows=10_000)
