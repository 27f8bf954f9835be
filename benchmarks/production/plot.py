"""PNG plots of a run: latency vs load, throughput vs load, throughput vs workers.

    ~/.cache/nervenet-bench/celery/bin/python benchmarks/production/plot.py RESULTS_DIR

Runs in the peers' Celery venv, which has matplotlib (nervenet's own environment does not).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SYSTEMS = {
    "central": "tab:gray",
    "arq": "tab:orange",
    "celery": "tab:green",
    "nervenet": "tab:blue",
}


def _load_ticks(ax: plt.Axes, phases: list[dict[str, Any]], kind: str) -> None:
    loads = sorted({p["load"] for p in phases if p["kind"] == kind})
    ax.set_xscale("log")
    ax.set_xticks(loads, [f"{x:g}" for x in loads])
    ax.minorticks_off()


KINDS = (
    ("closed", "workflows in flight (closed loop)"),
    ("open", "arrivals per second (open loop)"),
)


def _rows(phases: list[dict[str, Any]], system: str, kind: str, key: str) -> list[dict[str, Any]]:
    """The phases of ``system`` and ``kind`` that have ``key``, by load."""
    rows = [p for p in phases if p["system"] == system and p["kind"] == kind and p[key]]
    return sorted(rows, key=lambda p: p["load"])


def _save(fig: Any, title: str, path: Path) -> None:
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency(results: dict[str, Any], title: str, path: Path) -> None:
    phases = results.get("phases", [])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (kind, xlabel) in zip(axes, KINDS, strict=True):
        for system, color in SYSTEMS.items():
            rows = _rows(phases, system, kind, "p99")
            x = [p["load"] for p in rows]
            if rows:
                ax.plot(x, [p["p99"] for p in rows], "-o", color=color, label=f"{system} P99")
                ax.plot(
                    x, [p["p50"] for p in rows], "--", color=color, alpha=0.6, label=f"{system} P50"
                )
        _load_ticks(ax, phases, kind)
        ax.axhline(
            results["workload"]["ideal_p99"], color="black", lw=0.8, ls=":", label="ideal P99"
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("latency (s)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    _save(fig, f"Latency vs load — {title}", path)


def throughput(results: dict[str, Any], title: str, path: Path) -> None:
    phases = results.get("phases", [])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (kind, xlabel) in zip(axes, KINDS, strict=True):
        for system, color in SYSTEMS.items():
            rows = _rows(phases, system, kind, "kind")
            if rows:
                per_min = [p["per_min"] for p in rows]
                ax.plot([p["load"] for p in rows], per_min, "-o", color=color, label=system)
        if kind == "open":
            loads = sorted({p["load"] for p in phases if p["kind"] == "open"})
            ax.plot(loads, [x * 60 for x in loads], ":", color="black", lw=0.8, label="offered")
        limit = results["workload"]["physical_limit_per_min"]
        ax.axhline(limit, color="red", lw=0.8, ls=":", label="physical limit")
        _load_ticks(ax, phases, kind)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("completed workflows / min")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    _save(fig, f"Throughput vs load — {title}", path)


def workers(results: dict[str, Any], title: str, path: Path) -> None:
    scale = results.get("scale", [])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    if scale:
        counts = [p["workers"] for p in scale]
        ax.plot(counts, [p["per_min"] for p in scale], "-o", color=SYSTEMS["nervenet"])
        ax.set_xticks(counts)
    ax.set_xlabel("nervenet worker processes")
    ax.set_ylabel("completed workflows / min")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Throughput vs workers — {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(folder: Path) -> None:
    results = json.loads((folder / "results.json").read_text())
    machine = results["machine"]
    title = f"{machine['date'][:10]}, {machine['cores']} cores ({results['mode']} run)"
    latency(results, title, folder / "latency.png")
    throughput(results, title, folder / "throughput.png")
    workers(results, title, folder / "workers.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
