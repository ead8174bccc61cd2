"""The benchmark's inputs and its DuckDB pipelines: the data is what the README says, and the
reference and the plain pipeline compute what local mode computes (so the ratios compare the
same work)."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from app.application.runner import run_batch
from app.domain.schemas import GOLD_DAILY_METER_ENERGY, QUARANTINE_READINGS, SILVER_READINGS
from app.wiring import LocalPlatform
from bench import stream_throughput
from bench.duckdb_reference import run_reference
from bench.generate import JUNK, generate
from bench.plain_duckdb import run_plain
from tests.integration.conftest import NOW
from tests.integration.kafka import bootstrap_servers, fresh_topic

METERS = 20
ROWS_PER_DAY = METERS * 48


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench") / "in"
    generate(3 * ROWS_PER_DAY, folder, meters=METERS, start=date(2025, 3, 29))  # 30 March: 46 intervals
    return folder


def _rows(folder: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="") as handle:
            rows += list(csv.DictReader(handle))
    return rows


def test_the_generator_writes_a_file_per_local_day_with_duplicates_junk_and_mixed_units(inputs: Path) -> None:
    files = sorted(p.name for p in inputs.glob("*.csv"))
    assert files == ["readings_2025-03-29.csv", "readings_2025-03-30.csv", "readings_2025-03-31.csv"]
    rows = _rows(inputs)
    keys = [(r["meter_id"], r["timestamp"]) for r in rows]
    distinct = len(set(keys))
    assert distinct == METERS * (48 + 46 + 48)  # the spring-forward day has 46 half-hours
    assert len(rows) - distinct == sum(int(METERS * n * 0.01) for n in (48, 46, 48))  # 1% read twice
    assert {r["unit"] for r in rows} >= {"kWh", "Wh", "MWh"}
    junk = sum((r["value"], r["unit"]) in JUNK for r in rows)
    assert 0 < junk < 0.02 * len(rows)
    assert {r["timestamp"][-6:] for r in rows} == {"+00:00", "+01:00"}


def test_the_reference_accepts_quarantines_and_deduplicates_as_local_mode_does(
    inputs: Path, tmp_path: Path, platform: LocalPlatform
) -> None:
    reference = run_reference(str(inputs / "*.csv"), tmp_path / "reference", now=NOW)
    result = run_batch(platform, input_path=str(inputs), now=NOW)
    assert result.status == "succeeded", result.error
    reconciliation = result.reconciliation
    assert reconciliation is not None
    assert reconciliation.rows_read == reference["bronze_rows"] == len(_rows(inputs))
    assert reconciliation.rows_accepted == reference["silver_rows"]
    assert reconciliation.rows_quarantined == reference["quarantine_rows"] > 0
    assert (
        reconciliation.duplicates_replaced
        == reference["bronze_rows"] - reference["silver_rows"] - (reference["quarantine_rows"])
    )
    gold = DeltaTable(platform.store.location(GOLD_DAILY_METER_ENERGY.name)).to_pyarrow_table()
    assert gold.num_rows == reference["gold_daily_rows"] == METERS * 3


def test_the_plain_pipeline_keeps_the_reads_local_mode_keeps_and_quarantines_as_many_rows_per_rule(
    inputs: Path, tmp_path: Path, platform: LocalPlatform
) -> None:
    plain = run_plain(str(inputs / "*.csv"), tmp_path / "plain", now=NOW)
    result = run_batch(platform, input_path=str(inputs), now=NOW)
    assert result.status == "succeeded", result.error
    reconciliation = result.reconciliation
    assert reconciliation is not None

    def table(name: str) -> list[dict[str, Any]]:
        return DeltaTable(platform.store.location(name)).to_pyarrow_table().to_pylist()

    def parquet(name: str) -> list[dict[str, Any]]:
        return pq.read_table(tmp_path / "plain" / f"{name}.parquet").to_pylist()

    # Silver as meter, interval and energy: the platform's read intervals (not those its VEE
    # estimated), the last read of a duplicated interval winning in both.
    project = {
        (r["meter_id"], r["interval_start_utc"], round(r["energy_kwh"], 9))
        for r in table(SILVER_READINGS.name)
        if r["estimation_method"] is None
    }
    silver = {(r["meter_id"], r["interval_start_utc"], round(r["energy_kwh"], 9)) for r in parquet("silver")}
    assert silver == project
    assert plain["silver_rows"] == len(project) == reconciliation.rows_accepted

    # The plain pipeline names a missing and an unparseable value one rule; the platform's rules
    # it lacks (missing meter id, DST gap, ambiguous wall time, ...) break no row of this input.
    merged = {"value_missing": "value_missing_or_unparseable", "value_unparseable": "value_missing_or_unparseable"}
    project_rules = Counter(merged.get(r["rule"], r["rule"]) for r in table(QUARANTINE_READINGS.name))
    assert Counter(r["rule"] for r in parquet("quarantine")) == project_rules
    assert plain["quarantine_rows"] == reconciliation.rows_quarantined > 0

    # Gold per local day, DST-aware: 30 March has 46 half-hours.
    gold = {
        (r["meter_id"], r["local_date"]): (r["expected_interval_count"], round(r["completeness"], 9))
        for r in table(GOLD_DAILY_METER_ENERGY.name)
    }
    daily = {
        (r["meter_id"], r["local_date"]): (r["expected_interval_count"], round(r["completeness"], 9))
        for r in parquet("gold_daily")
    }
    assert daily == gold
    assert {expected for (_, day), (expected, _) in daily.items() if day == date(2025, 3, 30)} == {46}


@pytest.mark.slow
def test_the_stream_benchmark_measures_every_reading_it_sends(capsys: pytest.CaptureFixture[str]) -> None:
    servers = bootstrap_servers()
    with fresh_topic(servers, partitions=3) as topic:
        arguments = ["--readings", "2000", "--meters", "200", "--rate", "2000", "--trigger", "1"]
        figures = stream_throughput.main([*arguments, "--bootstrap", servers, "--topic", topic, "--timeout", "120"])
    assert figures.readings == 2000  # every reading sent, found in bronze and timed to its silver commit
    assert figures.micro_batches >= 1 and figures.readings_per_second > 0
    assert 0 < figures.p50 <= figures.p95 <= figures.max_latency < 120
    out = capsys.readouterr().out
    assert "| readings | meters | seconds | readings/s | p50 s | p95 s |" in out
    assert "command: python -m bench.stream_throughput --readings 2000" in out
