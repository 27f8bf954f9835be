"""Fixtures of the dashboard tests: the real ``nervenet dashboard`` command as a child process
(killed by PID after the test) and a headless Chromium driven by Selenium (Debian's ``chromium``
and ``chromium-driver``; missing under CI=true is a failure, never a skip)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nervenet.testing import Child, ChildProcesses, free_port, servers_required

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


class Dashboard:
    def __init__(self, url: str, child: Child) -> None:
        self.url = url
        self.child = child

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=20, **kwargs)


@pytest.fixture
async def start_dashboard(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await start_dashboard(redis_url, token=None)``: a running ``nervenet dashboard``."""
    children = ChildProcesses(env={"COLUMNS": "250", "NO_COLOR": "1"}, log_dir=tmp_path)

    async def start(redis_url: str, *, token: str | None = None) -> Dashboard:
        port = free_port()
        args = ["--redis", redis_url, "--port", str(port), "--sample-every", "0.3"]
        env = {"NERVENET_DASHBOARD_TOKEN": token} if token else {}
        child = children.nervenet("dashboard", *args, env=env)
        dashboard = Dashboard(f"http://127.0.0.1:{port}", child)
        deadline = time.monotonic() + 30
        async with dashboard.client() as client:
            while True:
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        return dashboard
                except httpx.TransportError:
                    pass
                child.check_running()
                if time.monotonic() > deadline:
                    raise AssertionError(f"the dashboard did not start:\n{child.output()}")
                await asyncio.sleep(0.1)

    yield start
    children.close(grace=10)
    for child in children.children:
        print(f"--- dashboard pid {child.pid}:\n{child.output(last=5000)}")


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium (Selenium), quit after the test."""
    if shutil.which(CHROMIUM) is None or shutil.which(CHROMEDRIVER) is None:
        message = (
            "chromium and chromium-driver are needed: apt-get install chromium chromium-driver"
        )
        if servers_required():  # CI=true: the browser test must run
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,1000")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
