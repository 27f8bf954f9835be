"""What a run measures: the loads, windows and tests of the full table and of its quick smoke."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

TIMEOUT = 60.0
"""Seconds a workflow may take before it counts as timed out."""
WORKERS = 2
"""Worker processes of every distributed system (arq, Celery, nervenet)."""


@dataclass(frozen=True)
class Plan:
    closed: tuple[int, ...]
    """Closed-loop loads: workflows in flight."""
    open: tuple[float, ...]
    """Open-loop loads: arrivals per second."""
    closed_window: tuple[float, float]
    """(warm-up, measured) seconds of a closed-loop phase; the warm-up scales with the load."""
    warmup_cap: float
    """Longest closed-loop warm-up, seconds (see :meth:`closed_warmup`)."""
    open_window: tuple[float, float]
    scale_workers: tuple[int, ...]
    """nervenet worker processes of the scaling phases (at ``scale_clients`` in flight)."""
    scale_clients: int
    kill_clients: int
    """Workflows in flight when a coordinator is killed (central's one, one of nervenet's)."""
    kill_seconds: float
    profile_seconds: float
    """py-spy's window on the phase at ``scale_clients`` (nervenet and central)."""
    drain: float = TIMEOUT
    """Seconds after the window a phase waits for its last workflows."""
    coordinators: int = 1
    """nervenet coordinator processes (K); closed-loop clients and open-loop arrivals are split
    evenly between them. One on this 2-core machine: at 500 in flight, ten quiet ``profile.py
    --no-spy`` runs (five each, taking turns) cost 18.9-23.6 ms of CPU per workflow with one
    coordinator process and 26.1-28.3 ms with two, and sustained more (4,384-6,088/min against
    4,116-4,468): a fifth busy process on 2 cores costs more in context switches and smaller
    batches than it brings. The kill test always runs two (one is killed, the other takes its
    runs over)."""
    uvloop: bool = True
    """nervenet's coordinators and workers run on uvloop (``nervenet_app`` installs it)."""
    max_runs: int | None = 2_000
    """Runs nervenet's coordinator processes run at once, split evenly between them (each one's
    ``PoolSettings.max_runs``, as ``nervenet serve --max-runs`` sets it); the rest wait their
    turn. The peers' workers hold as many: arq 2 x ``max_jobs`` 1,000, Celery 2 x 1,000 threads.
    None: no bound (every arrival starts at once)."""

    def closed_warmup(self, clients: int) -> float:
        """All clients start at once, so the first workflows end together, and again one latency
        later: wait about two latencies at the peers' saturation (~75 workflows/s) before
        measuring. With one latency (the old ``clients / 120``) the window at 500 caught the
        first wave ending and counted up to twice the steady throughput."""
        return max(self.closed_window[0], min(self.warmup_cap, clients / 40))

    def but(self, **changes: Any) -> Plan:
        """This plan with ``changes`` (field=value)."""
        return dataclasses.replace(self, **changes)


FULL = Plan(
    closed=(50, 200, 500, 2000),
    open=(20.0, 40.0, 80.0, 160.0),
    closed_window=(5.0, 20.0),
    warmup_cap=45.0,
    open_window=(5.0, 20.0),
    scale_workers=(1, 2, 4),
    scale_clients=2000,
    kill_clients=400,
    kill_seconds=15.0,
    profile_seconds=10.0,
)
#: A smoke test of every phase kind (~100 s on a quiet machine): one load each, short windows,
#: no steady state. Its figures show that everything runs, not how fast.
QUICK = FULL.but(
    closed=(100,),
    open=(40.0,),
    closed_window=(1.0, 4.0),
    warmup_cap=2.0,
    open_window=(1.0, 2.0),
    scale_workers=(1, 2),
    scale_clients=100,
    kill_clients=100,
    kill_seconds=4.0,
    profile_seconds=2.0,
)
