"""Fixtures for the CrewAI adapter: offline switches, a network guard, pools on both backends."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# CrewAI reads these at import time: before anything below can import it.
from nervenet_crewai.offline import go_offline

go_offline(storage_dir=tempfile.mkdtemp(prefix="nervenet-crewai-store-"))

# CrewAI's import raises an ImportWarning (its rag package), which filterwarnings=error would
# turn into a collection error in whichever test module happens to import it first.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ImportWarning)
    with contextlib.suppress(ImportError):
        import crewai  # noqa: F401

from net_guard import NetworkGuard  # noqa: E402
from processes import Processes  # noqa: E402

from nervenet import Pool, PoolSettings  # noqa: E402

FAST = PoolSettings(heartbeat_interval=0.2, visibility_timeout=1.0, lease_ttl=1.0, block_ms=200)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            # CrewAI 1.15 warns about its own deprecated fields (function_calling_llm, ...) on
            # every Agent it builds; the project's filterwarnings=error would fail on them.
            item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning"))
            item.add_marker(pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"))


@pytest.fixture(autouse=True)
def no_network() -> Iterator[NetworkGuard]:
    """Fail any test during which something (CrewAI included) reached past loopback, even if
    the code that tried swallowed the error (CrewAI's telemetry does)."""
    with NetworkGuard() as guard:
        yield guard
    assert not guard.attempts, f"non-loopback network use: {guard.attempts}"


@pytest.fixture(autouse=True)
def fresh_call_log() -> Iterator[None]:
    import crew_apps
    import crew_fakes

    crew_fakes.CALLS.clear()
    crew_fakes.FAILING.clear()
    crew_fakes.FAILING_WORDS.clear()
    crew_apps.TOOL_RUNS.clear()
    crew_apps.GUARDRAIL_CALLS.clear()
    yield


@pytest.fixture(params=["embedded", "redis", pytest.param("cluster", marks=pytest.mark.cluster)])
async def pool(request: pytest.FixtureRequest) -> AsyncIterator[Pool]:
    """A started pool without workers: embedded, on the session's real Redis or on its private
    3-primary cluster."""
    if request.param == "embedded":
        made = Pool.local(settings=FAST)
    else:
        fixture = "redis_url" if request.param == "redis" else "cluster_url"
        made = Pool.from_url(request.getfixturevalue(fixture), settings=FAST)
    await made.ensure_started()
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
async def redis_pool(redis_url: str) -> AsyncIterator[Pool]:
    made = Pool.from_url(redis_url, settings=FAST)
    await made.ensure_started()
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
def crew_env(tmp_path: Path) -> dict[str, str]:
    """Environment for worker subprocesses: offline, the test helpers importable, a call log."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    env["CREW_TEST_LOG"] = str(tmp_path / "calls.jsonl")
    return env


@pytest.fixture
def processes(crew_env: dict[str, str]) -> Iterator[Processes]:
    started = Processes(crew_env)
    try:
        yield started
    finally:
        started.close()
