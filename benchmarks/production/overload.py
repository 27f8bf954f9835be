"""nervenet past saturation, with and without a bound on the runs a coordinator runs at once.

    python benchmarks/production/overload.py --rate 160 --seconds 60 --bounds 0,500,2000

An open loop at ``--rate`` workflows/s (set it to about twice what the machine finishes: see
the closed-loop rows of a ``run.py`` report) held for ``--seconds``, once per bound and round,
the bounds taking turns (``0``: no bound). Each phase deploys nervenet as ``run.py`` does (a
private ``redis-server``, 2 workers, 1 coordinator process with ``PoolSettings.max_runs``).
Without a bound every arrival starts at once and all runs share the cores; with one, the runs
beyond it wait their turn and those under way finish at the machine's rate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _common import console  # noqa: E402
from measure import Sampler  # noqa: E402
from phase import Phase, run_phase  # noqa: E402
from plan import FULL  # noqa: E402
from run import print_row  # noqa: E402
from systems import deploy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=160.0, help="arrivals per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--bounds", default="0,500,2000", help="max_runs values (0: none)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    bounds = [int(b) for b in args.bounds.split(",")]
    rows: list[tuple[int, dict[str, Any]]] = []
    for _ in range(args.rounds):
        for bound in bounds:
            plan = FULL.but(max_runs=bound or None, open_window=(5.0, args.seconds))
            sampler = Sampler()
            with deploy("nervenet", plan, sampler) as d:
                phase = Phase("open", args.rate, plan.open_window, plan.drain)
                rows.append((bound, print_row(run_phase(d, phase, sampler), f"max_runs {bound}")))
    console.print(f"\nopen {args.rate:g}/s for {args.seconds:g} s, the bounds taking turns:")
    for bound, row in rows:
        console.print(
            f"  max_runs {bound or 'none':>5}: {row['per_min']:7,.0f} completed/min, "
            f"P50 {row['p50'] or 0:5.1f} s, timeouts {row['timeouts']}, "
            f"CPU {row['cpu_ms_total']:5.1f} ms/workflow"
        )


if __name__ == "__main__":
    main()
