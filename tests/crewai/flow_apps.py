"""Flows used by the tests: the same classes run plainly and distributed (``flow_apps:...``).

A method that kicks off a crew uses ``CREWS[name]`` when a test put a distributed crew there,
else the plain crew: the flow's own code is the same both ways.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import crew_apps
from crew_fakes import finished
from crewai import CrewOutput
from crewai.flow.async_feedback.types import HumanFeedbackPending
from crewai.flow.flow import Flow, and_, listen, or_, router, start
from crewai.flow.human_feedback import human_feedback
from crewai.flow.persistence import persist
from crewai.flow.persistence.base import FlowPersistence
from nervenet_crewai import DistributedCrew, PauseForFeedback
from pydantic import BaseModel

CREWS: dict[str, DistributedCrew] = {}
"""Distributed crews by name, set by tests; empty: plain CrewAI crews."""
METHOD_RUNS: list[str] = []
"""Methods that ran (not answered from the journal), in this process."""


def kickoff_sequential(topic: str) -> CrewOutput:
    crew = CREWS.get("seq")
    if crew is None:
        return finished(crew_apps.sequential_crew().kickoff(inputs={"topic": topic}))
    return finished(crew.kickoff(inputs={"topic": topic}))


class Tally(BaseModel):
    id: str = ""
    topic: str = "tides"
    rounds: int = 0
    notes: list[str] = []


# CrewAI's public Flow types `state` as Any (its conversational mixin's declaration comes first
# in the MRO, ahead of the runtime Flow's `state -> T`): methods read it into typed locals.


class LoopFlow(Flow[Tally]):
    """A router sends the flow round a loop until three rounds are done (typed state)."""

    @start()
    def begin(self) -> str:
        METHOD_RUNS.append("begin")
        self.state.notes.append(f"begin {self.state.topic}")
        return "begun"

    @listen(or_(begin, "again"))
    def step(self) -> int:
        METHOD_RUNS.append("step")
        time.sleep(float(os.environ.get("FLOW_STEP_SECONDS", "0")))
        self.state.rounds += 1
        rounds: int = self.state.rounds
        self.state.notes.append(f"round {rounds}")
        return rounds

    @router(step)
    def check(self) -> str:
        METHOD_RUNS.append("check")
        return "again" if self.state.rounds < 3 else "finished"

    @listen("finished")
    def wrap_up(self) -> dict[str, Any]:
        METHOD_RUNS.append("wrap_up")
        return {"rounds": self.state.rounds, "notes": list(self.state.notes)}


class JoinFlow(Flow[dict[str, Any]]):
    """``and_`` and ``or_`` joins over two parallel branches (unstructured state)."""

    @start()
    def split(self) -> str:  # (not `fork`: that would shadow CrewAI's classmethod Flow.fork)
        self.state["split"] = True
        return "split"

    @listen(split)
    async def north(self, value: str) -> str:
        self.state["north"] = f"{value}-north"
        return "north"

    @listen(split)
    def south(self) -> str:
        self.state["south"] = "south"
        return "south"

    @listen(or_(north, south))
    def first(self) -> str:
        self.state.setdefault("firsts", 0)
        self.state["firsts"] += 1
        return "first"

    @listen(and_(north, south))
    async def joined(self) -> str:
        # A flow's output is its last method's: `first` (fired by the earlier branch) must end
        # before `joined` (fired by the later one), or plain and distributed runs may each end on
        # either; on a loaded machine `first`'s thread started late (seen once in CI).
        await asyncio.sleep(0.2)
        return f"{self.state['north']}+{self.state['south']}"


class Article(BaseModel):
    topic: str
    body: str


class CrewFlow(Flow[Tally]):
    """Crews inside methods: a research crew, then another kickoff on what it found."""

    @start()
    def research(self) -> str:
        METHOD_RUNS.append("research")
        return kickoff_sequential(self.state.topic).raw

    @listen(research)
    def follow_up(self, found: str) -> Article:
        METHOD_RUNS.append("follow_up")
        output = kickoff_sequential(f"{self.state.topic} after {found}")
        self.state.notes.append(output.raw)
        return Article(topic=self.state.topic, body=output.raw)


def persisted_flow(persistence: FlowPersistence) -> type[Flow[Tally]]:
    """A flow class with class-level ``@persist(persistence)`` (CrewAI resolves the backend
    when the decorator runs, so a test that knows its Redis URL defines the class then)."""

    @persist(persistence)
    class PersistedFlow(Flow[Tally]):
        @start()
        def one(self) -> int:
            self.state.rounds += 1
            rounds: int = self.state.rounds
            return rounds

        @listen(one)
        def two(self) -> int:
            self.state.rounds += 10
            rounds: int = self.state.rounds
            return rounds

    return PersistedFlow


class TypoFlow(Flow[dict[str, Any]]):
    """A router naming a label nobody listens to (``"aprove"``)."""

    @start()
    def decide(self) -> str:
        return "go"

    @router(decide)
    def route(self) -> str:
        return "aprove"

    @listen("approve")
    def approved(self) -> str:
        return "approved"


class Opaque:
    """Not JSON, not a model: a durable flow cannot store it."""


class OpaqueFlow(Flow[dict[str, Any]]):
    @start()
    def make(self) -> str:
        self.state["ok"] = 1
        return "made"

    @listen(make)
    def leak(self) -> Any:
        return Opaque()


class CrashFlow(Flow[dict[str, Any]]):
    @start()
    def fine(self) -> str:
        self.state["fine"] = True
        return "fine"

    @listen(fine)
    def crash(self) -> str:
        raise ValueError("the ledger is locked")


class ReviewFlow(Flow[dict[str, Any]]):
    """A method that asks a human (``@human_feedback``)."""

    @start()
    @human_feedback(message="Approve the draft?")
    def draft(self) -> str:
        return "a draft"


class SetStateFlow(Flow[dict[str, Any]]):
    """A method that puts a value JSON cannot hold (a set) into the state."""

    @start()
    def stamp(self) -> str:
        self.state["ports"] = {"Brest", "Vigo"}
        return "stamped"


class ForEachFlow(Flow[dict[str, Any]]):
    """One method kicks the crew off for several inputs (``kickoff_for_each``)."""

    @start()
    def survey(self) -> list[str]:
        inputs = [{"topic": t} for t in ("tides", "winds")]
        crew = CREWS.get("seq")
        made = crew_apps.sequential_crew() if crew is None else crew
        return [finished(output).raw for output in made.kickoff_for_each(inputs)]


class FeedbackLater:
    """A feedback provider that pauses the flow (as a web or chat integration would)."""

    def request_feedback(self, context: Any, flow: Any) -> str:
        raise HumanFeedbackPending(context=context)


def review_later_flow(persistence: FlowPersistence) -> type[Flow[dict[str, Any]]]:
    """A plain flow paused for human feedback, persisted by ``persistence``."""

    @persist(persistence)
    class ReviewLater(Flow[dict[str, Any]]):
        @start()
        @human_feedback(message="Approve the draft?", provider=FeedbackLater())
        def draft(self) -> str:
            self.state["draft"] = "v1"
            return "v1"

        @listen(draft)
        def publish(self, review: Any) -> str:
            return f"published {self.state['draft']} after {review.feedback!r}"

    return ReviewLater


def judge(feedback: str, outcomes: Sequence[str]) -> str:
    """A deterministic stand-in for the LLM that collapses feedback to an outcome."""
    METHOD_RUNS.append("collapse")
    return next(o for o in outcomes if o in feedback.lower())


class Draft(BaseModel):
    id: str = ""
    topic: str = "tides"
    drafts: int = 0
    log: list[str] = []


class ReviewLoopFlow(Flow[Draft]):
    """Asks a human to review each draft (pausing the flow); routes on the outcome the feedback
    collapses to: ``revise`` goes round again, ``approved`` publishes."""

    @start()
    def write(self) -> str:
        METHOD_RUNS.append("write")
        self.state.drafts += 1
        self.state.log.append(f"wrote {self.state.topic} v{self.state.drafts}")
        return f"{self.state.topic} v{self.state.drafts}"

    @listen(or_(write, "rewrite"))
    @human_feedback(
        message="Publish this draft?",
        emit=["approved", "revise"],
        llm="gpt-4o-mini",
        provider=PauseForFeedback(callback_info={"channel": "#reviews"}),
    )
    def review(self) -> str:
        METHOD_RUNS.append("review")
        return f"{self.state.topic} v{self.state.drafts}"

    @listen("revise")
    def rewrite(self) -> str:
        METHOD_RUNS.append("rewrite")
        time.sleep(float(os.environ.get("FLOW_REWRITE_SECONDS", "0")))
        feedback = self.last_human_feedback.feedback if self.last_human_feedback else ""
        self.state.drafts += 1
        self.state.log.append(f"rewrote after {feedback!r}")
        return "rewritten"

    @listen("approved")
    def publish(self) -> dict[str, Any]:
        METHOD_RUNS.append("publish")
        review = self.last_human_feedback
        assert review is not None
        self.state.log.append(f"published {review.output} ({review.outcome})")
        return {"published": review.output, "feedback": review.feedback}

    def _collapse_to_outcome(self, feedback: str, outcomes: Any, llm: Any) -> str:
        return judge(feedback, outcomes)


class Reviewer:
    """A synchronous feedback provider (a reviewer that answers at once)."""

    def request_feedback(self, context: Any, flow: Any) -> str:
        METHOD_RUNS.append("asked")
        return "revise" if flow.state.drafts < 2 else "approved"


class AutoReviewFlow(ReviewLoopFlow):
    """ReviewLoopFlow with a provider that answers instead of pausing."""

    @listen(or_("write", "rewrite"))
    @human_feedback(
        message="Publish this draft?",
        emit=["approved", "revise"],
        llm="gpt-4o-mini",
        provider=Reviewer(),
    )
    def review(self) -> str:
        METHOD_RUNS.append("review")
        return f"{self.state.topic} v{self.state.drafts}"


GATHERING = threading.Barrier(12, timeout=20)
"""Passed only when 12 runs are inside ``WaitingFlow.wait`` at once."""


class WaitingFlow(Flow[dict[str, Any]]):
    """A sync method that blocks (as one waiting for its crew does)."""

    @start()
    def wait(self) -> int:
        return GATHERING.wait()
