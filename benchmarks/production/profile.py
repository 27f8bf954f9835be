"""Where the CPU goes, per role, at saturation: py-spy on a coordinator and a worker, /proc for all.

    python benchmarks/production/profile.py                      # nervenet then celery, closed 500
    python benchmarks/production/profile.py --systems nervenet --coordinators 2 --seconds 15
    python benchmarks/production/profile.py --digest DIR         # re-read the stacks of a run

Deploys a system the way ``run.py`` does (private ``redis-server``, 2 worker processes, K
coordinator processes), holds a closed loop of ``--clients`` workflows, and over one window:

* CPU of every process from ``/proc`` (ms per completed workflow, by role: coordinator, worker,
  Redis; Celery's client/worker/Redis), so figures of the two systems compare in one run;
* ``py-spy record --nonblocking`` (collapsed stacks, 100 Hz; speedscope opens them as they are)
  of the first coordinator process and the first worker process.

Each role's samples are split into the groups of ``GROUPS`` by the innermost frame that belongs to
one of them (stdlib and pydantic frames count for the code that called them), then scaled to that
role's measured CPU per workflow. Writes ``profile.json`` and ``profile.md`` to ``--out``.
py-spy costs its target a little CPU and takes some of the 2 cores itself: throughput in a profile
run is lower than in ``run.py``; the shares are what this script is for.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import run  # noqa: E402
from _common import console  # noqa: E402
from measure import Sampler  # noqa: E402
from stacks import digest  # noqa: E402


def profile_system(
    system: str, args: argparse.Namespace, sampler: Sampler, out: Path
) -> dict[str, Any]:
    plan = run.Plan(
        **{
            **run.QUICK.__dict__,
            "coordinators": args.coordinators,
            "uvloop": args.uvloop,
        }
    )
    console.print(f"[bold]{system}[/] closed {args.clients}, {args.seconds:g} s window")
    with run.deploy(system, plan, sampler) as d:
        row = run.run_phase(
            d,
            "closed",
            args.clients,
            (args.warmup, args.seconds),
            run.TIMEOUT,
            sampler,
            prefix=f"prof{args.clients}",
            profile=args.seconds - 1.0 if args.spy else 0.0,
            out=out,
        )
    run._print_row(row)
    row["uptime_load"] = row["loadavg"]
    return row


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
    parser.add_argument("--coordinators", type=int, default=run.FULL.coordinators)
    parser.add_argument("--uvloop", action=argparse.BooleanOptionalAction, default=run.FULL.uvloop)
    parser.add_argument("--warmup", type=float, default=6.0)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--no-spy", dest="spy", action="store_false", help="CPU from /proc only")
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
    sampler = Sampler()
    rows = []
    try:
        for system in args.systems.split(","):
            row = profile_system(system, args, sampler, out)
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
