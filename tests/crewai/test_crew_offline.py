"""Nothing CrewAI does reaches the network: which switches it takes, and proof that they hold."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("crewai")

from crew_fakes import ScriptedLLM
from crewai import Agent, Crew, Task
from nervenet_crewai import distribute_crew
from nervenet_crewai.offline import OFFLINE_ENV, go_offline
from net_guard import NetworkBlocked, NetworkGuard
from processes import Processes

from nervenet import Pool
from nervenet.errors import ConfigurationError

pytestmark = pytest.mark.crewai

HERE = Path(__file__).parent

PROBE = """
import sys
from net_guard import NetworkGuard
guard = NetworkGuard().__enter__()
if sys.argv[1] == "offline":
    from nervenet_crewai.offline import go_offline
    go_offline()
from crewai import Agent, Crew, Task
from crew_fakes import ScriptedLLM
from processes import Processes
agent = Agent(role="r", goal="g", backstory="b", llm=ScriptedLLM(model="m"), verbose=True)
Crew(agents=[agent], tasks=[Task(description="d", expected_output="e", agent=agent)],
     verbose=True).kickoff()
import time; time.sleep(0.5)  # telemetry exports from a background thread
print("ATTEMPTS", guard.attempts, flush=True)
import os; os._exit(0)  # skip CrewAI's exit-time telemetry flush, which waits on its retries
"""


def verbose_crew() -> Crew:
    agent = Agent(role="r", goal="g", backstory="b", llm=ScriptedLLM(model="m"), verbose=True)
    task = Task(description="d", expected_output="e", agent=agent)
    return Crew(agents=[agent], tasks=[task], verbose=True)


def probe(mode: str) -> str:
    # CI=true also stops CrewAI's version check, so the "online" probe runs without it.
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV and k != "CI"}
    env["PYTHONPATH"] = str(HERE)
    # CrewAI skips the version check for a day once its cache (~/.cache/crewai) holds an answer:
    # an empty cache of the probe's own, so what it attempts does not depend on earlier runs.
    with tempfile.TemporaryDirectory(prefix="nervenet-crewai-cache-") as cache:
        env["XDG_CACHE_HOME"] = cache
        command = [sys.executable, "-c", PROBE, mode]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    return next(line for line in done.stdout.splitlines() if line.startswith("ATTEMPTS"))


def test_the_guard_refuses_and_records_a_connection_past_loopback() -> None:
    with NetworkGuard() as guard, socket.socket() as sock, pytest.raises(NetworkBlocked):
        sock.connect(("192.0.2.1", 443))  # TEST-NET-1: never routed
    assert guard.attempts == ["connect ('192.0.2.1', 443)"]


def test_without_the_switches_crewai_calls_home_and_the_guard_sees_it() -> None:
    attempts = probe("online")
    assert "telemetry.crewai.com" in attempts
    assert "pypi.org" in attempts  # verbose crews check for a newer version


def test_with_go_offline_a_verbose_crew_opens_no_connection() -> None:
    assert probe("offline") == "ATTEMPTS []"


async def test_a_distributed_verbose_kickoff_stays_on_loopback(
    no_network: NetworkGuard, pool: Pool
) -> None:
    crew = distribute_crew(verbose_crew, pool=pool, name="verbose")
    await pool.serve(crew)

    await crew.kickoff_async()

    assert no_network.attempts == []  # and the autouse guard fails the test otherwise


def test_go_offline_after_crewai_was_imported_with_telemetry_on_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("CREWAI_DISABLE_TELEMETRY", "OTEL_SDK_DISABLED", "CREWAI_DISABLE_TRACKING"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="before any `import crewai`"):
        go_offline()


def test_going_offline_leaves_the_apps_own_opentelemetry_on() -> None:
    code = (
        "import os\n"
        "for name in ('CREWAI_DISABLE_TELEMETRY', 'OTEL_SDK_DISABLED',\n"
        "             'CREWAI_DISABLE_TRACKING'):\n"
        "    os.environ.pop(name, None)\n"
        "from nervenet_crewai.offline import go_offline\n"
        "go_offline()\n"
        "import crewai\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "span = TracerProvider().get_tracer('app').start_span('request')\n"
        "assert span.get_span_context().is_valid, 'the OpenTelemetry SDK was switched off'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_child_process_that_tries_the_network_fails_the_test_even_when_killed(
    crew_env: dict[str, str],
) -> None:
    processes = Processes(crew_env)
    child = processes.python(
        "-c",
        "import os, socket, time\n"
        "from net_guard import NetworkGuard\n"
        "with NetworkGuard(report_to=os.environ['NET_GUARD_LOG']):\n"
        "    try:\n"
        "        socket.create_connection(('192.0.2.1', 80), timeout=1)\n"
        "    except OSError:\n"
        "        print('refused', flush=True)\n"
        "    time.sleep(60)\n",
    )
    deadline = time.monotonic() + 30
    while "refused" not in child.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)  # no `finally` of the child runs

    with pytest.raises(AssertionError, match=r"192\.0\.2\.1"):
        processes.close()


def test_importing_the_offline_switches_does_not_import_crewai() -> None:
    code = (
        "import sys, nervenet_crewai.offline, nervenet_crewai;"
        "assert 'crewai' not in sys.modules, 'crewai imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
