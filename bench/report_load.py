"""Benchmark of the data-quality report on a large portfolio: the time to build it and the time a
browser takes to draw it.

    python -m bench.report_load [--meters 1000] [--days 90] [--work bench-data/report]

Generates `--meters` meters of half-hourly reads over `--days` local days (Europe/London, from
2025-03-01, so the clocks change inside) with `bench.generate`, runs them through `run-batch`,
writes the report with `energy-platform report`, then opens it in headless Chromium (Debian's
`chromium`) `--loads` times and prints the time from navigation until every chart is laid out
(median and worst). Target: under 3 s for 1,000 meters x 90 days.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from bench.generate import generate

ROOT = Path(__file__).resolve().parents[1]
START = date(2025, 3, 1)


def _cli(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def _page_loads(path: Path, loads: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no Chromium: install Debian's `chromium` package")
    seconds = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for _ in range(loads):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            started = time.perf_counter()
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_function(
                "Array.from(document.querySelectorAll('.chart')).every(g => g._fullLayout)", timeout=60_000
            )
            seconds.append(time.perf_counter() - started)
            if errors:
                raise SystemExit(f"the page failed: {errors}")
            page.close()
        browser.close()
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Benchmark of the report: build time and browser load time.")
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--work", type=Path, default=ROOT / "bench-data" / "report")
    parser.add_argument("--loads", type=int, default=5, help="page loads measured")
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    work = args.work / f"{args.meters}x{args.days}"
    files, lake = work / "files", work / "lake"
    env = {**os.environ, "DATA_DIR": str(lake), "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING"}
    if not (lake / "gold").exists():
        shutil.rmtree(work, ignore_errors=True)
        rows = generate(args.meters * args.days * 48, files, meters=args.meters, start=START)
        seconds = _cli(["run-batch", "--input", str(files / "*.csv")], env)
        print(f"lake: {rows:,} readings of {args.meters:,} meters over {args.days} days, run-batch {seconds:.1f}s")
    out = work / "report.html"
    last = START + timedelta(days=args.days - 1)
    build = _cli(["report", "--out", str(out), "--from", START.isoformat(), "--to", last.isoformat()], env)
    print(f"report: {out} ({out.stat().st_size / 1e6:.1f} MB) built in {build:.2f}s")
    loads = _page_loads(out, args.loads)
    median = statistics.median(loads)
    print(
        f"page load until every chart is drawn: median {median:.2f}s, worst {max(loads):.2f}s over {len(loads)} loads"
    )
    print(f"target < 3 s for 1,000 meters x 90 days: {'met' if median < 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
