"""Queue samples for the sparklines, kept in Redis so a restarted dashboard still draws them.

Every ``sample_every`` seconds the dashboard adds one entry to ``nn:{dashboard}:samples``
(capped at :data:`KEPT` entries): per task type its waiting and in-flight counts and, on Redis 7+,
the entries ever delivered to workers. A sparkline is the delivery rate between samples, or the
waiting count where the server does not say how many were delivered.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..transport import as_text

if TYPE_CHECKING:
    from ..pool import Pool
    from ..status import PoolStatus

KEPT = 720
SHOWN = 60


async def record(pool: Pool, status: PoolStatus) -> None:
    fields: dict[str, str] = {"at": repr(status.taken_at)}
    for q in status.queues:
        fields[f"w:{q.task_type}"] = str(q.waiting)
        fields[f"f:{q.task_type}"] = str(q.in_flight)
        if q.delivered is not None:
            fields[f"d:{q.task_type}"] = str(q.delivered)
    await pool.transport.redis.xadd(
        pool.keys.dashboard_samples,
        fields,  # type: ignore[arg-type]
        maxlen=KEPT,
        approximate=True,
    )


@dataclass(frozen=True, slots=True)
class Sparkline:
    """Points of one task type's sparkline."""

    label: str
    """``tasks/s`` (delivery rate) or ``waiting``."""
    values: list[float]
    """Oldest first."""

    def svg_points(self, width: int = 120, height: int = 24) -> str:
        """``x,y`` pairs for an SVG polyline (numbers only: safe to put in a page)."""
        if len(self.values) < 2:
            return ""
        top = max(self.values) or 1.0
        step = width / (len(self.values) - 1)
        return " ".join(
            f"{i * step:.1f},{height - (v / top) * (height - 2) - 1:.1f}"
            for i, v in enumerate(self.values)
        )


async def sparklines(pool: Pool) -> dict[str, Sparkline]:
    """Task type -> its sparkline over the last :data:`SHOWN` samples."""
    raw: Any = await pool.transport.redis.xrevrange(pool.keys.dashboard_samples, count=SHOWN)
    samples: list[dict[str, float]] = []
    for _, fields in reversed(raw):
        sample: dict[str, float] = {}
        for name, value in fields.items():
            try:
                sample[as_text(name)] = float(as_text(value))
            except ValueError:
                continue  # untrusted: skip what is not a number
        if "at" in sample:
            samples.append(sample)
    types = {name[2:] for s in samples for name in s if name[:2] in ("w:", "d:")}
    lines: dict[str, Sparkline] = {}
    for task_type in types:
        delivered = [(s["at"], s.get(f"d:{task_type}")) for s in samples]
        if all(d is not None for _, d in delivered) and len(delivered) > 1:
            rates = []
            for (t0, d0), (t1, d1) in itertools.pairwise(delivered):
                assert d0 is not None and d1 is not None
                rates.append(max(0.0, d1 - d0) / max(t1 - t0, 1e-3))
            lines[task_type] = Sparkline("tasks/s", rates)
        else:
            lines[task_type] = Sparkline("waiting", [s.get(f"w:{task_type}", 0.0) for s in samples])
    return lines
