"""Commits on every table store: a retried commit is a no-op, a batch's commits roll back,
one batch's rows are replaced in one commit."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from app.domain.errors import TableStoreError
from app.domain.schemas import GOLD_HOURLY_PORTFOLIO_LOAD, QUARANTINE_READINGS

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
