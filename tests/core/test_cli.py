"""The ``nervenet`` command as an operator runs it (a child process), and the promise that the core
imports neither LangGraph nor CrewAI."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from core_support import (
    FAST,
    NERVENET,
    Pools,
    Serve,
    WorkerProcesses,
    child_env,
    registered,
    run_cli,
    wait_until,
)

from nervenet import Handlers, Pool, TaskEscalated
from nervenet.envelope import TaskEnvelope
from nervenet.testing import Child, free_port


def echo_handlers() -> Handlers:
    handlers = Handlers()

    @handlers.task("core/echo")
    async def echo(value: object) -> object:
        return value

    return handlers


def test_the_core_imports_neither_langgraph_nor_crewai() -> None:
    check = (
        "import sys, nervenet, nervenet.cli, nervenet.demo, nervenet.testing\n"
        "forbidden = ('langgraph', 'crewai', 'langchain_core', 'nervenet_langgraph',"
        " 'nervenet_crewai')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(forbidden)))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True
    )

    assert run.stdout.strip() == "[]"


def test_the_core_runtime_does_not_import_its_test_helpers() -> None:
    check = (
        "import sys, nervenet, nervenet.cli, nervenet.demo, nervenet.worker\n"
        "print(sorted(m for m in sys.modules if m.startswith('nervenet.testing')))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True
    )

    assert run.stdout.strip() == "[]"


def test_the_core_and_its_cli_import_no_optional_extra() -> None:
    # (Not opentelemetry: redis-py itself imports it when it is installed.)
    check = (
        "import sys, nervenet, nervenet.cli, nervenet.runs\n"
        "optional = ('starlette', 'uvicorn', 'jinja2', 'prometheus_client', 'selenium')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(optional)))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True
    )

    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize("backend", ["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def test_demo_runs_to_completion_and_prints_throughput_and_latency(
    request: pytest.FixtureRequest, backend: str
) -> None:
    redis = ["--redis", request.getfixturevalue("redis_url")] if backend == "redis" else []

    demo = subprocess.run(
        [NERVENET, "demo", "--workflows", "50", "--workload", "plain", *redis],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )

    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert re.search(
        r"50 workflows in [\d.]+ s: \d+ workflows/s, p50 [\d.]+ ms, p99 [\d.]+ ms", demo.stdout
    ), demo.stdout


@pytest.mark.redis
async def test_status_shows_queues_workers_and_escalations(
    redis_pool: Pool, redis_url: str, serve: Serve
) -> None:
    worker = await serve(redis_pool, echo_handlers(), concurrency=4)
    await redis_pool.dispatch("core/echo", b"1", timeout=10)
    for i in range(3):  # a backlog nobody serves
        await redis_pool.publish(
            TaskEnvelope(f"t{i}", "wf", "core/backlog", 1, 0.0, redis_pool.inbox.address, b"{}")
        )
    await redis_pool.escalate(
        TaskEnvelope("t-x", "wf", "core/echo", 1, 0.0, redis_pool.inbox.address, b"{}"), "stuck"
    )

    async def heartbeat_reported_the_task() -> bool:
        return [w.processed for w in await redis_pool.workers()] == [1]

    await wait_until(heartbeat_reported_the_task, what="the worker's next heartbeat")

    status = await run_cli("status", "--redis", redis_url)

    assert status.returncode == 0, status.output
    table_row = r"[│|]\s*{}\s*[│|]\s*{}\s*[│|]"
    assert re.search(table_row.format("core/backlog", 3), status.output), status.output
    assert re.search(table_row.format("core/echo", 0), status.output), status.output
    assert re.search(table_row.format(re.escape(worker.worker_id), "core/echo"), status.output)
    assert re.search(r"[│|]\s*0/4\s*[│|]\s*1\s*[│|]", status.output)  # load/concurrency, processed
    assert "escalations: 1" in status.output
    assert redis_url in status.output


async def test_worker_with_an_unimportable_target_says_what_to_do() -> None:
    started = await run_cli("worker", "no_such_module:handlers", "--redis", "redis://127.0.0.1:1/0")

    assert started.returncode == 2
    assert "cannot import module 'no_such_module'" in started.output
    assert "Traceback" not in started.output


async def test_worker_with_a_missing_attribute_says_so() -> None:
    started = await run_cli("worker", "core_apps:nothing", "--redis", "redis://127.0.0.1:1/0")

    assert started.returncode == 2
    assert "module 'core_apps' has no attribute 'nothing'" in started.output


async def test_worker_without_a_reachable_redis_says_so_without_a_traceback() -> None:
    port = free_port()

    started = await run_cli(
        "worker", "core_apps:handlers", "--redis", f"redis://127.0.0.1:{port}/0"
    )

    assert started.returncode == 2
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in started.output
    assert "Traceback" not in started.output


@pytest.mark.redis
async def test_a_database_the_server_does_not_have_is_named_without_a_traceback(
    redis_url: str,
) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/99"

    started = await run_cli("worker", "core_apps:handlers", "--redis", url)

    assert started.returncode == 2
    assert "has no database 99" in started.output
    assert "Traceback" not in started.output


def test_python_dash_m_nervenet_is_the_nervenet_command() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "nervenet", "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )

    assert run.returncode == 0, run.stderr
    assert "Usage: nervenet worker" in run.stdout
    for option in ("--signing-secret", "NERVENET_SIGNING_SECRET", "--max-deliveries"):
        assert option in run.stdout


async def test_worker_with_a_too_short_signing_secret_says_how_to_make_one() -> None:
    started = await run_cli(
        "worker", "core_apps:handlers", "--redis", "redis://127.0.0.1:1/0", "--signing-secret", "x"
    )

    assert started.returncode == 2
    assert "the signing secret is 1 bytes; use at least 16" in started.output
    assert "secrets.token_hex" in started.output
    assert "Traceback" not in started.output


@pytest.mark.redis
async def test_a_worker_with_the_secret_in_its_environment_serves_signed_tasks_only(
    pools: Pools, redis_url: str, worker_processes: WorkerProcesses
) -> None:
    secret = "the-secret-of-this-test-app"
    signed = await pools.open(Pool.from_url(redis_url, settings=FAST, signing_secret=secret))
    unsigned = await pools.open(Pool.from_url(redis_url, settings=FAST))
    worker = worker_processes.cli(redis_url, env={"NERVENET_SIGNING_SECRET": secret})
    await registered(signed, worker)

    assert await signed.dispatch("core/echo", b'"signed"', timeout=10) == b'{"echo":"signed"}'
    with pytest.raises(TaskEscalated):  # not answered: refused entries are only dead-lettered
        await unsigned.dispatch("core/echo", b'"unsigned"', timeout=1, retries=0)
    reasons = [e.reason for e in await signed.escalations.list()]
    assert "unsigned envelope (signing is required)" in reasons
    assert "signed tasks only" in worker.output()


async def said(worker: Child, text: str) -> bool:
    return text in worker.output()


@pytest.mark.redis
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_a_worker_runs_on_the_loop_it_is_given_with_its_collector_tuned(
    pools: Pools, redis_url: str, worker_processes: WorkerProcesses, loop: str
) -> None:
    pool = await pools.open(Pool.from_url(redis_url, settings=FAST))
    worker = worker_processes.cli(redis_url, options=["--loop", loop])
    await registered(pool, worker)

    assert await pool.dispatch("core/echo", b'"hi"', timeout=10) == b'{"echo":"hi"}'
    await wait_until(lambda: said(worker, f"{loop} loop, tuned gc"), what="the banner")


@pytest.mark.redis
async def test_nervenet_gc_default_keeps_cpythons_collector(
    pools: Pools, redis_url: str, worker_processes: WorkerProcesses
) -> None:
    pool = await pools.open(Pool.from_url(redis_url, settings=FAST))
    worker = worker_processes.cli(redis_url, env={"NERVENET_GC": "default"})
    await registered(pool, worker)

    await wait_until(lambda: said(worker, "loop, default gc"), what="the banner")


def test_tuning_the_collector_freezes_start_up_and_raises_the_young_threshold() -> None:
    check = (
        "import gc\n"
        "from nervenet.owned_process import YOUNG_THRESHOLD, tune_collector\n"
        "before = gc.get_threshold()\n"
        "assert tune_collector()\n"
        "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()\n"
        "assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:]), gc.get_threshold()\n"
    )
    subprocess.run([sys.executable, "-c", check], timeout=60, check=True)
