"""A CrewAI Flow on nervenet: each shipment update triaged by a crew, then routed.

``ShipmentFlow`` is ordinary CrewAI Flow code: ``intake`` kicks off the logistics crew of
``examples/logistics_crew.py`` (parse -> check exceptions -> notify), a ``@router`` sends
exceptions to ``escalate`` and the rest to ``close``, and the typed state keeps the record. The
port is one line::

    output = await ShipmentFlow().kickoff_async(inputs=...)                   # before
    flows = distribute_flow(ShipmentFlow, pool=pool, name="shipments")        # after
    output = await flows.kickoff_async(inputs=...)   # same output; the crew's agents on workers

Every run is durable: if this process dies, another process with the flow on the same Redis
finishes its runs, from the method that was in flight (finished methods and finished agent
tasks are not run again). The fake model needs no key and no network (see the crew example).

On one machine, nothing to install (embedded pool, two workers in this process)::

    python examples/logistics_flow.py                      # 12 updates
    python examples/logistics_flow.py --runs 500           # 500 flow runs at once

On Redis, the crew's workers in other processes (run from the repository root)::

    nervenet worker examples.logistics_crew:crew --redis redis://localhost:6379/0
    NERVENET_REDIS_URL=redis://localhost:6379/0 python examples/logistics_flow.py --runs 500
"""

from __future__ import annotations

# CrewAI reads its telemetry switches when it is imported: keep it off the network first.
from nervenet_crewai.offline import go_offline

go_offline()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import time  # noqa: E402

from crewai import CrewOutput  # noqa: E402
from crewai.flow.flow import Flow, listen, router, start  # noqa: E402
from logistics_crew import crew, logistics_crew, pool, updates  # noqa: E402
from nervenet_crewai import distribute_flow  # noqa: E402
from pydantic import BaseModel  # noqa: E402

#: The crew inside ``intake``: distributed (agent work on workers) unless ``PLAIN`` is set.
PLAIN = False


class Shipment(BaseModel):
    id: str = ""
    update: str = ""
    shipment_id: str = ""
    verdict: str = ""
    message: str = ""
    escalated: bool = False


class ShipmentFlow(Flow[Shipment]):
    @start()
    async def intake(self) -> str:
        inputs = {"update": self.state.update}
        if PLAIN:
            output = await logistics_crew().kickoff_async(inputs=inputs)
        else:
            output = await crew.kickoff_async(inputs=inputs)
        assert isinstance(output, CrewOutput)  # not streaming
        record = output.tasks_output[0].pydantic
        self.state.shipment_id = getattr(record, "shipment_id", "unknown")
        verdict = output.tasks_output[1].raw
        self.state.verdict = verdict
        self.state.message = output.raw
        return verdict

    @router(intake)
    def triage(self) -> str:
        return "exception" if self.state.verdict.startswith("EXCEPTION") else "routine"

    @listen("exception")
    def escalate(self) -> str:
        self.state.escalated = True
        return f"{self.state.shipment_id}: escalated ({self.state.verdict})"

    @listen("routine")
    def close(self) -> str:
        return f"{self.state.shipment_id}: closed"


flows = distribute_flow(ShipmentFlow, pool=pool, name="shipments")


async def main(runs: int) -> None:
    async with pool:
        if pool.is_embedded:
            for _ in range(2):  # no worker process can reach an embedded pool
                await pool.serve(crew)
        started = time.perf_counter()
        submitted = [
            await flows.asubmit(values, run_id=f"shipment-flow-{n}")
            for n, values in enumerate(updates(runs))
        ]
        outputs = await asyncio.gather(*(run.result() for run in submitted))
        seconds = time.perf_counter() - started
    if runs <= 20:
        for output in outputs:
            print(output)
    escalated = sum(1 for output in outputs if "escalated" in output)
    print(f"{len(outputs)} flow runs in {seconds:.1f} s: {escalated} escalated")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=12)
    options = parser.parse_args()
    asyncio.run(main(options.runs))
