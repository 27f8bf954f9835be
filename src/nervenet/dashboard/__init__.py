"""The web dashboard: ``nervenet dashboard --redis URL`` (the ``dashboard`` extra).

A server-rendered ASGI app (Starlette, Jinja2 templates with autoescaping, no JavaScript build)
showing queues (waiting vs in flight, a rate sparkline), workers, limits, runs (filters, a run's
timeline of nodes, stuck-run hints), escalations (show, retry, drop, bulk retry) and Prometheus
metrics at ``/metrics``. Every value comes from Redis, so restarting it loses nothing (its
sparkline samples are in Redis too). Read-only unless started with an action token; see
:mod:`nervenet.dashboard.access`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..pool import Pool

INSTALL_HINT = "the dashboard needs its extra: pip install 'nervenet[dashboard]'"


def create_app(pool: Pool, *, token: str | None = None, sample_every: float = 5.0) -> Starlette:
    """The dashboard's ASGI app over ``pool`` (opened and closed with the app's lifespan).

    ``token``: the action token that unlocks retry/drop/cancel (None: read-only).
    ``sample_every``: seconds between the queue samples its sparklines draw.
    """
    try:
        from .app import build
    except ImportError as exc:  # starlette or jinja2 missing
        raise ConfigurationError(f"{INSTALL_HINT} ({exc})") from None
    return build(pool, token=token, sample_every=sample_every)


__all__ = ["INSTALL_HINT", "create_app"]
