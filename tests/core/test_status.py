"""What ``pool.status()`` and ``nervenet status``/``escalations`` tell an operator: waiting work
apart from work in flight, task types nobody serves any more, dispatches waiting for a worker,
escalations readable and refused clearly when the id is garbage."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest
from core_support import Serve, run_cli, wait_until

from nervenet import ConfigurationError, Handlers, Pool
from nervenet.envelope import TaskEnvelope


def envelope(pool: Any, task_id: str, task_type: str, payload: bytes = b"{}") -> TaskEnvelope:
    return TaskEnvelope(task_id, "wf", task_type, 1, 0.0, pool.inbox.address, payload)


async def test_entries_read_and_finished_count_neither_as_waiting_nor_in_flight(
    pool: Pool, serve: Serve
) -> None:
    handlers = Handlers()

    @handlers.task("core/echo")
    async def echo(value: Any) -> Any:
        return value

    await serve(pool, handlers, concurrency=2)
    for i in range(5):
        await pool.dispatch("core/echo", str(i).encode(), timeout=10)

    [queue] = (await pool.status()).queues

    assert (queue.task_type, queue.waiting, queue.in_flight, queue.served) == (
        "core/echo",
        0,
        0,
        True,
    )


async def test_a_task_type_whose_workers_are_gone_is_idle_unless_work_waits(
    pool: Pool, serve: Serve
) -> None:
    handlers = Handlers()

    @handlers.task("core/gone")
    async def gone(value: Any) -> Any:
        return value

    worker = await serve(pool, handlers)
    await pool.dispatch("core/gone", b"1", timeout=10)
    await worker.stop(grace=0.1)
    await pool.publish(envelope(pool, "t-1", "core/orphaned"))

    status = await pool.status()

    assert status.idle_task_types == ["core/gone"]
    [queue] = status.queues
    assert (queue.task_type, queue.waiting, queue.served) == ("core/orphaned", 1, False)


async def test_a_dispatch_waiting_for_a_worker_is_visible(pool: Pool) -> None:
    waiting = asyncio.ensure_future(
        pool.dispatch("core/late", b"1", timeout=10, wait_for_worker=True)
    )

    async def shown() -> Any:
        return [q for q in (await pool.status()).queues if q.waiting_dispatches]

    [queue] = await wait_until(shown, what="the waiting dispatch in the status")
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)

    assert (queue.task_type, queue.waiting_dispatches, queue.served) == ("core/late", 1, False)


@pytest.mark.parametrize("garbage", ["", "abc", "1-2-3", "1764050000000-0;DROP", "-", "+"])
async def test_a_garbage_escalation_id_is_refused_with_what_ids_look_like(
    pool: Pool, garbage: str
) -> None:
    for call in (pool.escalations.get, pool.escalations.drop, pool.escalations.retry):
        with pytest.raises(ConfigurationError, match="is not an escalation id"):
            await call(garbage)


async def test_readable_fields_decode_json_and_langgraph_frames(pool: Pool) -> None:
    await pool.escalate(envelope(pool, "t-j", "core/x", orjson.dumps({"q": "hi"})), "stuck")
    await pool.escalate(envelope(pool, "t-m", "core/x", b"json\0" + b'{"a": [1, 2]}'), "stuck")

    shown = [dict(e.readable_fields())["task.payload"] for e in await pool.escalations.list()]

    assert shown == ['{\n  "a": [\n    1,\n    2\n  ]\n}', '{\n  "q": "hi"\n}']


@pytest.mark.redis
async def test_status_command_separates_waiting_from_in_flight_and_flags_unserved_types(
    redis_pool: Pool, redis_url: str
) -> None:
    for i in range(3):
        await redis_pool.publish(envelope(redis_pool, f"t{i}", "core/backlog"))

    status = await run_cli("status", "--redis", redis_url)

    assert status.returncode == 0, status.output
    row = r"[│|]\s*core/backlog\s*[│|]\s*3\s*[│|]\s*0\s*[│|]\s*-\s*[│|]\s*none alive\s*[│|]"
    assert re.search(row, status.output), status.output


@pytest.mark.redis
async def test_escalations_show_pretty_prints_the_payload_and_refuses_garbage_ids(
    redis_pool: Pool, redis_url: str
) -> None:
    hostile = orjson.dumps({"prompt": "[bold red]not markup[/]", "n": 2})
    await redis_pool.escalate(envelope(redis_pool, "t-h", "core/x", hostile), "stuck")
    [entry] = await redis_pool.escalations.list()

    shown = await run_cli("escalations", "show", entry.entry_id, "--redis", redis_url)
    refused = await run_cli("escalations", "show", "nonsense", "--redis", redis_url)

    assert shown.returncode == 0, shown.output
    assert '"prompt": "[bold red]not markup[/]",' in shown.output
    assert '"n": 2' in shown.output
    assert refused.returncode == 2
    assert "'nonsense' is not an escalation id" in refused.output
    assert "Traceback" not in refused.output
