"""Retention per layer (local mode): `retention apply` deletes exactly the rows older than each
layer's retention, records what it deleted, and vacuums; and the transaction identifiers batches
leave in a table's log stay bounded."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from app.application.retention import RetentionPolicy, apply_retention
from app.application.runner import run_batch
from app.domain.audit import RETENTION_APPLY
from app.domain.errors import ConfigurationError
from app.infrastructure.repositories import pandas_repository
from app.infrastructure.repositories.base import APP_ID, TRANSACTION_RETENTION, TRANSACTION_RETENTION_VALUE
from app.infrastructure.settings import Settings
from app.wiring import LocalPlatform, open_platform
from tests.integration.conftest import NOW, read_table, write_csv

CONFIG = '[sources.feed]\npath = "in"\nunit = "kWh"\ninterval_minutes = 60\n'


def _batch(platform: LocalPlatform, tmp_path: Path, name: str, rows: list[str], at: datetime) -> str:
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    path = write_csv(tmp_path / "in" / name, rows, header="meter_id,timestamp,value")
    result = run_batch(
        platform, source_name="feed", config_file=tmp_path / "sources.toml", input_path=str(path), now=at
    )
    assert result.status == "succeeded", result.error
    assert result.batch_id is not None
    return result.batch_id


def _day(meter: str, value: float, day: int) -> list[str]:
    return [f"{meter},2025-06-{day:02d}T{h:02d}:00Z,{value}" for h in range(24)]


def _by_batch(platform: LocalPlatform, table: str) -> dict[str, int]:
    rows = read_table(platform, table)
    counts = rows.group_by("batch_id").aggregate([("batch_id", "count")])
    return dict(zip(counts["batch_id"].to_pylist(), counts["batch_id_count"].to_pylist(), strict=True))


def _three_batches(platform: LocalPlatform, tmp_path: Path) -> list[str]:
    """Batches ingested 30 days, 10 days and 1 hour before NOW, each with one day of one meter
    and two quarantined rows (values that are not numbers)."""
    ages = (timedelta(days=30), timedelta(days=10), timedelta(hours=1))
    batches = []
    for n, age in enumerate(ages, start=1):
        rows = [*_day(f"M{n}", float(n), day=n), f"M{n},2025-06-{n:02d}T05:30Z,x", f"M{n},2025-06-{n:02d}T06:30Z,y"]
        batches.append(_batch(platform, tmp_path, f"{n}.csv", rows, NOW - age))
    return batches


def test_retention_deletes_exactly_the_rows_older_than_each_layer_keeps(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    first, second, third = _three_batches(platform, tmp_path)
    assert _by_batch(platform, "bronze_feed") == {first: 26, second: 26, third: 26}
    assert _by_batch(platform, "quarantine_readings") == {first: 2, second: 2, third: 2}
    silver, gold = read_table(platform, "silver_readings"), read_table(platform, "gold_daily_meter_energy")

    # Bronze keeps 15 days (the first batch goes), the quarantine 5 (the first two go); silver and gold are kept.
    result = apply_retention(platform, RetentionPolicy(bronze_days=15, quarantine_days=5), now=NOW)

    assert result.deleted == {"bronze_feed": 26, "quarantine_readings": 4}
    assert _by_batch(platform, "bronze_feed") == {second: 26, third: 26}
    assert _by_batch(platform, "quarantine_readings") == {third: 2}
    assert result.cutoffs == {"bronze": NOW - timedelta(days=15), "quarantine": NOW - timedelta(days=5)}
    # Vacuumed with the safe retention: the files the delete replaced stay for a week.
    assert result.vacuumed == {"bronze_feed": 0, "quarantine_readings": 0}
    assert read_table(platform, "silver_readings") == silver
    assert read_table(platform, "gold_daily_meter_energy") == gold
    assert DeltaTable(platform.store.location("bronze_feed")).history(1)[0]["operation"] == "DELETE"

    [record] = platform.metadata.list_audit(5, action=RETENTION_APPLY)
    assert record.outcome == "succeeded"
    assert record.details["deleted"] == {"bronze_feed": 26, "quarantine_readings": 4}
    assert record.details["retention_days"] == {"bronze": 15, "quarantine": 5}

    # Applied again at the same time: nothing more is older, and no table gets a commit.
    version = DeltaTable(platform.store.location("bronze_feed")).version()
    again = apply_retention(platform, RetentionPolicy(bronze_days=15, quarantine_days=5), now=NOW)
    assert again.deleted == {"bronze_feed": 0, "quarantine_readings": 0}
    assert DeltaTable(platform.store.location("bronze_feed")).version() == version


def test_silver_and_gold_retention_go_by_the_days_the_rows_describe(platform: LocalPlatform, tmp_path: Path) -> None:
    _three_batches(platform, tmp_path)
    # Keep the local days from 2025-06-02 on: the cutoff is midnight UTC starting that day.
    days = (NOW.date() - date(2025, 6, 2)).days
    result = apply_retention(platform, RetentionPolicy(silver_days=days, gold_days=days), now=NOW)

    assert result.deleted == {
        "silver_readings": 24,
        "gold_daily_meter_energy": 1,
        "gold_hourly_portfolio_load": 24,
    }
    silver = read_table(platform, "silver_readings")
    assert set(silver["local_date"].to_pylist()) == {date(2025, 6, 2), date(2025, 6, 3)}
    assert set(read_table(platform, "gold_daily_meter_energy")["meter_id"].to_pylist()) == {"M2", "M3"}
    hours = read_table(platform, "gold_hourly_portfolio_load")["hour_utc"]
    assert pc.min(hours).as_py() == datetime(2025, 6, 2, tzinfo=UTC) and len(hours) == 48
    assert read_table(platform, "bronze_feed").num_rows == 78  # bronze has no retention here


def test_no_retention_set_deletes_nothing_and_a_bad_one_is_refused(platform: LocalPlatform, tmp_path: Path) -> None:
    _three_batches(platform, tmp_path)
    bronze = read_table(platform, "bronze_feed")
    result = apply_retention(platform, RetentionPolicy(), now=NOW)
    assert (result.cutoffs, result.deleted) == ({}, {})
    assert read_table(platform, "bronze_feed") == bronze
    with pytest.raises(ConfigurationError, match="RETENTION_BRONZE_DAYS must be 1 or more, not 0"):
        RetentionPolicy(bronze_days=0)
    with pytest.raises(ConfigurationError, match="needs a UTC offset"):
        apply_retention(platform, RetentionPolicy(bronze_days=1), now=datetime(2025, 11, 1))
    [refused] = platform.metadata.list_audit(1, action=RETENTION_APPLY)
    assert refused.outcome == "refused"


class _Clock:
    """Stands in for the `time` module of the local store: the time its commits record."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def time(self) -> float:
        return self.now.timestamp()


def _checkpoint_app_ids(path: str) -> set[str]:
    log = Path(path) / "_delta_log"
    version = json.loads((log / "_last_checkpoint").read_text(encoding="utf-8"))["version"]
    actions = pq.read_table(log / f"{version:020d}.checkpoint.parquet").column("txn").to_pylist()
    return {txn["appId"] for txn in actions if txn}


def test_the_transaction_identifiers_batches_leave_stay_bounded(
    platform: LocalPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock(datetime.now(UTC) - timedelta(days=9))
    monkeypatch.setattr(pandas_repository, "time", clock)
    old = [_batch(platform, tmp_path, f"old{n}.csv", _day("A", float(n), day=n), NOW) for n in range(1, 7)]
    clock.now = datetime.now(UTC)
    new = [_batch(platform, tmp_path, f"new{n}.csv", _day("A", float(n), day=10 + n), NOW) for n in range(1, 3)]

    location = platform.store.location("silver_readings")
    table = DeltaTable(location)
    assert table.metadata().configuration[TRANSACTION_RETENTION] == TRANSACTION_RETENTION_VALUE
    platform.store.compact("silver_readings")  # writes a checkpoint

    ids = _checkpoint_app_ids(location)
    assert {i.split(":")[1] for i in ids if i.startswith(f"{APP_ID}:")} == set(new)
    fresh = DeltaTable(location)
    assert all(fresh.transaction_version(f"{APP_ID}:{b}:{n}") is None for n, b in enumerate(old, start=1))
    assert [fresh.transaction_version(f"{APP_ID}:{b}:{n}") for n, b in enumerate(new, start=7)] == [7, 8]


def test_a_table_without_the_bound_gets_it_at_its_next_write(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_platform(settings) as platform:
        _batch(platform, tmp_path, "1.csv", _day("A", 1.0, day=1), NOW)
        location = platform.store.location("silver_readings")
        DeltaTable(location).alter.set_table_properties({TRANSACTION_RETENTION: "interval 400 days"})
    with open_platform(settings) as platform:
        batch = _batch(platform, tmp_path, "2.csv", _day("A", 1.0, day=2), NOW)
        table = DeltaTable(location)
        assert table.metadata().configuration[TRANSACTION_RETENTION] == TRANSACTION_RETENTION_VALUE
        setting: Any = next(e for e in table.history() if e["operation"] == "SET TBLPROPERTIES")
        assert setting.get("batch_id") == batch  # a rollback of the batch undoes it too
