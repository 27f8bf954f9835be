"""Catch any socket use past loopback: connects to non-loopback addresses and name lookups of
non-local hosts. Used by every CrewAI test (in process) and by worker subprocesses."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

LOCAL_NAMES = {"localhost", "localhost.localdomain", "", None}


class NetworkBlocked(OSError):
    """Raised in place of a connection or lookup past loopback."""


def _is_local_host(host: Any) -> bool:
    if host in LOCAL_NAMES:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


class NetworkGuard:
    """Patch ``socket`` while active; record and refuse every non-loopback attempt."""

    def __init__(self, report_to: str | None = None) -> None:
        self.attempts: list[str] = []
        self._report_to = report_to
        """A file each attempt is appended to at once (for a child that may be SIGKILLed)."""

    def _record(self, attempt: str) -> None:
        self.attempts.append(attempt)
        if self._report_to:
            with open(self._report_to, "a") as report:
                report.write(attempt + "\n")

    def __enter__(self) -> NetworkGuard:
        self._connect = socket.socket.connect
        self._connect_ex = socket.socket.connect_ex
        self._getaddrinfo = socket.getaddrinfo
        guard = self

        def check_address(sock: socket.SocketType, address: Any) -> None:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local_host(address[0]):
                guard._record(f"connect {address!r}")
                raise NetworkBlocked(f"test network guard: connect to {address!r} refused")

        def connect(sock: socket.SocketType, address: Any) -> None:
            check_address(sock, address)
            guard._connect(sock, address)

        def connect_ex(sock: socket.SocketType, address: Any) -> int:
            check_address(sock, address)
            return guard._connect_ex(sock, address)

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if not _is_local_host(host):
                guard._record(f"resolve {host!r}")
                raise NetworkBlocked(f"test network guard: lookup of {host!r} refused")
            return guard._getaddrinfo(host, *args, **kwargs)

        # Patching the methods on the class is the point (every socket, whoever made it).
        # SocketType: typeshed declares them on _socket.socket, which socket.socket extends.
        socket.socket.connect = connect  # type: ignore[method-assign]
        socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = getaddrinfo
        return self

    def __exit__(self, *exc: object) -> None:
        socket.socket.connect = self._connect  # type: ignore[method-assign]
        socket.socket.connect_ex = self._connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = self._getaddrinfo
