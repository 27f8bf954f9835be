"""Free TCP ports on the loopback interface, and waiting for a child to listen on one."""

from __future__ import annotations

import contextlib
import random
import socket
import time
from collections.abc import Callable

#: Redis Cluster refuses ports above this: its bus listens on ``port + 10000``.
MAX_CLUSTER_PORT = 55535
CLUSTER_BUS_OFFSET = 10_000


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it; another process could take it
    before the caller binds it, which on a test machine has not been seen to matter)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: set[int]) -> int:
    """A free port ≤ 55535 whose cluster bus port (+10000) is free as well, and neither in
    ``taken``. Picked at random below 55535: the OS's ephemeral range (32768-60999) would give a
    port cluster mode refuses about 2 times in 5."""
    for _ in range(1_000):
        port = random.randint(20_000, MAX_CLUSTER_PORT)
        bus = port + CLUSTER_BUS_OFFSET
        if port in taken or bus in taken:
            continue
        if port_is_free(port) and port_is_free(bus):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def wait_for_port(
    port: int, *, timeout: float = 30.0, alive: Callable[[], None] | None = None
) -> None:
    """Until something accepts connections on ``port``. ``alive`` is called between attempts
    and should raise if the process meant to listen has exited (so a crash fails at once, with
    its output, instead of after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        if alive is not None:
            alive()
        time.sleep(0.02)
    raise RuntimeError(f"nothing listened on port {port} within {timeout:g} s")
