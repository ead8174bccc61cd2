"""Pure transforms, each named after the table it produces; they run on any narwhals backend."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import narwhals as nw
import pyarrow as pa

from app.domain.schemas import GOLD_DAILY_METER_ENERGY, SILVER_READINGS
from app.domain.sources import QUALITY_RANK

QUALITY_ESTIMATED = "estimated"
#: Rank of an interval this platform estimated: any reading replaces it.
RANK_PLATFORM_ESTIMATE = 0


@dataclass(frozen=True)
class SilverParams:
    """Batch-level values stamped on every silver row."""

    source: str
    batch_id: str
    series_timezone: str


def quality_rank() -> nw.Expr:
    """`quality_flag` -> rank (3 actual, 2 substituted, 1 estimated by the source)."""
    expr: Any = None
    for name, rank in QUALITY_RANK.items():
        then = nw.lit(rank, nw.Int32())
        expr = (
            nw.when(nw.col("quality") == name).then(then)
            if expr is None
            else expr.when(nw.col("quality") == name).then(then)
        )
    return expr.otherwise(nw.lit(0, nw.Int32()))


def deduplicated_readings(validated: nw.LazyFrame) -> nw.LazyFrame:
    """Accepted rows, one per meter, interval and direction.

    Among a key's reads the best quality wins, and among equals the latest read
    (`row_order` increases through the batch's files in order), so a correction later in
    a file, or in a later file, replaces an earlier read of equal or worse quality.
    """
    keys = list(SILVER_READINGS.keys)
    accepted = validated.filter(nw.col("rejection_rule").is_null()).with_columns(quality_rank=quality_rank())
    # Only keys read more than once need ranking: the window functions run over those rows,
    # not over every column of every row.
    repeated = accepted.group_by(*keys).agg(nw.len().alias("reads")).filter(nw.col("reads") > 1).select(keys)
    once = accepted.join(repeated, on=keys, how="anti")
    several = accepted.join(repeated, on=keys, how="semi")
    ranked = several.with_columns(best_rank=nw.col("quality_rank").max().over(*keys))
    best = ranked.filter(nw.col("quality_rank") == nw.col("best_rank"))
    latest = best.filter(nw.col("row_order") == nw.col("row_order").max().over(*keys)).drop("best_rank")
    return nw.concat([once, latest])


def silver_readings(vee_rows: nw.LazyFrame, params: SilverParams) -> nw.LazyFrame:
    """VEE output (accepted reads and estimates) -> silver rows."""
    kept = vee_rows.filter(
        (nw.col("role") == "estimate") | ((nw.col("role") == "batch") & nw.col("rejection_rule").is_null())
    )
    estimated_here = nw.col("role") == "estimate"
    return kept.with_columns(
        quality_flag=nw.when(estimated_here).then(nw.lit(QUALITY_ESTIMATED)).otherwise(nw.col("quality_flag")),
        quality_rank=nw.when(estimated_here)
        .then(nw.lit(RANK_PLATFORM_ESTIMATE, nw.Int32()))
        .otherwise(nw.col("quality_rank").cast(nw.Int32())),
        reported_kwh=nw.when(estimated_here).then(nw.col("reported_kwh")).otherwise(nw.lit(None, nw.Float64())),
        validation_flags=nw.col("validation_flags").fill_null(""),
        local_month=nw.col("local_date").dt.truncate("1mo"),
        interval_minutes=nw.col("interval_minutes").cast(nw.Int32()),
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


#: Intervals this long or longer are one local calendar day (23, 24 or 25 hours).
DAILY_MINUTES = 1440
#: The hourly portfolio load takes intervals up to an hour: a longer read (a day, a month) does
#: not say how its energy fell across the hours, so it is left to the daily table.
HOURLY_MAX_MINUTES = 60


def gold_daily_meter_energy(silver: nw.LazyFrame, calendar: nw.LazyFrame) -> nw.LazyFrame:
    """Energy, peak demand, DST-aware completeness and estimated share per meter and local day.

    Completeness counts read intervals only (actual or substituted by the source), so a
    data-sufficiency rule such as "90% daily coverage" can be applied to it directly. A daily
    interval covers its whole local day, whatever the day's length, and is the day's one
    expected interval.
    """
    estimated = nw.col("quality_flag") == QUALITY_ESTIMATED
    is_daily = nw.col("interval_minutes") >= DAILY_MINUTES
    nothing = nw.lit(None, nw.Float64())
    # Aggregated first, joined to the (small) calendar after: a daily interval's length is its
    # day's, known only then, so daily and shorter intervals are summed apart.
    sums = (
        silver.with_columns(
            demand_kw=nw.when(is_daily).then(nothing).otherwise(nw.col("energy_kwh") * 60 / nw.col("interval_minutes")),
            daily_kwh=nw.when(is_daily).then(nw.col("energy_kwh")).otherwise(nothing),
            is_estimated=nw.when(estimated).then(nw.lit(1, nw.Int64())).otherwise(nw.lit(0, nw.Int64())),
            estimated_kwh=nw.when(estimated).then(nw.col("energy_kwh")).otherwise(nw.lit(0.0, nw.Float64())),
            read_minutes=nw.when(estimated | is_daily)
            .then(nw.lit(0, nw.Int64()))
            .otherwise(nw.col("interval_minutes").cast(nw.Int64())),
            daily_reads=nw.when(is_daily & ~estimated).then(nw.lit(1, nw.Int64())).otherwise(nw.lit(0, nw.Int64())),
        )
        .group_by("meter_id", "direction", "local_date", "timezone")
        .agg(
            nw.col("energy_kwh").sum(),
            nw.col("demand_kw").max(),
            nw.col("daily_kwh").max(),
            nw.len().alias("interval_count"),
            nw.col("is_estimated").sum().alias("estimated_interval_count"),
            nw.col("estimated_kwh").sum(),
            nw.col("interval_minutes").min().alias("interval_minutes"),
            nw.col("read_minutes").sum(),
            nw.col("daily_reads").sum(),
        )
    )
    daily_demand = nw.col("daily_kwh") * 60 / nw.col("day_minutes")
    peak = (
        nw.when(nw.col("daily_kwh").is_null())
        .then(nw.col("demand_kw"))
        .when(nw.col("demand_kw").is_null() | (daily_demand > nw.col("demand_kw")))
        .then(daily_demand)
        .otherwise(nw.col("demand_kw"))
    )
    daily = sums.join(calendar, on=["local_date", "timezone"], how="left").with_columns(
        peak_demand_kw=peak,
        read_minutes=nw.col("read_minutes") + nw.col("daily_reads") * nw.col("day_minutes"),
    )
    expected = (
        nw.when(nw.col("interval_minutes") >= DAILY_MINUTES)
        .then(nw.lit(1, nw.Int64()))
        .otherwise(nw.col("day_minutes") // nw.col("interval_minutes"))
    )
    return daily.with_columns(
        expected_interval_count=expected.cast(nw.Int64()),
        completeness=nw.col("read_minutes") / nw.col("day_minutes"),
        interval_count=nw.col("interval_count").cast(nw.Int64()),
        estimated_interval_count=nw.col("estimated_interval_count").cast(nw.Int64()),
        actual_interval_count=(nw.col("interval_count") - nw.col("estimated_interval_count")).cast(nw.Int64()),
        estimated_share=nw.col("estimated_interval_count") / nw.col("interval_count"),
    ).select(GOLD_DAILY_METER_ENERGY.schema.names)


def highest_rows(frame: nw.LazyFrame, keys: Sequence[str], column: str, n: int) -> nw.LazyFrame:
    """The rows of each `keys` group with its `n` largest non-null values of `column` (ties taken
    in no set order)."""
    rank = nw.col(column).rank("ordinal", descending=True).over(*keys)
    names = frame.collect_schema().names()
    ranked = frame.filter(~nw.col(column).is_null()).with_columns(rank.alias("_rank"))
    return ranked.filter(nw.col("_rank") <= n).select(names)


def gold_hourly_portfolio_load(silver: nw.LazyFrame) -> nw.LazyFrame:
    """Energy and number of reporting meters per UTC hour and direction, from intervals of at most an hour."""
    return (
        silver.filter(nw.col("interval_minutes") <= HOURLY_MAX_MINUTES)
        .with_columns(hour_utc=nw.col("interval_start_utc").dt.truncate("1h"))
        .group_by("hour_utc", "direction")
        .agg(nw.col("energy_kwh").sum(), nw.col("meter_id").n_unique().alias("meter_count"))
        .with_columns(nw.col("meter_count").cast(nw.Int64()))
        .select("hour_utc", "direction", "energy_kwh", "meter_count")
    )
