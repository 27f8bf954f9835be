"""Credentials and TLS: what works, and that a wrong one fails at start with a clear message."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from nervenet import Handlers, Pool, PoolConnectionError
from nervenet.testing import RedisServer, free_port

pytestmark = pytest.mark.redis

handlers = Handlers()


@handlers.task("secure/echo")
async def echo(value: str) -> str:
    return value


async def _round_trip(pool: Pool) -> str:
    async with pool:
        await pool.serve(handlers)
        return str(orjson.loads(await pool.dispatch("secure/echo", orjson.dumps("hello"))))


@pytest.fixture
def acl_server() -> Iterator[RedisServer]:
    server = RedisServer(
        extra_args=[
            "--user",
            "app",
            "on",
            ">s3cret",
            "~*",
            "&*",
            "+@all",
            "--user",
            "default",
            "off",
        ]
    )
    with server:
        yield server


async def test_an_acl_user_and_password_in_the_url_work(acl_server: RedisServer) -> None:
    url = f"redis://app:s3cret@127.0.0.1:{acl_server.port}/0"
    assert await _round_trip(Pool.from_url(url)) == "hello"


async def test_a_wrong_password_fails_at_start_and_says_so(acl_server: RedisServer) -> None:
    pool = Pool.from_url(f"redis://app:wrong@127.0.0.1:{acl_server.port}/0")
    with pytest.raises(PoolConnectionError, match=r"credentials|password") as raised:
        await pool.ensure_started()
    assert "wrong" not in str(raised.value), "the password must not be echoed"
    await pool.aclose()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[RedisServer, Path]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ],
        check=True,
        capture_output=True,
    )
    tls_port = free_port()
    server = RedisServer(
        extra_args=[
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
            "--tls-auth-clients",
            "no",
        ]
    )
    with server:
        server.tls_port = tls_port  # type: ignore[attr-defined]
        yield server, cert


async def test_rediss_urls_connect_over_tls(tls_server: tuple[RedisServer, Path]) -> None:
    server, cert = tls_server
    url = f"rediss://localhost:{server.tls_port}/0?ssl_ca_certs={cert}"  # type: ignore[attr-defined]
    assert await _round_trip(Pool.from_url(url)) == "hello"


async def test_an_unreachable_server_fails_at_start_with_what_to_do() -> None:
    pool = Pool.from_url(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(PoolConnectionError, match="cannot reach Redis"):
        await pool.ensure_started()
    await pool.aclose()
