"""Operating the lake: a table's history, a past version, optimize and vacuum (local mode)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from app.application.lake_ops import (
    checked_as_of,
    optimize_tables,
    parse_as_of,
    table_changes,
    table_history,
    vacuum_tables,
)
from app.application.runner import run_batch
from app.domain.errors import ConfigurationError, TableStoreError
from app.wiring import LocalPlatform
from tests.integration.conftest import NOW, read_table, write_csv

CONFIG = '[sources.feed]\npath = "in"\nunit = "kWh"\ninterval_minutes = 60\n'


def _batch(platform: LocalPlatform, tmp_path: Path, name: str, rows: list[str]) -> str:
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    path = write_csv(tmp_path / "in" / name, rows, header="meter_id,timestamp,value")
    result = run_batch(
        platform, source_name="feed", config_file=tmp_path / "sources.toml", input_path=str(path), now=NOW
    )
    assert result.status == "succeeded", result.error
    return result.batch_id


def _day(meter: str, value: float, day: int = 1) -> list[str]:
    return [f"{meter},2025-06-{day:02d}T{h:02d}:00Z,{value}" for h in range(24)]


def _files(platform: LocalPlatform, table: str) -> int:
    return len(DeltaTable(platform.store.location(table)).file_uris())


def test_history_lists_each_commit_with_its_batch_and_rows(platform: LocalPlatform, tmp_path: Path) -> None:
    first = _batch(platform, tmp_path, "a.csv", _day("A", 1.0))
    second = _batch(platform, tmp_path, "b.csv", _day("A", 2.0)[:10] + _day("B", 1.0))

    versions = table_history(platform, "silver_readings")

    assert [v.version for v in versions] == [1, 0]
    assert [v.batch_id for v in versions] == [second, first]
    assert (versions[1].operation, versions[1].rows_added) == ("WRITE", 24)
    assert (versions[0].operation, versions[0].rows_added, versions[0].rows_updated) == ("MERGE", 24, 10)
    assert table_history(platform, "silver_readings", limit=1) == versions[:1]
    with pytest.raises(ConfigurationError, match="there is no table 'silver'"):
        table_history(platform, "silver")


def test_a_past_version_returns_the_rows_as_they_were(platform: LocalPlatform, tmp_path: Path) -> None:
    _batch(platform, tmp_path, "a.csv", _day("A", 1.0))
    before = datetime.now(UTC)
    _batch(platform, tmp_path, "b.csv", _day("A", 2.0))
    store = platform.store

    def energy(table: pa.Table) -> set[float]:
        return set(table["energy_kwh"].to_pylist())

    assert energy(store.head("silver_readings", limit=100)) == {2.0}
    assert energy(store.head("silver_readings", limit=100, as_of=0)) == {1.0}
    at = checked_as_of(platform, "silver_readings", before)
    assert at == 0 and energy(store.head("silver_readings", limit=100, as_of=at)) == {1.0}
    assert energy(store.head("gold_daily_meter_energy", limit=10, as_of=0)) == {24.0}
    with pytest.raises(ConfigurationError, match="has no version 5; it has versions 0 to 1"):
        checked_as_of(platform, "silver_readings", 5)
    with pytest.raises(ConfigurationError, match="did not exist yet at 2020-01-01"):
        checked_as_of(platform, "silver_readings", parse_as_of("2020-01-01"))


def test_as_of_parses_versions_and_instants_and_refuses_the_rest() -> None:
    assert parse_as_of("3") == 3
    assert parse_as_of("2025-06-01T12:00:00+02:00") == datetime(2025, 6, 1, 10, tzinfo=UTC)
    assert parse_as_of("2025-06-01") == datetime(2025, 6, 1, tzinfo=UTC)
    with pytest.raises(ConfigurationError, match="no UTC offset"):
        parse_as_of("2025-06-01T12:00")
    with pytest.raises(ConfigurationError, match="neither a version number nor an ISO 8601 time"):
        parse_as_of("yesterday")


def test_optimize_reduces_the_files_and_changes_no_row(platform: LocalPlatform, tmp_path: Path) -> None:
    for day in range(1, 7):
        _batch(platform, tmp_path, f"{day}.csv", _day("A", float(day), day=day))
    rows = {t: read_table(platform, t) for t in ("silver_readings", "gold_daily_meter_energy")}
    before = _files(platform, "silver_readings")

    files = optimize_tables(platform, name="silver_readings")
    assert files == {"silver_readings": (before, _files(platform, "silver_readings"))}
    assert files["silver_readings"][1] < before
    zordered = optimize_tables(platform, zorder=["meter_id"], name="gold_daily_meter_energy")
    assert set(zordered) == {"gold_daily_meter_energy"}
    assert {t: read_table(platform, t) for t in rows} == rows
    assert table_history(platform, "silver_readings", limit=1)[0].operation == "OPTIMIZE"
    with pytest.raises(TableStoreError, match="has no column nope"):
        optimize_tables(platform, name="silver_readings", zorder=["nope"])


def test_vacuum_refuses_a_short_retention_unless_forced_and_then_deletes_replaced_files(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    for day in range(1, 4):
        _batch(platform, tmp_path, f"{day}.csv", _day("A", float(day), day=day))
    optimize_tables(platform, name="silver_readings")
    rows = read_table(platform, "silver_readings")
    root = Path(platform.store.location("silver_readings"))

    def parquet() -> int:  # data files on disk, not the log's checkpoints nor the change feed's files
        return sum(not {"_delta_log", "_change_data"} & set(p.parts) for p in root.rglob("*.parquet"))

    on_disk = parquet()

    with pytest.raises(ConfigurationError, match="shorter than Delta's safe default of 168 hours"):
        vacuum_tables(platform, name="silver_readings", retain_hours=1)
    assert vacuum_tables(platform, name="silver_readings") == {"silver_readings": 0}  # nothing is a week old
    deleted = vacuum_tables(platform, name="silver_readings", retain_hours=0, force=True)

    assert deleted["silver_readings"] > 0 and parquet() == on_disk - deleted["silver_readings"]
    assert parquet() == _files(platform, "silver_readings")
    assert read_table(platform, "silver_readings") == rows


def test_the_change_feed_lists_exactly_the_rows_each_batch_changed(platform: LocalPlatform, tmp_path: Path) -> None:
    _batch(platform, tmp_path, "a.csv", _day("A", 1.0))
    # Hours 0-9 change, 10-23 are sent again unchanged, and meter B is new.
    _batch(platform, tmp_path, "b.csv", [*_day("A", 2.0)[:10], *_day("A", 1.0)[10:], *_day("B", 1.0)[:5]])

    silver = table_changes(platform, "silver_readings", since_version=1)
    assert sorted(set(silver.column_names) - {"change", "version", "committed_at"}) == sorted(
        read_table(platform, "silver_readings").column_names
    )
    changed = sorted((r["change"], r["meter_id"], r["interval_start_utc"].hour) for r in silver.to_pylist())
    assert changed == sorted([("update", "A", h) for h in range(10)] + [("insert", "B", h) for h in range(5)])
    assert {r["energy_kwh"] for r in silver.to_pylist() if r["change"] == "update"} == {2.0}
    assert set(silver["version"].to_pylist()) == {1}
    everything = table_changes(platform, "silver_readings", since_version=0)
    assert everything.num_rows == 24 + 15
    daily = table_changes(platform, "gold_daily_meter_energy", since_version=1).to_pylist()
    assert sorted((r["change"], r["meter_id"], r["energy_kwh"]) for r in daily) == [
        ("insert", "B", 5.0),
        ("update", "A", 34.0),
    ]
    assert table_changes(platform, "silver_readings", since_version=9).num_rows == 0
    with pytest.raises(TableStoreError, match="does not record its changes"):
        table_changes(platform, "bronze_feed", since_version=0)


def test_a_table_written_before_it_recorded_changes_records_them_from_its_next_batch(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    _batch(platform, tmp_path, "a.csv", _day("A", 1.0))
    silver = DeltaTable(platform.store.location("silver_readings"))
    silver.alter.set_table_properties({"delta.enableChangeDataFeed": "false"})  # as an older lake has it
    with pytest.raises(TableStoreError, match="does not record its changes"):
        table_changes(platform, "silver_readings", since_version=0)

    batch = _batch(platform, tmp_path, "b.csv", _day("A", 2.0)[:3])

    versions = table_history(platform, "silver_readings", limit=2)
    assert [v.batch_id for v in versions] == [batch, batch]  # the property's commit is the batch's too
    since = versions[-1].version
    changed = table_changes(platform, "silver_readings", since_version=since).to_pylist()
    assert sorted((r["change"], r["energy_kwh"]) for r in changed) == [("update", 2.0)] * 3
