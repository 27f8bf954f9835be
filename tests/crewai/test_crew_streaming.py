"""``stream=True`` crews: the chunks each agent's model streams on a worker reach the caller as
plain CrewAI delivers them, per kickoff, never mixed across concurrent kickoffs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("crewai")

import crew_apps
from crew_fakes import streamed
from nervenet_crewai import distribute_crew

from nervenet import ConfigurationError, Pool, WorkflowFailed

pytestmark = pytest.mark.crewai


def chunk_view(chunk: Any) -> tuple[Any, ...]:
    return (chunk.content, chunk.chunk_type, chunk.agent_role, chunk.task_index, chunk.task_name)


async def plain_stream(topic: str) -> tuple[list[tuple[Any, ...]], Any]:
    stream = streamed(await crew_apps.streaming_crew().kickoff_async(inputs={"topic": topic}))
    chunks = [chunk_view(c) async for c in stream]
    return chunks, stream.result


async def test_concurrent_streaming_kickoffs_each_get_plain_crewais_chunks(pool: Pool) -> None:
    expected = {topic: await plain_stream(topic) for topic in ("tides", "winds")}
    crew = distribute_crew(crew_apps.streaming_crew, pool=pool, name="streams")
    await pool.serve(crew)

    async def stream(topic: str) -> tuple[list[tuple[Any, ...]], Any]:
        streaming = streamed(await crew.kickoff_async(inputs={"topic": topic}))
        return [chunk_view(c) async for c in streaming], streaming.result

    tides, winds = await asyncio.gather(stream("tides"), stream("winds"))

    for topic, (chunks, result) in (("tides", tides), ("winds", winds)):
        plain_chunks, plain_result = expected[topic]
        assert len(chunks) > 9  # every agent's answer, in pieces
        assert chunks == plain_chunks
        assert result.model_dump() == plain_result.model_dump()


def test_sync_streaming_kickoff_from_plain_code_equals_plain_crewais() -> None:
    plain = streamed(crew_apps.streaming_crew().kickoff(inputs={"topic": "swell"}))
    plain_chunks = [chunk_view(c) for c in plain]
    crew = distribute_crew(crew_apps.streaming_crew, name="streams")
    pool = Pool.local(crew, workers=1)
    crew.pool = pool
    try:
        streaming = streamed(crew.kickoff(inputs={"topic": "swell"}))
        chunks = [chunk_view(c) for c in streaming]
    finally:
        pool.close()

    assert chunks == plain_chunks
    assert streaming.result.model_dump() == plain.result.model_dump()


async def test_a_streaming_crew_cannot_be_a_durable_run_and_says_why(pool: Pool) -> None:
    crew = distribute_crew(crew_apps.streaming_crew, pool=pool, name="streams")
    await pool.serve(crew)

    submitted = await crew.asubmit(inputs={"topic": "tides"}, run_id="s-1")

    with pytest.raises((ConfigurationError, WorkflowFailed), match=r"streams \(stream=True\)"):
        await submitted.result(timeout=30)
