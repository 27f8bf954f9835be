"""``nervenet dashboard`` as an operator uses it: the pages in a real headless browser (with a
screenshot), hostile strings shown and never run, read-only unless started with a token,
actions refused without it and from other sites, clear pages for unknown ids, /metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import unquote_plus

import pytest
from dashboard_support import ARTIFACTS, TOKEN
from fast_settings import FAST
from scene import HOSTILE, HOSTILE_TYPE, Scene

from nervenet import Pool, RunCancelled, RunStatus

pytestmark = pytest.mark.redis


@pytest.fixture
async def scene(redis_url: str) -> AsyncIterator[Scene]:
    """A pool with a worker and the whole scene built; the blocked run released after."""
    scene = Scene()
    async with Pool.from_url(redis_url, settings=FAST) as pool:
        await pool.serve(scene.handlers())
        await scene.build(pool)
        scene.pool = pool
        yield scene
        scene.release.set()
        with contextlib.suppress(RunCancelled):  # a test cancelled it
            await asyncio.wait_for(scene.running.result(), 10)


async def test_the_pages_in_a_browser_show_everything_and_run_nothing_hostile(
    scene: Scene, redis_url: str, start_dashboard: Callable[..., Any], browser: Any
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import (
        text_to_be_present_in_element,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    def text_in(css: str, text: str) -> Any:
        return text_to_be_present_in_element((By.CSS_SELECTOR, css), text)

    dashboard = await start_dashboard(redis_url, token=TOKEN)
    await asyncio.sleep(1.2)  # a few sparkline samples
    loop = asyncio.get_running_loop()

    def visit(path: str) -> str:
        browser.get(dashboard.url + path)
        return str(browser.find_element(By.TAG_NAME, "main").text)

    overview = await loop.run_in_executor(None, visit, "/")
    queues = browser.find_element(By.ID, "queues").text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-overview.png"))
    sparklines = browser.find_elements(By.CSS_SELECTOR, "#queues svg.spark polyline")

    assert "shop/classify" in queues and "shop/wait" in queues
    assert HOSTILE_TYPE in queues  # shown as text
    assert "none alive" in queues
    assert "carrier-api" in overview
    assert "have no live owner" in overview  # the ghost run
    assert sparklines

    runs = await loop.run_in_executor(None, visit, "/runs")
    assert "stuck: owner not alive" in runs
    for run_id in ("order-0", "order-failed", "order-running", "order-queued", "order-ghost"):
        assert run_id in runs

    detail = await loop.run_in_executor(None, visit, "/runs/order-failed")
    browser.save_screenshot(str(ARTIFACTS / "dashboard-run.png"))
    bars = browser.find_elements(By.CSS_SELECTOR, "#timeline .timeline .ran")
    assert f"carrier said {HOSTILE}" in detail
    assert len(bars) == 2

    escalations = await loop.run_in_executor(None, visit, "/escalations")
    assert f"operator test {HOSTILE}" in escalations
    assert browser.execute_script("return window.__pwned === undefined")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018

    # Unlock with the token, then retry the operator's escalation from the page.
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "header form button").click()
    wait = WebDriverWait(browser, 10)
    await loop.run_in_executor(None, wait.until, text_in("header", "actions unlocked"))
    await loop.run_in_executor(None, visit, "/escalations")
    before = await scene.pool.escalations.count()
    row = browser.find_element(By.XPATH, "//tr[td[contains(., 'operator test')]]")
    row.find_element(By.XPATH, ".//button[text()='retry']").click()
    await loop.run_in_executor(None, wait.until, text_in("#notice", "requeued as"))
    notice = browser.find_element(By.ID, "notice").text

    assert "requeued as" in notice
    assert await scene.pool.escalations.count() == before - 1


async def test_a_read_only_dashboard_refuses_every_action_and_changes_nothing(
    scene: Scene, redis_url: str, start_dashboard: Callable[..., Any]
) -> None:
    dashboard = await start_dashboard(redis_url)
    [entry, *_] = await scene.pool.escalations.list()

    async with dashboard.client() as client:
        answers = [
            await client.post(f"/escalations/{entry.entry_id}/retry"),
            await client.post(f"/escalations/{entry.entry_id}/drop"),
            await client.post("/escalations/retry", data={"id": entry.entry_id}),
            await client.post("/runs/order-running/cancel", data={"action": "rollback"}),
            await client.post("/login", data={"token": TOKEN}),
        ]

    assert [a.status_code for a in answers] == [403] * 5
    assert "read-only" in answers[0].text
    assert (await scene.pool.escalations.list())[0].entry_id == entry.entry_id
    assert (await scene.pool.runs.get("order-running")).status is RunStatus.RUNNING


async def test_actions_need_the_token_and_a_request_from_the_dashboard_itself(
    scene: Scene, redis_url: str, start_dashboard: Callable[..., Any]
) -> None:
    dashboard = await start_dashboard(redis_url, token=TOKEN)
    entries = await scene.pool.escalations.list()
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    async with dashboard.client() as client:
        anonymous = await client.post(f"/escalations/{entries[0].entry_id}/drop")
        wrong = await client.post("/login", data={"token": "not-the-token-at-all"})
        cross_site = await client.post(
            f"/escalations/{entries[0].entry_id}/drop",
            headers={**bearer, "Origin": "https://evil.example"},
        )
        assert await scene.pool.escalations.count() == len(entries)
        bulk = await client.post(
            "/escalations/retry", data={"id": [e.entry_id for e in entries]}, headers=bearer
        )
        cancel = await client.post(
            "/runs/order-running/cancel", data={"action": "interrupt"}, headers=bearer
        )

    assert [anonymous.status_code, wrong.status_code, cross_site.status_code] == [403] * 3
    assert (bulk.status_code, cancel.status_code) == (303, 303)
    assert f"requeued {len(entries)} escalation(s)" in unquote_plus(bulk.headers["location"])
    assert await scene.pool.escalations.count() == 0
    with pytest.raises(RunCancelled):
        await scene.running.result(timeout=10)
    assert (await scene.pool.runs.get("order-running")).status is RunStatus.INTERRUPTED


async def test_unknown_ids_and_filters_get_a_clear_page(
    redis_url: str, start_dashboard: Callable[..., Any]
) -> None:
    dashboard = await start_dashboard(redis_url)

    async with dashboard.client() as client:
        run = await client.get("/runs/nobody")
        entry = await client.get("/escalations/garbage<b>")
        status = await client.get("/runs", params={"status": "<b>sleeping</b>"})

    assert (run.status_code, entry.status_code, status.status_code) == (404, 404, 404)
    assert "no run &#39;nobody&#39;" in run.text
    assert "is not an escalation id" in entry.text and "<b>" not in entry.text.split("<main>")[1]
    assert "unknown run status &#39;&lt;b&gt;sleeping&lt;/b&gt;&#39;" in status.text


async def test_metrics_expose_queues_workers_runs_and_escalations(
    scene: Scene, redis_url: str, start_dashboard: Callable[..., Any]
) -> None:
    dashboard = await start_dashboard(redis_url)

    async with dashboard.client() as client:
        metrics = (await client.get("/metrics")).text

    assert 'nervenet_queue_in_flight{task_type="shop/wait"} 1.0' in metrics
    assert 'nervenet_runs{status="running"} 2.0' in metrics  # order-running and the ghost
    assert "nervenet_escalations 2.0" in metrics
    assert "nervenet_workers 1.0" in metrics
    # The scene's process runs order-running (durable, no max_runs: counted, none waiting).
    process = scene.pool.process_id
    assert f'nervenet_process_runs{{process_id="{process}",state="running"}} 1.0' in metrics
    assert f'nervenet_process_runs{{process_id="{process}",state="waiting"}} 0.0' in metrics


@pytest.mark.cluster
async def test_the_dashboard_reads_a_cluster(
    cluster_url: str, start_dashboard: Callable[..., Any]
) -> None:
    scene = Scene()
    async with Pool.from_url(cluster_url, settings=FAST) as pool:
        await pool.serve(scene.handlers())
        await scene.run(pool, "order-c", "shop/classify", "shop/classify")
        dashboard = await start_dashboard(cluster_url)

        async with dashboard.client() as client:
            overview = await client.get("/")
            run = await client.get("/runs/order-c")
            metrics = await client.get("/metrics")

    assert overview.status_code == run.status_code == metrics.status_code == 200
    assert "shop/classify" in overview.text
    assert run.text.count('class="ran ok"') == 2
    assert 'nervenet_runs{status="succeeded"} 1.0' in metrics.text
