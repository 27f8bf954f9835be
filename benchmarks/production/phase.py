"""One phase: a load held on a deployed system over a window, and the row that sums it up.

Each runner process gets its share of the load (loadgen's ``closed`` or ``open`` command) and
returns a record per workflow; the driver measures the processes' CPU over the window and the
whole phase, their peak memory, and the machine's load that is not ours, then reduces it all to
one row of ``results.json``. A phase may also py-spy one process per role.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import workload
from _common import percentile
from measure import FOREIGN_LIMIT, Sampler, Window
from plan import TIMEOUT
from stacks import digest

if TYPE_CHECKING:
    from systems import Deployment

Record = list[Any]
"""``[wf, start, end, ideal, status]`` (see loadgen)."""
Spies = dict[str, tuple[Path, subprocess.Popen[bytes]]]


@dataclass(frozen=True)
class Phase:
    kind: str
    """``closed`` (``load`` workflows in flight) or ``open`` (``load`` arrivals per second)."""
    load: float
    window: tuple[float, float]
    """(warm-up, measured) seconds."""
    drain: float
    """Seconds after the window the phase waits for its last workflows."""
    prefix: str = ""
    """Workflow ids' prefix (``c500``, by default from the kind and load): the same ids, hence
    the same documents and latencies, in every system."""
    profile: float = 0.0
    """Seconds of py-spy on one process per role, 0 for none."""

    @property
    def ids(self) -> str:
        return self.prefix or f"{self.kind[0]}{self.load:g}"


def run_phase(
    d: Deployment, phase: Phase, sampler: Sampler, out: Path | None = None
) -> dict[str, Any]:
    warmup, seconds = phase.window
    k_total = len(d.runners)
    sampler.reset()
    whole = Window()
    keys = []
    for k, runner in enumerate(d.runners):
        # Closed: each runner holds its share of the clients. Open: every runner draws the one
        # schedule at the full rate and starts every K-th arrival of it (loadgen.open), so the
        # rate is not divided here too (that halved nervenet's open loop with K = 2).
        if phase.kind == "closed":
            share: dict[str, float] = {"clients": max(1, int(phase.load) // k_total)}
        else:
            share = {"rate": phase.load}
        keys.append(
            runner.send(
                phase.kind,
                **share,
                index=k,
                of=k_total,
                warmup=warmup,
                seconds=seconds,
                prefix=phase.ids,
                drain=phase.drain,
                timeout=TIMEOUT,
            )
        )
    time.sleep(warmup)
    w = Window()
    spies = _start_profile(d, phase, out) if phase.profile and out else {}
    time.sleep(max(0.0, seconds - (time.monotonic() - w.started)))
    w.close()
    # Only now wait for py-spy: it overruns its --duration on a busy machine (by a minute, on
    # Celery's 1,000 threads), and a window held open that long divided a minute of CPU by the
    # workflows of the window: Celery's CPU per workflow came out ~3.6x too high.
    profiles = _finish_profile(spies)
    replies = [
        r.wait(key, warmup + seconds + phase.drain + 120)
        for r, key in zip(d.runners, keys, strict=True)
    ]
    records = [rec for reply in replies for rec in reply["records"]]
    unfinished = sum(reply["unfinished"] for reply in replies)
    row = summarize(d, phase, records, unfinished, w, sampler.peaks(), profiles)
    # CPU per workflow over the whole phase (warm-up, window, drain) and every workflow it
    # finished: no window edge to fall on, so on a busy machine, where the first wave of a
    # closed loop may still be ending in the window, this is the figure to compare systems by.
    # A py-spy still running after the window adds its targets' overhead to it.
    whole.close()
    row["cpu_ms_phase"] = _per_workflow_ms(_role_cpu(d, whole), row["ok_total"])
    row["foreign_cores_phase"] = whole.foreign_cores
    return row


def summarize(
    d: Deployment,
    phase: Phase,
    records: list[Record],
    unfinished: int,
    w: Window,
    peaks: dict[int, int],
    profiles: dict[str, Any],
) -> dict[str, Any]:
    lo, hi = phase.window[0], sum(phase.window)
    seconds = phase.window[1]
    started, ended = 1, 2  # a closed loop is measured by when workflows end, an open one by starts
    measured = [r for r in records if lo <= r[ended if phase.kind == "closed" else started] < hi]
    ok = [r for r in measured if r[4] == "ok"]
    completed = [r for r in records if r[4] == "ok" and lo <= r[ended] < hi]
    lat = [r[2] - r[1] for r in ok]
    ideal = [r[3] for r in ok]
    errors = [r[4] for r in measured if r[4].startswith("error")]
    n = len(completed)
    rate = n / seconds
    cpu = _role_cpu(d, w)
    cpu_ms = _per_workflow_ms(cpu, n)
    if phase.kind == "closed":
        in_flight = phase.load
    else:
        in_flight = rate * statistics.fmean(lat) if lat else 0.0
    holder_growth = sum(max(0, peaks.get(pid, 0) - base) for pid, base in d.baseline_kib.items())
    nodes = statistics.fmean(workload.node_count(r[0]) for r in completed) if completed else 0.0

    def pct(samples: list[float], q: float) -> float | None:
        return percentile(samples, q) if samples else None

    return {
        "system": d.name,
        "kind": phase.kind,
        "load": phase.load,
        "window": seconds,
        "completed": n,
        # Ended well, in the window or not: a warm-up on a busy machine may end its first
        # workflows only after its short window.
        "ok_total": sum(1 for r in records if r[4] == "ok"),
        "per_min": rate * 60,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "ideal_p50": pct(ideal, 50),
        "ideal_p99": pct(ideal, 99),
        "p99_over_ideal": percentile(lat, 99) / percentile(ideal, 99) if lat else None,
        "slowdown_p99": pct([a / b for a, b in zip(lat, ideal, strict=True)], 99),
        "timeouts": sum(1 for r in measured if r[4] == "timeout"),
        "unfinished": unfinished,
        "errors": len(errors),
        "error_sample": errors[:2],
        "cpu_ms": cpu_ms,
        "cpu_ms_total": sum(v for v in cpu_ms.values() if v is not None),
        "busy_cores": {role: used / w.seconds for role, used in cpu.items()},
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


def _role_cpu(d: Deployment, w: Window) -> dict[str, float]:
    """CPU seconds each role's processes used over window ``w``."""
    return {role: sum(w.cpu.get(pid, 0.0) for pid in pids) for role, pids in d.roles.items()}


def _per_workflow_ms(cpu: dict[str, float], workflows: int) -> dict[str, float | None]:
    return {role: used / workflows * 1e3 if workflows else None for role, used in cpu.items()}


def _start_profile(d: Deployment, phase: Phase, out: Path) -> Spies:
    """py-spy of one process per role while the phase runs (costs those processes some CPU)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return {}
    procs: Spies = {}
    for role, pids in d.roles.items():
        if role == "redis" or not pids:
            continue
        path = out / f"profile-{d.name}-{role}-{phase.ids}.txt"
        args = [
            spy,
            "record",
            "--pid",
            str(pids[0]),
            "--duration",
            str(max(1, round(phase.profile))),
        ]
        args += ["--rate", "100", "--format", "raw", "--output", str(path)]
        # Open for as long as py-spy runs; the child keeps it after this returns.
        log = open(out / f"py-spy-{d.name}-{role}.log", "w")  # noqa: SIM115
        procs[role] = (
            path,
            subprocess.Popen(
                [*args, "--nonblocking", "--full-filenames"], stdout=subprocess.DEVNULL, stderr=log
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
