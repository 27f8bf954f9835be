"""Handlers served by a worker process with OpenTelemetry configured (in-memory exporter); its
spans are written to ``$NERVENET_SPANS_FILE`` as JSON when the process exits."""

from __future__ import annotations

import atexit
import json
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from span_records import span_record

from nervenet import Handlers

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)


@atexit.register
def _dump() -> None:
    path = os.environ.get("NERVENET_SPANS_FILE")
    if path:
        with open(path, "w") as f:
            json.dump([span_record(s) for s in exporter.get_finished_spans()], f)


handlers = Handlers()


@handlers.task("traced/step")
async def step(value: Any) -> Any:
    with trace.get_tracer("app").start_as_current_span("chat model"):
        return value


@handlers.task("traced/fail")
async def fail(value: Any) -> Any:
    raise ValueError("the model refused")
