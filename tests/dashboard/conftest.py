"""Fixtures of the dashboard tests: the real ``nervenet dashboard`` command as a child process
(killed by PID after the test) and a headless Chromium driven by Selenium (Debian's ``chromium``
and ``chromium-driver``; missing under CI=true is a failure, never a skip)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "core"))

from core_support import NERVENET, child_env
from redis_server import free_port, redis_required

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


class Dashboard:
    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=20, **kwargs)


@pytest.fixture
async def start_dashboard(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await start_dashboard(redis_url, token=None)``: a running ``nervenet dashboard``."""
    started: list[Dashboard] = []

    async def start(redis_url: str, *, token: str | None = None) -> Dashboard:
        port = free_port()
        log = tmp_path / f"dashboard-{port}.log"
        args = [NERVENET, "dashboard", "--redis", redis_url, "--port", str(port)]
        args += ["--sample-every", "0.3"]
        env = child_env(**({"NERVENET_DASHBOARD_TOKEN": token} if token else {}))
        with log.open("wb") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        dashboard = Dashboard(f"http://127.0.0.1:{port}", process, log)
        started.append(dashboard)
        deadline = time.monotonic() + 30
        async with dashboard.client() as client:
            while True:
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        return dashboard
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the dashboard did not start:\n{log.read_text()}")
                await asyncio.sleep(0.1)

    yield start
    for dashboard in started:
        if dashboard.process.poll() is None:
            dashboard.process.send_signal(signal.SIGTERM)
            try:
                dashboard.process.wait(10)
            except subprocess.TimeoutExpired:
                dashboard.process.kill()
                dashboard.process.wait()
        print(f"--- dashboard {dashboard.url}:\n{dashboard.log.read_text()[-5000:]}")


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium (Selenium), quit after the test."""
    if shutil.which(CHROMIUM) is None or shutil.which(CHROMEDRIVER) is None:
        message = (
            "chromium and chromium-driver are needed: apt-get install chromium chromium-driver"
        )
        if redis_required():  # CI=true: the browser test must run
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
