"""The ``nervenet`` command: thin wrappers that parse, import ``module:attr`` and call the library.

The Redis URL comes from ``--redis`` or the ``NERVENET_REDIS_URL`` environment variable (not
``REDIS_URL``: CrewAI reads that one itself and changes how it stores data), the signing secret
from ``--signing-secret`` or ``NERVENET_SIGNING_SECRET`` (the variable keeps it out of ``ps``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import ConfigurationError, NervenetError
from .handlers import handlers_of
from .loader import load_target
from .owned_process import LoopChoice, loop_name, tune_collector
from .owned_process import run as run_on_loop
from .pool import Pool
from .settings import PoolSettings
from .worker import Worker
from .workflows import RunSource

DEFAULT_URL = "redis://localhost:6379/0"
PARENT_VARIABLE = "NERVENET_SERVE_PARENT"
DEFAULTS = PoolSettings()

app = typer.Typer(
    help="Per-workflow coordinators and a Redis Streams agent pool.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
escalations_app = typer.Typer(
    help="Inspect and replay the escalation (dead-letter) stream.", no_args_is_help=True
)
app.add_typer(escalations_app, name="escalations")
console = Console()

RedisOption = Annotated[
    str,
    typer.Option(
        "--redis", envvar="NERVENET_REDIS_URL", help="Redis URL (redis://, rediss://, unix://)."
    ),
]


class Loop(enum.StrEnum):
    auto = "auto"
    asyncio = "asyncio"
    uvloop = "uvloop"


LoopOption = Annotated[
    Loop,
    typer.Option(
        "--loop",
        help="Event loop: uvloop if installed (auto: pip install 'nervenet\\[fast]') or asyncio.",
    ),
]
NamespaceOption = Annotated[
    str, typer.Option("--namespace", help="Key namespace shared by the app's processes.")
]
SigningSecretOption = Annotated[
    str | None,
    typer.Option(
        "--signing-secret",
        envvar="NERVENET_SIGNING_SECRET",
        show_default=False,
        help="Shared HMAC secret (16+ bytes) of a pool whose tasks are signed; prefer the "
        "environment variable, a command line is visible to every user of the machine.",
    ),
]


def _fail(exc: BaseException) -> typer.Exit:
    console.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=2)


def _run(coro: Coroutine[Any, Any, None], loop: Loop = Loop.asyncio) -> None:
    """Run a command's coroutine; ``loop`` is the event loop of a process nervenet owns."""
    choice: LoopChoice = loop.value
    try:
        run_on_loop(coro, choice)
    except NervenetError as exc:
        raise _fail(exc) from None


@app.command()
def worker(
    target: Annotated[str, typer.Argument(help="MODULE:ATTR of what to serve.")],
    redis: RedisOption = DEFAULT_URL,
    namespace: NamespaceOption = "nn",
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Tasks run at once.")
    ] = 64,
    grace: Annotated[float, typer.Option(help="Seconds to finish tasks on SIGTERM.")] = 30.0,
    heartbeat: Annotated[
        float, typer.Option(help="Seconds between heartbeats (registration, in-flight refresh).")
    ] = DEFAULTS.heartbeat_interval,
    visibility_timeout: Annotated[
        float, typer.Option(help="Idle seconds after which a dead worker's task is reclaimed.")
    ] = DEFAULTS.visibility_timeout,
    max_deliveries: Annotated[
        int,
        typer.Option(
            min=1, help="Deliveries after which a task that keeps killing workers is escalated."
        ),
    ] = DEFAULTS.max_deliveries,
    signing_secret: SigningSecretOption = None,
    queues: Annotated[
        str | None,
        typer.Option(
            "--queues",
            "-Q",
            help="Comma-separated queues whose task types this worker runs (default: all).",
        ),
    ] = None,
    loop: LoopOption = Loop.auto,
) -> None:
    """Serve the task types of MODULE:ATTR until SIGTERM or Ctrl-C.

    Examples:

        nervenet worker examples.document_pipeline:graph --redis redis://localhost:6379/0

        nervenet worker app:graph --queues gpu            # only the nodes on queue "gpu"

        NERVENET_REDIS_URL=rediss://:secret@cache:6380/0 nervenet worker app:handlers -c 128

        NERVENET_SIGNING_SECRET=$(cat /run/secrets/nervenet) nervenet worker app:graph
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        source = load_target(target)
        handlers_of(source)  # fail now on what cannot be served
    except NervenetError as exc:
        raise _fail(exc) from None
    try:
        settings = PoolSettings(
            heartbeat_interval=heartbeat,
            visibility_timeout=visibility_timeout,
            max_deliveries=max_deliveries,
        )
        pool = Pool.from_url(
            redis, namespace=namespace, settings=settings, signing_secret=signing_secret
        )
    except NervenetError as exc:
        raise _fail(exc) from None
    _run(_serve(pool, source, concurrency, grace, queues), loop)


async def _serve(
    pool: Pool, source: object, concurrency: int, grace: float, queues: str | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    worker: Worker | None = None

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()
            if worker is not None:
                console.print(
                    f"stopping: {worker.load} task(s) in flight get {grace:g} s to finish; "
                    "Ctrl-C again to hand them back to the pool now"
                )
        elif worker is not None:
            console.print("handing unfinished tasks back to the pool now")
            worker.hand_back_now()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    async with pool:
        worker = Worker.for_target(pool, source, concurrency=concurrency, queues=queues)
        tuned = tune_collector()  # everything it serves is built: freeze it
        await worker.start()
        try:  # said once registered: a coordinator can dispatch to it from now on
            console.print(
                f"worker [bold]{worker.worker_id}[/] serving {', '.join(sorted(worker.handlers))} "
                f"{'(queues ' + ', '.join(sorted(worker.queues)) + ') ' if worker.queues else ''}"
                f"on {pool.transport.description} (concurrency {concurrency}"
                f"{', signed tasks only' if pool.signer else ''}; {_interpreter(tuned)})"
            )
            await stop.wait()
        finally:
            await worker.stop(grace)
        console.print(f"worker stopped after {worker.processed} task(s)")


@app.command()
def serve(
    target: Annotated[str, typer.Argument(help="MODULE:ATTR of a distributed graph.")],
    coordinators: Annotated[
        int, typer.Option("--coordinators", "-k", min=1, help="Coordinator processes to run.")
    ] = 1,
    loop: LoopOption = Loop.auto,
) -> None:
    """Coordinate the durable runs of MODULE:ATTR until SIGTERM or Ctrl-C.

    A coordinator process runs the runs queued with ``graph.asubmit(..., run_here=False)`` and
    takes over the runs of any coordinator process that died. It uses the pool MODULE built
    (``distribute(..., pool=Pool.from_url(...))``), so it points where that pool points. With
    ``--coordinators K``, K processes share the runs; each takes over the others' runs.

    Examples:

        nervenet serve myapp:graph

        NERVENET_REDIS_URL=redis://cache:6379/0 nervenet serve myapp:graph --coordinators 4
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        source = load_target(target)
        if not isinstance(source, RunSource):
            raise ConfigurationError(
                f"{target} is a {type(source).__name__}; `nervenet serve` coordinates a graph "
                "made with nervenet_langgraph.distribute(..., checkpointer=RedisSaver...)"
            )
        pool = source.nervenet_pool()
    except NervenetError as exc:
        raise _fail(exc) from None
    # The others are children that stop when this process goes, however it goes.
    parent = int(os.environ.pop(PARENT_VARIABLE, "0"))
    env = {**os.environ, PARENT_VARIABLE: str(os.getpid())}
    others = [
        subprocess.Popen(
            [sys.executable, "-m", "nervenet", "serve", target, "--loop", loop.value], env=env
        )
        for _ in range(coordinators - 1)
    ]
    try:
        _run(_coordinate(pool, parent), loop)
    finally:
        for child in others:
            child.send_signal(signal.SIGTERM)
        for child in others:
            child.wait()


async def _coordinate(pool: Pool, parent: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    orphan_watch = asyncio.ensure_future(_stop_when_orphaned(parent, stop)) if parent else None
    pool.workflows.take_queued_runs()
    async with pool:
        tuned = tune_collector()
        console.print(
            f"coordinator {pool.process_id[:8]} running {', '.join(pool.workflows.kinds)} runs "
            f"on {pool.transport.description} ({_interpreter(tuned)})"
        )
        await stop.wait()
    if orphan_watch is not None:
        orphan_watch.cancel()
    console.print(
        f"coordinator stopped: {pool.workflows.queued_taken} queued run(s) started, "
        f"{pool.workflows.takeovers} taken over"
    )


def _interpreter(collector_tuned: bool) -> str:
    """What the banner says about the process's loop and collector (see owned_process)."""
    return f"{loop_name()} loop, {'tuned' if collector_tuned else 'default'} gc"


async def _stop_when_orphaned(parent: int, stop: asyncio.Event) -> None:
    """A coordinator started by ``serve --coordinators K`` stops when its parent is gone (even
    SIGKILLed): its runs are then taken over by the coordinators still alive."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    stop.set()


@app.command()
def status(redis: RedisOption = DEFAULT_URL, namespace: NamespaceOption = "nn") -> None:
    """Show queues (depth, in flight), live workers, running workflows and escalations.

    Example:

        nervenet status --redis redis://localhost:6379/0
    """
    _run(_status(redis, namespace))


async def _status(url: str, namespace: str) -> None:
    async with Pool.from_url(url, namespace=namespace) as pool:
        snapshot = await pool.status()
    topology = (
        f"cluster of {snapshot.primaries} primaries, {snapshot.partitions} partitions per task type"
        if snapshot.primaries > 1 or snapshot.partitions > 1
        else "single server"
    )
    console.print(
        f"[bold]pool[/] {snapshot.target} ({topology})  namespace [bold]{snapshot.namespace}[/]"
    )
    queues = Table(title="queues")
    for column in ("task type", "depth", "in flight", "oldest in flight"):
        queues.add_column(column, justify="left" if column == "task type" else "right")
    for q in snapshot.queues:
        queues.add_row(
            q.task_type,
            str(q.depth),
            str(q.pending),
            f"{q.oldest_pending_idle_ms / 1000:.1f} s" if q.pending else "-",
        )
    console.print(queues)
    workers = Table(title="workers")
    for column in ("worker", "task types", "load", "processed", "age"):
        workers.add_column(column)
    now = time.time()
    for w in snapshot.workers:
        workers.add_row(
            w.worker_id,
            ", ".join(w.task_types),
            f"{w.load}/{w.concurrency}",
            str(w.processed),
            f"{now - w.started_at:.0f} s",
        )
    console.print(workers)
    if snapshot.limits:
        limits = Table(title="limits")
        for column in ("limit key", "running", "cap", "rate", "starts available"):
            limits.add_column(column, justify="left" if column == "limit key" else "right")
        for limit in snapshot.limits:
            limits.add_row(
                limit.key,
                str(limit.in_use),
                "-" if limit.max_concurrency is None else str(limit.max_concurrency),
                limit.rate_limit or "-",
                "-" if limit.tokens is None else f"{limit.tokens:.1f}",
            )
        console.print(limits)
    console.print(
        f"running workflows: {snapshot.running_workflows}   queued: {snapshot.queued_workflows}"
        f"   coordinator processes: {snapshot.coordinators}   escalations: {snapshot.escalations}"
    )
    waiting = snapshot.queued_workflows + snapshot.stranded_workflows
    if waiting and not snapshot.coordinators:
        console.print(
            f"[bold yellow]warning:[/] {waiting} run(s) wait for a coordinator process and none "
            "is alive (workers never run them); start one with `nervenet serve app:graph`"
        )


@escalations_app.command("list")
def escalations_list(
    redis: RedisOption = DEFAULT_URL,
    namespace: NamespaceOption = "nn",
    limit: Annotated[int, typer.Option(min=1)] = 50,
) -> None:
    """List escalated tasks, newest first.

    Example:

        nervenet escalations list --limit 20
    """

    async def show() -> None:
        async with Pool.from_url(redis, namespace=namespace) as pool:
            entries = await pool.escalations.list(limit)
        table = Table(title=f"escalations ({len(entries)} shown)")
        for column in ("id", "when", "task type", "task id", "reason"):
            table.add_column(column)
        for e in entries:
            when = datetime.datetime.fromtimestamp(e.at).strftime("%Y-%m-%d %H:%M:%S")
            table.add_row(e.entry_id, when, e.task_type, e.task_id, e.reason)
        console.print(table)

    _run(show())


@escalations_app.command("show")
def escalations_show(
    entry_id: str, redis: RedisOption = DEFAULT_URL, namespace: NamespaceOption = "nn"
) -> None:
    """Show every field of one escalation (binary fields abbreviated).

    Example:

        nervenet escalations show 1764050000000-0
    """

    async def show() -> None:
        async with Pool.from_url(redis, namespace=namespace) as pool:
            e = await pool.escalations.get(entry_id)
        console.print(f"[bold]{e.entry_id}[/] {e.reason}")
        for name, value in sorted(e.fields.items()):
            text = value.decode(errors="replace")
            console.print(
                f"  {name}: {text[:500]}{'...' if len(text) > 500 else ''}",
                markup=False,
                highlight=False,
            )

    _run(show())


@escalations_app.command("retry")
def escalations_retry(
    entry_id: str,
    redis: RedisOption = DEFAULT_URL,
    namespace: NamespaceOption = "nn",
    signing_secret: SigningSecretOption = None,
) -> None:
    """Put an escalated task back on its stream as a new attempt (signed, if the pool signs).

    Example:

        nervenet escalations retry 1764050000000-0
    """

    async def retry() -> None:
        async with Pool.from_url(redis, namespace=namespace, signing_secret=signing_secret) as pool:
            new_id = await pool.escalations.retry(entry_id)
        console.print(f"requeued as {new_id}")

    _run(retry())


@escalations_app.command("drop")
def escalations_drop(
    entry_id: str, redis: RedisOption = DEFAULT_URL, namespace: NamespaceOption = "nn"
) -> None:
    """Delete one escalation.

    Example:

        nervenet escalations drop 1764050000000-0
    """

    async def drop() -> None:
        async with Pool.from_url(redis, namespace=namespace) as pool:
            dropped = await pool.escalations.drop(entry_id)
        console.print("dropped" if dropped else f"no escalation {entry_id}")

    _run(drop())


@app.command()
def demo(
    redis: Annotated[
        str | None,
        typer.Option("--redis", help="Run on this Redis instead of the embedded pool."),
    ] = None,
    workflows: Annotated[int, typer.Option(min=1)] = 300,
    concurrency: Annotated[int, typer.Option(min=1, help="Workflows in flight.")] = 100,
    workers: Annotated[int, typer.Option(min=1, help="In-process workers.")] = 2,
    workload: Annotated[
        str | None, typer.Option(help="Demo workload (default: the richest installed).")
    ] = None,
) -> None:
    """Run a few hundred multi-step workflows through a pool and print throughput and p50/p99.

    Examples:

        nervenet demo

        nervenet demo --redis redis://localhost:6379/0 --workflows 1000
    """
    from .demo import find_workload, run_demo

    chosen = find_workload(workload)

    async def go() -> None:
        pool = Pool.local() if redis is None else Pool.from_url(redis)
        async with pool:
            for _ in range(workers):
                await pool.serve(chosen.handlers(pool))
            console.print(
                f"[bold]{chosen.title}[/]\non {pool.transport.description}, "
                f"{workers} worker(s), {concurrency} workflows in flight"
            )
            with Progress(
                TextColumn("workflows"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                bar = progress.add_task("run", total=workflows)
                report = await run_demo(
                    pool,
                    chosen,
                    workflows=workflows,
                    concurrency=concurrency,
                    on_progress=lambda: progress.advance(bar),
                )
        console.print(
            f"{report.workflows} workflows in {report.seconds:.2f} s: "
            f"[bold]{report.per_second:.0f} workflows/s[/], "
            f"p50 {report.p50_ms:.1f} ms, p99 {report.p99_ms:.1f} ms"
        )

    _run(go())


def main() -> None:
    with contextlib.suppress(BrokenPipeError):
        app(prog_name="nervenet")
    sys.exit(0)
