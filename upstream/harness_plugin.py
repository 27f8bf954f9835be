"""pytest plugin loaded in both runs (plain and distributed): which tests take part, and outcomes.

* Only the in-memory variants of upstream's backend fixtures run (``memory`` checkpointer,
  ``in_memory`` store, ``memory`` cache). The SQLite and Postgres variants test LangGraph's savers,
  which ``distribute`` does not touch; ``NO_DOCKER=true`` already drops the Postgres/Redis ones.
  ``NERVENET_UPSTREAM_ALL_BACKENDS=1`` keeps the SQLite variants too.
* With ``NERVENET_UPSTREAM_EXCLUDE=1`` (set by ``run.py`` for the distributed run only) the tests
  listed in ``EXCLUDED.md`` are deselected: they inspect in-process internals, not behaviour.
* With ``NERVENET_UPSTREAM_FUNCTIONAL=1`` (``run.py --functional``) only the tests of LangGraph's
  functional API run: those whose source uses ``entrypoint`` or ``task`` from ``langgraph.func``.
* With ``NERVENET_UPSTREAM_RESULTS=path.json`` each test's outcome (passed, failed, error,
  skipped, xfailed, xpassed) and a short failure text are written there for ``run.py`` to compare.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path

import pytest

BACKEND_FIXTURES = ("sync_checkpointer", "async_checkpointer", "cache", "sync_store", "async_store")
IN_MEMORY = ("memory", "in_memory", "memory_migrate_sends")
EXCLUDED_MD = Path(__file__).with_name("EXCLUDED.md")


def excluded_tests() -> dict[str, str]:
    """``EXCLUDED.md`` lines ``- `tests/x.py::name` — reason``: test id (no params) -> reason."""
    found: dict[str, str] = {}
    for line in EXCLUDED_MD.read_text().splitlines():
        match = re.match(r"^[-*] `([^`]+::[^`]+)`\s*[—:-]+\s*(.*)$", line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


def _in_memory_variant(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return True
    for name in BACKEND_FIXTURES:
        value = callspec.params.get(name)
        if value is not None and value not in IN_MEMORY:
            return False
    return True


_FUNCTIONAL_API = re.compile(r"@entrypoint\b|\bentrypoint\(|@task\b|\btask\(")


def uses_functional_api(item: pytest.Item) -> bool:
    """Whether the test's own source uses ``@entrypoint`` or ``@task``."""
    func = getattr(item, "function", None)
    try:
        source = inspect.getsource(func) if func is not None else ""
    except (OSError, TypeError):
        return False
    return bool(_FUNCTIONAL_API.search(source))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep_all = os.environ.get("NERVENET_UPSTREAM_ALL_BACKENDS") == "1"
    excluded = excluded_tests() if os.environ.get("NERVENET_UPSTREAM_EXCLUDE") == "1" else {}
    functional = os.environ.get("NERVENET_UPSTREAM_FUNCTIONAL") == "1"
    selected, deselected = [], []
    for item in items:
        base_id = item.nodeid.split("[", 1)[0]
        if (
            (excluded and base_id in excluded)
            or (not keep_all and not _in_memory_variant(item))
            or (functional and not uses_functional_api(item))
        ):
            deselected.append(item)
        else:
            selected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


_outcomes: dict[str, dict[str, str]] = {}


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    _progress(f"start {nodeid}")


def _progress(line: str) -> None:
    """One line per test event in ``<results>.progress``: shows which test a slow run is in."""
    path = os.environ.get("NERVENET_UPSTREAM_RESULTS")
    if path:
        with open(path.removesuffix(".json") + ".progress", "a") as out:
            out.write(line + "\n")


def pytest_runtest_logfinish(nodeid: str, location: object) -> None:
    entry = _outcomes.get(nodeid, {})
    _progress(f"{entry.get('outcome', '?')} {nodeid} {entry.get('duration', '')}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = _outcomes.setdefault(report.nodeid, {"outcome": "passed", "detail": ""})
    if hasattr(report, "wasxfail"):
        entry["outcome"] = "xfailed" if report.skipped else "xpassed"
    elif report.failed:
        if entry["outcome"] not in ("failed", "error"):
            entry["outcome"] = "failed" if report.when == "call" else "error"
            entry["detail"] = _short(report)
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"
        entry["detail"] = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
    if report.when == "call" or (report.when == "setup" and not report.passed):
        entry["duration"] = f"{report.duration:.2f}"


def _short(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return f"{report.when}: {crash.message}"[:2000]
    return f"{report.when}: {str(report.longrepr)[-2000:]}"


def pytest_sessionstart(session: pytest.Session) -> None:
    path = os.environ.get("NERVENET_UPSTREAM_RESULTS")
    if path:
        Path(path.removesuffix(".json") + ".progress").unlink(missing_ok=True)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("NERVENET_UPSTREAM_RESULTS")
    if path:
        Path(path).write_text(json.dumps(_outcomes, indent=1, sort_keys=True))
