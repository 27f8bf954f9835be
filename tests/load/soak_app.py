"""Handlers for the soak test's worker processes: short, with a little CPU and sleep."""

import asyncio
from typing import Any

from nervenet import Handlers

handlers = Handlers()


@handlers.task("soak/step")
async def step(value: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.001)
    return {"n": value["n"], "step": value["step"] + 1}
