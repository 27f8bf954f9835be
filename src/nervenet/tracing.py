"""OpenTelemetry spans across the process hop (the ``otel`` extra; nothing without it).

Tracing is on for a pool when ``opentelemetry`` is importable and the application installed a
tracer provider before the pool started (``trace.set_tracer_provider(...)``): the API's default
provider records nothing, so nervenet then skips even creating spans. Spans follow the
OpenTelemetry messaging conventions:

* a dispatch is a ``PRODUCER`` span ``send <task type>`` in the coordinator process, a child of
  whatever span is current there (the run's span below, a node's span, the caller's own). Its
  context travels in the task envelope's ``trace`` field as a W3C ``traceparent``;
* the worker runs the handler inside a ``CONSUMER`` span ``process <task type>`` whose parent is
  that context, and current while the handler runs, so spans the node makes (an LLM client's
  instrumentation, LangSmith's OTel export) nest under it, in the same trace;
* a durable run is an ``INTERNAL`` span ``invoke_workflow <kind>`` (the GenAI agent convention)
  around the run in whichever process drives it.

Attributes: ``messaging.system`` ``nervenet``, ``messaging.operation.type`` (``send`` /
``process``), ``messaging.destination.name`` (the task type), ``messaging.message.id`` (the
task id), ``messaging.message.conversation_id`` (the run), ``nervenet.attempt``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

#: The name nervenet's spans are created under.
INSTRUMENTATION = "nervenet"


def tracer_if_enabled() -> Any | None:
    """A tracer when the app configured OpenTelemetry, else None (checked once per pool)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return trace.get_tracer(INSTRUMENTATION)


def _attributes(operation: str, task_type: str, task_id: str, run_id: str, attempt: int) -> Any:
    return {
        "messaging.system": "nervenet",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": task_type,
        "messaging.message.id": task_id,
        "messaging.message.conversation_id": run_id,
        "nervenet.attempt": attempt,
    }


def start_send(
    tracer: Any, task_type: str, task_id: str, run_id: str, attempt: int
) -> tuple[Any, str]:
    """Start a dispatch's PRODUCER span; returns it and the ``traceparent`` for the envelope."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    span = tracer.start_span(
        f"send {task_type}",
        kind=trace.SpanKind.PRODUCER,
        attributes=_attributes("send", task_type, task_id, run_id, attempt),
    )
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
    return span, carrier.get("traceparent", "")


def failed(span: Any, error: BaseException | str) -> None:
    """Mark a span failed: an exception, or the text of an error a handler replied with."""
    from opentelemetry.trace import Status, StatusCode

    if isinstance(error, BaseException):
        span.record_exception(error)
        error = f"{type(error).__name__}: {error}"
    span.set_status(Status(StatusCode.ERROR, error[:500]))


@contextlib.contextmanager
def processing(
    tracer: Any, traceparent: str, task_type: str, task_id: str, run_id: str, attempt: int
) -> Iterator[Any]:
    """The worker's CONSUMER span around a handler, current while it runs."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    with tracer.start_as_current_span(
        f"process {task_type}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=_attributes("process", task_type, task_id, run_id, attempt),
    ) as span:
        yield span


@contextlib.contextmanager
def running_workflow(tracer: Any, kind: str, run_id: str) -> Iterator[Any]:
    """The INTERNAL span of a durable run, current while it runs in this process."""
    with tracer.start_as_current_span(
        f"invoke_workflow {kind}",
        attributes={
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.agent.name": kind,
            "nervenet.run_id": run_id,
        },
    ) as span:
        yield span
