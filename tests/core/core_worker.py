"""A worker process like ``nervenet worker``, but with settings the CLI does not expose.

    python core_worker.py redis://127.0.0.1:6379/0 core_apps:handlers --max-deliveries 1

SIGUSR1 prints the stack of every asyncio task. Otherwise it does what ``nervenet.cli._serve``
does (SIGTERM/SIGINT stop it with a grace period) on a pool
built with explicit :class:`~nervenet.PoolSettings`: fast heartbeats and a ``max_deliveries`` of
the test's choosing (``nervenet worker`` has options for the former only).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from nervenet import Pool, PoolSettings, Worker
from nervenet.handlers import handlers_of
from nervenet.loader import load_target


def dump_tasks() -> None:
    """SIGUSR1: print where every task of the process waits (to diagnose a stuck worker)."""
    for task in asyncio.all_tasks():
        print(f"--- {task.get_coro()!r}", flush=True)
        task.print_stack(limit=15, file=sys.stdout)
    sys.stdout.flush()


async def serve(args: argparse.Namespace) -> None:
    settings = PoolSettings(
        heartbeat_interval=args.heartbeat_interval,
        visibility_timeout=args.visibility_timeout,
        lease_ttl=max(2 * args.heartbeat_interval, 1.0),
        max_deliveries=args.max_deliveries,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    pool = Pool.from_url(args.url, settings=settings)
    async with pool:
        worker = Worker(pool, handlers_of(load_target(args.target)), concurrency=args.concurrency)
        print(f"worker {worker.worker_id} serving {', '.join(sorted(worker.handlers))}", flush=True)
        await worker.run_until(stop, grace=args.grace)
        print(f"worker stopped after {worker.processed} task(s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("target")
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--heartbeat-interval", type=float, default=0.2)
    parser.add_argument("--visibility-timeout", type=float, default=1.0)
    parser.add_argument("--max-deliveries", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
