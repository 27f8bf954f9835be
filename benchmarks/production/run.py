"""The production table: central LangGraph, arq, Celery and nervenet on one workload, in one run.

    bash benchmarks/production/setup.sh                  # once: the peers' own venvs
    python benchmarks/production/run.py --quick          # < 2 minutes: every system, a few loads
    python benchmarks/production/run.py                  # the full table (~30 minutes)
    python benchmarks/production/run.py --out DIR        # default benchmarks/results/<timestamp>

Run with nervenet's interpreter (``/work/venv/bin/python`` or any env with ``pip install -e .``).
Each system runs in its own processes, one system after another, against its own private
``redis-server`` on a free port: central (one process), arq (a client + 2 workers), Celery (a
client + 2 workers), nervenet (K coordinator processes + 2 ``nervenet worker`` processes). Every
system runs the same workflow ids through the same document pipeline, hence the same documents
and model latencies (``workload.py``), and every final state is checked. Writes ``report.md``,
``results.json`` and PNG plots.

The driver (this script, nervenet's environment) is in a few modules: ``plan`` (loads and
windows), ``systems`` (each system's processes), ``phase`` (one load over one window, summed up
in a row), ``kills`` (``kill -9`` of a coordinator), ``measure`` (CPU, memory, foreign load),
``report`` and ``plot`` (the outputs). What runs inside the systems' processes is ``workload``,
``loadgen``, ``runner_*``, ``*_app``; it imports no driver module.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import redis  # noqa: E402
import workload  # noqa: E402
from _common import console, percentile  # noqa: E402
from kills import central_kill, nervenet_kill  # noqa: E402
from measure import Sampler  # noqa: E402
from phase import Phase, run_phase  # noqa: E402
from plan import FULL, QUICK, WORKERS, Plan  # noqa: E402
from report import write_report  # noqa: E402
from systems import Deployment, deploy, peer_python  # noqa: E402


def run_system(
    system: str, plan: Plan, sampler: Sampler, out: Path, results: dict[str, Any]
) -> None:
    """Every phase of ``system``: closed loops, open loops, then nervenet's scaling or central's
    kill test; rows go to ``results``."""
    console.print(f"[bold]{system}[/] (load average {_loadavg()})")
    phases = results.setdefault("phases", [])
    with deploy(system, plan, sampler) as d:
        for clients in plan.closed:
            profiled = clients == plan.scale_clients and system in ("nervenet", "central")
            phase = Phase(
                "closed",
                clients,
                (plan.closed_warmup(clients), plan.closed_window[1]),
                plan.drain,
                profile=plan.profile_seconds if profiled else 0.0,
            )
            phases.append(print_row(run_phase(d, phase, sampler, out)))
        for rate in plan.open:
            phases.append(
                print_row(run_phase(d, Phase("open", rate, plan.open_window, plan.drain), sampler))
            )
        if system == "nervenet":
            results["redis_commandstats"] = {"before": redis_commandstats(d.url)}
            results["scale"] = scale_workers(d, plan, sampler, phases)
            results["redis_commandstats"]["after"] = redis_commandstats(d.url)
        if system == "central":
            results["central_kill"] = central_kill(d, plan.kill_clients)
            console.print(f"  kill -9 central: {results['central_kill']}")


def scale_workers(
    d: Deployment, plan: Plan, sampler: Sampler, phases: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """nervenet's closed loop at ``scale_clients`` with each of ``plan.scale_workers`` workers."""
    scale = []
    for workers in plan.scale_workers:
        same = [
            p
            for p in phases
            if p["system"] == d.name and p["kind"] == "closed" and p["load"] == plan.scale_clients
        ]
        if workers == WORKERS and same:  # the main phase already ran with this many workers
            scale.append({**same[0], "workers": workers})
            continue
        d.scale_workers(workers, sampler)
        window = (plan.closed_warmup(plan.scale_clients), plan.closed_window[1])
        phase = Phase("closed", plan.scale_clients, window, plan.drain, prefix=f"scale{workers}")
        row = run_phase(d, phase, sampler)
        row["workers"] = workers
        scale.append(print_row(row, f"{workers} worker(s)"))
    for extra in d.workers[WORKERS:]:
        extra.stop()
    del d.workers[WORKERS:]
    return scale


def redis_commandstats(url: str) -> dict[str, dict[str, float]]:
    client = redis.Redis.from_url(url)
    stats = client.info("commandstats")
    client.close()
    return {
        k.removeprefix("cmdstat_"): {"calls": v["calls"], "usec": v["usec"]}
        for k, v in stats.items()
    }


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def print_row(row: dict[str, Any], label: str = "") -> dict[str, Any]:
    def s(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    phase_cpu = [v for v in row.get("cpu_ms_phase", {}).values() if v is not None]
    flag = " [red]FOREIGN LOAD[/]" if row["flagged"] else ""
    console.print(
        f"  {row['kind']:>6} {row['load']:>6g} {label}: {row['per_min']:7.0f}/min  "
        f"p50 {s(row['p50'])} s  p99 {s(row['p99'])} s  p99/ideal {s(row['p99_over_ideal'])}  "
        f"to {row['timeouts']}+{row['unfinished']} "
        f"err {row['errors']}  cpu {row['cpu_ms_total']:.1f} ms/wf "
        f"(phase {f'{sum(phase_cpu):.1f}' if phase_cpu else '-'})  "
        f"foreign {row['foreign_cores']:.2f}{flag}"
    )
    return row


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "redis_server": subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "langgraph": version("langgraph"),
        "nervenet": version("nervenet"),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def describe_workload() -> dict[str, Any]:
    """The workload's constants: node CPU, nodes and ideal latencies of a sample of workflows."""
    node_ms = workload.node_cpu_ms()
    sample = [f"c500-{n}" for n in range(2000)]
    nodes = statistics.fmean(workload.node_count(w) for w in sample)
    ideal = [workload.ideal_latency(w) for w in sample]
    return {
        "node_cpu_ms": node_ms,
        "nodes_per_workflow": nodes,
        "ideal_p50": percentile(ideal, 50),
        "ideal_p99": percentile(ideal, 99),
        "repair_share": statistics.fmean(workload.needs_repair(w) for w in sample),
        "physical_limit_per_min": (os.cpu_count() or 1) * 60e3 / (node_ms * nodes),
    }


def parse_plan() -> tuple[Plan, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few loads, under 2 minutes")
    parser.add_argument(
        "--out", type=Path, help="results folder (default benchmarks/results/<timestamp>)"
    )
    parser.add_argument(
        "--systems", default="central,arq,celery,nervenet", help="comma-separated subset"
    )
    parser.add_argument("--coordinators", type=int, help="nervenet coordinator processes (K)")
    parser.add_argument(
        "--max-runs",
        type=int,
        help=f"runs nervenet's coordinators run at once (default {FULL.max_runs}; 0: no bound)",
    )
    parser.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        help="nervenet's processes on uvloop (pip install uvloop in this environment)",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.coordinators:
        plan = plan.but(coordinators=args.coordinators)
    if args.uvloop is not None:
        plan = plan.but(uvloop=args.uvloop)
    if args.max_runs is not None:
        plan = plan.but(max_runs=args.max_runs or None)
    if plan.uvloop and importlib.util.find_spec("uvloop") is None:
        console.print(
            "[yellow]uvloop is not installed here (setup.sh installs it): asyncio's loop[/]"
        )
        plan = plan.but(uvloop=False)
    return plan, args


def main() -> None:
    plan, args = parse_plan()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = (
        args.out or HERE.parent / "results" / f"production-{stamp}{'-quick' if args.quick else ''}"
    )
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "plan": plan.__dict__,
        "machine": machine(),
        "workload": describe_workload(),
    }
    console.print(f"workload: {results['workload']}")
    sampler = Sampler()
    started = time.monotonic()
    try:
        for system in args.systems.split(","):
            run_system(system, plan, sampler, out, results)
            (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        if "nervenet" in args.systems:
            results["nervenet_kill"] = nervenet_kill(plan)
            console.print(
                f"  kill -9 one nervenet coordinator: {results['nervenet_kill']} "
                f"(load average {_loadavg()})"
            )
    finally:
        sampler.close()
        results["elapsed_s"] = time.monotonic() - started
        results["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    write_report(results, out)
    plot = subprocess.run(
        [str(peer_python("celery")), str(HERE / "plot.py"), str(out)],
        capture_output=True,
        text=True,
    )
    if plot.returncode:
        console.print(f"[red]plots failed:[/] {plot.stderr[-2000:]}")
    console.print(
        f"report: {out / 'report.md'}  ({time.monotonic() - started:.0f} s, "
        f"load average {_loadavg()})"
    )


if __name__ == "__main__":
    main()
