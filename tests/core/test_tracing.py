"""OpenTelemetry across real processes: one trace from the caller's span through the run's span,
each dispatch's PRODUCER span in the coordinator process, the CONSUMER span in the worker process
and the spans a handler makes, with correct parents; failures marked. Read with the SDK's
in-memory exporter in both processes."""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from core_support import WorkerProcesses, registered
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from span_records import span_record

from nervenet import Pool, RemoteTaskError
from nervenet.tracing import tracer_if_enabled

pytestmark = pytest.mark.redis


def test_without_a_configured_provider_nothing_is_traced() -> None:
    assert tracer_if_enabled() is None


async def test_one_trace_crosses_the_coordinator_and_worker_processes(
    redis_pool: Pool, redis_url: str, worker_processes: WorkerProcesses, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Set on this pool only: a global provider would trace every later test's pools too.
    redis_pool.tracer = provider.get_tracer("nervenet")
    spans_file = tmp_path / "worker-spans.json"
    worker = worker_processes.cli(
        redis_url, "traced_app:handlers", env={"NERVENET_SPANS_FILE": str(spans_file)}
    )
    await registered(redis_pool, worker)
    coordinator = redis_pool.coordinator("run-traced")

    async def body() -> bytes:
        await coordinator.dispatch("traced/step", b"1", task_id="run-traced/0", timeout=10)
        with contextlib.suppress(RemoteTaskError):
            await coordinator.dispatch(
                "traced/fail", b"2", task_id="run-traced/1", escalate_errors=False, timeout=10
            )
        return b"ok"

    with provider.get_tracer("caller").start_as_current_span("handle request"):
        handle = await redis_pool.workflows.start("traced/app", "run-traced", b"", body)
    assert await handle.result(timeout=20) == b"ok"
    worker.send_signal(signal.SIGTERM)
    assert await worker.exit_code() == 0
    here = [span_record(s) for s in exporter.get_finished_spans()]
    there = json.loads(spans_file.read_text())
    by_name = {s["name"]: s for s in here + there}

    request, run = by_name["handle request"], by_name["invoke_workflow traced/app"]
    send_ok, send_fail = by_name["send traced/step"], by_name["send traced/fail"]
    process_ok, process_fail = by_name["process traced/step"], by_name["process traced/fail"]
    model = by_name["chat model"]
    assert {s["trace_id"] for s in here + there} == {request["trace_id"]}
    assert run["parent_id"] == request["span_id"]
    assert (send_ok["kind"], send_ok["parent_id"]) == ("PRODUCER", run["span_id"])
    assert (process_ok["kind"], process_ok["parent_id"]) == ("CONSUMER", send_ok["span_id"])
    assert model["parent_id"] == process_ok["span_id"]
    assert process_fail["parent_id"] == send_fail["span_id"]
    assert (send_fail["status"], process_fail["status"], process_ok["status"]) == (
        "ERROR",
        "ERROR",
        "UNSET",
    )
    attributes: dict[str, Any] = process_ok["attributes"]
    assert attributes["messaging.destination.name"] == "traced/step"
    assert attributes["messaging.message.id"] == "run-traced/0"
    assert attributes["messaging.message.conversation_id"] == "run-traced"
