"""Whatever lands on a task stream, a worker never crashes on it: invalid entries are moved to the
escalation stream with a reason and the worker keeps serving. With signing on, unsigned and
tampered entries are invalid too. Runs on both backends."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from core_support import FAST, MakePool, Pools, ReplyTap, Serve, wait_until

from nervenet import ConfigurationError, Handlers, Pool, PoolSettings, TaskContext, TaskEscalated
from nervenet.envelope import ReplyKind, Signer, TaskEnvelope
from nervenet.escalations import Escalation
from nervenet.keys import Keys

LIMIT = 2_048
SMALL_PAYLOADS = PoolSettings(
    heartbeat_interval=FAST.heartbeat_interval,
    visibility_timeout=FAST.visibility_timeout,
    lease_ttl=FAST.lease_ttl,
    block_ms=FAST.block_ms,
    max_payload_bytes=LIMIT,
)
SECRET = "a-shared-secret-of-the-app"


def handlers() -> Handlers:
    served = Handlers()

    @served.task("core/echo")
    async def echo(value: Any, ctx: TaskContext) -> Any:
        return {"echo": value}

    @served.task("core/other")
    async def other(value: Any) -> Any:
        return value

    return served


def task_fields(pool: Pool, signer: Signer | None = None, **changes: Any) -> dict[bytes, bytes]:
    """A valid ``core/echo`` entry for this pool's reply stream, with ``changes`` applied."""
    envelope = TaskEnvelope(
        task_id="t-garbage",
        workflow_id="wf-garbage",
        task_type="core/echo",
        attempt=1,
        deadline=0.0,
        reply_to=pool.inbox.address,
        payload=b'"hello"',
    )
    fields = envelope.to_fields(signer)
    for name, value in changes.items():
        if value is None:
            del fields[name.encode()]
        else:
            fields[name.encode()] = value
    return fields


async def inject(pool: Pool, fields: dict[bytes, bytes], task_type: str = "core/echo") -> None:
    """XADD straight into a task stream, the way anything with write access to Redis could."""
    await pool.transport.redis.xadd(pool.keys.task_stream(task_type), fields)  # type: ignore[arg-type]
    pool.transport.notify_written()


async def dead_letter_of(pool: Pool, timeout: float = 10.0) -> Escalation:
    [escalation] = await wait_until(
        pool.escalations.list, timeout=timeout, what="the dead-letter entry"
    )
    return escalation


async def assert_still_serving(pool: Pool) -> None:
    result = await pool.dispatch("core/echo", b'"still here"', timeout=10)
    assert orjson.loads(result) == {"echo": "still here"}


async def assert_stream_settled(pool: Pool, task_type: str = "core/echo") -> None:
    stream = pool.keys.task_stream(task_type)
    assert await pool.transport.redis.xlen(stream) == 0
    pending: Any = await pool.transport.redis.xpending(stream, "workers")
    assert pending["pending"] == 0


Garbage = Callable[[Pool], dict[bytes, bytes]]

GARBAGE: dict[str, tuple[Garbage, str]] = {
    "random bytes fields": (
        lambda pool: {os.urandom(8): os.urandom(32), b"\xff\x00": b"\x80\x81\x82"},
        "unsupported envelope version None",
    ),
    "bad version": (lambda pool: task_fields(pool, v=b"2"), "unsupported envelope version"),
    "missing task id": (lambda pool: task_fields(pool, id=None), "missing field 'id'"),
    "missing payload": (lambda pool: task_fields(pool, payload=None), "missing field 'payload'"),
    "attempt is text": (
        lambda pool: task_fields(pool, attempt=b"many"),
        "'attempt' is not a whole number",
    ),
    "attempt out of range": (
        lambda pool: task_fields(pool, attempt=b"1001"),
        "'attempt' = 1001 outside 1..1000",
    ),
    "deadline is NaN": (lambda pool: task_fields(pool, deadline=b"nan"), "finite"),
    "task id not UTF-8": (lambda pool: task_fields(pool, id=b"\xff\xfe"), "'id' is not UTF-8"),
    "payload over the limit": (
        lambda pool: task_fields(pool, payload=b"x" * (LIMIT + 1)),
        f"payload of {LIMIT + 1} bytes exceeds the limit of {LIMIT}",
    ),
    "task type of another stream": (
        lambda pool: task_fields(pool, type=b"core/other"),
        "task type 'core/other' sent on the stream of 'core/echo'",
    ),
    "reply address outside the namespace": (
        lambda pool: task_fields(pool, reply=b"victim:key"),
        "reply address 'victim:key' is outside this namespace",
    ),
}


@pytest.mark.parametrize("case", list(GARBAGE))
async def test_an_invalid_entry_is_dead_lettered_with_a_reason_and_the_worker_keeps_serving(
    make_pool: MakePool, serve: Serve, case: str
) -> None:
    pool = await make_pool(settings=SMALL_PAYLOADS)
    worker = await serve(pool, handlers())
    make_fields, reason = GARBAGE[case]

    await inject(pool, make_fields(pool))

    escalation = await dead_letter_of(pool)
    assert reason in escalation.reason
    assert escalation.source == pool.keys.task_stream("core/echo")
    assert escalation.task_id == "?"  # an unreadable entry is kept raw, not trusted
    assert any(name.startswith("raw.") for name in escalation.fields)
    assert worker.dead_lettered == 1
    await assert_stream_settled(pool)
    await assert_still_serving(pool)


async def test_a_dead_lettered_payload_is_kept_only_up_to_a_cap(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool(settings=SMALL_PAYLOADS)
    await serve(pool, handlers())

    await inject(pool, task_fields(pool, payload=b"x" * 100_000))

    escalation = await dead_letter_of(pool)
    assert escalation.fields["raw.payload"] == b"x" * 4_096


async def test_a_forged_reply_address_is_never_written_to(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool(settings=SMALL_PAYLOADS)
    await serve(pool, handlers())
    victim = pool.keys.result("someone-elses-task")

    await inject(pool, task_fields(pool, reply=victim.encode()))

    await dead_letter_of(pool)
    assert await pool.transport.redis.exists(victim) == 0


async def test_an_attempt_of_unicode_digits_is_dead_lettered(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool(settings=SMALL_PAYLOADS)
    await serve(pool, handlers())

    await inject(pool, task_fields(pool, attempt="\u00b2".encode()))

    escalation = await dead_letter_of(pool, timeout=2.0)
    assert "attempt" in escalation.reason
    await assert_still_serving(pool)


async def test_many_invalid_entries_between_valid_ones_leave_the_valid_ones_served(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool(settings=SMALL_PAYLOADS)
    await serve(pool, handlers())
    cases = [case for case in GARBAGE.values() if "version None" not in case[1]]

    for make_fields, _ in cases:
        await inject(pool, make_fields(pool))
        await assert_still_serving(pool)

    reasons = [e.reason for e in await pool.escalations.list(limit=100)]
    assert len(reasons) == len(cases)
    assert [r for _, r in cases if not any(r in reason for reason in reasons)] == []
    await assert_stream_settled(pool)


async def test_an_escalation_of_an_unreadable_entry_can_only_be_dropped(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool(settings=SMALL_PAYLOADS)
    await serve(pool, handlers())
    await inject(pool, task_fields(pool, v=b"9"))
    escalation = await dead_letter_of(pool)

    with pytest.raises(ConfigurationError, match="can only be dropped"):
        await pool.escalations.retry(escalation.entry_id)

    assert await pool.escalations.drop(escalation.entry_id)


# --- signed envelopes ---------------------------------------------------------------------------


async def test_signed_pools_serve_signed_tasks(make_pool: MakePool, serve: Serve) -> None:
    pool = await make_pool(signing_secret=SECRET)
    await serve(pool, handlers())

    result = await pool.dispatch("core/echo", b'"signed"', timeout=10)

    assert orjson.loads(result) == {"echo": "signed"}
    assert await pool.escalations.count() == 0


async def test_a_signing_worker_dead_letters_an_unsigned_entry(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool(signing_secret=SECRET)
    await serve(pool, handlers())

    await inject(pool, task_fields(pool))

    escalation = await dead_letter_of(pool)
    assert escalation.reason == "unsigned envelope (signing is required)"
    await assert_stream_settled(pool)
    await assert_still_serving(pool)


async def test_a_signing_worker_dead_letters_a_tampered_entry(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool(signing_secret=SECRET)
    await serve(pool, handlers())
    signed = task_fields(pool, Signer(SECRET.encode()))

    await inject(pool, {**signed, b"payload": b'"rm -rf /"'})

    escalation = await dead_letter_of(pool)
    assert escalation.reason == "bad envelope signature"
    await assert_still_serving(pool)


async def test_a_retried_escalation_is_signed_again_and_served(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool(signing_secret=SECRET)
    await serve(pool, handlers())
    await pool.escalate(
        TaskEnvelope("t-replay", "wf", "core/echo", 1, 0.0, pool.inbox.address, b'"again"'),
        "escalated for the test",
    )
    [escalation] = await pool.escalations.list()

    await pool.escalations.retry(escalation.entry_id)

    sealed: bytes | str = await wait_until(
        lambda: pool.transport.redis.get(pool.keys.result("t-replay"))
    )
    assert pool.signer is not None and isinstance(sealed, bytes)
    unsealed = pool.signer.unseal("t-replay", sealed)
    assert unsealed is not None
    assert orjson.loads(unsealed) == {"echo": "again"}


@pytest.mark.redis
async def test_coordinator_and_worker_processes_sharing_the_secret_work_together(
    pools: Pools, redis_url: str, serve: Serve
) -> None:
    worker_side = await pools.open(Pool.from_url(redis_url, settings=FAST, signing_secret=SECRET))
    coordinator_side = await pools.open(
        Pool.from_url(redis_url, settings=FAST, signing_secret=SECRET)
    )
    await serve(worker_side, handlers())

    result = await coordinator_side.dispatch("core/echo", b'"across"', timeout=10)

    assert orjson.loads(result) == {"echo": "across"}


@pytest.mark.redis
async def test_a_worker_refuses_tasks_signed_with_another_secret(
    pools: Pools, redis_url: str, serve: Serve
) -> None:
    worker_side = await pools.open(Pool.from_url(redis_url, settings=FAST, signing_secret=SECRET))
    other_side = await pools.open(
        Pool.from_url(redis_url, settings=FAST, signing_secret="not-the-shared-secret")
    )
    worker = await serve(worker_side, handlers())

    with pytest.raises(TaskEscalated):
        await other_side.dispatch("core/echo", b'"forged"', timeout=0.5, retries=0)

    reasons = [e.reason for e in await worker_side.escalations.list()]
    assert "bad envelope signature" in reasons
    assert worker.processed == 0


# --- telling the sender -------------------------------------------------------------------------

#: Invalid entries that still name a task id, an attempt and a real reply stream of the namespace:
#: the worker answers them with an error, so a dispatch without a timeout does not wait forever.
ANSWERED = {
    "bad version",
    "missing payload",
    "deadline is NaN",
    "payload over the limit",
    "task type of another stream",
}


@pytest.mark.parametrize("case", list(GARBAGE))
async def test_the_sender_of_an_invalid_entry_is_told_when_its_reply_stream_is_real(
    make_pool: MakePool, serve: Serve, case: str
) -> None:
    pool = await make_pool(settings=SMALL_PAYLOADS)
    await serve(pool, handlers())
    tap = ReplyTap(pool)
    make_fields, reason = GARBAGE[case]

    await inject(pool, make_fields(pool))
    await dead_letter_of(pool)
    await assert_still_serving(pool)  # replies arrive in order: any answer came before this one

    answers = tap.of("t-garbage")
    if case in ANSWERED:
        [answer] = answers
        assert answer.kind is ReplyKind.ERROR
        assert answer.error is not None
        assert answer.error.type_name == "nervenet.escalated"
        assert reason in answer.error.message
    else:
        assert answers == []


async def test_a_dispatch_without_timeout_of_a_payload_the_worker_refuses_fails_at_once(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool(settings=SMALL_PAYLOADS)
    await serve(pool, handlers())

    with pytest.raises(TaskEscalated, match=f"exceeds the limit of {LIMIT}"):
        await asyncio.wait_for(pool.dispatch("core/echo", b'"' + b"x" * LIMIT + b'"'), 10)


async def test_an_invalid_entry_naming_a_stream_that_is_no_pools_reply_stream_is_not_answered(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool(settings=SMALL_PAYLOADS)
    await serve(pool, handlers())
    redis = pool.transport.redis
    lookalikes = [
        pool.keys.reply_stream("victim"),  # the reply prefix, but no pool's process id
        pool.keys.reply_stream("0" * 31 + "G"),
        Keys("other").reply_stream(pool.process_id),  # another namespace
    ]
    for stream in lookalikes:
        await redis.xadd(stream, {b"existing": b"1"})

    for stream in lookalikes:
        await inject(pool, task_fields(pool, v=b"2", reply=stream.encode()))
    await wait_until(
        lambda: _count(pool.escalations.count(), len(lookalikes)), what="the dead letters"
    )

    assert [await redis.xlen(stream) for stream in lookalikes] == [1] * len(lookalikes)


async def test_a_signing_worker_never_answers_an_unsigned_or_tampered_entry(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool(signing_secret=SECRET)
    await serve(pool, handlers())
    tap = ReplyTap(pool)
    signed = task_fields(pool, Signer(SECRET.encode()))

    await inject(pool, task_fields(pool))
    await inject(pool, {**signed, b"attempt": b"2"})
    await wait_until(lambda: _count(pool.escalations.count(), 2), what="both dead letters")
    await assert_still_serving(pool)

    assert tap.of("t-garbage") == []


async def test_a_signing_worker_answers_a_signed_entry_it_cannot_serve(
    make_pool: MakePool, serve: Serve
) -> None:
    pool = await make_pool(signing_secret=SECRET)
    await serve(pool, handlers())
    tap = ReplyTap(pool)

    await inject(pool, task_fields(pool, Signer(SECRET.encode())), task_type="core/other")
    await dead_letter_of(pool)
    await assert_still_serving(pool)

    [answer] = tap.of("t-garbage")
    assert answer.error is not None
    assert "sent on the stream of 'core/other'" in answer.error.message


async def _count(count: Awaitable[int], expected: int) -> bool:
    return await count == expected
