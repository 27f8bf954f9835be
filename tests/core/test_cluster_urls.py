"""What a Redis URL says about a cluster, and the errors a wrong one gets at start."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from nervenet import Pool
from nervenet.errors import ConfigurationError, PoolConnectionError
from nervenet.testing import RedisClusterServers

pytestmark = pytest.mark.cluster


async def test_a_node_url_opens_the_whole_cluster(cluster_url: str) -> None:
    async with Pool.from_url(cluster_url) as pool:
        assert pool.transport.is_cluster and pool.transport.primaries == 3
        assert pool.keys.partitions == 6  # 2 per primary, agreed through nn:{config}


async def test_a_cluster_url_for_a_single_server_is_refused(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis+cluster://")
    with pytest.raises(PoolConnectionError, match="asks for a Redis Cluster"):
        async with Pool.from_url(url):
            pass


async def test_a_database_other_than_0_on_a_cluster_is_refused(cluster_url: str) -> None:
    with pytest.raises(ConfigurationError, match="database 0 only"):
        async with Pool.from_url(cluster_url.replace("/0", "/3")):
            pass


@pytest.fixture
def broken_cluster(cluster_binaries: None) -> Iterator[RedisClusterServers]:
    """A cluster one of whose primaries died with no replica to take over its slots."""
    with RedisClusterServers(primaries=3) as cluster:
        cluster.kill(cluster.nodes[2])
        deadline = time.monotonic() + 15
        while "cluster_state:fail" not in cluster.info(cluster.nodes[0], "cluster", "info"):
            assert time.monotonic() < deadline, "the cluster never noticed its dead primary"
            time.sleep(0.1)
        yield cluster


async def test_a_cluster_with_uncovered_slots_is_waited_for_then_refused_clearly(
    broken_cluster: RedisClusterServers,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("nervenet.transport.CLUSTER_DOWN_WAIT", 1.0)

    with pytest.raises(PoolConnectionError, match="is down"):
        async with Pool.from_url(broken_cluster.url):
            pass

    waits = [r for r in caplog.records if "waiting up to" in r.getMessage()]
    assert len(waits) == 1  # said once, not per retry
