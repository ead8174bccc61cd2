"""The data-quality report: its numbers against the lake, its filters, and its charts as a real
browser (headless Chromium) draws them, from the CLI's file and from the service's page."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
import structlog
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.api.dependencies import current_settings
from app.application.report import dst_days, report_timezone
from app.application.runner import run_batch
from app.cli import app as cli
from app.infrastructure.settings import Settings
from app.main import app
from app.wiring import open_platform
from tests.integration.conftest import NOW, read_table

ROOT = Path(__file__).resolve().parents[2]
#: Screenshots of the browser tests, for a person to look at (CI keeps the folder).
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "test-artifacts"))
CHARTS = ["completeness", "estimates", "load", "profile", "quarantine", "batches"]
RANGE = {"from": "2025-03-01", "to": "2025-04-30"}


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The bundled sample (March and April 2025, Europe/London, rows for every rule) run once."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("report") / "lake", _env_file=None)  # type: ignore[call-arg]
    with open_platform(settings) as platform:
        result = run_batch(platform, now=NOW)
    assert result.status == "succeeded", result.error
    return settings


@pytest.fixture
def client(lake: Settings) -> Iterator[TestClient]:
    app.dependency_overrides[current_settings] = lambda: lake
    yield TestClient(app)
    app.dependency_overrides.clear()


def test_dst_days_are_the_local_days_of_23_and_25_hours() -> None:
    assert dst_days("Europe/London", date(2025, 1, 1), date(2025, 12, 31)) == [date(2025, 3, 30), date(2025, 10, 26)]
    assert dst_days("Australia/Sydney", date(2025, 4, 1), date(2025, 4, 30)) == [date(2025, 4, 6)]
    assert dst_days("UTC", date(2025, 1, 1), date(2025, 12, 31)) == []
    assert report_timezone({"a": "Europe/Berlin", "b": "Europe/London", "c": "Europe/London"}, None) == "Europe/London"
    assert report_timezone({"a": "Europe/Berlin", "b": "Europe/London"}, "a") == "Europe/Berlin"


def test_the_summary_holds_the_lakes_numbers(client: TestClient, lake: Settings) -> None:
    response = client.get("/quality/summary", params=RANGE)
    assert response.status_code == 200, response.text
    summary = response.json()

    with open_platform(lake) as platform:
        gold = read_table(platform, "gold_daily_meter_energy")
        silver = read_table(platform, "silver_readings")
        quarantine = read_table(platform, "quarantine_readings")
    assert summary["meters"] == len(pc.unique(gold["meter_id"]))
    assert summary["dst_days"] == ["2025-03-30"]
    assert len(summary["completeness"]["by_day"]) == 61
    # Every silver interval counted once, estimates by method as silver holds them.
    categories = summary["estimates"]["by_category"]
    assert sum(categories.values()) == silver.num_rows
    methods = pc.value_counts(pc.drop_null(silver["estimation_method"])).to_pylist()
    assert {m["values"]: m["counts"] for m in methods} == {k: v for k, v in categories.items() if k != "read"}
    assert summary["quarantine"]["rows"] == quarantine.num_rows
    by_rule = pc.value_counts(quarantine["rule"]).to_pylist()
    assert summary["quarantine"]["by_rule"] == {r["values"]: r["counts"] for r in by_rule}
    # The worst meter is the one with the lowest mean completeness over the days.
    means: dict[str, list[float]] = {}
    for row in gold.to_pylist():
        means.setdefault(row["meter_id"], []).append(row["completeness"])
    lowest = min(means, key=lambda m: (sum(means[m]) / 61, m))
    assert summary["completeness"]["worst_meters"][0]["meter_id"] == lowest
    assert summary["meter"] == lowest
    assert [b["status"] for b in summary["batches"]] == ["succeeded"]
    assert set(summary["batches"][0]["layers"]) == {"bronze", "silver", "gold"}


def test_the_filters_narrow_the_days_and_bad_ones_are_refused(client: TestClient) -> None:
    narrow = client.get("/quality/summary", params={"from": "2025-03-29", "to": "2025-03-31"}).json()
    assert [d["date"] for d in narrow["completeness"]["by_day"]] == ["2025-03-29", "2025-03-30", "2025-03-31"]
    assert narrow["dst_days"] == ["2025-03-30"]

    unknown = client.get("/quality/summary", params={"source": "nope"})
    assert unknown.status_code == 422 and "unknown source 'nope'" in unknown.text
    backwards = client.get("/quality/summary", params={"from": "2025-04-02", "to": "2025-04-01"})
    assert backwards.status_code == 422 and "after --to" in backwards.text
    not_a_day = client.get("/report", params={"from": "yesterday"})
    assert not_a_day.status_code == 422 and "is not a date" in not_a_day.text


# --- in a browser ----------------------------------------------------------------------------------


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "no Chromium here: install Debian's `chromium` package (.ci/run does) to run the browser tests"
        if os.environ.get("REQUIRE_BROWSER") or os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _rendered(url: str, screenshot: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Each chart's traces, data points and drawn marks, and the console's errors, once every
    chart has been laid out; a full-page screenshot on the way."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            # The page must need nothing from outside: any request but the page's own fails the test.
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url.split("?")[0])
                       else (errors.append(f"request to {route.request.url}"), route.abort()))  # fmt: skip
            page.goto(url, wait_until="load")
            page.wait_for_function(
                "document.querySelectorAll('.chart').length > 0 && "
                "Array.from(document.querySelectorAll('.chart')).every(g => g._fullLayout)",
                timeout=30_000,
            )
            charts = page.evaluate(
                """() => Array.from(document.querySelectorAll('.chart')).map(g => ({
                    id: g.id,
                    traces: g.data.length,
                    points: g.data.reduce((n, t) => n + (t.z ? t.z.length * (t.z[0] || []).length
                        : (t.x || t.y || []).length), 0),
                    marks: g.querySelectorAll('.point, .hm image, .js-line, .scatterlayer .trace path').length,
                }))"""
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return charts, errors


def _check(charts: list[dict[str, Any]], errors: list[str]) -> None:
    assert errors == []
    assert [c["id"] for c in charts] == [f"chart-{name}" for name in CHARTS]
    for chart in charts:
        assert chart["traces"] > 0 and chart["points"] > 0 and chart["marks"] > 0, chart


@pytest.mark.slow
def test_the_report_file_draws_every_chart_in_chromium(lake: Settings, tmp_path: Path) -> None:
    _chromium()
    out = tmp_path / "report.html"
    env = {"DATA_DIR": str(lake.data_dir), "LOG_FORMAT": "json"}
    logging = structlog.get_config()
    try:
        result = CliRunner().invoke(
            cli, ["report", "--out", str(out), "--from", "2025-03-01", "--to", "2025-04-30"], env=env
        )
    finally:  # the CLI logs to the runner's stderr, closed once it returns: later tests must not
        structlog.configure(**logging)
    assert result.exit_code == 0, result.output
    assert "report: " in result.output and out.stat().st_size > 1_000_000  # plotly.js is inside

    charts, errors = _rendered(out.as_uri(), ARTIFACTS / "report-file.png")

    _check(charts, errors)


@pytest.mark.slow
def test_the_services_report_page_draws_every_chart_in_chromium(lake: Settings) -> None:
    _chromium()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, "DATA_DIR": str(lake.data_dir), "LOG_FORMAT": "json"}
    env.pop("API_KEYS", None)
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"uvicorn did not start: {server.stdout.read().decode() if server.stdout else ''}")
                time.sleep(0.2)

        charts, errors = _rendered(f"{base}/report?from=2025-03-01&to=2025-04-30", ARTIFACTS / "report-api.png")

        _check(charts, errors)
    finally:
        server.terminate()
        server.wait(timeout=10)
