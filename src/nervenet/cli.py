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
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import ConfigurationError, NervenetError
from .handlers import handlers_of
from .loader import load_target
from .metrics import WorkerMetrics
from .owned_process import LoopChoice, loop_name, tune_collector
from .owned_process import run as run_on_loop
from .pool import Pool
from .runs import RunStatus
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
    # Plain help: typer's rich help gives every flag, --help included, a "<bool>" metavar.
    rich_markup_mode=None,
)
escalations_app = typer.Typer(
    help="Inspect and replay the escalation (dead-letter) stream.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(escalations_app, name="escalations")
runs_app = typer.Typer(
    help="List, inspect and cancel recorded runs (graph runs started with submit).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(runs_app, name="runs")
console = Console()

RedisOption = Annotated[
    str,
    typer.Option(
        "--redis",
        envvar="NERVENET_REDIS_URL",
        metavar="URL",
        help="Redis URL (redis://, rediss://, unix://).",
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
        help="Event loop: uvloop if installed (auto: pip install 'nervenet[fast]') or asyncio.",
    ),
]
NamespaceOption = Annotated[
    str,
    typer.Option(
        "--namespace", metavar="NAME", help="Key namespace shared by the app's processes."
    ),
]
SigningSecretOption = Annotated[
    str | None,
    typer.Option(
        "--signing-secret",
        envvar="NERVENET_SIGNING_SECRET",
        metavar="SECRET",
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
    target: Annotated[str, typer.Argument(metavar="MODULE:ATTR", help="What to serve.")],
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
            min=1,
            help="Times a task may be started on workers that die before it finishes; then it "
            "is escalated, not run again.",
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
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            show_default=False,
            help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (needs prometheus-client).",
        ),
    ] = None,
    loop: LoopOption = Loop.auto,
    lean_connections: Annotated[
        bool,
        typer.Option(
            "--lean-connections/--redis-py-connections",
            envvar="NERVENET_LEAN_CONNECTIONS",
            help="On a single server, reads and settlements over nervenet's lean connections "
            "(the default), or every command through redis-py.",
        ),
    ] = DEFAULTS.lean_connections,
) -> None:
    """Serve the task types of MODULE:ATTR until SIGTERM or Ctrl-C.

    Examples:

    \b
        nervenet worker examples.document_pipeline:graph --redis redis://localhost:6379/0
        nervenet worker app:graph --queues gpu            # only the nodes on queue "gpu"
        NERVENET_REDIS_URL=rediss://:secret@cache:6380/0 nervenet worker app:handlers -c 128
        NERVENET_SIGNING_SECRET=$(cat /run/secrets/nervenet) nervenet worker app:graph
        nervenet worker app:graph --metrics-port 9108      # Prometheus scrapes :9108/metrics
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
            lean_connections=lean_connections,
        )
        pool = Pool.from_url(
            redis, namespace=namespace, settings=settings, signing_secret=signing_secret
        )
    except NervenetError as exc:
        raise _fail(exc) from None
    metrics = None
    if metrics_port is not None:
        from .metrics import WorkerMetrics

        try:
            metrics = WorkerMetrics()
            metrics.serve(metrics_port)
        except (NervenetError, OSError) as exc:
            raise _fail(exc) from None
    _run(_serve(pool, source, concurrency, grace, queues, metrics), loop)


async def _serve(
    pool: Pool,
    source: object,
    concurrency: int,
    grace: float,
    queues: str | None,
    metrics: WorkerMetrics | None = None,
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
        if metrics is not None:
            worker.metrics = metrics
            metrics.watch_in_flight(lambda: worker.load)
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
    target: Annotated[str, typer.Argument(metavar="MODULE:ATTR", help="A distributed graph.")],
    coordinators: Annotated[
        int, typer.Option("--coordinators", "-k", min=1, help="Coordinator processes to run.")
    ] = 1,
    max_runs: Annotated[
        int | None,
        typer.Option(
            "--max-runs",
            min=1,
            help="Runs each coordinator process runs at once; the rest stay queued for one "
            "with room (default: the pool's max_runs setting, unbounded if unset).",
        ),
    ] = None,
    loop: LoopOption = Loop.auto,
) -> None:
    """Coordinate the durable runs of MODULE:ATTR until SIGTERM or Ctrl-C.

    A coordinator process runs the runs queued with ``graph.asubmit(..., run_here=False)`` and
    takes over the runs of any coordinator process that died. It uses the pool MODULE built
    (``distribute(..., pool=Pool.from_url(...))``), so it points where that pool points. With
    ``--coordinators K``, K processes share the runs; each takes over the others' runs. With
    ``--max-runs N`` a process runs at most N at once and claims no more until one ends: past
    what the machine can finish, runs then finish at its full rate, oldest first, instead of all
    slowing down together.

    Examples:

    \b
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
        if max_runs is not None:
            pool.bound_runs(max_runs)
    except NervenetError as exc:
        raise _fail(exc) from None
    # The others are children that stop when this process goes, however it goes.
    parent = int(os.environ.pop(PARENT_VARIABLE, "0"))
    env = {**os.environ, PARENT_VARIABLE: str(os.getpid())}
    argv = [sys.executable, "-m", "nervenet", "serve", target, "--loop", loop.value]
    if max_runs is not None:
        argv += ["--max-runs", str(max_runs)]
    others = [subprocess.Popen(argv, env=env) for _ in range(coordinators - 1)]
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
        bound = pool.run_slots.limit
        console.print(
            f"coordinator {pool.process_id[:8]} running {', '.join(pool.workflows.kinds)} runs "
            f"{f'(at most {bound} at once) ' if bound else ''}"
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
    """Show queues (waiting vs in flight), live workers, running workflows and escalations.

    Each queue says whether a live worker serves it; task types with nothing queued and no live
    worker (their workers are gone) are named on one line instead of listed; dispatches waiting
    for a worker to register are shown.

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
    for column in ("task type", "waiting", "in flight", "oldest in flight", "workers"):
        queues.add_column(column, justify="left" if column in ("task type", "workers") else "right")
    for q in snapshot.queues:
        queues.add_row(
            escape(q.task_type),  # names read from Redis: never rich markup
            str(q.waiting),
            str(q.in_flight),
            f"{q.oldest_in_flight_ms / 1000:.1f} s" if q.in_flight else "-",
            "live" if q.served else "[bold yellow]none alive[/]",
        )
    console.print(queues)
    for q in snapshot.queues:
        if q.waiting_dispatches and not q.served:
            console.print(
                f"[bold yellow]waiting:[/] dispatches of {q.waiting_dispatches} coordinator "
                f"process(es) wait for a worker of {escape(repr(q.task_type))}; start one with "
                "`nervenet worker app:target`",
                highlight=False,
            )
    if snapshot.idle_task_types:
        console.print(
            f"{len(snapshot.idle_task_types)} idle task type(s) without a live worker not shown: "
            + ", ".join(snapshot.idle_task_types[:10])
            + (" ..." if len(snapshot.idle_task_types) > 10 else ""),
            highlight=False,
            markup=False,
        )
    workers = Table(title="workers")
    for column in ("worker", "task types", "load", "processed", "age"):
        workers.add_column(column)
    now = time.time()
    for w in snapshot.workers:
        workers.add_row(
            escape(w.worker_id),
            escape(", ".join(w.task_types)),
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
                escape(limit.key),
                str(limit.in_use),
                "-" if limit.max_concurrency is None else str(limit.max_concurrency),
                limit.rate_limit or "-",
                "-" if limit.tokens is None else f"{limit.tokens:.1f}",
            )
        console.print(limits)
    if snapshot.run_loads:
        loads = Table(title="runs per process")
        for column in ("process", "running", "waiting for a slot", "max runs"):
            loads.add_column(column, justify="left" if column == "process" else "right")
        for load in snapshot.run_loads:
            loads.add_row(
                load.process_id[:8],
                str(load.running),
                str(load.waiting),
                "-" if load.max_runs is None else str(load.max_runs),
            )
        console.print(loads)
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
            row = (e.entry_id, when, e.task_type, e.task_id, e.reason)
            table.add_row(*(escape(v) for v in row))
        console.print(table)

    _run(show())


@escalations_app.command("show")
def escalations_show(
    entry_id: str, redis: RedisOption = DEFAULT_URL, namespace: NamespaceOption = "nn"
) -> None:
    """Show every field of one escalation, payloads decoded (JSON, LangGraph's msgpack).

    Example:

        nervenet escalations show 1764050000000-0
    """

    async def show() -> None:
        async with Pool.from_url(redis, namespace=namespace) as pool:
            e = await pool.escalations.get(entry_id)
        console.print(f"{e.entry_id} {e.reason}", markup=False, highlight=False)
        for name, text in e.readable_fields():
            if "\n" in text:
                text = "\n    " + text.replace("\n", "\n    ")
            console.print(f"  {name}: {text}", markup=False, highlight=False)

    _run(show())


@escalations_app.command("retry")
def escalations_retry(
    entry_id: str,
    redis: RedisOption = DEFAULT_URL,
    namespace: NamespaceOption = "nn",
    signing_secret: SigningSecretOption = None,
) -> None:
    """Put an escalated task back on its stream as a new attempt (signed, if the pool signs).

    The coordinator that escalated the task gave up on it already; the retry runs it once more
    and caches its result under the same task id (for the pool's result_ttl, a day by default).
    A durable graph run (with a checkpointer) then continues when resumed, e.g. with
    graph.ainvoke(None, {"configurable": {"thread_id": ...}}): the failed step is answered
    from that cached result. Without a checkpointer the run cannot continue: the retry only
    does the task's work again.

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


def _age(seconds: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d`` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = seconds.strip().lower()
    scale = units.get(text[-1:], 0)
    number = text[:-1] if scale else text
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise typer.BadParameter(f"{seconds!r} is not an age like 90s, 15m, 2h or 7d") from None
    if not 0 < value < 10 * 365 * 86400:
        raise typer.BadParameter(f"{seconds!r} is not an age like 90s, 15m, 2h or 7d")
    return value


def _when(epoch: float) -> str:
    if not epoch:
        return "-"
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


@runs_app.command("list")
def runs_list(
    redis: RedisOption = DEFAULT_URL,
    namespace: NamespaceOption = "nn",
    status: Annotated[
        str | None,
        typer.Option(
            help="pending, running, interrupted, succeeded, failed or cancelled.",
            show_default=False,
        ),
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--graph", help="Only runs of this graph.", show_default=False)
    ] = None,
    newer_than: Annotated[
        str | None,
        typer.Option(
            help="Only runs created within this age: 90s, 15m, 2h, 7d.", show_default=False
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    """List recorded runs, newest first. A running run whose owner is not a live coordinator
    process is flagged: nobody drives it until one takes it over.

    Examples:

    \b
        nervenet runs list --status running
        nervenet runs list --graph support --newer-than 2h --limit 200
    """
    if status is not None and status not in {s.value for s in RunStatus}:
        raise _fail(ConfigurationError(f"unknown status {status[:40]!r}; see --help"))
    age = _age(newer_than) if newer_than is not None else None

    async def show() -> None:
        async with Pool.from_url(redis, namespace=namespace) as pool:
            runs = await pool.runs.list(status=status, kind=kind, newer_than=age, limit=limit)
            live = await pool.runs.live_owners()
        table = Table(title=f"runs ({len(runs)} shown)")
        for column in ("run", "graph", "status", "created", "duration", "owner"):
            table.add_column(column)
        for run in runs:
            owner = run.owner[:8] or "-"
            if run.status is RunStatus.RUNNING and run.owner not in live:
                owner += " [bold yellow](not alive)[/]"
            table.add_row(
                escape(run.run_id),
                escape(run.kind),
                run.status.value,
                _when(run.created_at),
                f"{run.duration:.1f} s" if run.started_at else "-",
                escape(owner[:8]) + owner[8:],
            )
        console.print(table)

    _run(show())


@runs_app.command("show")
def runs_show(
    run_id: str, redis: RedisOption = DEFAULT_URL, namespace: NamespaceOption = "nn"
) -> None:
    """Show one run: status, owner, times, error and its node history (worker, queue wait, run
    time, attempt, outcome).

    Example:

        nervenet runs show 3f2a9c1e-...
    """

    async def show() -> None:
        async with Pool.from_url(redis, namespace=namespace) as pool:
            run = await pool.runs.get(run_id)
            live = await pool.runs.live_owners()
        owner = run.owner or "-"
        if run.status is RunStatus.RUNNING and run.owner not in live:
            owner += " (not a live coordinator process: the run waits to be taken over)"
        lines = [
            f"run {run.run_id}",
            f"  graph:    {run.kind}",
            f"  status:   {run.status.value}",
            f"  thread:   {run.thread or '-'}",
            f"  owner:    {owner}",
            f"  created:  {_when(run.created_at)}",
            f"  started:  {_when(run.started_at)}",
            f"  ended:    {_when(run.ended_at)}",
        ]
        if run.error:
            lines.append(f"  error:    {run.error}")
        for line in lines:
            console.print(line, markup=False, highlight=False)
        table = Table(title=f"nodes ({len(run.nodes)} attempts)")
        for column in ("ended", "node", "attempt", "worker", "queue wait", "ran", "outcome"):
            table.add_column(column)
        for node in run.nodes:
            table.add_row(
                _when(node.ended_at),
                escape(node.task_type),
                str(node.attempt),
                escape(node.worker),
                f"{node.queue_wait_ms:.0f} ms",
                f"{node.run_ms:.0f} ms",
                escape(node.outcome + (f": {node.error[:200]}" if node.error else "")),
            )
        console.print(table)

    _run(show())


@runs_app.command("cancel")
def runs_cancel(
    run_id: str,
    redis: RedisOption = DEFAULT_URL,
    namespace: NamespaceOption = "nn",
    action: Annotated[
        str,
        typer.Option(
            help="interrupt: stop, keep its checkpoints (resume it on its thread later); "
            "rollback: stop and remove its checkpoints."
        ),
    ] = "interrupt",
) -> None:
    """Cancel a run. A queued run is cancelled at once; a running one within a heartbeat of its
    coordinator process, which withdraws the run's tasks (workers cancel those in flight).

    Examples:

    \b
        nervenet runs cancel 3f2a9c1e-...
        nervenet runs cancel 3f2a9c1e-... --action rollback
    """

    async def cancel() -> None:
        async with Pool.from_url(redis, namespace=namespace) as pool:
            outcome = await pool.runs.cancel(run_id, action)
        if outcome == "cancelled":
            console.print(f"run {run_id} cancelled ({action})", markup=False, highlight=False)
        else:
            console.print(
                f"run {run_id}: {action} requested; its coordinator process carries it out "
                "within a heartbeat (or whichever takes the run over, if its own died)",
                markup=False,
                highlight=False,
            )

    _run(cancel())


@app.command()
def dashboard(
    redis: RedisOption = DEFAULT_URL,
    namespace: NamespaceOption = "nn",
    host: Annotated[
        str, typer.Option(help="Address to listen on (default: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8321,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="NERVENET_DASHBOARD_TOKEN",
            show_default=False,
            help="Action token (16+ characters) that unlocks retry, drop and cancel; without "
            "one the dashboard is read-only. Prefer the environment variable.",
        ),
    ] = None,
    sample_every: Annotated[
        float, typer.Option(min=0.2, help="Seconds between the samples sparklines draw.")
    ] = 5.0,
    signing_secret: SigningSecretOption = None,
) -> None:
    """Serve the web dashboard: queues, workers, limits, runs, escalations, /metrics.

    Every value is read from Redis, so it can be restarted (or several run) without losing
    anything. Read-only unless started with an action token, which an operator types once into
    the page to unlock retry, drop and cancel.

    Examples:

    \b
        nervenet dashboard --redis redis://localhost:6379/0     # http://127.0.0.1:8321
        NERVENET_DASHBOARD_TOKEN=$(openssl rand -hex 16) nervenet dashboard --host 0.0.0.0
    """
    from .dashboard import INSTALL_HINT, create_app

    try:
        import uvicorn
    except ImportError:
        raise _fail(ConfigurationError(INSTALL_HINT)) from None
    if token is not None and len(token) < 16:
        raise _fail(ConfigurationError("the action token must be 16 characters or more"))
    try:
        pool = Pool.from_url(redis, namespace=namespace, signing_secret=signing_secret)
        web = create_app(pool, token=token, sample_every=sample_every)
    except NervenetError as exc:
        raise _fail(exc) from None
    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        console.print(
            f"[bold yellow]note:[/] listening on {escape(host)}: anyone who can reach it sees "
            "task types, run ids and errors (read-only, no token given)"
        )
    console.print(
        f"dashboard on http://{escape(host)}:{port} for {pool.transport.description} "
        f"({'actions need the token' if token else 'read-only'})"
    )
    uvicorn.run(web, host=host, port=port, log_level="warning", lifespan="on")


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

    \b
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
