"""Pure transforms, each named after the table it produces; they run on any narwhals backend."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import narwhals as nw
import pyarrow as pa

from app.domain.schemas import SILVER_READINGS

QUALITY_ACTUAL = "actual"


@dataclass(frozen=True)
class SilverParams:
    """Batch-level values stamped on every silver row."""

    source: str
    batch_id: str
    interval_minutes: int
    series_timezone: str


def silver_readings(validated: nw.LazyFrame, params: SilverParams) -> nw.LazyFrame:
    """Accepted rows, one per meter, interval and direction: the latest row read wins.

    `row_order` increases through the batch's files in order, so a correction later in
    a file (or in a later file) replaces an earlier read deterministically.
    """
    keys = list(SILVER_READINGS.keys)
    accepted = validated.filter(nw.col("rejection_rule").is_null())
    latest = accepted.filter(nw.col("row_order") == nw.col("row_order").max().over(*keys))
    return latest.with_columns(
        interval_minutes=nw.lit(params.interval_minutes, nw.Int32()),
        quality_flag=nw.lit(QUALITY_ACTUAL),
        timezone=nw.lit(params.series_timezone),
        source=nw.lit(params.source),
        batch_id=nw.lit(params.batch_id),
    ).select(SILVER_READINGS.schema.names)


def local_day_minutes(days: Iterable[tuple[date, str]]) -> pa.Table:
    """Length in minutes of each local calendar day (1380, 1440 or 1500 across DST)."""
    rows = sorted(set(days))
    minutes = []
    for day, zone in rows:
        tz = ZoneInfo(zone)
        start = datetime.combine(day, time(), tz).astimezone(UTC)
        end = datetime.combine(day + timedelta(days=1), time(), tz).astimezone(UTC)
        minutes.append(int((end - start).total_seconds() // 60))
    return pa.table(
        {
            "local_date": pa.array([d for d, _ in rows], pa.date32()),
            "timezone": pa.array([z for _, z in rows], pa.string()),
            "day_minutes": pa.array(minutes, pa.int64()),
        }
    )


def gold_daily_meter_energy(silver: nw.LazyFrame, calendar: nw.LazyFrame) -> nw.LazyFrame:
    """Energy, peak demand and DST-aware completeness per meter and local day."""
    daily = (
        silver.with_columns(
            demand_kw=nw.col("energy_kwh") * 60 / nw.col("interval_minutes"),
            covered_minutes=nw.col("interval_minutes").cast(nw.Int64()),
        )
        .group_by("meter_id", "direction", "local_date", "timezone")
        .agg(
            nw.col("energy_kwh").sum(),
            nw.col("demand_kw").max().alias("peak_demand_kw"),
            nw.len().alias("interval_count"),
            nw.col("interval_minutes").min().alias("interval_minutes"),
            nw.col("covered_minutes").sum(),
        )
    )
    return (
        daily.join(calendar, on=["local_date", "timezone"], how="left")
        .with_columns(
            expected_interval_count=(nw.col("day_minutes") // nw.col("interval_minutes")).cast(nw.Int64()),
            completeness=nw.col("covered_minutes") / nw.col("day_minutes"),
            interval_count=nw.col("interval_count").cast(nw.Int64()),
        )
        .select(
            "meter_id",
            "direction",
            "local_date",
            "timezone",
            "energy_kwh",
            "peak_demand_kw",
            "interval_count",
            "expected_interval_count",
            "completeness",
        )
    )


def gold_hourly_portfolio_load(silver: nw.LazyFrame) -> nw.LazyFrame:
    """Energy and number of reporting meters per UTC hour and direction."""
    return (
        silver.with_columns(hour_utc=nw.col("interval_start_utc").dt.truncate("1h"))
        .group_by("hour_utc", "direction")
        .agg(nw.col("energy_kwh").sum(), nw.col("meter_id").n_unique().alias("meter_count"))
        .with_columns(nw.col("meter_count").cast(nw.Int64()))
        .select("hour_utc", "direction", "energy_kwh", "meter_count")
    )
