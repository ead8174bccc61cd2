"""Commits on every table store: a retried commit is a no-op, a batch's commits roll back,
one batch's rows are replaced in one commit."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from app.domain.errors import TableStoreError
from app.domain.schemas import (
    GOLD_DAILY_METER_ENERGY,
    GOLD_HOURLY_PORTFOLIO_LOAD,
    QUARANTINE_READINGS,
    SILVER_COMPARED,
    SILVER_READINGS,
)
from app.infrastructure.repositories.duckdb_repository import DuckDBDeltaStore
from app.infrastructure.repositories.pandas_repository import PandasDeltaStore

AT = datetime(2025, 6, 1, tzinfo=UTC)


def _quarantine(batch_id: str, lines: list[int], rule: str = "value_missing") -> pa.Table:
    n = len(lines)
    return pa.table(
        {
            "batch_id": [batch_id] * n,
            "source": ["meter_readings"] * n,
            "source_file": ["in.csv"] * n,
            "line_number": pa.array(lines, pa.int64()),
            "rule": [rule] * n,
            "raw_record": ["{}"] * n,
            "quarantined_at": pa.array([AT] * n, pa.timestamp("us", "UTC")),
        }
    ).cast(QUARANTINE_READINGS.schema)


def _hours(values: list[float]) -> pa.Table:
    return pa.table(
        {
            "hour_utc": pa.array([AT.replace(hour=h) for h in range(len(values))], pa.timestamp("us", "UTC")),
            "direction": ["import"] * len(values),
            "energy_kwh": values,
            "meter_count": pa.array([1] * len(values), pa.int64()),
        }
    ).cast(GOLD_HOURLY_PORTFOLIO_LOAD.schema)


def _rows(engine: Any, spec: Any) -> list[tuple[Any, ...]]:
    table = engine.to_arrow(engine.read(spec))
    return sorted(zip(*(table[c].to_pylist() for c in spec.schema.names), strict=True))


def _upsert(engine: Any, values: list[float], batch_id: str, sequence: int) -> Any:
    spec = GOLD_HOURLY_PORTFOLIO_LOAD
    frame = engine.frame(_hours(values))
    return engine.upsert(spec, frame, compare=spec.value_columns, batch_id=batch_id, sequence=sequence)


def test_an_append_retried_with_its_sequence_writes_nothing_more(engine: Any) -> None:
    rows = _quarantine("b1", [2, 3])
    assert engine.append(QUARANTINE_READINGS, engine.frame(rows), batch_id="b1", sequence=1) == 2
    engine.append(QUARANTINE_READINGS, engine.frame(rows), batch_id="b1", sequence=1)
    assert engine.count(QUARANTINE_READINGS.name) == 2
    assert engine.append(QUARANTINE_READINGS, engine.frame(_quarantine("b2", [4])), batch_id="b2", sequence=2) == 1
    assert engine.count(QUARANTINE_READINGS.name) == 3


def test_a_commit_of_another_batch_with_a_higher_number_does_not_stop_a_write(engine: Any) -> None:
    # Tables written under another metadata store (or before it was reset) hold higher numbers.
    engine.append(QUARANTINE_READINGS, engine.frame(_quarantine("old", [2])), batch_id="old", sequence=40)
    _upsert(engine, [1.0], "old", 40)
    assert engine.append(QUARANTINE_READINGS, engine.frame(_quarantine("new", [3])), batch_id="new", sequence=1) == 1
    assert _upsert(engine, [2.0, 3.0], "new", 1).inserted == 1
    assert engine.count(QUARANTINE_READINGS.name) == 2
    assert [r[2] for r in _rows(engine, GOLD_HOURLY_PORTFOLIO_LOAD)] == [2.0, 3.0]


def test_a_merge_retried_with_its_sequence_changes_nothing(engine: Any) -> None:
    _upsert(engine, [1.0, 2.0], "b1", 1)
    _upsert(engine, [5.0, 6.0, 7.0], "b2", 2)
    after = _rows(engine, GOLD_HOURLY_PORTFOLIO_LOAD)
    _upsert(engine, [9.0, 9.0, 9.0], "b2", 2)  # the same commit again, whatever it carries
    assert _rows(engine, GOLD_HOURLY_PORTFOLIO_LOAD) == after
    assert [r[2] for r in after] == [5.0, 6.0, 7.0]


def test_rollback_restores_each_table_to_before_the_batch_and_is_idempotent(engine: Any) -> None:
    engine.append(QUARANTINE_READINGS, engine.frame(_quarantine("b1", [2])), batch_id="b1", sequence=1)
    _upsert(engine, [1.0, 2.0], "b1", 1)
    before = (_rows(engine, QUARANTINE_READINGS), _rows(engine, GOLD_HOURLY_PORTFOLIO_LOAD))

    engine.append(QUARANTINE_READINGS, engine.frame(_quarantine("b2", [3, 4])), batch_id="b2", sequence=2)
    _upsert(engine, [5.0, 6.0, 7.0], "b2", 2)
    assert _rows(engine, QUARANTINE_READINGS) != before[0]

    undone = engine.rollback("b2")
    assert sorted(undone) == [GOLD_HOURLY_PORTFOLIO_LOAD.name, QUARANTINE_READINGS.name]
    assert (_rows(engine, QUARANTINE_READINGS), _rows(engine, GOLD_HOURLY_PORTFOLIO_LOAD)) == before
    assert engine.rollback("b2") == {}
    assert engine.rollback("never-ran") == {}
    # The next batch writes on top of the restored tables.
    _upsert(engine, [8.0], "b3", 3)
    assert [r[2] for r in _rows(engine, GOLD_HOURLY_PORTFOLIO_LOAD)] == [8.0, 2.0]


def test_rolling_back_the_batch_that_created_a_table_removes_it(engine: Any) -> None:
    engine.append(QUARANTINE_READINGS, engine.frame(_quarantine("b1", [2])), batch_id="b1", sequence=1)
    assert engine.rollback("b1") == {QUARANTINE_READINGS.name: None}
    assert not engine.exists(QUARANTINE_READINGS.name)
    assert engine.tables() == []


def test_rollback_refuses_when_another_batch_committed_after_it(engine: Any) -> None:
    engine.append(QUARANTINE_READINGS, engine.frame(_quarantine("b1", [2])), batch_id="b1", sequence=1)
    engine.append(QUARANTINE_READINGS, engine.frame(_quarantine("b2", [3])), batch_id="b2", sequence=2)
    engine.append(QUARANTINE_READINGS, engine.frame(_quarantine("b3", [4])), batch_id="b3", sequence=3)
    with pytest.raises(TableStoreError, match="committed after it by b3"):
        engine.rollback("b2")


def test_replace_swaps_one_batchs_rows_in_one_commit(engine: Any) -> None:
    engine.append(QUARANTINE_READINGS, engine.frame(_quarantine("b1", [2, 3, 4])), batch_id="b1", sequence=1)
    engine.append(QUARANTINE_READINGS, engine.frame(_quarantine("b2", [9])), batch_id="b2", sequence=2)
    kept = _quarantine("b1", [3], rule="unit_unknown")
    written = engine.replace(QUARANTINE_READINGS, engine.frame(kept), batch_of="b1", batch_id="r1", sequence=3)
    assert written == 1
    rows = [(r[0], r[3], r[4]) for r in _rows(engine, QUARANTINE_READINGS)]
    assert rows == [("b1", 3, "unit_unknown"), ("b2", 9, "value_missing")]
    assert list(engine.rollback("r1")) == [QUARANTINE_READINGS.name]
    assert len(_rows(engine, QUARANTINE_READINGS)) == 4


def test_the_remains_of_an_interrupted_table_removal_are_skipped_and_cleared(engine: Any, tmp_path: Path) -> None:
    engine.append(QUARANTINE_READINGS, engine.frame(_quarantine("b1", [2])), batch_id="b1", sequence=1)
    remains = Path(engine.location(QUARANTINE_READINGS.name)).with_name(".silver_readings.rolled-back-b0")
    (remains / "_delta_log").mkdir(parents=True)
    assert engine.tables() == [QUARANTINE_READINGS.name]
    assert not remains.exists()


def _days(meter_days: list[tuple[str, int]], energy: float) -> pa.Table:
    """Daily gold rows of (meter, day of June 2025)."""
    spec = GOLD_DAILY_METER_ENERGY.schema
    n = len(meter_days)
    columns: dict[str, Any] = {
        "meter_id": [m for m, _ in meter_days],
        "direction": ["import"] * n,
        "local_date": [date(2025, 6, d) for _, d in meter_days],
    }
    for f in spec:
        if f.name in columns:
            continue
        if pa.types.is_floating(f.type):
            columns[f.name] = [energy] * n
        elif pa.types.is_integer(f.type):
            columns[f.name] = [48] * n
        elif pa.types.is_date(f.type):
            columns[f.name] = [date(2025, 6, 1)] * n
        else:
            columns[f.name] = ["Europe/London"] * n
    return pa.table(columns).select(spec.names).cast(spec)


def _daily_upsert(engine: Any, table: pa.Table, batch_id: str, sequence: int) -> Any:
    spec = GOLD_DAILY_METER_ENERGY
    days = table["local_date"].to_pylist()
    return engine.upsert(
        spec,
        engine.frame(table),
        compare=spec.value_columns,
        batch_id=batch_id,
        sequence=sequence,
        local_days=(min(days), max(days)),
    )


def test_an_upsert_of_only_new_keys_inserts_them_once_and_one_with_stored_keys_merges(engine: Any) -> None:
    spec = GOLD_DAILY_METER_ENERGY
    _daily_upsert(engine, _days([("m1", 1), ("m2", 1)], 1.0), "b1", 1)
    # New days only: inserted, and a retry of the same commit adds nothing.
    counts = _daily_upsert(engine, _days([("m1", 2), ("m2", 2)], 2.0), "b2", 2)
    assert (counts.inserted, counts.updated, counts.unchanged) == (2, 0, 0)
    retried = _daily_upsert(engine, _days([("m1", 2), ("m2", 2)], 2.0), "b2", 2)
    assert (retried.inserted, retried.updated) == (2, 0)
    assert engine.count(spec.name) == 4
    # One stored key among new ones: that row is updated, not added twice.
    counts = _daily_upsert(engine, _days([("m1", 2), ("m3", 2)], 5.0), "b3", 3)
    assert (counts.inserted, counts.updated, counts.unchanged) == (1, 1, 0)
    assert engine.count(spec.name) == 5
    energy = {(r[0], r[2].day): r[4] for r in _rows(engine, spec)}
    assert energy == {("m1", 1): 1.0, ("m2", 1): 1.0, ("m1", 2): 5.0, ("m2", 2): 2.0, ("m3", 2): 5.0}
    if "Spark" not in type(engine).__name__:  # delta-rs: rows all new are appended, not merged
        operations = {v.batch_id: v.operation for v in engine.history(spec.name)}
        assert (operations["b2"], operations["b3"]) == ("WRITE", "MERGE")


@pytest.mark.parametrize("store", [DuckDBDeltaStore, PandasDeltaStore])
def test_a_merge_rewrites_only_the_files_within_the_time_range_of_its_rows(store: Any, tmp_path: Path) -> None:
    engine = store(tmp_path)
    _upsert(engine, [1.0, 2.0], "b1", 1)  # hours 0 and 1: the first data file
    location = engine.location(GOLD_HOURLY_PORTFOLIO_LOAD.name)
    first = set(DeltaTable(location).file_uris())
    later = _hours([0.0] * 6 + [3.0, 4.0]).slice(6)  # hours 6 and 7: appended, a second file
    spec = GOLD_HOURLY_PORTFOLIO_LOAD
    engine.upsert(spec, engine.frame(later), compare=spec.value_columns, batch_id="b2", sequence=2)
    second = set(DeltaTable(location).file_uris()) - first
    assert len(second) == 1
    # Hour 7 again, with another value: only the second file is rewritten.
    update = _hours([0.0] * 7 + [9.0]).slice(7)
    counts = engine.upsert(spec, engine.frame(update), compare=spec.value_columns, batch_id="b3", sequence=3)
    assert (counts.inserted, counts.updated) == (0, 1)
    files = set(DeltaTable(location).file_uris())
    assert first <= files and not second & files
    assert [r[2] for r in _rows(engine, spec)] == [1.0, 2.0, 3.0, 9.0]


def _silver(meters: int, days: range, energy: float = 0.5, intervals: range = range(48)) -> pa.Table:
    """Half-hourly silver rows of June 2025 (UTC), meter by meter as VEE gives them."""
    rows = [
        (f"m{m:02d}", datetime(2025, 6, d, tzinfo=UTC) + timedelta(minutes=30 * i))
        for m in range(meters)
        for d in days
        for i in intervals
    ]
    n = len(rows)
    return pa.table(
        {
            "meter_id": [m for m, _ in rows],
            "direction": ["import"] * n,
            "interval_start_utc": pa.array([t for _, t in rows], pa.timestamp("us", "UTC")),
            "interval_minutes": pa.array([30] * n, pa.int32()),
            "energy_kwh": [energy] * n,
            "quality_flag": ["actual"] * n,
            "estimation_method": pa.nulls(n, pa.string()),
            "reported_kwh": pa.nulls(n, pa.float64()),
            "validation_flags": [""] * n,
            "quality_rank": pa.array([3] * n, pa.int32()),
            "local_date": [t.date() for _, t in rows],
            "local_month": [date(2025, 6, 1)] * n,
            "timezone": ["UTC"] * n,
            "source": ["meters"] * n,
            "batch_id": ["b"] * n,
            "source_file": ["in.csv"] * n,
            "line_number": pa.array(range(n), pa.int64()),
        }
    ).cast(SILVER_READINGS.schema)


def _file_days(location: str) -> list[tuple[date, date]]:
    """Each data file's first and last local day, from the statistics in the table's log."""
    actions = pa.table(DeltaTable(location).get_add_actions(flatten=True))
    return sorted(zip(actions["min.local_date"].to_pylist(), actions["max.local_date"].to_pylist(), strict=True))


@pytest.mark.parametrize("store", [DuckDBDeltaStore, PandasDeltaStore])
def test_silver_files_each_hold_a_few_days_so_the_next_days_load_rewrites_only_the_last(
    store: Any, tmp_path: Path
) -> None:
    """Rows arrive meter by meter; each write orders them by day first and cuts files at the
    table's size, so files cover consecutive days. A load of the next day that also renews
    the last day's last interval (what a daily load does with the estimates at its end)
    rewrites the one file that holds that day."""
    spec = replace(SILVER_READINGS, file_bytes=64 * 1024)
    engine = store(tmp_path)
    engine.upsert(spec, engine.frame(_silver(20, range(1, 21))), compare=SILVER_COMPARED, batch_id="b1", sequence=1)
    location = engine.location(spec.name)
    assert DeltaTable(location).metadata().configuration["delta.targetFileSize"] == str(64 * 1024)
    days = _file_days(location)
    assert len(days) >= 4
    assert all(a[1] <= b[0] for a, b in pairwise(days))  # a day shared at most at an edge
    assert engine.small_files(spec.name) == 0  # files of the table's size are not small ones to compact
    before = set(DeltaTable(location).file_uris())
    renewed = _silver(20, range(20, 21), energy=0.9, intervals=range(47, 48))
    load = pa.concat_tables([renewed, _silver(20, range(21, 22))])
    counts = engine.upsert(
        spec,
        engine.frame(load),
        compare=SILVER_COMPARED,
        batch_id="b2",
        sequence=2,
        local_days=(date(2025, 6, 20), date(2025, 6, 21)),
    )
    assert (counts.inserted, counts.updated) == (20 * 48, 20)
    after = set(DeltaTable(location).file_uris())
    assert len(before - after) == 1  # of the files of 20 days, the one holding June 20th
    assert engine.count(spec.name) == 21 * 20 * 48
    energy = {(r[0], r[2]): r[4] for r in _rows(engine, spec)}
    assert {t for (_, t), e in energy.items() if e == 0.9} == {datetime(2025, 6, 20, 23, 30, tzinfo=UTC)}
    assert sum(e == 0.9 for e in energy.values()) == 20


@pytest.mark.parametrize("store", [DuckDBDeltaStore, PandasDeltaStore])
def test_a_silver_table_written_before_it_had_a_file_size_takes_it_in_the_next_batchs_commit(
    store: Any, tmp_path: Path
) -> None:
    """A lake from before silver's file size: the next upsert sets the size with the batch, so
    compaction then counts the files of that size as whole ones, and a rollback of the batch
    takes the property back."""
    engine = store(tmp_path)
    older = replace(SILVER_READINGS, file_bytes=None)
    engine.upsert(older, engine.frame(_silver(2, range(1, 3))), compare=SILVER_COMPARED, batch_id="b1", sequence=1)
    location = engine.location(SILVER_READINGS.name)
    assert "delta.targetFileSize" not in DeltaTable(location).metadata().configuration
    day = date(2025, 6, 3)
    spec = SILVER_READINGS
    engine.upsert(
        spec,
        engine.frame(_silver(2, range(3, 4))),
        compare=SILVER_COMPARED,
        batch_id="b2",
        sequence=2,
        local_days=(day, day),
    )
    configuration = DeltaTable(location).metadata().configuration
    assert configuration["delta.targetFileSize"] == str(spec.file_bytes)
    assert configuration["delta.enableChangeDataFeed"] == "true"
    engine.rollback("b2")
    assert "delta.targetFileSize" not in DeltaTable(location).metadata().configuration
    assert engine.count(spec.name) == 2 * 2 * 48
