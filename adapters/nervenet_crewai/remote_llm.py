"""Coordinator side: an LLM that answers by asking a worker, standing in for each crew LLM.

A distributed crew's agents never call their LLM on the coordinator (their whole task runs on a
worker), but CrewAI itself sometimes does: converting an answer that is not JSON for
``output_pydantic``/``output_json``, and string guardrails (an ``LLMGuardrail`` runs a small agent).
With every LLM of the coordinator's crew swapped for a :class:`RemoteLLM`, those calls run on a
worker too, and the coordinator never opens a connection to a model provider.

A RemoteLLM also keeps the token counters of the LLM it stands for: workers report what each
LLM spent and the run adds it here, so ``Crew.calculate_usage_metrics`` sums them exactly as it
would have summed the real LLMs' counters (including CrewAI counting a shared LLM once per agent).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from crewai.llms.base_llm import BaseLLM
from pydantic import BaseModel, PrivateAttr

from nervenet.errors import ConfigurationError

from .wire import Usage

if TYPE_CHECKING:
    from .run import CrewRun


class RemoteLLM(BaseLLM):
    """Stands for the LLM at ``place`` in one crew run; calls go to ``<name>/llm``."""

    llm_type: str = "nervenet-remote"
    _real: BaseLLM = PrivateAttr()
    _place: str = PrivateAttr()
    _run: CrewRun = PrivateAttr()
    _usage_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def standing_for(cls, real: BaseLLM, place: str, run: CrewRun) -> RemoteLLM:
        remote = cls(
            model=real.model,
            provider=real.provider,
            temperature=real.temperature,
            stop=list(real.stop),
            stream=real.stream,
        )
        remote._real = real
        remote._place = place
        remote._run = run
        return remote

    @property
    def place(self) -> str:
        return self._place

    def call(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: type[BaseModel] | None = None,
    ) -> Any:
        self._refuse_tools(tools, available_functions)
        return self._run.call_llm_sync(self, messages, response_model)

    async def acall(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: type[BaseModel] | None = None,
    ) -> Any:
        self._refuse_tools(tools, available_functions)
        return await self._run.call_llm(self, messages, response_model)

    def add_usage(self, usage: Usage) -> None:
        """Count tokens a worker spent on the real LLM (called from the run's threads)."""
        with self._usage_lock:
            for name, value in usage.items():
                if name in self._token_usage:
                    self._token_usage[name] += int(value)

    # What CrewAI asks an LLM about itself is answered by the real one.
    def supports_function_calling(self) -> bool:
        check = getattr(self._real, "supports_function_calling", None)
        return bool(check()) if callable(check) else False

    def supports_stop_words(self) -> bool:
        return self._real.supports_stop_words()

    def supports_multimodal(self) -> bool:
        return self._real.supports_multimodal()

    def get_context_window_size(self) -> int:
        return self._real.get_context_window_size()

    def _refuse_tools(self, tools: Any, available_functions: Any) -> None:
        if tools or available_functions:
            raise ConfigurationError(
                f"CrewAI made an LLM call with tools on the coordinator ({self._place}); "
                "tools only run inside an agent's task on a worker"
            )
