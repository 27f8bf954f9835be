from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph")

from fast_settings import FAST
from nervenet_langgraph import DistributedGraph, distribute

from nervenet import Pool
from nervenet.testing import ChildProcesses

_names = itertools.count()


@pytest.fixture(params=["embedded", "redis", pytest.param("cluster", marks=pytest.mark.cluster)])
async def pool(request: pytest.FixtureRequest) -> AsyncIterator[Pool]:
    """An embedded pool, one on the private real redis-server, one on the private cluster."""
    if request.param == "embedded":
        pool = Pool.local(settings=FAST)
    else:
        fixture = "redis_url" if request.param == "redis" else "cluster_url"
        pool = Pool.from_url(request.getfixturevalue(fixture), settings=FAST)
    async with pool:
        yield pool


@pytest.fixture
def distributed(pool: Pool) -> Callable[..., Any]:
    """``await distributed(builder, workers=1, concurrency=64, **compile_kwargs)``: distributed
    graph served by ``workers`` in-process workers on the test's pool, each running up to
    ``concurrency`` tasks at once."""

    async def make(
        builder: Any, *, workers: int = 1, concurrency: int = 64, **compile_kwargs: Any
    ) -> DistributedGraph:
        graph = distribute(builder, pool=pool, name=f"g{next(_names)}", **compile_kwargs)
        for _ in range(workers):
            await pool.serve(graph, concurrency=concurrency)
        return graph

    return make


APPS = Path(__file__).parent / "apps"


@pytest.fixture
def processes(redis_url: str, tmp_path: Path) -> Iterator[ChildProcesses]:
    """Coordinator and worker child processes of the apps in ``apps/``, pointed at
    ``redis_url`` (a test module may parametrize that fixture) and killed by PID after. Their
    logs stay in the test's ``tmp_path`` (pytest keeps the last runs' ones)."""
    procs = ChildProcesses(APPS, {"NERVENET_REDIS_URL": redis_url}, log_dir=tmp_path / "children")
    try:
        yield procs
    finally:
        procs.close()
