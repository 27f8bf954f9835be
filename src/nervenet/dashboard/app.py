"""The dashboard's routes: pages rendered on the server from a fresh read of Redis each time.

Pages: ``/`` (queues, workers, limits, run counts), ``/runs`` (filters), ``/runs/{id}`` (the
timeline), ``/escalations``, ``/escalations/{id}``, ``/metrics`` (Prometheus). Actions (POST,
token only, see :mod:`.access`): retry, drop and bulk retry of escalations, cancel of a run.
Every string shown comes from Redis and is escaped by the templates (autoescaping everywhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from ..errors import ConfigurationError, NervenetError
from ..outages import TRANSIENT_ERRORS
from ..pool import Pool
from ..runs import RunInfo, RunStatus
from ..status import collect_status
from . import samples
from .access import COOKIE, Access
from .metrics import metrics_text

log = logging.getLogger("nervenet.dashboard")

#: Runs whose statuses the overview counts (newest first): bounded, so the page stays fast with
#: any number of runs recorded.
COUNTED_RUNS = 1_000
RUNS_SHOWN = 100
ESCALATIONS_SHOWN = 200
MAX_FORM_BYTES = 64 * 1024

Handler = Callable[[Request], Awaitable[Response]]


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters["when"] = _when
    env.filters["seconds"] = _seconds
    return env


def _when(epoch: float) -> str:
    if not epoch:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def timeline(run: RunInfo) -> list[dict[str, Any]]:
    """Bars of a run's node attempts on one time axis: each a queue wait then a run time, as
    percentages of the run's span (numbers only, rendered into style attributes)."""
    start = run.started_at or run.created_at
    end = run.ended_at or time.time()
    for node in run.nodes:
        start = min(start, node.ended_at - (node.run_ms + node.queue_wait_ms) / 1000)
        end = max(end, node.ended_at)
    span = max(end - start, 1e-3)
    bars = []
    for node in run.nodes:
        ran_from = node.ended_at - node.run_ms / 1000
        waited_from = ran_from - node.queue_wait_ms / 1000
        bars.append(
            {
                "node": node,
                "wait_left": 100 * (waited_from - start) / span,
                "wait_width": 100 * (node.queue_wait_ms / 1000) / span,
                "run_left": 100 * (ran_from - start) / span,
                "run_width": max(0.3, 100 * (node.run_ms / 1000) / span),
            }
        )
    return bars


class Dashboard:
    """The pages and actions, over one pool."""

    def __init__(self, pool: Pool, access: Access, sample_every: float) -> None:
        self.pool = pool
        self.access = access
        self.sample_every = sample_every
        self.templates = _templates()

    def page(self, request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        body = self.templates.get_template(name).render(
            may_act=self.access.may_act(request),
            read_only=self.access.read_only,
            namespace=self.pool.keys.namespace,
            target=self.pool.transport.description,
            path=request.url.path,
            notice=request.query_params.get("notice", "")[:300],
            **context,
        )
        return HTMLResponse(body, status_code=status_code)

    # --- pages ----------------------------------------------------------------------------------
    async def overview(self, request: Request) -> Response:
        status = await collect_status(self.pool)
        lines = await samples.sparklines(self.pool)
        live = await self.pool.runs.live_owners()
        recent = await self.pool.runs.list(limit=COUNTED_RUNS)
        counts = {s.value: 0 for s in RunStatus}
        stuck = 0
        for run in recent:
            counts[run.status.value] += 1
            stuck += run.status is RunStatus.RUNNING and run.owner not in live
        return self.page(
            request,
            "overview.html",
            status=status,
            sparklines=lines,
            counts=counts,
            counted=len(recent),
            recorded=await self.pool.runs.count(),
            stuck=stuck,
            now=time.time(),
        )

    async def runs(self, request: Request) -> Response:
        status = request.query_params.get("status") or None
        kind = request.query_params.get("graph") or None
        if status is not None and status not in {s.value for s in RunStatus}:
            raise ConfigurationError(f"unknown run status {status[:40]!r}")
        found = await self.pool.runs.list(status=status, kind=kind, limit=RUNS_SHOWN)
        live = await self.pool.runs.live_owners()
        return self.page(
            request,
            "runs.html",
            runs=found,
            live=live,
            statuses=[s.value for s in RunStatus],
            status=status or "",
            graph=kind or "",
        )

    async def run(self, request: Request) -> Response:
        run = await self.pool.runs.get(request.path_params["run_id"])
        live = await self.pool.runs.live_owners()
        return self.page(
            request,
            "run.html",
            run=run,
            bars=timeline(run),
            stuck=run.status is RunStatus.RUNNING and run.owner not in live,
        )

    async def escalations(self, request: Request) -> Response:
        entries = await self.pool.escalations.list(ESCALATIONS_SHOWN)
        total = await self.pool.escalations.count()
        return self.page(request, "escalations.html", entries=entries, total=total)

    async def escalation(self, request: Request) -> Response:
        entry = await self.pool.escalations.get(request.path_params["entry_id"])
        return self.page(request, "escalation.html", entry=entry, fields=entry.readable_fields())

    async def metrics(self, request: Request) -> Response:
        text, content_type = await metrics_text(self.pool)
        return Response(text, media_type=content_type)

    # --- actions --------------------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        form = await _form(request)
        if not self.access.same_origin(request):
            return self.refused(request, "cross-site request refused")
        if not self.access.matches(form.get("token", "")):
            return self.refused(request, "wrong action token")
        response = RedirectResponse("/?" + urlencode({"notice": "actions unlocked"}), 303)
        response.set_cookie(COOKIE, form["token"], httponly=True, samesite="strict")
        return response

    async def retry(self, request: Request) -> Response:
        entry_id = request.path_params["entry_id"]
        new_id = await self.pool.escalations.retry(entry_id)
        return _back("/escalations", f"escalation {entry_id} requeued as {new_id}")

    async def drop(self, request: Request) -> Response:
        entry_id = request.path_params["entry_id"]
        dropped = await self.pool.escalations.drop(entry_id)
        return _back("/escalations", f"dropped {entry_id}" if dropped else f"no {entry_id}")

    async def retry_many(self, request: Request) -> Response:
        form = await _form(request, multi=True)
        ids = form.get("id", [])
        if not isinstance(ids, list) or not ids:
            return _back("/escalations", "nothing selected")
        retried, failed = 0, []
        for entry_id in ids[:ESCALATIONS_SHOWN]:
            try:
                await self.pool.escalations.retry(entry_id)
                retried += 1
            except ConfigurationError:
                failed.append(entry_id)
        note = f"requeued {retried} escalation(s)"
        if failed:
            note += f"; {len(failed)} could not be retried (no readable task, or gone)"
        return _back("/escalations", note)

    async def cancel(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        form = await _form(request)
        action = form.get("action", "interrupt")
        outcome = await self.pool.runs.cancel(run_id, action)
        return _back(f"/runs/{run_id}", f"{action}: {outcome}")

    def refused(self, request: Request, why: str) -> Response:
        return self.page(request, "refused.html", status_code=403, why=why)

    def guarded(self, action: Handler) -> Handler:
        """An action that needs the token and a same-site POST."""

        async def handle(request: Request) -> Response:
            if self.access.read_only:
                return self.refused(request, "this dashboard is read-only: start it with --token")
            if not self.access.may_act(request):
                return self.refused(request, "actions need the action token")
            if not self.access.same_origin(request):
                return self.refused(request, "cross-site request refused")
            return await action(request)

        return handle

    def answering(self, view: Handler) -> Handler:
        """Bad input and a Redis outage get a page saying so, never a traceback."""

        async def handle(request: Request) -> Response:
            try:
                return await view(request)
            except NervenetError as exc:
                return self.page(request, "error.html", status_code=404, error=str(exc))
            except TRANSIENT_ERRORS as exc:
                return self.page(
                    request, "error.html", status_code=503, error=f"Redis unreachable: {exc}"
                )

        return handle

    # --- sampling -------------------------------------------------------------------------------
    async def sample_forever(self) -> None:
        while True:
            try:
                await samples.record(self.pool, await collect_status(self.pool))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the next sample tries again
                log.debug("dashboard sample failed: %s", exc)
            await asyncio.sleep(self.sample_every)


def _back(path: str, notice: str) -> Response:
    return RedirectResponse(f"{path}?{urlencode({'notice': notice[:300]})}", 303)


async def _form(request: Request, *, multi: bool = False) -> dict[str, Any]:
    """An urlencoded form body, bounded (no multipart parser needed for these small forms)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ConfigurationError("form too large")
    parsed = parse_qs(body.decode(errors="replace"), max_num_fields=ESCALATIONS_SHOWN + 10)
    if multi:
        return dict(parsed)
    return {name: values[0] for name, values in parsed.items()}


def build(pool: Pool, *, token: str | None, sample_every: float) -> Starlette:
    dashboard = Dashboard(pool, Access(token), sample_every)
    view = dashboard.answering

    def act(action: Handler) -> Handler:
        return dashboard.answering(dashboard.guarded(action))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with pool:
            sampler = asyncio.ensure_future(dashboard.sample_forever())
            try:
                yield
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler

    routes = [
        Route("/", view(dashboard.overview)),
        Route("/runs", view(dashboard.runs)),
        Route("/runs/{run_id:path}/cancel", act(dashboard.cancel), methods=["POST"]),
        Route("/runs/{run_id:path}", view(dashboard.run)),
        Route("/escalations", view(dashboard.escalations)),
        Route("/escalations/retry", act(dashboard.retry_many), methods=["POST"]),
        Route("/escalations/{entry_id}/retry", act(dashboard.retry), methods=["POST"]),
        Route("/escalations/{entry_id}/drop", act(dashboard.drop), methods=["POST"]),
        Route("/escalations/{entry_id}", view(dashboard.escalation)),
        Route("/login", view(dashboard.login), methods=["POST"]),
        Route("/metrics", view(dashboard.metrics)),
        Route("/healthz", _ok),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


async def _ok(request: Request) -> Response:
    return PlainTextResponse("ok")
