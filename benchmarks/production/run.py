"""The production table: central LangGraph, arq, Celery and nervenet on one workload, in one run.

    bash benchmarks/production/setup.sh                  # once: the peers' own venvs
    python benchmarks/production/run.py --quick          # < 2 minutes: every system, a few loads
    python benchmarks/production/run.py                  # the full table (~30 minutes)
    python benchmarks/production/run.py --out DIR        # default benchmarks/results/<timestamp>

Run with nervenet's interpreter (``/work/venv/bin/python`` or any env with ``pip install -e .``).
Each system runs in its own processes, one system after another, against its own private
``redis-server`` on a free port: central (one process), arq (a client + 2 workers), Celery (a
client + 2 workers), nervenet (K coordinator processes + 2 ``nervenet worker`` processes). Every
system runs the same workflow ids, hence the same model latencies (``workload.py``), and every
final state is checked. Writes ``report.md``, ``results.json`` and PNG plots.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import workload  # noqa: E402
from _common import Child, console, nervenet_command, percentile, private_redis  # noqa: E402
from measure import FOREIGN_LIMIT, Runner, Sampler, Window, rss_kib  # noqa: E402
from stacks import digest  # noqa: E402

PEERS = Path(os.environ.get("NERVENET_PEERS_DIR", Path.home() / ".cache" / "nervenet-bench"))
TIMEOUT = 60.0
WORKERS = 2
NERVENET_WORKER_CONCURRENCY = 5_000


@dataclass(frozen=True)
class Plan:
    closed: tuple[int, ...]
    open: tuple[float, ...]
    closed_window: tuple[float, float]
    """(warm-up, measured) seconds of a closed-loop phase; the warm-up scales with the load."""
    warmup_cap: float
    """Longest closed-loop warm-up, seconds (see :func:`_closed_warmup`)."""
    open_window: tuple[float, float]
    drain: float
    """Seconds after the window a phase waits for its last workflows."""
    scale_workers: tuple[int, ...]
    scale_clients: int
    kill_clients: int
    kill_seconds: float
    coordinators: int
    """nervenet coordinator processes (K); closed-loop clients and open-loop arrivals are split
    evenly between them."""
    uvloop: bool
    """nervenet's coordinators and workers run on uvloop (``nervenet_app`` installs it)."""
    profile_seconds: float


#: A smoke test of every phase kind (~100 s on a quiet machine): one load each, short windows,
#: no steady state. Its figures show that everything runs, not how fast.
QUICK = Plan(
    closed=(100,),
    open=(40.0,),
    closed_window=(1.0, 4.0),
    warmup_cap=2.0,
    open_window=(1.0, 2.0),
    drain=TIMEOUT,
    scale_workers=(1, 2),
    scale_clients=100,
    kill_clients=100,
    kill_seconds=4.0,
    coordinators=2,
    uvloop=True,
    profile_seconds=2.0,
)
FULL = Plan(
    closed=(50, 200, 500, 2000),
    open=(20.0, 40.0, 80.0, 160.0),
    closed_window=(5.0, 20.0),
    warmup_cap=45.0,
    open_window=(5.0, 20.0),
    drain=TIMEOUT,
    scale_workers=(1, 2, 4),
    scale_clients=2000,
    kill_clients=400,
    kill_seconds=15.0,
    coordinators=2,
    uvloop=True,
    profile_seconds=10.0,
)


# --- systems -----------------------------------------------------------------------------------
@dataclass
class Deployment:
    """One system's processes while its phases run."""

    name: str
    runners: list[Runner]
    roles: dict[str, list[int]]
    holder: str
    """Role whose processes hold the in-flight workflows (their RSS per workflow is reported)."""
    url: str = ""
    workers: list[Child] = field(default_factory=list)
    baseline_kib: dict[int, int] = field(default_factory=dict)


def _env_prefix(**env: str) -> list[str]:
    return ["env", *(f"{k}={v}" for k, v in env.items())]


def _peer_python(peer: str) -> Path:
    python = PEERS / peer / "bin" / "python"
    if not python.exists():
        sys.exit(f"{python} is missing: run `bash benchmarks/production/setup.sh` first")
    return python


def _nervenet_env(url: str, plan: Plan) -> dict[str, str]:
    return {"NERVENET_REDIS_URL": url, "BENCH_UVLOOP": "1" if plan.uvloop else "0"}


def _worker(
    system: str, url: str, index: int, plan: Plan, target: str = "nervenet_app:graph"
) -> Child:
    if system == "arq":
        args = [
            *_env_prefix(BENCH_REDIS_URL=url),
            str(PEERS / "arq" / "bin" / "arq"),
            "arq_app.WorkerSettings",
        ]
    elif system == "celery":
        args = [
            *_env_prefix(BENCH_REDIS_URL=url),
            str(PEERS / "celery" / "bin" / "celery"),
            "-A",
            "celery_app",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "1000",
            "-n",
            f"w{index}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ]
    else:
        args = [
            *_env_prefix(**_nervenet_env(url, plan)),
            *nervenet_command(),
            "worker",
            target,
            "--redis",
            url,
            "--concurrency",
            str(NERVENET_WORKER_CONCURRENCY),
        ]
    return Child(f"{system}-worker-{index}", args, cwd=HERE)


def _wait_nervenet_workers(url: str, count: int) -> None:
    import redis

    from nervenet.keys import Keys

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 60
    while client.zcard(Keys("nn").workers) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} nervenet workers did not register in 60 s")
        time.sleep(0.1)
    client.close()


@contextlib.contextmanager
def deploy(system: str, plan: Plan, sampler: Sampler) -> Iterator[Deployment]:
    with contextlib.ExitStack() as stack:
        url, redis_pids = "", []
        if system != "central":
            url, server = stack.enter_context(private_redis())
            redis_pids = [server.pid]
        workers = [
            _worker(system, url, i + 1, plan) for i in range(WORKERS if system != "central" else 0)
        ]
        for w in workers:
            stack.callback(w.stop)
        if system == "central":
            runners = [Runner("central", [sys.executable, "runner_central.py"], cwd=HERE, env={})]
            roles, holder = {"central": [runners[0].pid]}, "central"
        elif system in ("arq", "celery"):
            python = _peer_python(system)
            runners = [
                Runner(
                    system,
                    [str(python), f"runner_{system}.py", url],
                    cwd=HERE,
                    env={"BENCH_REDIS_URL": url},
                )
            ]
            roles, holder = (
                {
                    "client": [runners[0].pid],
                    "worker": [w.pid for w in workers],
                    "redis": redis_pids,
                },
                "worker",
            )
        else:
            _wait_nervenet_workers(url, WORKERS)
            runners = [
                Runner(
                    f"coordinator-{k}",
                    [sys.executable, "runner_nervenet.py"],
                    cwd=HERE,
                    env=_nervenet_env(url, plan),
                )
                for k in range(plan.coordinators)
            ]
            roles = {
                "coordinator": [r.pid for r in runners],
                "worker": [w.pid for w in workers],
                "redis": redis_pids,
            }
            holder = "coordinator"
        for r in runners:
            stack.callback(r.stop)
        deployment = Deployment(system, runners, roles, holder, url, workers)
        sampler.watch([pid for pids in roles.values() for pid in pids])
        # Warm up: imports, connections, workers joining; then the idle memory baseline.
        warm = run_phase(deployment, "closed", 20, (0.0, 2.0), 30.0, sampler, prefix="warm")
        if warm["errors"] or warm["ok_total"] == 0:
            raise RuntimeError(f"{system} failed its warm-up: {warm}")
        deployment.baseline_kib = {pid: rss_kib(pid) for pid in roles[holder]}
        yield deployment


# --- one phase ---------------------------------------------------------------------------------
def run_phase(
    d: Deployment,
    kind: str,
    load: float,
    window: tuple[float, float],
    drain: float,
    sampler: Sampler,
    *,
    prefix: str | None = None,
    profile: float = 0.0,
    out: Path | None = None,
) -> dict[str, Any]:
    warmup, seconds = window
    k_total = len(d.runners)
    prefix = prefix or f"{kind[0]}{load:g}"
    sampler.reset()
    whole = Window()
    keys = []
    for k, runner in enumerate(d.runners):
        # Closed: each runner holds its share of the clients. Open: every runner draws the one
        # schedule at the full rate and starts every K-th arrival of it (loadgen.open), so the
        # rate is not divided here too (that halved nervenet's open loop with K = 2).
        share = {"clients": max(1, int(load) // k_total)} if kind == "closed" else {"rate": load}
        keys.append(
            runner.send(
                kind,
                **share,
                index=k,
                of=k_total,
                warmup=warmup,
                seconds=seconds,
                prefix=prefix,
                drain=drain,
                timeout=TIMEOUT,
            )
        )
    time.sleep(warmup)
    w = Window()
    spies = _start_profile(d, profile, out, prefix) if profile else {}
    time.sleep(max(0.0, seconds - (time.monotonic() - w.started)))
    w.close()
    # Only now wait for py-spy: it overruns its --duration on a busy machine (by a minute, on
    # Celery's 1,000 threads), and a window held open that long divided a minute of CPU by the
    # workflows of the window: Celery's CPU per workflow came out ~3.6x too high.
    profiles = _finish_profile(spies)
    replies = [
        r.wait(key, warmup + seconds + drain + 120) for r, key in zip(d.runners, keys, strict=True)
    ]
    peaks = sampler.peaks()
    records = [rec for reply in replies for rec in reply["records"]]
    unfinished = sum(reply["unfinished"] for reply in replies)
    row = summarize(d, kind, load, warmup, seconds, records, unfinished, w, peaks, profiles)
    # CPU per workflow over the whole phase (warm-up, window, drain) and every workflow it
    # finished: no window edge to fall on, so on a busy machine, where the first wave of a
    # closed loop may still be ending in the window, this is the figure to compare systems by.
    # A py-spy still running after the window adds its targets' overhead to it.
    whole.close()
    ok = row["ok_total"]
    row["cpu_ms_phase"] = {
        role: sum(whole.cpu.get(pid, 0.0) for pid in pids) / ok * 1e3 if ok else None
        for role, pids in d.roles.items()
    }
    row["foreign_cores_phase"] = whole.foreign_cores
    return row


def summarize(
    d: Deployment,
    kind: str,
    load: float,
    warmup: float,
    seconds: float,
    records: list[list[Any]],
    unfinished: int,
    w: Window,
    peaks: dict[int, int],
    profiles: dict[str, Any],
) -> dict[str, Any]:
    lo, hi = warmup, warmup + seconds
    if kind == "closed":
        measured = [r for r in records if lo <= r[2] < hi]
    else:
        measured = [r for r in records if lo <= r[1] < hi]
    ok = [r for r in measured if r[4] == "ok"]
    completed = [r for r in records if r[4] == "ok" and lo <= r[2] < hi]
    lat = [r[2] - r[1] for r in ok]
    ideal = [r[3] for r in ok]
    errors = [r[4] for r in measured if r[4].startswith("error")]
    n = len(completed)
    rate = n / seconds
    cpu_ms = {
        role: sum(w.cpu.get(pid, 0.0) for pid in pids) / n * 1e3 if n else None
        for role, pids in d.roles.items()
    }
    in_flight = load if kind == "closed" else (rate * statistics.fmean(lat) if lat else 0.0)
    holder_growth = sum(max(0, peaks.get(pid, 0) - base) for pid, base in d.baseline_kib.items())
    nodes = statistics.fmean(workload.node_count(r[0]) for r in completed) if completed else 0.0
    return {
        "system": d.name,
        "kind": kind,
        "load": load,
        "window": seconds,
        "completed": n,
        # Ended well, in the window or not: a warm-up on a busy machine may end its first
        # workflows only after its short window.
        "ok_total": sum(1 for r in records if r[4] == "ok"),
        "per_min": rate * 60,
        "p50": percentile(lat, 50) if lat else None,
        "p99": percentile(lat, 99) if lat else None,
        "ideal_p50": percentile(ideal, 50) if ideal else None,
        "ideal_p99": percentile(ideal, 99) if ideal else None,
        "p99_over_ideal": percentile(lat, 99) / percentile(ideal, 99) if lat else None,
        "slowdown_p99": percentile([a / b for a, b in zip(lat, ideal, strict=True)], 99)
        if lat
        else None,
        "timeouts": sum(1 for r in measured if r[4] == "timeout"),
        "unfinished": unfinished,
        "errors": len(errors),
        "error_sample": errors[:2],
        "cpu_ms": cpu_ms,
        "cpu_ms_total": sum(v for v in cpu_ms.values() if v is not None),
        "busy_cores": {
            role: sum(w.cpu.get(pid, 0.0) for pid in pids) / w.seconds
            for role, pids in d.roles.items()
        },
        "peak_rss_mib": {
            role: [round(peaks.get(pid, 0) / 1024, 1) for pid in pids]
            for role, pids in d.roles.items()
        },
        "in_flight": in_flight,
        "holder_kib_per_workflow": holder_growth / in_flight if in_flight else None,
        "nodes_per_workflow": nodes,
        "foreign_cores": w.foreign_cores,
        "flagged": w.foreign_cores > FOREIGN_LIMIT,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "profiles": profiles,
    }


Spies = dict[str, tuple[Path, subprocess.Popen[bytes]]]


def _start_profile(d: Deployment, seconds: float, out: Path | None, prefix: str) -> Spies:
    """py-spy of one process per role while the phase runs (costs those processes some CPU)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists() or out is None:
        return {}
    procs: Spies = {}
    for role, pids in d.roles.items():
        if role == "redis" or not pids:
            continue
        path = out / f"profile-{d.name}-{role}-{prefix}.txt"
        procs[role] = (
            path,
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(pids[0]),
                    "--duration",
                    str(max(1, round(seconds))),
                    "--rate",
                    "100",
                    "--format",
                    "raw",
                    "--output",
                    str(path),
                    "--nonblocking",
                    "--full-filenames",
                ],
                stdout=subprocess.DEVNULL,
                # Open for as long as py-spy runs; the child keeps it after this returns.
                stderr=open(out / f"py-spy-{d.name}-{role}.log", "w"),  # noqa: SIM115
            ),
        )
    return procs


def _finish_profile(spies: Spies) -> dict[str, Any]:
    result = {}
    for role, (path, proc) in spies.items():
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if path.exists():
            result[role] = {"file": path.name, **digest(path)}
    return result


# --- the kill tests ------------------------------------------------------------------------------
def central_kill(d: Deployment, clients: int) -> dict[str, Any]:
    runner = d.runners[0]
    runner.send(
        "closed", clients=clients, warmup=0.0, seconds=60.0, prefix="kill", drain=1.0, progress=True
    )
    time.sleep(3.0)
    in_flight = runner.last_progress.get("in_flight", 0)
    done = runner.last_progress.get("done", 0)
    runner.kill()
    return {
        "clients": clients,
        "in_flight_at_kill": in_flight,
        "lost": in_flight,
        "done_before": done,
    }


def nervenet_kill(plan: Plan, sampler: Sampler) -> dict[str, Any]:
    """Two coordinator processes run durable workflows; one is killed; the other finishes them."""
    import redis

    from nervenet.keys import Keys

    owners_key = Keys("nn").workflow_owners
    with contextlib.ExitStack() as stack:
        url, _server = stack.enter_context(private_redis())
        workers = [
            _worker("nervenet", url, i + 1, plan, "nervenet_app:durable_graph")
            for i in range(WORKERS)
        ]
        for w in workers:
            stack.callback(w.stop)
        _wait_nervenet_workers(url, WORKERS)
        coordinators = [
            Runner(
                f"durable-{k}",
                [sys.executable, "runner_nervenet.py", "--durable"],
                cwd=HERE,
                env=_nervenet_env(url, plan),
            )
            for k in range(2)
        ]
        for c in coordinators:
            stack.callback(c.stop)
        victim, survivor = coordinators
        victim_id = victim.info["process_id"]
        keys = [
            c.send(
                "closed",
                clients=plan.kill_clients // 2,
                index=k,
                of=2,
                warmup=0.0,
                seconds=plan.kill_seconds,
                prefix="durable",
                drain=TIMEOUT,
                timeout=TIMEOUT,
            )
            for k, c in enumerate(coordinators)
        ]
        time.sleep(plan.kill_seconds / 2)
        client = redis.Redis.from_url(url)
        victim.kill()
        killed_at = time.monotonic()
        owned = {k.decode(): v.decode() for k, v in client.hgetall(owners_key).items()}
        orphans = sorted(run for run, owner in owned.items() if owner == victim_id)
        moved: dict[str, float] = {}
        while len(moved) < len(orphans) and time.monotonic() - killed_at < 30:
            now = client.hmget(owners_key, orphans) if orphans else []
            for run, owner in zip(orphans, now, strict=True):
                if run not in moved and (owner is None or owner.decode() != victim_id):
                    moved[run] = time.monotonic() - killed_at
            time.sleep(0.02)
        waited = survivor.wait(
            survivor.send("await_runs", runs=orphans, timeout=TIMEOUT), TIMEOUT + 30
        )
        own = survivor.wait(keys[1], plan.kill_seconds + TIMEOUT + 60)
        client.close()
    finished = [r for r in waited["records"] if r[2] == "ok"]
    own_ok = sum(1 for r in own["records"] if r[4] == "ok")
    takeover = sorted(moved.values())
    return {
        "in_flight_at_kill": len(orphans),
        "resumed": len(moved),
        "lost": len(orphans) - len(finished),
        "errors": [r[2] for r in waited["records"] if r[2] != "ok"][:3],
        "takeover_first_s": takeover[0] if takeover else None,
        "takeover_all_s": takeover[-1] if takeover else None,
        "all_finished_s": max((r[1] for r in finished), default=None),
        "survivor_own_ok": own_ok,
        "survivor_own_bad": len(own["records"]) - own_ok,
        "takeovers_counted": waited["takeovers"],
    }


# --- the run -------------------------------------------------------------------------------------
def redis_commandstats(url: str) -> dict[str, dict[str, float]]:
    import redis

    client = redis.Redis.from_url(url)
    stats = client.info("commandstats")
    client.close()
    return {
        k.removeprefix("cmdstat_"): {"calls": v["calls"], "usec": v["usec"]}
        for k, v in stats.items()
    }


def run_system(
    system: str, plan: Plan, sampler: Sampler, out: Path, results: dict[str, Any]
) -> None:
    console.print(f"[bold]{system}[/] (load average {_loadavg()})")
    phases = results.setdefault("phases", [])
    with deploy(system, plan, sampler) as d:
        for clients in plan.closed:
            warmup = _closed_warmup(plan, clients)
            profile = (
                plan.profile_seconds
                if clients == plan.scale_clients and system in ("nervenet", "central")
                else 0.0
            )
            row = run_phase(
                d,
                "closed",
                clients,
                (warmup, plan.closed_window[1]),
                plan.drain,
                sampler,
                profile=profile,
                out=out,
            )
            phases.append(row)
            _print_row(row)
        for rate in plan.open:
            row = run_phase(d, "open", rate, plan.open_window, plan.drain, sampler)
            phases.append(row)
            _print_row(row)
        if system == "nervenet":
            stats0 = redis_commandstats(d.url)
            results["redis_commandstats"] = {"before": stats0}
            scale = results.setdefault("scale", [])
            for workers in plan.scale_workers:
                same = [
                    p
                    for p in phases
                    if p["system"] == system
                    and p["kind"] == "closed"
                    and p["load"] == plan.scale_clients
                ]
                if workers == WORKERS and same:  # the main phase already ran with this many workers
                    scale.append({**same[0], "workers": workers})
                    continue
                while len(d.workers) > workers:
                    d.workers.pop().stop()
                while len(d.workers) < workers:
                    d.workers.append(_worker("nervenet", d.url, len(d.workers) + 1, plan))
                    stack_pid = d.workers[-1].pid
                    sampler.watch([stack_pid])
                _wait_nervenet_workers(d.url, workers)
                d.roles["worker"] = [w.pid for w in d.workers]
                warmup = _closed_warmup(plan, plan.scale_clients)
                row = run_phase(
                    d,
                    "closed",
                    plan.scale_clients,
                    (warmup, plan.closed_window[1]),
                    plan.drain,
                    sampler,
                    prefix=f"scale{workers}",
                )
                row["workers"] = workers
                scale.append(row)
                _print_row(row, f"{workers} worker(s)")
            results["redis_commandstats"]["after"] = redis_commandstats(d.url)
            for w in d.workers[WORKERS:]:
                w.stop()
            del d.workers[WORKERS:]
        if system == "central":
            results["central_kill"] = central_kill(d, plan.kill_clients)
            console.print(f"  kill -9 central: {results['central_kill']}")


def _phase_cpu(row: dict[str, Any]) -> str:
    values = [v for v in row.get("cpu_ms_phase", {}).values() if v is not None]
    return f"{sum(values):.1f}" if values else "-"


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _closed_warmup(plan: Plan, clients: int) -> float:
    """All clients start at once, so the first workflows end together, and again one latency
    later: wait about two latencies at the peers' saturation (~75 workflows/s) before measuring.
    With one latency (the old ``clients / 120``) the window at 500 caught the first wave ending
    and counted up to twice the steady throughput."""
    return max(plan.closed_window[0], min(plan.warmup_cap, clients / 40))


def _print_row(row: dict[str, Any], label: str = "") -> None:
    def s(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    flag = " [red]FOREIGN LOAD[/]" if row["flagged"] else ""
    console.print(
        f"  {row['kind']:>6} {row['load']:>6g} {label}: {row['per_min']:7.0f}/min  "
        f"p50 {s(row['p50'])} s  p99 {s(row['p99'])} s  p99/ideal {s(row['p99_over_ideal'])}  "
        f"to {row['timeouts']}+{row['unfinished']} "
        f"err {row['errors']}  cpu {row['cpu_ms_total']:.1f} ms/wf (phase {_phase_cpu(row)})  "
        f"foreign {row['foreign_cores']:.2f}{flag}"
    )


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    from importlib.metadata import version

    import langgraph  # noqa: F401

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


def main() -> None:
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
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        help="nervenet's processes on uvloop (pip install uvloop in this environment)",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.coordinators:
        plan = Plan(**{**plan.__dict__, "coordinators": args.coordinators})
    if args.uvloop is not None:
        plan = Plan(**{**plan.__dict__, "uvloop": args.uvloop})
    if plan.uvloop and importlib.util.find_spec("uvloop") is None:
        console.print(
            "[yellow]uvloop is not installed here (setup.sh installs it): asyncio's loop[/]"
        )
        plan = Plan(**{**plan.__dict__, "uvloop": False})
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = (
        args.out or HERE.parent / "results" / f"production-{stamp}{'-quick' if args.quick else ''}"
    )
    out.mkdir(parents=True, exist_ok=True)
    node_ms = workload.node_cpu_ms()
    sample = [f"c500-{n}" for n in range(2000)]
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "plan": plan.__dict__,
        "machine": machine(),
        "workload": {
            "node_cpu_ms": node_ms,
            "nodes_per_workflow": statistics.fmean(workload.node_count(w) for w in sample),
            "ideal_p50": percentile([workload.ideal_latency(w) for w in sample], 50),
            "ideal_p99": percentile([workload.ideal_latency(w) for w in sample], 99),
            "repair_share": statistics.fmean(workload.needs_repair(w) for w in sample),
        },
    }
    wl = results["workload"]
    wl["physical_limit_per_min"] = (
        (os.cpu_count() or 1) * 60e3 / (node_ms * wl["nodes_per_workflow"])
    )
    console.print(f"workload: {wl}")
    sampler = Sampler()
    started = time.monotonic()
    try:
        for system in args.systems.split(","):
            run_system(system, plan, sampler, out, results)
            (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        if "nervenet" in args.systems:
            results["nervenet_kill"] = nervenet_kill(plan, sampler)
            console.print(
                f"  kill -9 one nervenet coordinator: {results['nervenet_kill']} "
                f"(load average {_loadavg()})"
            )
    finally:
        sampler.close()
        results["elapsed_s"] = time.monotonic() - started
        results["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    from report import write_report

    write_report(results, out)
    plot = subprocess.run(
        [str(_peer_python("celery")), str(HERE / "plot.py"), str(out)],
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
