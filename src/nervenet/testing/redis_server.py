"""A private ``redis-server`` on a free port: killed, restarted (same port, same data) and
removed by the test or benchmark that started it, never shared with anything else."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .children import Child
from .lifecycle import Started
from .ports import free_port


def servers_required() -> bool:
    """Whether a missing ``redis-server`` (or browser) must fail a test rather than skip it:
    under CI (``CI=true``) every real-server test has to run."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_binaries(*names: str) -> list[str]:
    """Which of the named programs are not on PATH (``redis-server``, ``redis-cli``)."""
    return [name for name in names if shutil.which(name) is None]


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not on PATH (apt-get install redis-server)")
    return found


class RedisServer(Started):
    """One ``redis-server`` child process on a free port with its own data directory.

    ``appendonly`` makes it durable across :meth:`restart` (every write fsynced, so a SIGKILL
    loses nothing the server acknowledged); ``password`` sets ``requirepass`` and goes into
    :attr:`url`; ``extra_args`` are appended to the command line (ACL users, TLS ports).
    ``own_session``/``die_with_parent`` are :meth:`Child.start`'s, for benchmarks.
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        password: str | None = None,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        own_session: bool = False,
        die_with_parent: bool = False,
    ) -> None:
        self.binary = _binary("redis-server")
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self.extra_args = list(extra_args)
        self.own_session = own_session
        self.die_with_parent = die_with_parent
        self.dir = Path(tempfile.mkdtemp(prefix="nervenet-redis-"))
        self.child: Child | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self.child is None:
            raise RuntimeError("the redis-server is not running")
        return self.child.pid

    @property
    def running(self) -> bool:
        return self.child is not None and self.child.running

    def command(self) -> list[str]:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        return args + self.extra_args

    def start(self, *, until_loaded: bool = True, timeout: float = 30.0) -> None:
        """Start the server and wait until it listens and, unless told otherwise, has loaded
        its data (a restarted server answers LOADING meanwhile; the test's own clients should
        not have to ride that out, the processes under test should)."""
        # The log outlives restarts: one file per start, numbered.
        starts = len(list(self.dir.glob("redis-*.log")))
        self.child = Child.start(
            self.command(),
            log=self.dir / f"redis-{starts}.log",
            name="redis-server",
            own_session=self.own_session,
            die_with_parent=self.die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection,
            ):
                if not until_loaded:
                    return
                connection.sendall(b"PING\r\n")
                if not connection.recv(64).startswith(b"-LOADING"):
                    return  # +PONG, or -NOAUTH from a server with a password
            self.child.check_running()
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start (and load its data) within {timeout} s")

    def kill(self) -> None:
        """SIGKILL: what the server did not write to its append-only file is lost."""
        if self.child is not None:
            self.child.kill()
        self.child = None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (the server saves and exits), SIGKILL after ``grace`` seconds."""
        if self.child is not None:
            self.child.stop(grace)
        self.child = None

    def restart(self, downtime: float = 0.0, *, until_loaded: bool = True) -> None:
        """Kill it and start it again on the same port with the same data directory, after
        ``downtime`` seconds without a server."""
        self.kill()
        time.sleep(downtime)
        self.start(until_loaded=until_loaded)

    def close(self) -> None:
        """Kill it and remove its data directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
