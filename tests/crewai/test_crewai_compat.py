"""The private CrewAI names the adapter uses are checked when it is imported."""

from __future__ import annotations

import subprocess
import sys

import pytest
from nervenet_crewai import _compat

pytestmark = pytest.mark.crewai


@pytest.mark.parametrize(
    ("break_it", "named"),
    [
        ("from crewai import Crew; del Crew._prepare_tools", "Crew._prepare_tools()"),
        ("import crewai.crews.utils as m; del m._resolve_crew_skills", "_resolve_crew_skills"),
        ("from crewai.flow.runtime import Flow; del Flow._restore_state", "Flow._restore_state()"),
    ],
)
def test_a_crewai_without_what_the_adapter_needs_is_refused_naming_the_tested_range(
    break_it: str, named: str
) -> None:
    code = (
        "from nervenet_crewai.offline import go_offline; go_offline()\n"
        f"{break_it}\nimport nervenet_crewai.crew"
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "CrewAIVersionError" in result.stderr
    assert named in result.stderr
    assert f"crewai{_compat.TESTED_CREWAI}" in result.stderr
