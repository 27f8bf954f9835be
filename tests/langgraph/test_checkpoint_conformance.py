"""RedisSaver passes LangGraph's own checkpointer conformance suite on a real redis-server and on a
3-primary Redis Cluster (reached, as a user would, through the URL of one of its nodes).

The suite (``langgraph-checkpoint-conformance``) calls only the async ``a*`` methods, so the sync
methods run it through ``SyncMethods``, whose ``a*`` methods call the sync ones in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

pytest.importorskip("langgraph")

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import CapabilityReport
from nervenet_langgraph.checkpoint import RedisSaver

pytestmark = pytest.mark.langgraph

#: Tests in the suite's five required capabilities (put, put_writes, get_tuple, list,
#: delete_thread); a drop would mean the suite skipped some.
BASE_TESTS = 58


class SyncMethods(BaseCheckpointSaver[str]):
    """A saver's sync methods, presented as the async ones the suite calls."""

    def __init__(self, saver: RedisSaver) -> None:
        super().__init__(serde=saver.serde)
        self.saver = saver

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.saver.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        def run() -> list[CheckpointTuple]:
            return list(self.saver.list(config, filter=filter, before=before, limit=limit))

        for item in await asyncio.to_thread(run):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.saver.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.saver.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.saver.delete_thread, thread_id)


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def url(request: pytest.FixtureRequest) -> str:
    """A clean single server, or a clean cluster."""
    fixture = "redis_url" if request.param == "redis" else "cluster_url"
    return str(request.getfixturevalue(fixture))


def assert_passed_everything_it_ran(report: CapabilityReport) -> None:
    ran = {name: r for name, r in report.results.items() if r.detected}
    failures = [failure for r in ran.values() for failure in r.failures]
    assert not failures
    assert report.passed_all_base() and report.passed_all()
    assert sum(r.tests_passed for r in ran.values()) >= BASE_TESTS


async def test_async_methods_pass_the_langgraph_conformance_suite(url: str) -> None:
    @checkpointer_test(name="RedisSaver (async)")
    async def saver() -> AsyncIterator[RedisSaver]:
        async with RedisSaver.from_url(url) as saver:
            yield saver

    assert_passed_everything_it_ran(await validate(saver))


async def test_sync_methods_pass_the_langgraph_conformance_suite(url: str) -> None:
    @checkpointer_test(name="RedisSaver (sync)")
    async def saver() -> AsyncIterator[SyncMethods]:
        with RedisSaver.from_url(url) as saver:
            yield SyncMethods(saver)

    assert_passed_everything_it_ran(await validate(saver))
