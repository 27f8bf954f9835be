"""A worker subprocess for tests: offline, network-guarded, fast heartbeats.

    python worker_proc.py REDIS_URL MODULE:ATTR [CONCURRENCY]

Prints ``ready`` once registered; runs until killed.
"""

from __future__ import annotations

import asyncio
import os
import sys

from nervenet_crewai.offline import go_offline
from net_guard import NetworkGuard

go_offline()

from nervenet import Pool, PoolSettings  # noqa: E402
from nervenet.loader import load_target  # noqa: E402

FAST = PoolSettings(heartbeat_interval=0.2, visibility_timeout=1.0, lease_ttl=1.0, block_ms=200)


async def main(url: str, target: str, concurrency: int) -> None:
    async with Pool.from_url(url, settings=FAST) as pool:
        await pool.serve(load_target(target), concurrency=concurrency)
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    # Each attempt is written to NET_GUARD_LOG as it happens: a SIGKILL skips any `finally`.
    with NetworkGuard(report_to=os.environ.get("NET_GUARD_LOG")):
        asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 8))
