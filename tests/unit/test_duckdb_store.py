"""The DuckDB store's own mechanics: grouped functions see whole groups, reads prune files."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import narwhals as nw
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from app.domain.schemas import GOLD_DAILY_METER_ENERGY
from app.infrastructure.repositories import duckdb_repository
from app.infrastructure.repositories.duckdb_repository import DuckDBDeltaStore


def test_a_grouped_function_gets_every_group_whole_when_the_input_is_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duckdb_repository, "GROUP_ROWS", 25)  # 400 rows -> 16 parts
    store = DuckDBDeltaStore(tmp_path)
    rows = pa.table(
        {
            "meter_id": [f"M{i % 40}" for i in range(400)],
            "direction": ["import" if i % 3 else "export" for i in range(400)],
            "value": [float(i) for i in range(400)],
        }
    )
    calls: list[pa.Table] = []

    def per_call(table: pa.Table) -> pa.Table:
        calls.append(table)
        return table.group_by(["meter_id", "direction"]).aggregate([("value", "count")])

    schema = pa.schema([("meter_id", pa.string()), ("direction", pa.string()), ("value_count", pa.int64())])
    result = store.to_arrow(store.map_groups(store.frame(rows), ["meter_id", "direction"], per_call, schema))
    store.release()

    assert len(calls) > 1
    seen = [
        key
        for call in calls
        for key in set(zip(call["meter_id"].to_pylist(), call["direction"].to_pylist(), strict=True))
    ]
    assert len(seen) == len(set(seen)) == 80  # each (meter, direction) in exactly one call
    assert sum(call.num_rows for call in calls) == 400
    expected = rows.group_by(["meter_id", "direction"]).aggregate([("value", "count")])
    assert sorted(result.to_pylist(), key=str) == sorted(expected.to_pylist(), key=str)  # no group split


def test_a_read_lists_only_files_that_can_hold_matching_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DuckDBDeltaStore(tmp_path)
    listed: list[list[str]] = []
    file_uris = DeltaTable.file_uris

    def spy(table: DeltaTable, *args: Any, **kwargs: Any) -> list[str]:
        listed.append(file_uris(table, *args, **kwargs))
        return listed[-1]

    monkeypatch.setattr(DeltaTable, "file_uris", spy)
    spec = GOLD_DAILY_METER_ENERGY
    for day in (date(2025, 1, 5), date(2025, 3, 5)):
        defaults = {pa.string(): "x", pa.float64(): 1.0, pa.int64(): 1, pa.date32(): day}
        row = {f.name: defaults.get(f.type) for f in spec.schema} | {"meter_id": "M1", "direction": "import"}
        frame = store.frame(pa.Table.from_pylist([row], schema=spec.schema))
        store.append(spec, frame, batch_id=f"b{day.month}")

    march = store.read(spec, where=[("local_date", ">=", date(2025, 3, 1))])
    got = store.to_arrow(march)
    everything = store.to_arrow(store.read(spec))

    assert got["local_date"].to_pylist() == [date(2025, 3, 5)]
    assert everything.num_rows == 2
    assert [len(files) for files in listed] == [1, 2]  # January's file is not even listed
    assert pc.all(pc.equal(got["meter_id"], "M1")).as_py()
    assert nw.from_native(march.to_native()).collect_schema().names() == spec.schema.names
    store.release()


def test_a_table_parquet_readers_cannot_read_alone_is_read_through_delta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deletion vectors or column mapping: the read goes through Delta's reader, same rows."""
    store = DuckDBDeltaStore(tmp_path)
    spec = GOLD_DAILY_METER_ENERGY
    defaults = {pa.string(): "x", pa.float64(): 1.0, pa.int64(): 1}
    rows = [
        {f.name: defaults.get(f.type) for f in spec.schema} | {"meter_id": f"M{i}", "local_date": date(2025, 3, i)}
        for i in (1, 2, 3)
    ]
    store.append(spec, store.frame(pa.Table.from_pylist(rows, schema=spec.schema)), batch_id="b1")
    where = [("local_date", ">=", date(2025, 3, 2))]
    direct = store.to_arrow(store.read(spec, where=where)).sort_by("meter_id")
    monkeypatch.setattr(duckdb_repository, "_plain_parquet", lambda _table: False)
    through_delta = store.to_arrow(store.read(spec, where=where)).sort_by("meter_id")
    store.release()

    assert through_delta.to_pylist() == direct.to_pylist()
    assert direct["meter_id"].to_pylist() == ["M2", "M3"]
