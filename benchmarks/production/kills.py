"""``kill -9`` of a coordinator process: what central loses, and how nervenet's runs move on."""

from __future__ import annotations

import time
from typing import Any

import redis
from plan import TIMEOUT, Plan
from systems import Deployment, nervenet_coordinators, nervenet_stack

from nervenet.keys import Keys


def central_kill(d: Deployment, clients: int) -> dict[str, Any]:
    """Central's one process holds ``clients`` workflows, then dies: all of them are lost."""
    runner = d.runners[0]
    runner.send(
        "closed", clients=clients, warmup=0.0, seconds=60.0, prefix="kill", drain=1.0, progress=True
    )
    time.sleep(3.0)
    in_flight = runner.last_progress.get("in_flight", 0)
    done = runner.last_progress.get("done", 0)
    runner.kill()
    return {
        "clients": clients,
        "in_flight_at_kill": in_flight,
        "lost": in_flight,
        "done_before": done,
    }


def nervenet_kill(plan: Plan) -> dict[str, Any]:
    """Two coordinator processes run durable workflows; one is killed; the other finishes them."""
    owners_key = Keys("nn").workflow_owners
    with nervenet_stack(plan, target="nervenet_app:durable_graph") as (url, _server, _workers):
        coordinators = nervenet_coordinators(url, plan, 2, durable=True)
        try:
            victim, survivor = coordinators
            victim_id = victim.info["process_id"]
            keys = [
                c.send(
                    "closed",
                    clients=plan.kill_clients // 2,
                    index=k,
                    of=2,
                    warmup=0.0,
                    seconds=plan.kill_seconds,
                    prefix="durable",
                    drain=TIMEOUT,
                    timeout=TIMEOUT,
                )
                for k, c in enumerate(coordinators)
            ]
            time.sleep(plan.kill_seconds / 2)
            client = redis.Redis.from_url(url, decode_responses=True)
            victim.kill()
            killed_at = time.monotonic()
            owned = {str(k): str(v) for k, v in client.hgetall(owners_key).items()}
            orphans = sorted(run for run, owner in owned.items() if owner == victim_id)
            moved: dict[str, float] = {}
            while len(moved) < len(orphans) and time.monotonic() - killed_at < 30:
                now = client.hmget(owners_key, orphans) if orphans else []
                for run, owner in zip(orphans, now, strict=True):
                    if run not in moved and owner != victim_id:
                        moved[run] = time.monotonic() - killed_at
                time.sleep(0.02)
            asked = survivor.send("await_runs", runs=orphans, timeout=TIMEOUT)
            waited = survivor.wait(asked, TIMEOUT + 30)
            own = survivor.wait(keys[1], plan.kill_seconds + TIMEOUT + 60)
            client.close()
        finally:
            for c in coordinators:
                c.stop()
    finished = [r for r in waited["records"] if r[2] == "ok"]
    own_ok = sum(1 for r in own["records"] if r[4] == "ok")
    takeover = sorted(moved.values())
    return {
        "in_flight_at_kill": len(orphans),
        "resumed": len(moved),
        "lost": len(orphans) - len(finished),
        "errors": [r[2] for r in waited["records"] if r[2] != "ok"][:3],
        "takeover_first_s": takeover[0] if takeover else None,
        "takeover_all_s": takeover[-1] if takeover else None,
        "all_finished_s": max((r[1] for r in finished), default=None),
        "survivor_own_ok": own_ok,
        "survivor_own_bad": len(own["records"]) - own_ok,
        "takeovers_counted": waited["takeovers"],
    }
