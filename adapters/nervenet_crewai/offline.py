"""The switches that keep CrewAI off the network, for tests, examples and air-gapped workers.

CrewAI reads them once, when it is imported, so :func:`go_offline` must run before the first
``import crewai`` anywhere in the process. This module therefore imports nothing from CrewAI, and
the package's ``__init__`` loads its CrewAI-based parts lazily: ``from nervenet_crewai.offline
import go_offline`` is safe to put at the very top of an app.

What each switch stops (measured with CrewAI 1.15.30, see ``tests/crewai/test_crew_offline.py``):

* ``CREWAI_DISABLE_TELEMETRY`` / ``CREWAI_DISABLE_TRACKING``: the anonymous telemetry exporter,
  which resolves a remote host on every kickoff. Not ``OTEL_SDK_DISABLED``, which CrewAI also
  honours: it switches off the OpenTelemetry SDK for the whole process, the app's own traces
  (and nervenet's spans) included;
* ``CREWAI_TRACING_ENABLED=false``: the trace batch upload to CrewAI's platform;
* ``CREWAI_DISABLE_VERSION_CHECK``: the PyPI version check a ``verbose=True`` crew makes;
* ``CREWAI_TESTING``: the "last run" file CrewAI writes into the working directory.
"""

from __future__ import annotations

import os
import sys

from nervenet.errors import ConfigurationError

OFFLINE_ENV: dict[str, str] = {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
    "CREWAI_TESTING": "true",
}


def go_offline(storage_dir: str | None = None) -> None:
    """Set CrewAI's offline switches (keeping any value the environment already chose).

    ``storage_dir`` moves CrewAI's local sqlite store (``CREWAI_STORAGE_DIR``), e.g. to a
    temporary directory in tests. Raises :class:`ConfigurationError` if CrewAI was imported
    before with telemetry still on: the switches would come too late to matter.
    """
    if "crewai" in sys.modules and not _telemetry_disabled():
        raise ConfigurationError(
            "crewai was imported before go_offline(); call it first thing in the program "
            "(before any `import crewai`), or set CREWAI_DISABLE_TELEMETRY=true in the "
            "environment"
        )
    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
    if storage_dir is not None:
        os.environ.setdefault("CREWAI_STORAGE_DIR", os.path.abspath(storage_dir))


def _telemetry_disabled() -> bool:
    return any(
        os.environ.get(name, "").lower() in ("1", "true", "yes")
        for name in ("CREWAI_DISABLE_TELEMETRY", "OTEL_SDK_DISABLED", "CREWAI_DISABLE_TRACKING")
    )
