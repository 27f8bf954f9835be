"""PNG plots of a run: latency vs load, throughput vs load, throughput vs workers.

    ~/.cache/nervenet-bench/celery/bin/python benchmarks/production/plot.py RESULTS_DIR

Runs in the peers' Celery venv, which has matplotlib (nervenet's own environment does not).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SYSTEMS = {
    "central": "tab:gray",
    "arq": "tab:orange",
    "celery": "tab:green",
    "nervenet": "tab:blue",
}


def _load_ticks(ax: plt.Axes, phases: list[dict], kind: str) -> None:
    loads = sorted({p["load"] for p in phases if p["kind"] == kind})
    ax.set_xscale("log")
    ax.set_xticks(loads, [f"{x:g}" for x in loads])
    ax.minorticks_off()


def main(folder: Path) -> None:
    results = json.loads((folder / "results.json").read_text())
    phases = results.get("phases", [])
    machine = results["machine"]
    title = f"{machine['date'][:10]}, {machine['cores']} cores ({results['mode']} run)"

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, kind, xlabel in (
        (axes[0], "closed", "workflows in flight (closed loop)"),
        (axes[1], "open", "arrivals per second (open loop)"),
    ):
        for system, color in SYSTEMS.items():
            rows = sorted(
                (p for p in phases if p["system"] == system and p["kind"] == kind and p["p99"]),
                key=lambda p: p["load"],
            )
            if not rows:
                continue
            x = [p["load"] for p in rows]
            ax.plot(x, [p["p99"] for p in rows], "-o", color=color, label=f"{system} P99")
            ax.plot(
                x, [p["p50"] for p in rows], "--", color=color, alpha=0.6, label=f"{system} P50"
            )
        _load_ticks(ax, phases, kind)
        ideal = results["workload"]["ideal_p99"]
        ax.axhline(ideal, color="black", lw=0.8, ls=":", label="ideal P99")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("latency (s)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Latency vs load — {title}")
    fig.tight_layout()
    fig.savefig(folder / "latency.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, kind, xlabel in (
        (axes[0], "closed", "workflows in flight (closed loop)"),
        (axes[1], "open", "arrivals per second (open loop)"),
    ):
        for system, color in SYSTEMS.items():
            rows = sorted(
                (p for p in phases if p["system"] == system and p["kind"] == kind),
                key=lambda p: p["load"],
            )
            if rows:
                ax.plot(
                    [p["load"] for p in rows],
                    [p["per_min"] for p in rows],
                    "-o",
                    color=color,
                    label=system,
                )
        if kind == "open":
            loads = sorted({p["load"] for p in phases if p["kind"] == "open"})
            ax.plot(loads, [x * 60 for x in loads], ":", color="black", lw=0.8, label="offered")
        ax.axhline(
            results["workload"]["physical_limit_per_min"],
            color="red",
            lw=0.8,
            ls=":",
            label="physical limit",
        )
        ax.set_xscale("log")
        _load_ticks(ax, phases, kind)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("completed workflows / min")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Throughput vs load — {title}")
    fig.tight_layout()
    fig.savefig(folder / "throughput.png", dpi=110)
    plt.close(fig)

    scale = results.get("scale", [])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    if scale:
        ax.plot(
            [p["workers"] for p in scale],
            [p["per_min"] for p in scale],
            "-o",
            color=SYSTEMS["nervenet"],
        )
        ax.set_xticks([p["workers"] for p in scale])
    ax.set_xlabel("nervenet worker processes")
    ax.set_ylabel("completed workflows / min")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Throughput vs workers — {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(folder / "workers.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
