"""``nervenet_crewai.testing.FakeLLM``, the fake model every CrewAI test and benchmark uses."""

from __future__ import annotations

import pytest

pytest.importorskip("crewai")

import redis
from crewai import Crew
from nervenet_crewai.testing import FakeCall, FakeLLM, RedisCallCounter, research_crew

pytestmark = pytest.mark.crewai


def models(crew: Crew) -> list[str]:
    return [agent.llm.model for agent in crew.agents if isinstance(agent.llm, FakeLLM)]


def test_the_same_prompt_gets_the_same_answer_and_another_prompt_another() -> None:
    llm = FakeLLM(model="m")

    first, again, other = llm.call("a prompt"), llm.call("a prompt"), llm.call("another")

    assert first == again != other
    assert first.startswith("Thought: I now know the final answer\nFinal Answer: m:")


def test_observers_see_each_call_begin_and_end_and_a_failing_model_raises() -> None:
    seen: list[FakeCall] = []
    FakeLLM(model="up", observers=[seen.append]).call("hello")
    with pytest.raises(RuntimeError, match="fake model down is down"):
        FakeLLM(model="down", fail=True, observers=[seen.append]).call("hello")

    assert [(c.model, c.phase) for c in seen] == [
        ("up", "begin"),
        ("up", "end"),
        ("down", "failed"),
    ]
    assert seen[1].answer is not None and seen[1].started == seen[0].started


def test_a_tool_is_called_first_and_its_observation_quoted_in_the_answer() -> None:
    llm = FakeLLM(model="m", tool="lookup", tool_input={"port": "Brest"})

    action = llm.call([{"role": "user", "content": "find it"}])
    answer = llm.call(
        [
            {"role": "user", "content": "find it"},
            {"role": "assistant", "content": f"{action}\nObservation: quay 4"},
        ]
    )

    assert 'Action: lookup\nAction Input: {"port": "Brest"}' in action
    assert answer.endswith("(tool said quay 4)")


def test_the_redis_counter_counts_only_calls_on_workers_when_told(redis_url: str) -> None:
    everywhere = RedisCallCounter(redis_url, "calls")
    on_workers = RedisCallCounter(redis_url, "worker-calls", on_workers_only=True)
    llm = FakeLLM(model="m", observers=[everywhere, on_workers])

    llm.call("one")
    llm.call("two")

    client = redis.Redis.from_url(redis_url)
    assert (client.get("calls"), client.get("worker-calls")) == (b"2", None)
    client.close()


def test_the_research_crew_takes_one_llm_for_all_agents_or_one_each() -> None:
    shared = FakeLLM(model="shared")
    each = [FakeLLM(model=name) for name in ("a", "b", "c")]

    assert models(research_crew(shared)) == ["shared"] * 3
    assert models(research_crew(each)) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="one LLM or three"):
        research_crew(each[:2])
