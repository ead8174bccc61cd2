"""Table schemas, declared once: columns, types, keys and the layer each table lives in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import narwhals as nw
import pyarrow as pa

TableLayer = Literal["bronze", "silver", "gold", "quarantine"]
UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")

#: The narwhals type of each Arrow type the tables declare, for casts on any engine.
NARWHALS_TYPES: dict[pa.DataType, Any] = {
    pa.string(): nw.String(),
    pa.int32(): nw.Int32(),
    pa.int64(): nw.Int64(),
    pa.float32(): nw.Float32(),
    pa.float64(): nw.Float64(),
    pa.bool_(): nw.Boolean(),
    pa.date32(): nw.Date(),
    UTC_TIMESTAMP: nw.Datetime("us", "UTC"),
}

#: Lineage columns added to every bronze row.
BRONZE_LINEAGE = pa.schema(
    [
        ("batch_id", pa.string()),
        ("source", pa.string()),
        ("source_file", pa.string()),
        ("line_number", pa.int64()),
        ("ingested_at", UTC_TIMESTAMP),
    ]
)


@dataclass(frozen=True)
class TableSpec:
    """A table's name, layer, schema and key (the columns that identify a row)."""

    name: str
    layer: TableLayer
    schema: pa.Schema
    keys: tuple[str, ...] = ()
    #: Delta partition columns, so reads and merges by local day touch only those days' files.
    partition_by: tuple[str, ...] = ()
    #: Whether the table records Delta's change data feed (inserted, updated and deleted rows
    #: per version), for consumers that take only what changed.
    change_feed: bool = False
    #: Columns each write orders its rows by, and the size its data files are cut at (bytes;
    #: None: the store's own), so that each file holds a narrow range of them: a merge or a read
    #: of a few days then touches the files of those days, not every file of their partition.
    cluster_by: tuple[str, ...] = ()
    file_bytes: int | None = None

    @property
    def value_columns(self) -> tuple[str, ...]:
        """Non-key columns, compared to decide whether an upsert changes a row."""
        return tuple(n for n in self.schema.names if n not in self.keys)


SILVER_READINGS = TableSpec(
    name="silver_readings",
    layer="silver",
    schema=pa.schema(
        [
            pa.field("meter_id", pa.string(), nullable=False),
            pa.field("direction", pa.string(), nullable=False),
            pa.field("interval_start_utc", UTC_TIMESTAMP, nullable=False),
            pa.field("interval_minutes", pa.int32(), nullable=False),
            pa.field("energy_kwh", pa.float64(), nullable=False),
            # actual | substituted | estimated (by the source, or by this platform's estimation)
            pa.field("quality_flag", pa.string(), nullable=False),
            # linear | like_day | flat where this platform estimated the interval, else null
            pa.field("estimation_method", pa.string(), nullable=True),
            # What the meter reported for an estimated interval whose read was rejected (kWh)
            pa.field("reported_kwh", pa.float64(), nullable=True),
            # Names of `warn` rules the reading failed, ";"-joined, "" when none
            pa.field("validation_flags", pa.string(), nullable=False),
            # 3 actual, 2 substituted, 1 estimated by the source, 0 estimated here: a later read
            # replaces a stored one only with an equal or higher rank
            pa.field("quality_rank", pa.int32(), nullable=False),
            pa.field("local_date", pa.date32(), nullable=False),
            # First day of the local month: the partition, so that a long, sparse series
            # (years of hourly data) makes tens of partitions, not thousands
            pa.field("local_month", pa.date32(), nullable=False),
            pa.field("timezone", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("batch_id", pa.string(), nullable=False),
            # Where the reading was read; null on intervals this platform estimated
            pa.field("source_file", pa.string(), nullable=True),
            pa.field("line_number", pa.int64(), nullable=True),
        ]
    ),
    keys=("meter_id", "interval_start_utc", "direction"),
    partition_by=("local_month",),
    change_feed=True,
    # Files of some days each (about 300,000 readings): the next day's load, which renews the
    # estimates at the end of the day before, rewrites the last of them, not the month.
    cluster_by=("local_date", "meter_id", "direction", "interval_start_utc"),
    file_bytes=2 * 1024 * 1024,
)

#: Silver columns whose change makes a re-read a replacement (lineage alone does not).
SILVER_COMPARED = (
    "interval_minutes",
    "energy_kwh",
    "quality_flag",
    "estimation_method",
    "reported_kwh",
    "validation_flags",
    "quality_rank",
    "local_date",
    "timezone",
)

QUARANTINE_READINGS = TableSpec(
    name="quarantine_readings",
    layer="quarantine",
    schema=pa.schema(
        [
            pa.field("batch_id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("source_file", pa.string(), nullable=False),
            pa.field("line_number", pa.int64(), nullable=False),
            pa.field("rule", pa.string(), nullable=False),
            pa.field("raw_record", pa.string(), nullable=False),
            pa.field("quarantined_at", UTC_TIMESTAMP, nullable=False),
        ]
    ),
)

GOLD_DAILY_METER_ENERGY = TableSpec(
    name="gold_daily_meter_energy",
    layer="gold",
    schema=pa.schema(
        [
            pa.field("meter_id", pa.string(), nullable=False),
            pa.field("direction", pa.string(), nullable=False),
            pa.field("local_date", pa.date32(), nullable=False),
            pa.field("timezone", pa.string(), nullable=False),
            pa.field("energy_kwh", pa.float64(), nullable=False),
            pa.field("peak_demand_kw", pa.float64(), nullable=False),
            # Silver intervals of the day: read (actual or substituted) + estimated
            pa.field("interval_count", pa.int64(), nullable=False),
            pa.field("actual_interval_count", pa.int64(), nullable=False),
            pa.field("estimated_interval_count", pa.int64(), nullable=False),
            # DST-aware: 92/96/100 quarter-hours, 46/48/50 half-hours
            pa.field("expected_interval_count", pa.int64(), nullable=False),
            # Share of the local day covered by read (not estimated) intervals
            pa.field("completeness", pa.float64(), nullable=False),
            # Share of the day's intervals that are estimated
            pa.field("estimated_share", pa.float64(), nullable=False),
            pa.field("estimated_kwh", pa.float64(), nullable=False),
        ]
    ),
    keys=("meter_id", "direction", "local_date"),
    change_feed=True,
)

GOLD_HOURLY_PORTFOLIO_LOAD = TableSpec(
    name="gold_hourly_portfolio_load",
    layer="gold",
    schema=pa.schema(
        [
            pa.field("hour_utc", UTC_TIMESTAMP, nullable=False),
            pa.field("direction", pa.string(), nullable=False),
            pa.field("energy_kwh", pa.float64(), nullable=False),
            pa.field("meter_count", pa.int64(), nullable=False),
        ]
    ),
    keys=("hour_utc", "direction"),
    change_feed=True,
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        SILVER_READINGS,
        QUARANTINE_READINGS,
        GOLD_DAILY_METER_ENERGY,
        GOLD_HOURLY_PORTFOLIO_LOAD,
    )
}


def bronze_table_name(source: str) -> str:
    """Bronze keeps one table per source, since each source has its own columns."""
    return f"bronze_{source}"


def bronze_spec(source: str, raw_columns: list[str]) -> TableSpec:
    """Bronze schema: the file's columns as strings, then the lineage columns."""
    fields = [pa.field(c, pa.string()) for c in raw_columns] + list(BRONZE_LINEAGE)
    return TableSpec(name=bronze_table_name(source), layer="bronze", schema=pa.schema(fields))


#: Columns every raw-read row carries besides the file's own columns.
READ_LINEAGE = pa.schema(
    [
        ("file_index", pa.int32()),
        ("source_file", pa.string()),
        ("line_number", pa.int64()),
        ("row_order", pa.int64()),
        ("kind", pa.string()),
        ("detail", pa.string()),
        ("occurrence", pa.int32()),
    ]
)
KIND_ROW, KIND_MALFORMED, KIND_ERROR = "row", "malformed", "error"


def read_schema(header: list[str]) -> pa.Schema:
    """Schema of a raw read: the batch's file columns as strings, then READ_LINEAGE."""
    return pa.schema([pa.field(c, pa.string()) for c in header] + list(READ_LINEAGE))
