"""Where the CPU goes, per role, at saturation: py-spy on a coordinator and a worker, /proc for all.

    python benchmarks/production/profile.py                      # nervenet then celery, closed 500
    python benchmarks/production/profile.py --systems nervenet --coordinators 2 --seconds 15
    python benchmarks/production/profile.py --digest DIR         # re-read the stacks of a run
    python benchmarks/production/profile.py --systems nervenet,central --gc-probe [--gc default]

Deploys a system the way ``run.py`` does (private ``redis-server``, 2 worker processes, K
coordinator processes), holds a closed loop of ``--clients`` workflows, and over one window:

* CPU of every process from ``/proc`` (ms per completed workflow, by role: coordinator, worker,
  Redis; Celery's client/worker/Redis), so figures of the two systems compare in one run;
* ``py-spy record --nonblocking`` (collapsed stacks, 100 Hz; speedscope opens them as they are)
  of the first coordinator process and the first worker process.

Each role's samples are split into the groups of ``GROUPS`` by the innermost frame that belongs to
one of them (stdlib and pydantic frames count for the code that called them), then scaled to that
role's measured CPU per workflow. Writes ``profile.json`` and ``profile.md`` to ``--out``.
``--gc-probe`` also times every process's garbage collections (``gc_probe/``), and ``--gc default``
runs nervenet's processes with CPython's collector settings instead of theirs, to compare.
py-spy costs its target a little CPU and takes some of the 2 cores itself: throughput in a profile
run is lower than in ``run.py``; the shares are what this script is for.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _common import console  # noqa: E402
from measure import Sampler  # noqa: E402
from phase import Phase, run_phase  # noqa: E402
from plan import FULL, QUICK, TIMEOUT  # noqa: E402
from run import print_row  # noqa: E402
from stacks import digest  # noqa: E402
from systems import deploy  # noqa: E402


def profile_system(
    system: str, args: argparse.Namespace, sampler: Sampler, out: Path
) -> dict[str, Any]:
    plan = QUICK.but(coordinators=args.coordinators, uvloop=args.uvloop)
    console.print(f"[bold]{system}[/] closed {args.clients}, {args.seconds:g} s window")
    phase = Phase(
        "closed",
        args.clients,
        (args.warmup, args.seconds),
        TIMEOUT,
        prefix=f"prof{args.clients}",
        profile=args.seconds - 1.0 if args.spy else 0.0,
    )
    with deploy(system, plan, sampler) as d:
        row = run_phase(d, phase, sampler, out)
    print_row(row)
    row["uptime_load"] = row["loadavg"]
    return row


def _collector_shares(folder: Path) -> list[dict[str, Any]]:
    """What ``gc_probe`` wrote for each process of a deployment (whole lifetime, start-up too)."""
    records = [json.loads(path.read_text()) for path in sorted(folder.glob("gc-*.json"))]
    for record in records:
        record["share"] = record["gc_s"] / record["cpu_s"] if record["cpu_s"] else 0.0
        console.print(
            f"  gc {record['share']:6.1%} of {record['cpu_s']:6.2f} s CPU, "
            f"{sum(record['collections'])} collections: {record['argv'][:90]}"
        )
    return records


def write_markdown(rows: list[dict[str, Any]], out: Path) -> str:
    lines = ["# CPU per workflow by role and by group (closed loop, saturation)", ""]
    for row in rows:
        lines += [
            f"## {row['system']}: {row['per_min']:,.0f} workflows/min at {row['load']:g} "
            f"in flight, load average {' '.join(row['loadavg'])}, "
            f"foreign {row['foreign_cores']:.2f} cores",
            "",
            "| role | ms CPU / workflow (window) | (whole phase) | busy cores |",
            "|---|---:|---:|---:|",
        ]
        phase = row.get("cpu_ms_phase", {})
        for role, ms in row["cpu_ms"].items():
            lines.append(
                f"| {role} | {ms or 0:.2f} | {phase.get(role) or 0:.2f} | "
                f"{row['busy_cores'][role]:.2f} |"
            )
        total = sum(v for v in phase.values() if v)
        lines.append(f"| **all** | **{row['cpu_ms_total']:.2f}** | **{total:.2f}** | |")
        lines.append("")
        if row.get("gc"):
            lines += [
                "| process (gc_probe, whole lifetime) | CPU s | in the collector | collections |",
                "|---|---:|---:|---:|",
            ]
            for record in row["gc"]:
                lines.append(
                    f"| `{record['argv'][:70]}` | {record['cpu_s']:.2f} | {record['share']:.1%} "
                    f"| {sum(record['collections'])} |"
                )
            lines.append("")
        for role, prof in row.get("profiles", {}).items():
            per_proc = row["cpu_ms"][role] or 0.0
            lines += [
                f"### {role} (py-spy, {prof['samples']} samples; role: {per_proc:.2f} ms/wf)",
                "",
                "| group (self time) | share | ms / workflow |",
                "|---|---:|---:|",
            ]
            for g, share in prof["groups"].items():
                lines.append(f"| {g} | {share:.1%} | {share * per_proc:.2f} |")
            lines += ["", "| top functions, self | share |", "|---|---:|"]
            for f, share in prof["self"][:15]:
                lines.append(f"| `{f}` | {share:.1%} |")
            lines += ["", "| top functions, inclusive | share |", "|---|---:|"]
            for f, share in prof["inclusive"][:40]:
                lines.append(f"| `{f}` | {share:.1%} |")
            lines.append("")
    text = "\n".join(lines)
    (out / "profile.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--systems", default="nervenet,celery")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--coordinators", type=int, default=FULL.coordinators)
    parser.add_argument("--uvloop", action=argparse.BooleanOptionalAction, default=FULL.uvloop)
    parser.add_argument("--warmup", type=float, default=6.0)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--no-spy", dest="spy", action="store_false", help="CPU from /proc only")
    parser.add_argument(
        "--gc",
        choices=("tuned", "default"),
        default="tuned",
        help="nervenet's collector settings in its processes (NERVENET_GC; see owned_process)",
    )
    parser.add_argument(
        "--gc-probe", action="store_true", help="time every process's collections (gc_probe/)"
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--digest", type=Path, help="re-digest the profile-*.txt files of DIR")
    args = parser.parse_args()
    if args.digest:
        rows = json.loads((args.digest / "profile.json").read_text())
        for row in rows:
            for prof in row.get("profiles", {}).values():
                prof.update(digest(args.digest / prof["file"]))
        (args.digest / "profile.json").write_text(json.dumps(rows, indent=1))
        print(write_markdown(rows, args.digest))
        return
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or HERE.parent / "results" / f"profile-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    os.environ["NERVENET_GC"] = args.gc  # every deployed process inherits it
    if args.gc_probe:
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(HERE / "gc_probe"), os.environ.get("PYTHONPATH")])
        )
    sampler = Sampler()
    rows = []
    try:
        for system in args.systems.split(","):
            probes = out / f"gc-{system}"
            probes.mkdir(exist_ok=True)
            os.environ["NERVENET_GC_PROBE_DIR"] = str(probes)
            row = profile_system(system, args, sampler, out)
            row["gc"] = _collector_shares(probes) if args.gc_probe else []
            for prof in row.get("profiles", {}).values():
                prof.update(digest(out / prof["file"]))
            rows.append(row)
            (out / "profile.json").write_text(json.dumps(rows, indent=1, default=str))
    finally:
        sampler.close()
    write_markdown(rows, out)
    console.print(f"profile: {out / 'profile.md'}")


if __name__ == "__main__":
    main()
