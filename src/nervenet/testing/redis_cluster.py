"""A private Redis Cluster: N primaries (and replicas) on free ports, created with
``redis-cli --cluster create``, for the tests and benchmarks that need a real cluster (slot
moves, cross-slot errors, a failover)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .children import Child
from .lifecycle import Started
from .ports import free_cluster_port, wait_for_port
from .redis_server import _binary


@dataclass
class ClusterNode:
    """One node of a :class:`RedisClusterServers`; ``child`` is ``None`` once killed."""

    port: int
    dir: Path
    child: Child | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://{self.address}/0"


class RedisClusterServers(Started):
    """``primaries`` primaries with ``replicas`` replicas each, as child processes.

    ``node_timeout_ms`` is how long the others wait before they fail a silent node over
    (1 s here, 15 s by Redis's default, so a failover test takes seconds).
    """

    def __init__(
        self,
        *,
        primaries: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 1000,
        die_with_parent: bool = False,
    ) -> None:
        self.binary, self.cli = _binary("redis-server"), _binary("redis-cli")
        self.primaries, self.replicas = primaries, replicas
        self.node_timeout_ms = node_timeout_ms
        self.die_with_parent = die_with_parent
        self.root = Path(tempfile.mkdtemp(prefix="nervenet-cluster-"))
        taken: set[int] = set()
        self.nodes: list[ClusterNode] = []
        for _ in range(primaries * (1 + replicas)):
            port = free_cluster_port(taken)
            taken |= {port, port + 10_000}
            node_dir = self.root / str(port)
            node_dir.mkdir()
            self.nodes.append(ClusterNode(port, node_dir))

    @property
    def url(self) -> str:
        """Any node's URL: clients discover the rest of the cluster from it."""
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            self._start_node(node)
        for node in self.nodes:
            assert node.child is not None
            wait_for_port(node.port, alive=node.child.check_running)
        command = [self.cli, "--cluster", "create", *(n.address for n in self.nodes)]
        if self.replicas:
            command += ["--cluster-replicas", str(self.replicas)]
        subprocess.run(
            [*command, "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        self.wait_ok()
        self._wait_replicas_synced()

    def _start_node(self, node: ClusterNode) -> None:
        args = [
            self.binary,
            "--port", str(node.port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(node.dir / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # Replicas sync at once (the default waits 5 s for more replicas to share one
            # transfer), so a test can kill a primary right after start.
            "--repl-diskless-sync-delay", "0",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(node.dir),
            "--daemonize", "no",
            "--loglevel", "notice",
        ]  # fmt: skip
        node.child = Child.start(
            args,
            log=node.dir / "redis.log",
            name=f"cluster-node-{node.port}",
            die_with_parent=self.die_with_parent,
        )

    def _wait_replicas_synced(self, timeout: float = 30.0) -> None:
        """A replica that never synced refuses to fail over: wait for every link to be up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [self.info(n, "info", "replication") for n in self.nodes]
            replicas = [s for s in states if "role:slave" in s]
            if all("master_link_status:up" in s for s in replicas):
                return
            time.sleep(0.05)
        raise RuntimeError(f"cluster replicas did not sync within {timeout} s")

    def info(self, node: ClusterNode, *args: str) -> str:
        """``redis-cli -p PORT ARGS...`` against one node (``"cluster", "info"``)."""
        return subprocess.run(
            [self.cli, "-p", str(node.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout

    def live_nodes(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.child is not None]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` (all slots covered, agreed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(
                "cluster_state:ok" in self.info(n, "cluster", "info") for n in self.live_nodes()
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the cluster did not reach cluster_state:ok within {timeout} s")

    def primary_nodes(self) -> list[ClusterNode]:
        """Nodes that are primaries now (after a failover, a former replica is one)."""
        return [
            n for n in self.live_nodes() if "role:master" in self.info(n, "info", "replication")
        ]

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL one node (its replica, if any, is promoted after the node timeout)."""
        if node.child is not None:
            node.child.kill()
        node.child = None

    def wait_failover(self, timeout: float = 30.0) -> None:
        """Until a killed primary's replica took over and every slot is served again."""
        deadline = time.monotonic() + timeout
        while len(self.primary_nodes()) < self.primaries:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no replica took over within {timeout} s")
            time.sleep(0.1)
        self.wait_ok(max(1.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Kill every node and remove their data directories."""
        for node in self.nodes:
            self.kill(node)
        shutil.rmtree(self.root, ignore_errors=True)
