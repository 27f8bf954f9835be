"""A private redis-server process for tests: started on a free port, killable and restartable."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server child process; ``restart()`` keeps port and data directory."""

    def __init__(
        self,
        *,
        appendonly: bool = False,
        password: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.appendonly = appendonly
        self.password = password
        self.extra_args = extra_args or []
        self.dir = Path(tempfile.mkdtemp(prefix="nervenet-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, *, until_loaded: bool = True) -> None:
        """Start the server and wait until it listens and, unless told otherwise, has loaded
        its data (a restarted server answers LOADING meanwhile; the test's own clients should
        not have to ride that out, the processes under test should)."""
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra_args
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
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
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start (and load its data) within 30 s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self, downtime: float = 0.0, *, until_loaded: bool = True) -> None:
        self.kill()
        time.sleep(downtime)
        self.start(until_loaded=until_loaded)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def redis_required() -> bool:
    """Under CI the real-Redis tests must run: a missing server is a failure, not a skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
