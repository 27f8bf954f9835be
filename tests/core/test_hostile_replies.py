"""Whatever lands on a coordinator's reply stream, the inbox keeps serving its real dispatches.

Anything with write access to Redis can ``XADD`` straight into a reply stream: garbage, results
for tasks that do not exist, replays of replies already delivered, errors and frames claiming the
wrong attempt. Each is dropped and counted (malformed entries logged with their reason), and the
dispatches actually waiting still get their own results. Runs on both backends (``pool``).

Without a signing secret, a forged *result* carrying the task id of a dispatch that is waiting
right now is taken for the answer (nothing can tell it apart). With one, workers sign their
replies and seal the results they cache: a forged or altered reply is dropped, and a forged
cache entry is ignored (the task runs).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Any

import orjson
import pytest
from core_support import FAST, MakePool, Serve, wait_until
from hypothesis import given
from hypothesis import strategies as st

from nervenet import Handlers, Pool, TaskContext
from nervenet.envelope import Reply, ReplyError, ReplyKind
from nervenet.inbox import Inbox
from nervenet.outages import Outages


class Gate:
    """A ``core/gated`` handler that answers only once the test opens the gate."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.started = asyncio.Event()

    def handlers(self) -> Handlers:
        handlers = Handlers()

        @handlers.task("core/gated")
        async def gated(value: Any, ctx: TaskContext) -> Any:
            self.started.set()
            await self.open.wait()
            return {"real": value, "attempt": ctx.attempt}

        return handlers


async def forge(pool: Pool, fields: dict[bytes, bytes]) -> None:
    """XADD straight into the pool's reply stream, as anything with write access could."""
    await pool.transport.redis.xadd(pool.inbox.address, fields)  # type: ignore[arg-type]
    pool.transport.notify_written()


def result(task_id: str, attempt: int = 1, body: bytes = b'"forged"') -> dict[bytes, bytes]:
    return Reply(task_id, attempt, ReplyKind.RESULT, body=body).to_fields()


def error(task_id: str, attempt: int) -> dict[bytes, bytes]:
    remote = ReplyError("builtins.RuntimeError", "forged failure", "")
    return Reply(task_id, attempt, ReplyKind.ERROR, error=remote).to_fields()


def frame(task_id: str, attempt: int) -> dict[bytes, bytes]:
    return Reply(task_id, attempt, ReplyKind.FRAME, body=b"forged frame").to_fields()


async def dropped(pool: Pool, count: int) -> None:
    async def all_read() -> bool:
        inbox = pool.inbox
        return inbox.unmatched_replies + inbox.malformed_replies >= count

    await wait_until(all_read, timeout=10, what=f"{count} hostile replies read")


MALFORMED: dict[str, tuple[dict[bytes, bytes], str]] = {
    "random bytes": ({os.urandom(8): os.urandom(40)}, "unknown reply kind"),
    "unknown kind": ({**result("t-x"), b"kind": b"pwned"}, "unknown reply kind"),
    "missing task id": (
        {k: v for k, v in result("t-x").items() if k != b"id"},
        "missing field 'id'",
    ),
    "task id not UTF-8": ({**result("t-x"), b"id": b"\xff\xfe"}, "'id' is not UTF-8"),
    "task id too long": ({**result("t-x"), b"id": b"t" * 300}, "'id'"),
    "attempt is text": ({**result("t-x"), b"attempt": b"many"}, "'attempt' is not a whole"),
    "attempt zero": ({**result("t-x"), b"attempt": b"0"}, "outside 1..1000"),
    "attempt of unicode digits": ({**result("t-x"), b"attempt": "\u00b2".encode()}, "attempt"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_reply_is_dropped_with_its_reason_logged(
    pool: Pool, serve: Serve, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    gate = Gate()
    gate.open.set()
    await serve(pool, gate.handlers())
    fields, reason = MALFORMED[case]

    with caplog.at_level(logging.WARNING, logger="nervenet.inbox"):
        await forge(pool, fields)
        await dropped(pool, 1)

    assert pool.inbox.malformed_replies == 1
    assert reason in caplog.text
    assert orjson.loads(await pool.dispatch("core/gated", b'"after"', timeout=10))["real"] == (
        "after"
    )


async def test_results_for_tasks_nobody_dispatched_are_dropped(pool: Pool, serve: Serve) -> None:
    gate = Gate()
    gate.open.set()
    await serve(pool, gate.handlers())

    for n in range(50):
        await forge(pool, result(f"never-dispatched-{n}"))
    await dropped(pool, 50)

    assert pool.inbox.unmatched_replies == 50
    assert pool.inbox.malformed_replies == 0
    answer = await pool.dispatch("core/gated", b'"real"', task_id="never-dispatched-0", timeout=10)
    assert orjson.loads(answer) == {"real": "real", "attempt": 1}


async def test_errors_and_frames_of_another_attempt_leave_the_waiting_dispatch_alone(
    pool: Pool, serve: Serve
) -> None:
    gate = Gate()
    await serve(pool, gate.handlers())
    frames: list[bytes] = []
    waiting = asyncio.ensure_future(
        pool.coordinator("wf-1").dispatch(
            "core/gated", b'"mine"', task_id="t-1", timeout=10, on_frame=frames.append
        )
    )
    await asyncio.wait_for(gate.started.wait(), 10)

    for attempt in (2, 3, 1000):
        await forge(pool, error("t-1", attempt))
        await forge(pool, frame("t-1", attempt))
    await asyncio.sleep(0.3)  # the inbox has read them (block_ms is 200 ms)
    assert not waiting.done()
    gate.open.set()

    assert orjson.loads(await waiting) == {"real": "mine", "attempt": 1}
    assert frames == []


async def test_a_replayed_reply_of_a_finished_task_changes_nothing(
    pool: Pool, serve: Serve
) -> None:
    gate = Gate()
    gate.open.set()
    await serve(pool, gate.handlers())
    coordinator = pool.coordinator("wf-replay")
    first = await coordinator.dispatch("core/gated", b'"once"', task_id="step-1", timeout=10)

    await forge(pool, result("step-1", body=first))
    await forge(pool, result("step-1", body=b'"tampered"'))
    await forge(pool, error("step-1", 1))
    await dropped(pool, 3)

    assert pool.inbox.unmatched_replies == 3
    again = await coordinator.dispatch("core/gated", b'"once"', task_id="step-1", timeout=10)
    assert again == first
    assert await pool.transport.redis.get(pool.keys.result("step-1")) == first


async def test_hundreds_of_hostile_replies_among_real_dispatches_change_no_result(
    pool: Pool, serve: Serve
) -> None:
    gate = Gate()
    gate.open.set()
    await serve(pool, gate.handlers())
    rng = random.Random(6)
    hostile = []
    for n in range(300):
        kind = rng.choice(["garbage", "unknown", "error", "frame"])
        if kind == "garbage":
            hostile.append({rng.randbytes(rng.randint(0, 8)): rng.randbytes(rng.randint(0, 64))})
        elif kind == "unknown":
            hostile.append(result(f"ghost-{n}", attempt=rng.randint(1, 1000)))
        elif kind == "error":  # the real task ids, but attempts they never had
            hostile.append(error(f"real-{rng.randrange(40)}", attempt=rng.randint(2, 1000)))
        else:
            hostile.append(frame(f"real-{rng.randrange(40)}", attempt=rng.randint(1, 1000)))

    async def attack() -> None:
        for fields in hostile:
            await forge(pool, fields)

    real = [
        pool.coordinator(f"wf-{n}").dispatch(
            "core/gated", orjson.dumps(n), task_id=f"real-{n}", timeout=20
        )
        for n in range(40)
    ]
    results, _ = await asyncio.gather(asyncio.gather(*real), attack())

    assert [orjson.loads(r) for r in results] == [{"real": n, "attempt": 1} for n in range(40)]
    assert pool.inbox.waiting == 0


SECRET = "a-shared-secret-of-the-app"


async def test_with_signing_on_a_forged_result_for_a_waiting_dispatch_is_refused(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool(signing_secret=SECRET)
    gate = Gate()
    await serve(pool, gate.handlers())
    waiting = asyncio.ensure_future(
        pool.coordinator("wf-1").dispatch("core/gated", b'"mine"', task_id="t-1", timeout=10)
    )
    await asyncio.wait_for(gate.started.wait(), 10)

    forged = result("t-1", body=b'"forged"')
    await forge(pool, forged)  # unsigned
    await forge(pool, {**forged, b"sig": b"0" * 64})  # signed with a guess
    remote = ReplyError("x.Y", "no", "")
    genuine_error = Reply("t-1", 1, ReplyKind.ERROR, error=remote).to_fields(pool.signer)
    await forge(pool, {**genuine_error, b"etype": b"builtins.KeyError"})  # altered after signing
    await wait_until(lambda: _counted(pool, 3), what="the three forgeries dropped")
    gate.open.set()

    assert orjson.loads(await waiting) == {"real": "mine", "attempt": 1}


async def _counted(pool: Pool, malformed: int) -> bool:
    return pool.inbox.malformed_replies >= malformed


async def test_with_signing_on_a_forged_cached_result_is_ignored_and_the_task_runs(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool(signing_secret=SECRET)
    ran = []
    handlers = Handlers()

    @handlers.task("core/once")
    async def once(value: Any) -> Any:
        ran.append(value)
        return {"ran": value}

    await serve(pool, handlers)
    redis = pool.transport.redis
    assert pool.signer is not None
    await redis.set(pool.keys.result("t-forged"), b'{"ran": "forged"}')
    await redis.set(pool.keys.result("t-resealed"), pool.signer.seal("t-other", b'"moved"'))

    forged = await pool.coordinator("wf").dispatch("core/once", b'"a"', task_id="t-forged")
    resealed = await pool.coordinator("wf").dispatch("core/once", b'"b"', task_id="t-resealed")
    again = await pool.coordinator("wf").dispatch("core/once", b'"c"', task_id="t-forged")

    assert [orjson.loads(r) for r in (forged, resealed, again)] == [
        {"ran": "a"},
        {"ran": "b"},
        {"ran": "a"},  # its own sealed result, from the cache
    ]
    assert ran == ["a", "b"]


# --- the decoding step alone, for any entry at all ------------------------------------------
ENTRY_FIELDS = st.dictionaries(
    st.sampled_from([b"id", b"attempt", b"kind", b"body", b"etype", b"emsg", b"edata", b"x"])
    | st.binary(max_size=8),
    st.sampled_from([b"ok", b"error", b"frame", b"1", b"t-1", b"t-2"]) | st.binary(max_size=40),
    max_size=8,
)


@given(entries=st.lists(ENTRY_FIELDS, max_size=10))
def test_no_reply_entry_raises_or_answers_a_dispatch_it_does_not_name(
    entries: list[dict[bytes, bytes]],
) -> None:
    loop = asyncio.new_event_loop()
    try:
        inbox = Inbox(
            None,  # type: ignore[arg-type]
            "nn:reply:{x}",
            block_ms=FAST.block_ms,
            outages=Outages("nowhere"),
        )

        async def expect() -> Any:
            return inbox.expect("t-waiting", 1, None)

        waiter = loop.run_until_complete(expect())
        for fields in entries:
            inbox._deliver(fields)  # the read loop's one step per entry: it must not raise
        assert not waiter.future.done()
        assert inbox.unmatched_replies + inbox.malformed_replies == len(entries)
    finally:
        loop.close()
