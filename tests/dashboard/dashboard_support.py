"""Constants the dashboard tests share (a module of its own: ``conftest`` is not importable by
name when several test folders are collected together)."""

from __future__ import annotations

import os
from pathlib import Path

#: Where screenshots go (CI keeps this directory as an artifact).
ARTIFACTS = Path(os.environ.get("NERVENET_TEST_ARTIFACTS", Path(__file__).parents[2] / "artifacts"))
#: The action token the tests start dashboards with.
TOKEN = "test-action-token-0123456789"
