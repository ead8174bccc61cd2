"""The service under load while a batch writes the same lake: uvicorn in a subprocess on the
loopback, at least 2,000 GETs across every read route at 16 at once, and a `run-batch` in another
process. No answer is a server error, and every page of rows is exactly what one committed
version of its table holds."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from app.application.runner import run_batch
from app.domain.schemas import GOLD_DAILY_METER_ENERGY, GOLD_HOURLY_PORTFOLIO_LOAD, QUARANTINE_READINGS
from app.infrastructure.settings import Settings
from app.infrastructure.source_config import SAMPLE_DIR
from app.wiring import open_platform
from bench.api_load import ROOT, fire, lake_env, read_paths, service

pytestmark = pytest.mark.slow

MONTH = ("2025-03-25", "2025-04-05")
HOURS = ("2025-03-31T12:00:00Z", "2025-04-01T12:00:00Z")


def _expected(lake: Path, table: str, version: int, query: dict[str, Any]) -> list[dict[str, Any]]:
    """The page as one version of the table holds it, through Delta's own reader."""
    layer = {GOLD_DAILY_METER_ENERGY.name: "gold", GOLD_HOURLY_PORTFOLIO_LOAD.name: "gold"}.get(table, "quarantine")
    rows = DeltaTable(str(lake / layer / table), version=version).to_pyarrow_table()
    if table == GOLD_DAILY_METER_ENERGY.name:
        rows = rows.filter(
            pc.and_(
                pc.equal(rows["meter_id"], query["meter"]),
                pc.and_(
                    pc.greater_equal(rows["local_date"], date.fromisoformat(MONTH[0])),
                    pc.less_equal(rows["local_date"], date.fromisoformat(MONTH[1])),
                ),
            )
        ).sort_by([("local_date", "ascending"), ("direction", "ascending")])
    elif table == GOLD_HOURLY_PORTFOLIO_LOAD.name:
        hours = rows["hour_utc"]
        low, high = (pc.cast(pc.strptime(h, "%Y-%m-%dT%H:%M:%SZ", "us"), hours.type) for h in HOURS)
        rows = rows.filter(pc.and_(pc.greater_equal(hours, low), pc.less(hours, high))).sort_by(
            [("hour_utc", "ascending"), ("direction", "ascending")]
        )
        rows = rows.slice(0, 48)
    else:
        rows = rows.filter(pc.equal(rows["batch_id"], query["batch_id"])).sort_by(
            [("source_file", "ascending"), ("line_number", "ascending")]
        )
        rows = rows.slice(0, 50)
    return list(orjson.loads(orjson.dumps(rows.to_pylist())))


def test_reads_under_load_while_a_batch_writes_are_whole_versions(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    settings = Settings(data_dir=lake, _env_file=None)  # type: ignore[call-arg]
    march, april = sorted(SAMPLE_DIR.glob("meter_readings/*.csv"))
    with open_platform(settings) as platform:
        first = run_batch(platform, input_path=str(march))
    assert first.status == "succeeded" and first.batch_id is not None
    routes = read_paths("MTR-0001", MONTH, HOURS, first.batch_id)
    tables = {
        "/meters/{id}/daily": GOLD_DAILY_METER_ENERGY.name,
        "/portfolio/hourly": GOLD_HOURLY_PORTFOLIO_LOAD.name,
        "/quarantine": QUARANTINE_READINGS.name,
    }
    query = {"meter": "MTR-0001", "batch_id": first.batch_id}

    with service(lake) as base:
        writer = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "run-batch", "--input", str(april)],
            env=lake_env(lake),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        answers = []
        deadline = time.monotonic() + 300
        # Rounds of every route until the batch has ended and 2,000 answers are in, then one more
        # round, which sees the batch's versions.
        while writer.poll() is None or len(answers) < 2000:
            answers += fire(base, list(routes.values()) * 25, 16)[0]
            assert time.monotonic() < deadline, "the load did not finish in time"
        answers += fire(base, list(routes.values()) * 5, 16)[0]
        _, errors = writer.communicate()
    assert writer.returncode == 0, errors

    assert len(answers) >= 2000
    statuses = Counter(a.status for a in answers)
    assert set(statuses) == {200}, statuses
    by_path = {path: name for name, path in routes.items()}
    seen: dict[str, set[int]] = {}
    checked: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for answer in answers:
        table = tables.get(by_path[answer.path])
        if table is None:
            continue
        body = orjson.loads(answer.body)
        version = body["version"]
        seen.setdefault(table, set()).add(version)
        if (table, version) not in checked:
            checked[table, version] = _expected(lake, table, version, query)
        assert body["items"] == checked[table, version], (table, version)
    # The batch committed while the service answered: readers saw the gold tables move on.
    assert len(seen[GOLD_DAILY_METER_ENERGY.name]) >= 2 and len(seen[GOLD_HOURLY_PORTFOLIO_LOAD.name]) >= 2, seen
