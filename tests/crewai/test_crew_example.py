"""The logistics example runs as its docstring says: ``nervenet worker`` plus the app, on Redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("crewai")

from nervenet.testing import ChildProcesses

pytestmark = pytest.mark.crewai

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.redis
def test_logistics_example_with_a_nervenet_worker_process(
    redis_url: str, crew_env: dict[str, str]
) -> None:
    crew_env.update(LOGISTICS_LATENCY="0", NERVENET_REDIS_URL=redis_url)
    with ChildProcesses(ROOT, crew_env) as processes:
        worker = processes.worker("examples.logistics_crew:crew", redis_url)
        worker.wait_for_line("serving", timeout=60)

        done = subprocess.run(
            [sys.executable, "examples/logistics_crew.py", "--kickoffs", "24"],
            cwd=ROOT,
            env=crew_env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert done.returncode == 0, done.stderr[-3000:]
    assert "24 kickoffs in" in done.stdout and "0 failed" in done.stdout
    assert "12 exceptions flagged" in done.stdout  # delayed, customs, damaged: 3 of every 6


def test_logistics_flow_example_runs_as_its_docstring_says(crew_env: dict[str, str]) -> None:
    crew_env.update(LOGISTICS_LATENCY="0")
    crew_env.pop("NERVENET_REDIS_URL", None)  # the embedded pool, workers in the process

    done = subprocess.run(
        [sys.executable, "examples/logistics_flow.py", "--runs", "12"],
        cwd=ROOT,
        env=crew_env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert "12 flow runs in" in done.stdout and "6 escalated" in done.stdout
    assert "SHP-0001: escalated (EXCEPTION DELAY: needs action)" in done.stdout
    assert "SHP-0000: closed" in done.stdout
