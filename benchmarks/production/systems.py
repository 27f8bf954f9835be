"""How each system is deployed: its processes, their roles, and the environments they run in.

* central: one process (``runner_central.py``) runs every workflow with plain LangGraph.
* arq and Celery: a client process (``runner_<peer>.py``) and :data:`~plan.WORKERS` worker
  processes, in the peer's own venv (``setup.sh``), each worker running whole workflows.
* nervenet: K coordinator processes (``runner_nervenet.py``) and :data:`~plan.WORKERS`
  ``nervenet worker`` processes, in this interpreter's environment.

Every system but central gets a private ``redis-server`` on a free port.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from _common import Child, nervenet_worker, private_redis, wait_registered
from measure import Runner, Sampler, rss_kib
from phase import Phase, run_phase
from plan import WORKERS, Plan

from nervenet.testing import RedisServer

HERE = Path(__file__).resolve().parent
PEERS = Path(os.environ.get("NERVENET_PEERS_DIR", Path.home() / ".cache" / "nervenet-bench"))
NERVENET_WORKER_CONCURRENCY = 5_000
#: Celery's worker: threads (the graph is async, see celery_app), gossip and heartbeats off.
CELERY_WORKER = (
    *("-A", "celery_app", "worker", "--pool", "threads", "--concurrency", "1000"),
    *("--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"),
)


@dataclass
class Deployment:
    """One system's processes while its phases run."""

    name: str
    plan: Plan
    runners: list[Runner]
    """The processes that start workflows and wait for them (loadgen's protocol)."""
    roles: dict[str, list[int]]
    """PIDs by role (``coordinator``, ``worker``, ``redis``...): CPU and memory are per role."""
    holder: str
    """Role whose processes hold the in-flight workflows (their RSS per workflow is reported)."""
    url: str = ""
    workers: list[Child] = field(default_factory=list)
    baseline_kib: dict[int, int] = field(default_factory=dict)

    def scale_workers(self, count: int, sampler: Sampler) -> None:
        """Stop or start nervenet workers until ``count`` run, and wait for them to register."""
        while len(self.workers) > count:
            self.workers.pop().stop()
        while len(self.workers) < count:
            self.workers.append(worker("nervenet", self.url, len(self.workers) + 1, self.plan))
            sampler.watch([self.workers[-1].pid])
        wait_registered(self.url, self.workers)
        self.roles["worker"] = [w.pid for w in self.workers]


def peer_python(peer: str, program: str = "python") -> Path:
    """A program of a peer's venv; exits saying how to make the venvs when they are missing."""
    path = PEERS / peer / "bin" / program
    if not path.exists():
        sys.exit(f"{path} is missing: run `bash benchmarks/production/setup.sh` first")
    return path


def nervenet_env(url: str, plan: Plan) -> dict[str, str]:
    return {"NERVENET_REDIS_URL": url, "BENCH_UVLOOP": "1" if plan.uvloop else "0"}


def worker(
    system: str, url: str, index: int, plan: Plan, target: str = "nervenet_app:graph"
) -> Child:
    name = f"{system}-worker-{index}"
    if system == "nervenet":
        return nervenet_worker(
            target,
            url,
            name=name,
            concurrency=NERVENET_WORKER_CONCURRENCY,
            cwd=HERE,
            env=nervenet_env(url, plan),
        )
    if system == "arq":
        args = [str(peer_python("arq", "arq")), "arq_app.WorkerSettings"]
    else:
        args = [str(peer_python("celery", "celery")), *CELERY_WORKER, "-n", f"w{index}@%h"]
    return Child.run(name, args, cwd=HERE, env={"BENCH_REDIS_URL": url})


def nervenet_coordinators(
    url: str, plan: Plan, count: int, *, durable: bool = False
) -> list[Runner]:
    args = [sys.executable, "runner_nervenet.py", *(["--durable"] if durable else [])]
    env = nervenet_env(url, plan)
    if plan.max_runs is not None:
        env["BENCH_MAX_RUNS"] = str(max(1, plan.max_runs // count))
    prefix = "durable" if durable else "coordinator"
    return [Runner(f"{prefix}-{k}", args, cwd=HERE, env=env) for k in range(count)]


@contextlib.contextmanager
def nervenet_stack(
    plan: Plan, *, target: str = "nervenet_app:graph"
) -> Iterator[tuple[str, RedisServer, list[Child]]]:
    """A private ``redis-server`` and :data:`WORKERS` registered nervenet workers serving
    ``target``: yields (URL, server, workers) and stops them all on leaving."""
    with contextlib.ExitStack() as stack:
        url, server = stack.enter_context(private_redis())
        workers = [worker("nervenet", url, i + 1, plan, target) for i in range(WORKERS)]
        for w in workers:
            stack.callback(w.stop)
        wait_registered(url, workers)
        yield url, server, workers


@contextlib.contextmanager
def deploy(system: str, plan: Plan, sampler: Sampler) -> Iterator[Deployment]:
    """``system`` running, warmed up, its idle memory taken: stopped on leaving the block."""
    with contextlib.ExitStack() as stack:
        if system == "central":
            runners = [Runner("central", [sys.executable, "runner_central.py"], cwd=HERE, env={})]
            d = Deployment(system, plan, runners, {"central": [runners[0].pid]}, "central")
        elif system == "nervenet":
            url, server, workers = stack.enter_context(nervenet_stack(plan))
            runners = nervenet_coordinators(url, plan, plan.coordinators)
            roles = {
                "coordinator": [r.pid for r in runners],
                "worker": [w.pid for w in workers],
                "redis": [server.pid],
            }
            d = Deployment(system, plan, runners, roles, "coordinator", url, workers)
        else:
            url, server = stack.enter_context(private_redis())
            workers = [worker(system, url, i + 1, plan) for i in range(WORKERS)]
            for w in workers:
                stack.callback(w.stop)
            client = [str(peer_python(system)), f"runner_{system}.py", url]
            runners = [Runner(system, client, cwd=HERE, env={"BENCH_REDIS_URL": url})]
            roles = {
                "client": [runners[0].pid],
                "worker": [w.pid for w in workers],
                "redis": [server.pid],
            }
            d = Deployment(system, plan, runners, roles, "worker", url, workers)
        for r in d.runners:
            stack.callback(r.stop)
        stack.callback(lambda: [w.stop() for w in d.workers])  # scaling may have replaced some
        sampler.watch([pid for pids in d.roles.values() for pid in pids])
        # Warm up: imports, connections, workers joining; then the idle memory baseline.
        warm = run_phase(d, Phase("closed", 20, (0.0, 2.0), drain=30.0, prefix="warm"), sampler)
        if warm["errors"] or warm["ok_total"] == 0:
            raise RuntimeError(f"{system} failed its warm-up: {warm}")
        d.baseline_kib = {pid: rss_kib(pid) for pid in d.roles[d.holder]}
        yield d
