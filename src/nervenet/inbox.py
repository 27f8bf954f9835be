"""One reply stream per coordinator process, read by one loop, fanned out to waiting dispatches.

On a Redis Cluster a process has one reply stream per primary instead, each read by its own
loop (a read covers one slot), and a dispatch names the one its task id hashes to: one stream
would put every reply of the process, a third of all commands, on one shard.

Thousands of workflows in one process wait on futures keyed by task id; a single ``XREAD BLOCK``
loop resolves them, so waiting costs no polling per workflow and one connection per process.
Correlation is by task id *and* attempt: a late error from an attempt the coordinator already
gave up on is dropped instead of failing the retry. A late success of an earlier attempt is
accepted, since it is the same deterministic work and its result is already cached anyway.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from .batching import let_woken_writes_go_first
from .cancelling import cancel_and_wait
from .envelope import Reply, ReplyKind, Signer, TaskEnvelope
from .errors import EnvelopeError
from .outages import TRANSIENT_ERRORS, Outages
from .transport import StreamBatch, Transport

log = logging.getLogger("nervenet.inbox")

#: Seconds a reply reader with nobody to read for waits for a dispatch before it reads again
#: (see ``Inbox._until_wanted``): above a graph's time between two nodes (0.4-0.5 ms here).
QUIET_READ_DELAY = 0.002

FrameCallback = Callable[[bytes], None]
PayloadSource = Callable[[], bytes]
"""Builds a task's payload each time it is published (see :meth:`Coordinator.dispatch`)."""


@dataclass(eq=False)
class Waiter:
    """A dispatch waiting for the reply to one attempt of one task."""

    task_id: str
    attempt: int
    future: asyncio.Future[Reply]
    on_frame: FrameCallback | None = None
    envelope: TaskEnvelope | None = None
    """What was published, less its payload (``payload`` makes that again when needed)."""
    payload: PayloadSource | None = None
    entry_id: bytes | None = None
    """The task stream entry of the published envelope, to withdraw it if the dispatch is
    cancelled."""
    confirms_cancel: bool = False
    """Waits for the end of a withdrawn attempt: its worker's CANCELLED reply (or its result or
    error, if the handler finished first). Only such waiters take CANCELLED replies: a later
    dispatch of the same task id must not end on a stale one."""

    def publishable(self) -> TaskEnvelope:
        """The envelope to publish (again, if Redis lost it: a restart without persistence).

        Waiting dispatches keep their payload's source, not its bytes: with thousands in
        flight, the bytes were most of a coordinator's memory per waiting task."""
        assert self.envelope is not None and self.payload is not None
        return dataclasses.replace(self.envelope, payload=self.payload())


class Inbox:
    """Reads this process's reply stream and resolves :class:`Waiter` futures."""

    def __init__(
        self,
        transport: Transport,
        address: str,
        *,
        block_ms: int,
        outages: Outages,
        signer: Signer | None = None,
    ) -> None:
        self.transport = transport
        self.signer = signer  # with signing on, only replies a worker signed are taken
        self.address = address
        """The first reply stream (the only one on a single server)."""
        self.addresses = [address]
        """Every reply stream of this process, set by :meth:`open`."""
        self._block_ms = block_ms
        self.outages = outages
        """The pool's outage log (one line per incident)."""
        self._waiters: dict[str, list[Waiter]] = {}
        self._wanted = asyncio.Event()
        """Set when a dispatch starts waiting (a reader with nobody to read for waits for it)."""
        self._last_ids: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.unmatched_replies = 0
        self.malformed_replies = 0

    @property
    def waiting(self) -> int:
        return sum(len(ws) for ws in self._waiters.values())

    def pending(self) -> list[Waiter]:
        return [w for ws in self._waiters.values() for w in ws if not w.future.done()]

    def expect(
        self,
        task_id: str,
        attempt: int,
        on_frame: FrameCallback | None,
        *,
        confirms_cancel: bool = False,
    ) -> Waiter:
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        waiter = Waiter(task_id, attempt, future, on_frame, confirms_cancel=confirms_cancel)
        self._waiters.setdefault(task_id, []).append(waiter)
        self._wanted.set()
        return waiter

    def forget(self, waiter: Waiter) -> None:
        waiters = self._waiters.get(waiter.task_id)
        if waiters is None:
            return
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            del self._waiters[waiter.task_id]

    def address_for(self, task_id: str) -> str:
        """The reply stream a dispatch of ``task_id`` names."""
        if len(self.addresses) == 1:
            return self.address
        return self.addresses[zlib.crc32(task_id.encode()) % len(self.addresses)]

    async def open(self, addresses: list[str] | None = None) -> None:
        """Create the reply streams so workers can answer with ``XADD NOMKSTREAM``.

        NOMKSTREAM keeps a worker from resurrecting the reply stream of a dead process.
        """
        if addresses:
            self.address, self.addresses = addresses[0], list(addresses)
        redis = self.transport.redis
        for address in self.addresses:
            last = await redis.xadd(address, {b"open": b"1"})
            self._last_ids[address] = last.decode() if isinstance(last, bytes) else str(last)
        if not self._tasks:
            self._tasks = [
                asyncio.ensure_future(self._read_forever(group))
                for group in self.transport.slot_groups(self.addresses)
            ]

    async def close(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []
        for waiters in list(self._waiters.values()):
            for waiter in waiters:
                if not waiter.future.done():
                    waiter.future.cancel()
        self._waiters.clear()

    async def _read_forever(self, addresses: list[str]) -> None:
        failures = 0
        while True:
            try:
                batch = await self.transport.read(
                    {a: self._last_ids[a] for a in addresses},
                    count=1_000,
                    block_ms=self._block_ms,
                )
                failures = 0
            except asyncio.CancelledError:
                raise
            except TRANSIENT_ERRORS as exc:
                failures += 1
                await self.outages.wait_out("the reply stream read", exc, failures)
                continue
            self._deliver_batch(batch)
            # Drop the batch before blocking again: it holds every reply body of the last read
            # (up to 1,000), which would otherwise stay alive until the next read returns.
            del batch
            await let_woken_writes_go_first()  # the resumed dispatches' next ones go out first
            if not self._waiters:
                await self._until_wanted()

    async def _until_wanted(self) -> None:
        """Nobody waits for a reply any more: send the next read once a dispatch starts waiting
        (right after its task went out), or :data:`QUIET_READ_DELAY` from now.

        Between two nodes of a graph, the read re-sent at once was a socket write in the middle
        of LangGraph's step, on the run's critical path, and it woke an idle Redis, the costly
        part of a write here: ``bench_hops.py`` put the time between two nodes 58-61 µs above
        plain LangGraph's per node, 3-20 µs since. Sent after the next node's task, the read
        finds Redis awake and the task on its way. ``bench_langgraph.py --quick``, five runs
        each, taking turns: a node adds 0.80-0.87 ms (median 0.84) against 0.87-1.07 (0.88).
        Under load some dispatch always waits, and nothing changes.

        Bounded, because a reply that comes while nobody waits (to a withdrawn or timed-out
        dispatch) is read and dropped only once the read is sent: a later dispatch of the same
        task id and attempt that waits by then would take it, as it would take one that came
        just after it started waiting."""
        self._wanted.clear()
        timer = asyncio.get_running_loop().call_later(QUIET_READ_DELAY, self._wanted.set)
        try:
            await self._wanted.wait()
        finally:
            timer.cancel()
        # Woken by a dispatch that queued its task in the same step: the batcher's flush,
        # scheduled after this wake-up, sends it first.
        await asyncio.sleep(0)

    def _deliver_batch(self, batch: StreamBatch) -> None:
        for stream, entries in batch:
            address = stream.decode()
            for entry_id, fields in entries:
                self._last_ids[address] = entry_id.decode()
                if b"open" in fields:
                    continue
                self._deliver(fields)

    async def trim_read_entries(self) -> None:
        """Replies are read once, by us: drop what we read so the stream stays near empty.

        Called from the heartbeat, not per read: a round trip per read costs more than the
        memory of a second's worth of replies."""
        from redis.exceptions import RedisError

        for address, last_id in list(self._last_ids.items()):
            try:
                await self.transport.redis.xtrim(address, minid=last_id, approximate=True)
            except RedisError as exc:
                log.debug("could not trim %s: %s", address, exc)

    def _deliver(self, fields: dict[bytes, bytes]) -> None:
        try:
            reply = Reply.from_fields(fields, signer=self.signer)
        except EnvelopeError as exc:
            self.malformed_replies += 1
            log.warning("dropped malformed reply: %s", exc.reason)
            return
        waiters = self._waiters.get(reply.task_id)
        if not waiters:
            self.unmatched_replies += 1
            log.debug("reply for task %s that nobody here waits for", reply.task_id)
            return
        for waiter in list(waiters):
            self._deliver_to(waiter, reply)

    @staticmethod
    def _deliver_to(waiter: Waiter, reply: Reply) -> None:
        if waiter.future.done():
            return
        if reply.kind is ReplyKind.FRAME:
            if reply.attempt == waiter.attempt and waiter.on_frame is not None:
                try:
                    waiter.on_frame(reply.body)
                except Exception:  # a consumer's bug must not stop replies for everyone
                    log.exception("frame callback of task %s failed", reply.task_id)
            return
        if waiter.confirms_cancel:
            if reply.attempt == waiter.attempt:
                waiter.future.set_result(reply)
            return
        if reply.kind is ReplyKind.CANCELLED:
            return
        if reply.kind is ReplyKind.ERROR and reply.attempt != waiter.attempt:
            return
        waiter.future.set_result(reply)

    def resolve_from_cache(self, task_id: str, result: bytes) -> None:
        """Complete waiters from a cached result (used after Redis lost our reply stream)."""
        for waiter in list(self._waiters.get(task_id, [])):
            self._deliver_to(waiter, Reply(task_id, waiter.attempt, ReplyKind.RESULT, body=result))

    def reset_position(self, address: str) -> None:
        """The stream was recreated: read it from the start."""
        self._last_ids[address] = "0-0"
