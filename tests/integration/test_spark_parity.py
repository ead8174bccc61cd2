"""Databricks mode against local mode: the same files give the same silver, quarantine and gold.

Both modes run the same batches (the bundled sample, then a batch of awkward rows that
also corrects sample reads) into two lakes; every table is then compared row by row,
floats within 1e-9 relative. Each lake is also opened by the other engine.
"""

from __future__ import annotations

import gzip
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from app.application.pipeline import BatchPipeline, BatchResult
from app.application.ports import TableStore
from app.domain.schemas import (
    GOLD_DAILY_METER_ENERGY,
    GOLD_HOURLY_PORTFOLIO_LOAD,
    QUARANTINE_READINGS,
    SILVER_READINGS,
    TableSpec,
)
from app.domain.sources import ColumnMapping, RuleSetting, SourceConfig, builtin_meter_readings
from app.infrastructure import readers
from app.infrastructure.logging import get_logger
from app.infrastructure.readers import resolve_inputs
from app.infrastructure.repositories.duckdb_repository import DuckDBDeltaStore
from app.infrastructure.repositories.metadata import SqlMetadataStore
from app.infrastructure.repositories.pandas_repository import PandasDeltaStore
from app.infrastructure.repositories.spark_repository import SparkDeltaStore
from app.infrastructure.source_config import SAMPLE_DIR, load_sources
from tests.integration.conftest import NOW, write_csv

pytestmark = [pytest.mark.spark, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SOURCE = builtin_meter_readings(str(SAMPLE_DIR / "meter_readings"))
COMPARED = (SILVER_READINGS, QUARANTINE_READINGS, GOLD_DAILY_METER_ENERGY, GOLD_HOURLY_PORTFOLIO_LOAD)

#: Rows each rule rejects, malformed lines, duplicates within the batch, and corrections
#: and exact repeats of sample reads (which update or leave silver and gold as they were).
AWKWARD_ROWS = [
    "MTR-0001,2025-03-01T00:00:00+00:00,0.5,kWh",  # corrects a sample read
    "MTR-0001,2025-03-01T00:30:00+00:00,0.077,kWh",  # repeats a sample read exactly
    "MTR-0100,2025-03-30T01:30:00,0.2,kWh",  # in the spring-forward gap
    "MTR-0100,2025-10-26T01:30:00,0.2,kWh",  # in the repeated hour, no offset
    "MTR-0100,2025-10-26T01:30:00+01:00,0.2,kWh",  # in the repeated hour, resolved by its offset
    "MTR-0100,2025-10-26T01:30:00+00:00,0.3,kWh",
    "MTR-0100,2025-06-01T10:17:00Z,0.2,kWh",  # off the half-hour grid
    "MTR-0100,2030-01-01T00:00:00Z,0.2,kWh",  # in the future
    "MTR-0100,2025-06-01T10:00:00Z,abc,kWh",
    "MTR-0100,2025-06-01T10:30:00Z,,kWh",
    "MTR-0100,2025-06-01T11:00:00Z,1e309,kWh",
    "MTR-0100,2025-06-01T11:30:00Z,-0.4,kWh",
    "MTR-0100,2025-06-01T12:00:00Z,900,kWh",
    "MTR-0100,2025-06-01T12:30:00Z,0.4,kWhh",
    "MTR-0100,2025-06-01T13:00:00Z,400,Wh",
    "MTR-0100,2025-06-01T13:00:00Z,0.45,kWh",  # replaces the line above, read later
    "MTR-0100,2025-06-01T13:30:00Z,0.0004,MWh",
    ",2025-06-01T14:00:00Z,0.2,kWh",
    "MTR-0100,not a time,0.2,kWh",
    "MTR-0100,2025-06-01T14:30:00Z,0.2",  # too few fields
    "MTR-0100,2025-06-01T15:00:00Z,0.2,kWh,extra",  # too many fields
    "",
    '"MTR-0101","2025-06-01T15:30:00+01:00","0.25","kWh"',
]


#: A real Fluvius export (examples/data/fluvius, see its README for provenance): decimal
#: comma, BOM, register names, 2,566 missing volumes; zero runs quarantined so that series
#: rules, like-day and flat estimation all run on both engines.
FLUVIUS = load_sources(EXAMPLES / "sources.toml")["fluvius_electricity_nl"].model_copy(
    update={"rules": {"zero_run": RuleSetting(severity="quarantine"), "spike": RuleSetting(severity="quarantine")}}
)


#: Cumulative registers (differenced per series in time order, a missing read spread over the
#: intervals it spans, a misread that is no base) and daily reads across both DST changes.
REGISTERS = SourceConfig(
    name="registers",
    path="registers/*.csv",
    value_kind="register",
    unit="kWh",
    interval_minutes=15,
    timestamp_label="end",
    max_demand_kw=100,
    series_timezone="Europe/London",
    columns=ColumnMapping(meter_id="meter", timestamp="time", value="read"),
)
REGISTER_ROWS = [
    "REG-1,2025-06-02T01:00Z,104",  # newest first
    "REG-1,2025-06-02T00:45Z,103",
    "REG-1,2025-06-02T00:15Z,101",
    "REG-1,2025-06-02T00:00Z,100",
    "REG-2,2025-06-02T00:00Z,5",
    "REG-2,2025-06-02T00:15Z,99999",  # a misread: no base for the next read
    "REG-2,2025-06-02T02:00Z,9.2",
    "REG-2,2025-06-02T02:15Z,1.0",  # a reset
    "REG-2,2025-06-02T02:30Z,1.5",
]
DAILY = SourceConfig(
    name="daily",
    path="daily/*.csv",
    unit="kWh",
    interval_minutes=1440,
    meter_id="DAY-1",
    timestamp_format="%Y-%m-%d",
    timestamp_timezone="Europe/Amsterdam",
    series_timezone="Europe/Amsterdam",
    columns=ColumnMapping(meter_id=None, timestamp="date", value="kwh"),
)
#: One row per day, one column per quarter-hour, across both DST changes (100 columns), gzipped;
#: and the same readings as a Parquet file in the long layout with typed timestamps, and a
#: period column "A to B" with a year's total among the days.
TIME_OF_DAY = SourceConfig(
    name="time_of_day",
    path="time_of_day/*.csv.gz",
    layout="time_of_day",
    delimiter=";",
    decimal=",",
    columns=ColumnMapping(meter_id="EAN", timestamp="Datum", unit="Eenheid"),
    timestamp_format="%d.%m.%Y",
    timestamp_timezone="Europe/Brussels",
    series_timezone="Europe/Brussels",
    interval_minutes=15,
)
PARQUET = SourceConfig(
    name="parquet",
    path="parquet/*.parquet",
    format="parquet",
    unit="kWh",
    interval_minutes=60,
    series_timezone="Europe/Brussels",
    columns=ColumnMapping(meter_id="meter", timestamp="start", value="kwh"),
)
PERIODS = SourceConfig(
    name="periods",
    path="periods/*.csv",
    unit="kWh",
    interval_minutes=1440,
    meter_id="PER-1",
    timestamp_format="%Y-%m-%d",
    timestamp_timezone="Europe/Brussels",
    series_timezone="Europe/Brussels",
    columns=ColumnMapping(meter_id=None, period="period", value="kwh"),
)
PERIOD_ROWS = [
    "2025-03-29 to 2025-03-30,12",
    "2025-03-30 to 2025-03-31,11",
    "2025-03-31 to 2025-04-01,12",
    "2025-01-01 to 2026-01-01,4380",  # the year's total: not a day
]
DAILY_ROWS = [f"2024-03-{d},24" for d in range(29, 32)] + [f"2024-10-{d},24" for d in range(26, 29)]


def _run(
    store: TableStore, metadata: SqlMetadataStore, paths: list[Path], batch_id: str, source: SourceConfig = SOURCE
) -> BatchResult:
    pipeline = BatchPipeline(
        store=store, metadata=metadata, reader=readers, execution_mode=store.engine, logger=get_logger()
    )
    return pipeline.run(source, paths, force=True, now=NOW, batch_id=batch_id)


def _batches(store: TableStore, tmp_path: Path, inputs: Path) -> list[BatchResult]:
    metadata = SqlMetadataStore(f"sqlite:///{tmp_path / f'{store.engine}.db'}")
    metadata.migrate()
    try:
        sample = resolve_inputs(str(SAMPLE_DIR / "meter_readings"))
        awkward = sorted(inputs.glob("*.csv"))
        fluvius = resolve_inputs(FLUVIUS.path)
        return [
            _run(store, metadata, sample, "batch-1"),
            _run(store, metadata, awkward, "batch-2"),
            _run(store, metadata, fluvius, "batch-3", FLUVIUS),
            _run(store, metadata, [inputs / "registers" / "r.csv"], "batch-4", REGISTERS),
            _run(store, metadata, [inputs / "daily" / "d.csv"], "batch-5", DAILY),
            _run(store, metadata, resolve_inputs(str(inputs / "time_of_day")), "batch-6", TIME_OF_DAY),
            _run(store, metadata, resolve_inputs(str(inputs / "parquet"), "parquet"), "batch-7", PARQUET),
            _run(store, metadata, resolve_inputs(str(inputs / "periods")), "batch-8", PERIODS),
        ]
    finally:
        metadata.dispose()


def _rows(table: pa.Table, spec: TableSpec) -> list[dict[str, Any]]:
    ordered = table.select(spec.schema.names).cast(spec.schema)
    return ordered.sort_by([(c, "ascending") for c in spec.schema.names]).to_pylist()


def _assert_equal(left: list[dict[str, Any]], right: list[dict[str, Any]], name: str) -> None:
    assert len(left) == len(right), name
    for a, b in zip(left, right, strict=True):
        assert a.keys() == b.keys()
        for column, value in a.items():
            other = b[column]
            if isinstance(value, float) and isinstance(other, float):
                assert math.isclose(value, other, rel_tol=1e-9, abs_tol=0.0), (name, column, a, b)
            else:
                assert value == other, (name, column, a, b)


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> dict[str, Any]:
    """The same two batches run in local mode and in Databricks mode, each into its own lake."""
    root = tmp_path_factory.mktemp("parity")
    inputs = root / "inputs"
    write_csv(inputs / "awkward.csv", AWKWARD_ROWS)
    write_csv(
        inputs / "with_note.csv",
        ["MTR-0102,2025-06-01T10:00:00Z,0.3,kWh,checked", "MTR-0001,2025-03-01T00:00:00+00:00,0.6,kWh,again"],
        header="meter_id,timestamp,value,unit,note",
    )
    # A new meter's first day: read from 01:00 London (00:00 UTC), so the hour before is a
    # one-sided gap (flat fill), and 13:00 reads 20x the rest (a spike, flagged).
    new_meter = [
        f"MTR-0104,2025-06-02T{h:02d}:{m:02d}:00Z,{9.0 if (h, m) == (12, 0) else 0.45},kWh"
        for h in range(23)
        for m in (0, 30)
    ]
    write_csv(inputs / "new_meter.csv", new_meter)
    # Two weeks of another meter with five hours missing on the last day: like-day from the weeks before.
    start = datetime(2025, 6, 1, tzinfo=UTC)
    two_weeks = [
        f"MTR-0105,{(start + timedelta(minutes=30 * i)).isoformat()},{0.3 + 0.01 * (i % 48)},kWh"
        for i in range(15 * 48)
        if not 14 * 48 + 20 <= i < 14 * 48 + 30
    ]
    write_csv(inputs / "two_weeks.csv", two_weeks)
    write_csv(inputs / "registers" / "r.csv", REGISTER_ROWS, header="meter,time,read")
    write_csv(inputs / "daily" / "d.csv", DAILY_ROWS, header="date,kwh")
    (inputs / "time_of_day").mkdir()
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "readers" / "time_of_day_brussels.csv"
    (inputs / "time_of_day" / "days.csv.gz").write_bytes(gzip.compress(fixture.read_bytes()))
    (inputs / "parquet").mkdir()
    hours = [datetime(2025, 10, 25, 22, tzinfo=UTC) + timedelta(hours=h) for h in range(30)]
    parquet_rows = pa.table(
        {
            "meter": ["PQ-1"] * len(hours),
            "start": pa.array(hours, pa.timestamp("us", tz="UTC")),
            "kwh": pa.array([0.5 + h / 100 for h in range(len(hours))], pa.float64()),
        }
    )
    pq.write_table(parquet_rows, inputs / "parquet" / "hours.parquet")
    write_csv(inputs / "periods" / "p.csv", PERIOD_ROWS, header="period,kwh")
    local = PandasDeltaStore(root / "local")
    on_duckdb = DuckDBDeltaStore(root / "duckdb")
    on_spark = SparkDeltaStore(spark, str(root / "spark"))
    return {
        "local": (local, _batches(local, root, inputs)),
        "duckdb": (on_duckdb, _batches(on_duckdb, root, inputs)),
        "spark": (on_spark, _batches(on_spark, root, inputs)),
    }


def test_both_modes_succeed_with_the_same_counts(lakes: dict[str, Any]) -> None:
    local, spark = lakes["local"][1], lakes["spark"][1]
    for a, b in [*zip(local, spark, strict=True), *zip(lakes["duckdb"][1], spark, strict=True)]:
        assert a.status == b.status == "succeeded", (a.error, b.error)
        assert a.reconciliation == b.reconciliation
        assert a.rule_counts == b.rule_counts
        assert a.estimates == b.estimates
        assert [f.record_count for f in a.files] == [f.record_count for f in b.files]
    second = local[1].reconciliation
    assert second is not None and second.silver_updated == 1 and second.rows_quarantined == 14
    third = local[2]
    # The quarantined zero runs reach the file's end or span more than max_gap_days: left missing.
    assert third.rule_counts["zero_run"] > 0 and third.rule_counts["missing_intervals"] >= third.rule_counts["zero_run"]
    # Every estimation method and every series rule ran on both engines.
    assert {method for result in local for method in result.estimates} == {"linear", "like_day", "flat"}
    assert local[1].rule_counts["spike"] == 1 and third.rule_counts["high_low"] > 0
    registers = local[3]
    assert registers.reconciliation is not None and registers.reconciliation.rows_spread > 0
    assert {k: registers.rule_counts.get(k) for k in ("register_start", "register_reset", "above_physical_max")} == {
        "register_start": 2,
        "register_reset": 1,
        "above_physical_max": 1,
    }


def test_reader_features_give_the_same_counts_in_both_modes(lakes: dict[str, Any]) -> None:
    time_of_day, parquet, periods = lakes["spark"][1][5:8]
    # Fixture: 92 + 95 + 100 readings (the spring day's placeholders and a normal day's 97-100 skipped).
    assert time_of_day.reconciliation is not None and time_of_day.reconciliation.rows_accepted == 287
    assert parquet.reconciliation is not None and parquet.reconciliation.rows_accepted == 30
    assert periods.rule_counts.get("interval_invalid") == 1


def test_registers_and_daily_reads_book_the_true_energy_in_both_modes(lakes: dict[str, Any]) -> None:
    for mode in ("local", "duckdb", "spark"):
        silver = DeltaTable(lakes[mode][0].location(SILVER_READINGS.name)).to_pyarrow_table().to_pylist()
        by_meter: dict[str, float] = {}
        for row in silver:
            if row["quality_flag"] != "estimated":
                by_meter[row["meter_id"]] = by_meter.get(row["meter_id"], 0.0) + row["energy_kwh"]
        # 100 -> 104; 5 -> 9.2 (the misread skipped), then 1.0 -> 1.5 after the reset.
        assert math.isclose(by_meter["REG-1"], 4.0) and math.isclose(by_meter["REG-2"], 4.7), mode
        gold = DeltaTable(lakes[mode][0].location(GOLD_DAILY_METER_ENERGY.name)).to_pyarrow_table().to_pylist()
        days = [(g["expected_interval_count"], g["completeness"]) for g in gold if g["meter_id"] == "DAY-1"]
        assert days == [(1, 1.0)] * 6, mode


@pytest.mark.parametrize("spec", COMPARED, ids=lambda s: s.name)
def test_tables_are_equal_across_modes(lakes: dict[str, Any], spec: TableSpec) -> None:
    local_store, spark_store = lakes["local"][0], lakes["spark"][0]
    local = DeltaTable(local_store.location(spec.name)).to_pyarrow_table()
    on_spark = DeltaTable(spark_store.location(spec.name)).to_pyarrow_table()  # read by delta-rs
    assert local.num_rows > 0
    _assert_equal(_rows(local, spec), _rows(on_spark, spec), spec.name)
    on_duckdb = DeltaTable(lakes["duckdb"][0].location(spec.name)).to_pyarrow_table()
    _assert_equal(_rows(on_duckdb, spec), _rows(on_spark, spec), spec.name)


@pytest.mark.parametrize("name", [*(s.name for s in COMPARED), "bronze_meter_readings"])
def test_both_modes_write_the_same_delta_schema_and_partitioning(lakes: dict[str, Any], name: str) -> None:
    tables = [DeltaTable(lakes[mode][0].location(name)) for mode in ("local", "duckdb", "spark")]
    schemas = [json.loads(t.schema().to_json()) for t in tables]
    assert schemas[0] == schemas[1] == schemas[2]
    assert (
        tables[0].metadata().partition_columns
        == tables[1].metadata().partition_columns
        == tables[2].metadata().partition_columns
    )


def test_spark_reads_the_lake_local_mode_wrote(lakes: dict[str, Any], spark: Any) -> None:
    local_store = lakes["local"][0]
    reader = SparkDeltaStore(spark, local_store.root.as_posix())
    for spec in COMPARED:
        through_spark = reader.to_arrow(reader.read(spec))
        direct = DeltaTable(local_store.location(spec.name)).to_pyarrow_table()
        _assert_equal(_rows(through_spark, spec), _rows(direct, spec), spec.name)


def test_local_mode_continues_a_lake_spark_wrote(lakes: dict[str, Any], tmp_path: Path) -> None:
    """A Spark-written lake takes a local batch: merges, appends and gold recompute all work."""
    import shutil

    spark_store = lakes["spark"][0]
    copy = tmp_path / "lake"
    shutil.copytree(spark_store.root, copy)
    store = PandasDeltaStore(copy)
    before = DeltaTable(store.location(SILVER_READINGS.name)).to_pyarrow_table().num_rows
    metadata = SqlMetadataStore(f"sqlite:///{tmp_path / 'meta.db'}")
    metadata.migrate()
    path = write_csv(tmp_path / "more.csv", ["MTR-0103,2025-06-02T10:00:00Z,0.3,kWh"])
    try:
        result = _run(store, metadata, [path], "batch-3")
    finally:
        metadata.dispose()
    assert result.status == "succeeded", result.error
    assert DeltaTable(store.location(SILVER_READINGS.name)).to_pyarrow_table().num_rows == before + 1
    gold = DeltaTable(store.location(GOLD_DAILY_METER_ENERGY.name)).to_pyarrow_table().to_pylist()
    assert [r["energy_kwh"] for r in gold if r["meter_id"] == "MTR-0103"] == [0.3]


FILE_ERRORS = {
    "empty.csv": b"",
    "header_only.csv": b"meter_id,timestamp,value,unit\n",
    "semicolons.csv": b"meter_id;timestamp;value;unit\nM1;2025-06-10T00:00:00Z;1;kWh\n",
    "latin1.csv": b"meter_id,timestamp,value,unit\nM1,2025-06-10T00:00:00Z,1,kWh\nZ\xe4hler,x,1,kWh\n",
}


@pytest.mark.parametrize("name", sorted(FILE_ERRORS))
def test_a_bad_file_gives_the_same_error_in_both_modes(tmp_path: Path, spark: Any, name: str) -> None:
    good = write_csv(tmp_path / "a_good.csv", ["M1,2025-06-10T00:00:00Z,0.5,kWh"])
    bad = tmp_path / f"b_{name}"
    bad.write_bytes(FILE_ERRORS[name])
    errors = []
    for store in (PandasDeltaStore(tmp_path / "local"), SparkDeltaStore(spark, str(tmp_path / "spark"))):
        metadata = SqlMetadataStore(f"sqlite:///{tmp_path / f'{store.engine}.db'}")
        metadata.migrate()
        try:
            result = _run(store, metadata, [good, bad], "batch-bad")
        finally:
            metadata.dispose()
        assert result.status == "failed"
        assert not store.exists(SILVER_READINGS.name)
        errors.append(result.error)
    assert errors[0] == errors[1]
    assert errors[0] is not None and str(bad) in errors[0]


def test_execution_mode_databricks_wires_the_spark_store(tmp_path: Path, spark: Any) -> None:
    """Settings choose the engine: EXECUTION_MODE=databricks runs on the active Spark session."""
    from app.application.runner import run_batch
    from app.infrastructure.settings import Settings
    from app.wiring import open_platform

    settings = Settings(execution_mode="databricks", data_dir=tmp_path / "lake", _env_file=None)  # type: ignore[call-arg]
    path = write_csv(
        tmp_path / "in.csv", ["M1,2025-06-10T00:00:00+01:00,0.5,kWh", "M1,2025-06-10T00:30:00+01:00,x,kWh"]
    )
    with open_platform(settings) as platform:
        assert isinstance(platform.store, SparkDeltaStore) and platform.store.spark is spark
        result = run_batch(platform, input_path=str(path), now=NOW)
        record = platform.metadata.get_batch(result.batch_id or "")
    # One read of 48 half-hours; the other 47 are too long a one-sided gap to fill flat.
    assert result.status == "succeeded" and result.rule_counts == {"value_unparseable": 1, "missing_intervals": 47}
    assert record is not None and record.execution_mode == "databricks" and record.record_count == 2
    silver = DeltaTable(str(tmp_path / "lake" / "silver" / "silver_readings")).to_pyarrow_table().to_pylist()
    assert [(r["meter_id"], r["energy_kwh"], str(r["local_date"])) for r in silver] == [("M1", 0.5, "2025-06-10")]
