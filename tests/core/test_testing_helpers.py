"""``nervenet.testing``: the private servers and child processes every other test relies on."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from nervenet.testing import ChildProcesses, RedisServer, free_port

pytestmark = pytest.mark.redis

SLEEPER = "import time; print('up', flush=True); time.sleep(600)"
TERM_IGNORER = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('up', flush=True); time.sleep(600)"
)


def test_an_appendonly_server_keeps_its_port_and_data_across_a_restart(
    own_redis: RedisServer,
) -> None:
    redis.Redis.from_url(own_redis.url).set("kept", "1")
    port, pid = own_redis.port, own_redis.pid

    own_redis.restart()

    assert (own_redis.port, own_redis.url.endswith(f":{port}/0")) == (port, True)
    assert own_redis.pid != pid
    assert redis.Redis.from_url(own_redis.url).get("kept") == b"1"


def test_a_password_goes_into_the_url_and_is_required() -> None:
    with RedisServer(password="s3cret") as server:
        assert redis.Redis.from_url(server.url).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()


def test_a_closed_server_is_gone_with_its_data_directory() -> None:
    server = RedisServer(appendonly=True)
    server.start()
    pid, data = server.pid, server.dir

    server.close()

    assert not data.exists()
    assert not Path(f"/proc/{pid}").exists()


def test_a_child_logs_to_a_file_and_its_line_is_waited_for(tmp_path: Path) -> None:
    with ChildProcesses(tmp_path, {"GREETING": "hello"}, tmp_path / "logs") as children:
        child = children.python("-c", "import os; print(os.environ['GREETING'], flush=True)")
        child.wait_for_line("hello", timeout=30)

        assert child.wait(timeout=10) == 0
        assert child.log.parent == tmp_path / "logs"
        assert child.log.read_text() == "hello\n"


def test_a_child_that_exits_without_the_line_fails_the_wait_at_once_with_its_output() -> None:
    with ChildProcesses() as children:
        child = children.python("-c", "print('something else'); raise SystemExit(3)")
        started = time.monotonic()

        with pytest.raises(AssertionError, match=r"exited with 3(.|\n)*something else"):
            child.wait_for_line("never", timeout=30)
        assert time.monotonic() - started < 10


def test_stop_sends_sigterm_then_sigkill_after_the_grace() -> None:
    with ChildProcesses() as children:
        polite = children.python("-c", SLEEPER)
        stubborn = children.python("-c", TERM_IGNORER)
        for child in (polite, stubborn):
            child.wait_for_line("up", timeout=30)

        assert polite.stop(grace=10) == -signal.SIGTERM
        assert stubborn.stop(grace=0.5) == -signal.SIGKILL


def test_close_kills_every_child_it_started_and_removes_its_own_logs() -> None:
    children = ChildProcesses()
    started = [children.python("-c", SLEEPER) for _ in range(3)]
    started[0].wait_for_line("up", timeout=30)
    log_dir = children.log_dir

    children.close()

    assert children.alive() == []
    assert [c.returncode for c in started] == [-signal.SIGKILL] * 3
    assert not log_dir.exists()


def test_children_do_not_inherit_the_callers_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NERVENET_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    code = "import os; print(os.environ.get('NERVENET_REDIS_URL', 'unset'), flush=True)"
    with ChildProcesses() as children:
        child = children.python("-c", code)
        child.wait(timeout=30)

        assert child.lines() == ["unset"]


def test_a_nervenet_worker_child_serves_from_its_working_directory(
    redis_url: str, tmp_path: Path
) -> None:
    (tmp_path / "tiny_app.py").write_text(
        "from nervenet import Handlers\n"
        "handlers = Handlers()\n"
        "@handlers.task('tiny/echo')\n"
        "async def echo(value: object) -> object:\n"
        "    return value\n"
    )
    with ChildProcesses(tmp_path) as children:
        worker = children.worker("tiny_app:handlers", redis_url, "--grace", "1")
        worker.wait_for_line("serving", timeout=60)

        assert worker.stop(grace=20) == 0, worker.output()
