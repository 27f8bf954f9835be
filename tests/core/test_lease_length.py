"""A process whose lease renewals come late stretches its leases to cover the gaps it sees, so a
peer does not take the runs of a process that is alive but starved; a dead one's runs are still
taken over, once its last (stretched) lease runs out. On a real server, the peer on its own
thread and event loop (the owner's stalls do not stall it), as another process would be."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from nervenet import Pool, PoolSettings
from nervenet.lease_length import DECAY, LATENESS_MARGIN, MAX_STRETCH, LeaseLength

#: Short leases, checked often: a stall of a few tenths of a second outlasts a lease.
SETTINGS = PoolSettings(heartbeat_interval=0.1, lease_ttl=0.6)


def test_on_time_renewals_keep_the_configured_lease() -> None:
    lease = LeaseLength(1.0, heartbeat_interval=0.5)
    for _ in range(20):
        lease.renewing(0.5)
    assert lease.seconds == 1.0
    assert not lease.stretched


def test_a_late_renewal_stretches_the_lease_up_to_a_bound_and_it_comes_back() -> None:
    lease = LeaseLength(1.0, heartbeat_interval=0.5)
    lease.renewing(1.4)  # 0.9 s late
    assert lease.seconds == pytest.approx(1.0 + LATENESS_MARGIN * 0.9)
    lease.renewing(60.0)  # a stall of a minute: the bound, not two minutes
    assert lease.seconds == MAX_STRETCH * 1.0 == lease.longest
    renewals = 0
    while lease.stretched:
        lease.renewing(0.5)  # on time again
        renewals += 1
        assert renewals < 100
    # The remembered lateness decays by DECAY a renewal, from 59.5 s to nothing.
    assert lease.seconds == 1.0
    assert DECAY ** (renewals - 1) * 59.5 > 0


class Peer:
    """Another coordinator's pool, on its own thread and loop, taking over expired runs."""

    def __init__(self, url: str) -> None:
        self.resumed: list[tuple[str, float]] = []  # run id, when (monotonic)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(url),), daemon=True)

    async def _serve(self, url: str) -> None:
        pool = Pool.from_url(url, settings=SETTINGS)

        async def resume(run_id: str, payload: bytes) -> bytes:
            self.resumed.append((run_id, time.monotonic()))
            return b"taken over"

        pool.workflows.register("core-kind", resume)
        try:
            await pool.ensure_started()
            self._ready.set()
            while not self._stop.is_set():
                await asyncio.sleep(0.02)
        finally:
            await pool.aclose()

    def __enter__(self) -> Peer:
        self._thread.start()
        assert self._ready.wait(10), "the peer's pool did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def peer(redis_url: str) -> Iterator[Peer]:
    with Peer(redis_url) as running:
        yield running


@pytest.mark.redis
async def test_a_process_starved_again_and_again_keeps_its_run(redis_url: str, peer: Peer) -> None:
    """Its loop stalls, each time longer than ``lease_ttl`` after the first: with leases of
    ``lease_ttl`` a peer took the run at each stall (checked: it did, before the change)."""
    owner = Pool.from_url(redis_url, settings=SETTINGS)
    # The first within a lease (a heartbeat's phase to spare), the others beyond it, each
    # within three times the gap before it (leases cover three times the gaps they saw).
    stalls = [0.35, 0.8, 1.2, 1.2, 1.2]

    async def run() -> bytes:
        for stall in stalls:
            time.sleep(stall)  # the loop stalls: no renewal meanwhile
            await owner.workflows.check_owned("starved")  # as before a node's dispatch
            await asyncio.sleep(4 * SETTINGS.heartbeat_interval)  # renewals go out
        return b"finished here"

    try:
        handle = await owner.workflows.start("core-kind", "starved", b"input", run)
        assert await handle.result(timeout=30) == b"finished here"
        assert owner.workflows.lease.stretched
    finally:
        await owner.aclose()
    assert peer.resumed == []


@pytest.mark.redis
async def test_a_starved_process_that_dies_has_its_run_taken_over_within_the_longest_lease(
    redis_url: str, peer: Peer
) -> None:
    """Its leases were stretched when it stopped renewing for good: the peer takes the run over
    once the last one runs out, later than ``lease_ttl`` but within the longest lease."""
    owner = Pool.from_url(redis_url, settings=SETTINGS)
    longest = owner.workflows.lease.longest
    died = asyncio.get_running_loop().create_future()

    async def run() -> bytes:
        time.sleep(0.35)  # late renewals: the lease stretches to 1.05 s and more
        await asyncio.sleep(4 * SETTINGS.heartbeat_interval)
        died.set_result(time.monotonic())
        time.sleep(longest + 2.0)  # dead to the world: no renewal for more than any lease
        return b"a dead process's result"

    try:
        await owner.workflows.start("core-kind", "dies", b"input", run)
        death = await asyncio.wait_for(died, 10)
        deadline = time.monotonic() + longest + 5.0
        while not peer.resumed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await owner.aclose()
    assert [run_id for run_id, _ in peer.resumed] == ["dies"]
    noticed = peer.resumed[0][1] - death
    assert SETTINGS.lease_ttl < noticed < longest + 1.0
