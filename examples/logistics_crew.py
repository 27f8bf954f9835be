"""A CrewAI crew on nervenet: shipment updates, parse -> check exceptions -> notify.

Three agents in a sequential crew. The dispatcher parses a free-text carrier update into a
``ShipmentUpdate`` (``output_pydantic``); the exceptions desk reads it and flags delays, damage
and customs holds (a guardrail insists on a verdict it can act on); the notifier writes the
customer message from both. The crew is ordinary CrewAI code; the port is one line::

    output = logistics_crew().kickoff(inputs=...)                              # before
    crew = distribute_crew(logistics_crew, pool=pool, name="logistics")        # after
    output = crew.kickoff(inputs=...)      # same CrewOutput; each agent's work on a worker

The LLM is a deterministic fake by default (``nervenet_crewai.testing.FakeLLM`` playing the
three roles: no key, no network; ``LOGISTICS_LATENCY`` sets its per-call delay, 0.05 s by
default). ``LOGISTICS_LLM=openai/gpt-4o-mini`` (or any CrewAI
model string) uses a real model instead, with that provider's API key.

On one machine, nothing to install (embedded pool, two workers in this process)::

    python examples/logistics_crew.py                      # 12 updates, printed
    python examples/logistics_crew.py --kickoffs 1000      # 1,000 kickoffs through the pool

On Redis, workers in other processes (run from the repository root)::

    nervenet worker examples.logistics_crew:crew --redis redis://localhost:6379/0
    nervenet worker examples.logistics_crew:crew --redis redis://localhost:6379/0
    NERVENET_REDIS_URL=redis://localhost:6379/0 python examples/logistics_crew.py --kickoffs 1000

Kickoffs use run ids ``logistics-<n>``: run the same command again and finished tasks are
answered from the workers' result cache (for 24 h) instead of being run again.
"""

from __future__ import annotations

# CrewAI reads its telemetry switches when it is imported: keep it off the network first.
from nervenet_crewai.offline import go_offline

go_offline()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from crewai import LLM, Agent, Crew, CrewOutput, Task  # noqa: E402
from crewai.llms.base_llm import BaseLLM  # noqa: E402
from crewai.tasks.task_output import TaskOutput  # noqa: E402
from nervenet_crewai import distribute_crew  # noqa: E402
from nervenet_crewai.testing import FakeLLM  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from nervenet import Pool  # noqa: E402

CARRIER_UPDATES = [
    "SHP-{n:04d} departed Rotterdam on schedule, ETA Hamburg 2026-12-03",
    "SHP-{n:04d} delayed at Antwerp by port congestion, new ETA 2026-12-05",
    "SHP-{n:04d} held by customs in Felixstowe pending invoice",
    "SHP-{n:04d} delivered to Lyon depot, 2 pallets damaged",
    "SHP-{n:04d} in transit Milan to Vienna, ETA 2026-12-02",
    "SHP-{n:04d} arrived Gdansk, awaiting pickup",
]


class ShipmentUpdate(BaseModel):
    shipment_id: str
    event: str
    location: str
    eta: str | None = None


# --- the fake model ---------------------------------------------------------------------------
class FakeLogisticsLLM(FakeLLM):
    """Plays each of the three agents from the prompt alone, like a model would; deterministic."""

    latency: float = 0.05

    def final_answer(self, prompt: str) -> str:
        if "Carrier update:" in prompt:
            return json.dumps(_parse(prompt.split("Carrier update:", 1)[1].splitlines()[0]))
        if "Notify the customer" in prompt:
            return _notify(prompt)
        return _check(prompt)


def _parse(update: str) -> dict[str, Any]:
    shipment = re.search(r"SHP-\d+", update)
    place = re.search(r"(?:at|in|to|from|arrived|depot|Rotterdam|Lyon)\s+([A-Z][a-z]+)", update)
    eta = re.search(r"\d{4}-\d{2}-\d{2}", update)
    return {
        "shipment_id": shipment.group() if shipment else "unknown",
        "event": update.split(" ", 1)[-1].strip(),
        "location": place.group(1) if place else "unknown",
        "eta": eta.group() if eta else None,
    }


def _check(text: str) -> str:
    records = re.findall(r"\{[^{}]*\"shipment_id\"[^{}]*\}", text)
    event = json.loads(records[-1])["event"].lower() if records else ""
    for word, kind in (("delayed", "DELAY"), ("customs", "CUSTOMS HOLD"), ("damaged", "DAMAGE")):
        if word in event:
            return f"EXCEPTION {kind}: needs action"
    return "OK: no exception"


def _notify(text: str) -> str:
    shipment = re.findall(r"SHP-\d+", text)
    verdict = "there is an issue we are handling" if "EXCEPTION" in text else "all is on track"
    return f"Dear customer, about {shipment[-1] if shipment else 'your shipment'}: {verdict}."


# --- the crew, as a CrewAI user writes it ------------------------------------------------------
def actionable(output: TaskOutput):  # type: ignore[no-untyped-def]
    # No return annotation: CrewAI rejects the string form postponed annotations give it.
    if output.raw.startswith(("EXCEPTION", "OK")):
        return True, output.raw
    return False, "Start with EXCEPTION <kind> or OK so the operations team can route it"


def model() -> BaseLLM:
    name = os.environ.get("LOGISTICS_LLM")
    if name:
        return LLM(model=name)
    return FakeLogisticsLLM(
        model="fake/logistics", latency=float(os.environ.get("LOGISTICS_LATENCY", "0.05"))
    )


def logistics_crew() -> Crew:
    llm = model()
    dispatcher = Agent(
        role="Dispatcher",
        goal="Turn carrier updates into structured shipment records",
        backstory="Ten years reading terse carrier messages.",
        llm=llm,
    )
    desk = Agent(
        role="Exceptions desk",
        goal="Spot delays, damage and customs holds that need action",
        backstory="Decides what operations must look at today.",
        llm=llm,
    )
    notifier = Agent(
        role="Customer notifier",
        goal="Tell customers what happens to their shipment, plainly",
        backstory="Writes short, calm customer messages.",
        llm=llm,
    )
    parse = Task(
        description="Parse the update into a shipment record. Carrier update: {update}",
        expected_output="The shipment record as JSON",
        agent=dispatcher,
        output_pydantic=ShipmentUpdate,
    )
    check = Task(
        description="Check the ShipmentUpdate record for exceptions",
        expected_output="EXCEPTION <kind>: ... or OK: ...",
        agent=desk,
        context=[parse],
        guardrail=actionable,  # type: ignore[arg-type]  # unannotated for CrewAI (see there)
    )
    notify = Task(
        description="Notify the customer about the shipment",
        expected_output="A two-sentence customer message",
        agent=notifier,
        context=[parse, check],
    )
    return Crew(agents=[dispatcher, desk, notifier], tasks=[parse, check, notify])


url = os.environ.get("NERVENET_REDIS_URL")
pool = Pool.from_url(url) if url else Pool.local()
crew = distribute_crew(logistics_crew, pool=pool, name="logistics")


# --- running it --------------------------------------------------------------------------------
def updates(count: int) -> list[dict[str, str]]:
    return [{"update": CARRIER_UPDATES[n % len(CARRIER_UPDATES)].format(n=n)} for n in range(count)]


async def main(kickoffs: int, in_flight: int) -> None:
    async with pool:
        if pool.is_embedded:
            for _ in range(2):  # no worker process can reach an embedded pool
                await pool.serve(crew)
        started = time.perf_counter()
        results = await crew.kickoff_for_each_async(
            updates(kickoffs),
            run_ids=[f"logistics-{n}" for n in range(kickoffs)],
            max_concurrency=in_flight,
        )
        seconds = time.perf_counter() - started
    outputs = [r for r in results if isinstance(r, CrewOutput)]
    failed = len(results) - len(outputs)
    flagged = sum(1 for o in outputs if o.tasks_output[1].raw.startswith("EXCEPTION"))
    tokens = sum(o.token_usage.total_tokens for o in outputs)
    if kickoffs <= 20:
        for output in outputs:
            record = output.tasks_output[0].pydantic
            assert isinstance(record, ShipmentUpdate)
            print(f"{record.shipment_id} {output.tasks_output[1].raw[:22]:<22} {output.raw}")
    print(
        f"{len(outputs)} kickoffs in {seconds:.1f} s ({len(outputs) / seconds:.0f}/s, "
        f"{in_flight} in flight): {flagged} exceptions flagged, {failed} failed, "
        f"{tokens} tokens"
    )
    for error in (r for r in results if not isinstance(r, CrewOutput)):
        print(f"failed: {error}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--kickoffs", type=int, default=12)
    parser.add_argument("--in-flight", type=int, default=64)
    options = parser.parse_args()
    asyncio.run(main(options.kickoffs, options.in_flight))
