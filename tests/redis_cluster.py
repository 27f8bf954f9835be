"""A private Redis Cluster for tests and benchmarks: N primaries (and replicas) on free ports.

Cluster mode refuses ports above 55535 because the cluster bus listens on ``port + 10000``, so
ports are picked below that with the bus port free too (the OS's ephemeral range, 32768-60999,
would fail about 2 times in 5).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MAX_CLUSTER_PORT = 55535


def require_cluster_binaries() -> None:
    """Skip the calling test without redis-server and redis-cli; under CI, fail it instead."""
    import pytest
    from redis_server import redis_required

    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        if redis_required():
            pytest.fail("redis-server/redis-cli are not on PATH but CI requires the cluster tests")
        pytest.skip("redis-server/redis-cli are not on PATH")


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: set[int]) -> int:
    """A free port ≤ 55535 whose cluster bus port (+10000) is free as well."""
    for _ in range(1_000):
        port = random.randint(20_000, MAX_CLUSTER_PORT)
        if port in taken or port + 10_000 in taken:
            continue
        if _port_is_free(port) and _port_is_free(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class ClusterNode:
    port: int
    dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class RedisClusterServers:
    """``primaries`` primaries with ``replicas`` replicas each, as child processes."""

    def __init__(self, *, primaries: int = 3, replicas: int = 0) -> None:
        binary = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError("redis-server and redis-cli must be on PATH (apt-get install redis)")
        self.binary, self.cli = binary, cli
        self.primaries, self.replicas = primaries, replicas
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
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> None:
        for node in self.nodes:
            self._start_node(node)
        for node in self.nodes:
            self._wait_listening(node)
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

    def _start_node(self, node: ClusterNode) -> None:
        node.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(node.port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(node.dir / "nodes.conf"),
                "--cluster-node-timeout",
                "1000",
                # Replicas sync at once (the default waits 5 s for more replicas to share one
                # transfer), so a test can kill a primary right after start.
                "--repl-diskless-sync-delay",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(node.dir),
                "--daemonize",
                "no",
                "--loglevel",
                "notice",
                "--logfile",
                str(node.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _wait_listening(self, node: ClusterNode) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", node.port), timeout=1),
            ):
                return
            if node.process is not None and node.process.poll() is not None:
                raise RuntimeError(
                    f"cluster node {node.port} exited with {node.process.returncode}"
                )
            time.sleep(0.02)
        raise RuntimeError(f"cluster node {node.port} did not start within 30 s")

    def info(self, node: ClusterNode, *args: str) -> str:
        return subprocess.run(
            [self.cli, "-p", str(node.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` (all slots covered, agreed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [n for n in self.nodes if n.process is not None]
            if all("cluster_state:ok" in self.info(n, "cluster", "info") for n in live):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the cluster did not reach cluster_state:ok within {timeout} s")

    def primary_nodes(self) -> list[ClusterNode]:
        """Nodes that are primaries now (after a failover, a former replica is one)."""
        live = [n for n in self.nodes if n.process is not None]
        return [n for n in live if "role:master" in self.info(n, "info", "replication")]

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL one node (its replica, if any, is promoted after the node timeout)."""
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait(timeout=10)
        node.process = None

    def wait_failover(self, timeout: float = 30.0) -> None:
        """Until a killed primary's replica took over and every slot is served again."""
        deadline = time.monotonic() + timeout
        while len(self.primary_nodes()) < self.primaries:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no replica took over within {timeout} s")
            time.sleep(0.1)
        self.wait_ok(max(1.0, deadline - time.monotonic()))

    def close(self) -> None:
        for node in self.nodes:
            self.kill(node)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RedisClusterServers:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
