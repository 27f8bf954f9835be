"""How fast a durable LangGraph run resumes after its coordinator process is SIGKILLed.

    python benchmarks/bench_recovery.py [--quick] [--runs 50,50,150] [--workers 1]

Starts a private ``redis-server``, worker processes serving ``apps/lg_recovery_app.py`` and, per
phase, two coordinator processes (``lg_recovery_app.py``) of the same graph: 4 nodes, a
``RedisSaver`` checkpointer, and nervenet's *default* settings (heartbeat 0.5 s, lease 1.5 s).

* Control: both coordinators keep many zero-work durable runs in flight for a while, so their
  event loops are busy, and nobody is killed. Every run must finish here, in the process that
  started it: a run the other process dispatched a node of is a false takeover (target: 0).
* Kill trials: each coordinator submits N runs whose nodes take 1 s; mid-run (at a random
  moment 1.2 to 2.8 s in) one coordinator is SIGKILLed. Recovery of a run is the time from the
  kill to the survivor's first dispatch of one of its nodes (each coordinator records the time it
  first publishes a task of each run); target: 2 s. Every run must then finish with the output
  plain LangGraph gives, and node executions beyond one per node are counted.

Timestamps are ``time.time()`` of processes on one machine. The machine is shared and noisy;
nothing is asserted, each target is reported as PASS or MISS with its margin.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from _common import (
    Child,
    console,
    nervenet_worker,
    percentile,
    print_table,
    private_redis,
    wait_registered,
)

from nervenet import Pool, PoolSettings
from nervenet.keys import Keys

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
sys.path.insert(0, str(APPS))
import lg_recovery_app as app  # noqa: E402

NODE_SECONDS = 1.0
KILL_WINDOW = (1.2, 2.8)
WORKER_CONCURRENCY = 1_000
TARGET_RECOVERY = 2.0
DEFAULTS = PoolSettings()


# --- processes ------------------------------------------------------------------------------
def coordinator(name: str, mode: str, count: int, value: float) -> Child:
    args = [sys.executable, str(APPS / "lg_recovery_app.py"), name, mode, str(count), str(value)]
    return Child.run(f"coordinator-{name}", args, cwd=APPS)


class Coordinators:
    """The coordinator processes of one phase; whatever happens, none outlives it."""

    def __init__(self) -> None:
        self.children: dict[str, Child] = {}

    def start(self, name: str, mode: str, count: int, value: float) -> Child:
        self.children[name] = coordinator(name, mode, count, value)
        return self.children[name]

    def __enter__(self) -> Coordinators:
        return self

    def __exit__(self, *exc: object) -> None:
        for child in self.children.values():
            child.stop()


def stop_and_read(child: Child) -> None:
    """SIGTERM a live coordinator: it writes what it saw to Redis, then exits."""
    child.check_running()
    child.send_signal(signal.SIGTERM)
    child.wait(30)
    if child.returncode != 0:
        raise RuntimeError(f"{child.name} failed on stop:\n{child.output()}")


def summary(client: redis.Redis, name: str) -> dict[str, Any]:
    raw = client.hget("bench:summary", name)
    if raw is None:
        raise RuntimeError(f"coordinator {name} wrote no summary")
    return dict(json.loads(raw))


def hash_of(client: redis.Redis, key: str) -> dict[str, str]:
    raw: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


def times(client: redis.Redis, key: str) -> dict[str, float]:
    return {k: float(v) for k, v in hash_of(client, key).items()}


def executions(client: redis.Redis, prefix: str) -> int:
    counts = hash_of(client, app.EXECUTIONS)
    return sum(int(v) for k, v in counts.items() if k.startswith(prefix))


def owner(run_id: str) -> str:
    return run_id.rsplit("-", 1)[0]


# --- control: loaded coordinators, nobody killed ---------------------------------------------
@dataclass
class Control:
    seconds: float
    clients: int
    summaries: dict[str, dict[str, Any]]
    others_runs: dict[str, int]
    """Runs of the other coordinator this one dispatched a node of."""
    extra_executions: int
    left_leased: int
    """Runs still leased when the coordinators were stopped (cleared before the kill trials)."""

    @property
    def false_takeovers(self) -> int:
        """Nobody died here: every takeover took a live run from a live process."""
        return sum(s["takeovers"] for s in self.summaries.values())


def leased(client: redis.Redis) -> int:
    return int(client.zcard(Keys().workflows))


def clear_leases(client: redis.Redis) -> None:
    """Forget runs whose coordinators are gone, so the next phase's survivor has none to claim."""
    keys = Keys()
    client.delete(keys.workflows, keys.workflow_owners, keys.workflow_kinds)


def control(url: str, client: redis.Redis, clients: int, seconds: float) -> Control:
    names = ("ca", "cb")
    with Coordinators() as coordinators:
        for name in names:
            coordinators.start(name, "load", clients, seconds)
        for child in coordinators.children.values():
            child.wait_for_line("finished", timeout=seconds + 120)
        # A claim needs an expired lease: wait longer than one, so a late false takeover shows,
        # and let runs that changed hands finish.
        time.sleep(DEFAULTS.lease_ttl + 2 * DEFAULTS.heartbeat_interval)
        deadline = time.monotonic() + 30
        while leased(client) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = leased(client)
        for child in coordinators.children.values():
            stop_and_read(child)
    clear_leases(client)
    summaries = {name: summary(client, name) for name in names}
    others = {
        name: sum(1 for run in times(client, f"bench:first-dispatch:{name}") if owner(run) != name)
        for name in names
    }
    finished = sum(s["outcomes"].get("ok", 0) for s in summaries.values())
    extra = executions(client, "c") - finished * len(app.NODES)
    return Control(seconds, clients, summaries, others, extra, left)


# --- kill trials ----------------------------------------------------------------------------
@dataclass
class Trial:
    runs: int
    """Runs per coordinator."""
    kill_offset: float
    """Seconds from submission to the kill."""
    recovery: list[float] = field(default_factory=list)
    """Kill -> survivor's first dispatch, per taken-over run."""
    claim: list[float] = field(default_factory=list)
    """Kill -> the survivor's "taking over run" log line, per taken-over run."""
    handoff: list[float] = field(default_factory=list)
    """That log line -> the first dispatch (reading the checkpoint, restarting the loop)."""
    taken_over: int = 0
    wrong_outputs: int = 0
    extra_executions: int = 0
    false_takeovers: int = 0
    """Runs taken from a live process: the victim's before the kill, the survivor's own runs."""
    survivor: dict[str, Any] = field(default_factory=dict)


async def wait_all(url: str, run_ids: list[str], timeout: float) -> list[Any]:
    """Every run's output (or its exception), waited for from a third process (this one)."""
    from nervenet_langgraph.wire import unpack

    async def output(pool: Pool, run_id: str) -> Any:
        return unpack(app.graph.nervenet.serde, await pool.workflows.wait(run_id))

    async with Pool.from_url(url) as pool:
        waits = (asyncio.wait_for(output(pool, r), timeout) for r in run_ids)
        return await asyncio.gather(*waits, return_exceptions=True)


def kill_trial(url: str, client: redis.Redis, number: int, runs: int) -> Trial:
    victim, survivor = f"t{number}a", f"t{number}b"
    offset = random.uniform(*KILL_WINDOW)
    trial = Trial(runs, offset)
    with Coordinators() as coordinators:
        for name in (victim, survivor):
            coordinators.start(name, "batch", runs, NODE_SECONDS)
        for child in coordinators.children.values():
            child.wait_for_line("submitted", timeout=120)
        time.sleep(offset)
        killed_at = time.time()
        coordinators.children[victim].send_signal(signal.SIGKILL)
        run_ids = [f"{name}-{n}" for name in (victim, survivor) for n in range(runs)]
        outputs = asyncio.run(wait_all(url, run_ids, timeout=120))
        stop_and_read(coordinators.children[survivor])
    expected = [app.expected_output(n, NODE_SECONDS) for _ in range(2) for n in range(runs)]
    trial.wrong_outputs = sum(1 for got, want in zip(outputs, expected, strict=True) if got != want)
    dispatched = times(client, f"bench:first-dispatch:{survivor}")
    claimed = times(client, f"bench:takeover-log:{survivor}")
    for run_id, at in dispatched.items():
        if owner(run_id) != victim:
            continue
        if at < killed_at:
            trial.false_takeovers += 1
            continue
        trial.taken_over += 1
        trial.recovery.append(at - killed_at)
        if run_id in claimed:
            trial.claim.append(claimed[run_id] - killed_at)
            trial.handoff.append(at - claimed[run_id])
    trial.extra_executions = executions(client, f"t{number}") - 2 * runs * len(app.NODES)
    trial.survivor = summary(client, survivor)
    trial.false_takeovers += trial.survivor["takeovers"] - trial.taken_over
    trial.false_takeovers += trial.survivor["lease_losses"]
    return trial


# --- the report -----------------------------------------------------------------------------
def seconds(samples: list[float], q: float) -> str:
    return f"{percentile(samples, q):.2f} s" if samples else "-"


def report(ctl: Control, trials: list[Trial]) -> None:
    rows = []
    for name, s in ctl.summaries.items():
        outcomes = dict(s["outcomes"])
        ok = outcomes.pop("ok", 0)
        rows.append(
            [
                name,
                f"{ok:,}",
                ", ".join(f"{k} {v}" for k, v in outcomes.items()) or "none",
                f"{ok / ctl.seconds:,.0f}",
                str(s["takeovers"]),
                str(ctl.others_runs[name]),
                str(s["lease_losses"]),
                f"{s['max_lag'] * 1e3:,.0f} ms",
            ]
        )
    print_table(
        f"Control: 2 coordinators keep {ctl.clients} zero-work durable runs in flight each for "
        f"{ctl.seconds:g} s; nobody is killed, so every takeover is false. Extra node "
        f"executions: {ctl.extra_executions}; runs still leased at the end: {ctl.left_leased}",
        [
            "coordinator",
            "runs ok",
            "runs failed",
            "runs/s",
            "takeovers",
            "of the other's runs",
            "lost-lease warnings",
            "max loop lag",
        ],
        rows,
    )

    rows = []
    for number, t in enumerate(trials, 1):
        rows.append(
            [
                str(number),
                str(t.runs),
                f"{t.kill_offset:.1f} s",
                f"{t.taken_over}/{t.runs}",
                seconds(t.recovery, 0),
                seconds(t.recovery, 50),
                seconds(t.recovery, 100),
                seconds(t.claim, 50),
                f"{percentile(t.handoff, 50) * 1e3:.0f} ms" if t.handoff else "-",
                str(t.extra_executions),
                "yes" if t.wrong_outputs == 0 else f"{t.wrong_outputs} wrong",
                str(t.false_takeovers),
            ]
        )
    print_table(
        f"Kill trials: 2 coordinators with N runs each, 4 nodes of {NODE_SECONDS:g} s; one is "
        "SIGKILLed mid-run. Recovery = kill → the survivor's first dispatch of a taken-over run; "
        "claim = kill → its takeover log line; false = runs taken from a live process "
        f"(heartbeat {DEFAULTS.heartbeat_interval:g} s, lease {DEFAULTS.lease_ttl:g} s)",
        [
            "trial",
            "N",
            "kill at",
            "taken over",
            "first",
            "p50",
            "max",
            "claim p50",
            "claim→dispatch p50",
            "extra node runs",
            "outputs ok",
            "false",
        ],
        rows,
    )

    recovery = [r for t in trials for r in t.recovery]
    false = ctl.false_takeovers + sum(t.false_takeovers for t in trials)
    missing = sum(t.runs - t.taken_over for t in trials)
    wrong = sum(t.wrong_outputs for t in trials)
    targets = []
    for label, q in (("p50", 50), ("max", 100)):
        value = percentile(recovery, q) if recovery else float("inf")
        verdict = "PASS" if value <= TARGET_RECOVERY else "MISS"
        targets.append(
            [
                f"recovery {label} ≤ {TARGET_RECOVERY:g} s ({len(recovery)} runs taken over)",
                f"{value:.2f} s",
                verdict,
                f"{TARGET_RECOVERY / value - 1:+.0%}",
            ]
        )
    targets.append(
        ["false takeovers of live runs = 0", str(false), "PASS" if false == 0 else "MISS", "-"]
    )
    targets.append(
        [
            "every run of a killed coordinator taken over; all outputs correct",
            f"{missing} not taken over, {wrong} wrong",
            "PASS" if missing == 0 and wrong == 0 else "MISS",
            "-",
        ]
    )
    print_table(
        "Targets (margin: how far inside (+) or outside (-) the target)",
        ["target", "measured", "verdict", "margin"],
        targets,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one kill trial, short control")
    parser.add_argument("--runs", help="runs per coordinator of each kill trial, comma-separated")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    args = parser.parse_args()
    runs = [int(r) for r in (args.runs or ("20" if args.quick else "50,50,50,50,150")).split(",")]
    clients, load_seconds = (200, 8.0) if args.quick else (200, 20.0)

    with private_redis() as (url, server):
        os.environ["NERVENET_REDIS_URL"] = url  # the app module's graph and nodes read it
        with contextlib.ExitStack() as stack:
            workers = [
                stack.enter_context(
                    nervenet_worker(
                        "lg_recovery_app:graph",
                        url,
                        name=f"worker-{i}",
                        concurrency=WORKER_CONCURRENCY,
                        grace=1,
                        cwd=APPS,
                    )
                )
                for i in range(args.workers)
            ]
            console.print(
                f"redis-server pid {server.pid}, worker pids "
                f"{', '.join(str(w.pid) for w in workers)}, on {url}"
            )
            wait_registered(url, workers)
            client = redis.Redis.from_url(url)
            ctl = control(url, client, clients, load_seconds)
            console.print(f"[dim]control done ({clients} runs in flight per coordinator)[/]")
            trials = []
            for number, count in enumerate(runs, 1):
                trials.append(kill_trial(url, client, number, count))
                for worker in workers:
                    worker.check_running()
                console.print(f"[dim]kill trial {number} done ({count} runs per coordinator)[/]")
            client.close()
    report(ctl, trials)


if __name__ == "__main__":
    main()
