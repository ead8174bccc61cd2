"""The data-quality report's numbers: completeness per meter and local day, estimates per day and
method, the portfolio's load, one meter's intervals, quarantine per rule and batch, and the batch
timeline.

Every figure is aggregated by the engine (narwhals over the table store: DuckDB locally, Spark
in Databricks mode) before it reaches Python, so a large portfolio costs a query, not a loop: a
report of 1,000 meters over 90 days brings back 90,000 completeness cells and a few thousand
other numbers. `energy-platform report` draws them (`app.infrastructure.report_html`), and the
service serves the same report at `GET /report` and its numbers at `GET /quality/summary`.

The days selected (`first_day`..`last_day`, local dates) apply to the data: completeness,
estimates, the load curve and the meter's profile. Quarantine and the batch timeline show the
source's latest batches (at most `batches`), whatever days their rows were for.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import narwhals as nw
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.application.ports import FrameEngine, MetadataStore
from app.domain.batches import BatchRecord
from app.domain.errors import ConfigurationError
from app.domain.schemas import (
    GOLD_DAILY_METER_ENERGY,
    GOLD_HOURLY_PORTFOLIO_LOAD,
    QUARANTINE_READINGS,
    SILVER_READINGS,
    TableSpec,
)

#: Days a report covers when no first day is given: the last 90 up to the newest day in gold (from
#: the oldest day in gold, if that is later).
DEFAULT_DAYS = 90
#: Batches the timeline and the quarantine charts show, newest first.
DEFAULT_BATCHES = 200
#: Meters listed as the worst in the summary.
WORST_METERS = 20
#: Categories of silver intervals in the estimates chart, besides this platform's methods.
READ, SOURCE_ESTIMATE = "read", "estimated by the source"


class ReportTables(FrameEngine, Protocol):
    """What the report reads through: the table store's lazy scans."""

    def exists(self, table: str) -> bool: ...

    def read(self, spec: TableSpec, *, where: Any = None) -> nw.LazyFrame[Any]: ...


@dataclass(frozen=True)
class ReportFilters:
    source: str | None = None
    first_day: date | None = None
    last_day: date | None = None
    meter: str | None = None
    batches: int = DEFAULT_BATCHES


@dataclass
class QualityReport:
    """What the report shows, aggregated. Arrays are in the order the charts draw them."""

    source: str | None
    first_day: date
    last_day: date
    timezone: str
    generated_at: datetime
    #: Completeness: meters (rows) x days (columns), NaN where gold has no row for the meter-day
    meters: list[str] = field(default_factory=list)
    days: list[date] = field(default_factory=list)
    completeness: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    #: Local days in the range on which the clocks change (23- or 25-hour days)
    dst_days: list[date] = field(default_factory=list)
    #: Silver intervals per local day and category (READ, SOURCE_ESTIMATE or a method)
    intervals: dict[str, list[int]] = field(default_factory=dict)
    #: The portfolio's hourly energy: hour (UTC) and kWh per direction
    load_hours: list[datetime] = field(default_factory=list)
    load: dict[str, list[float]] = field(default_factory=dict)
    #: One meter's intervals: start, kWh, and its estimation method or quality ("" for a read)
    meter: str | None = None
    profile: pa.Table | None = None
    #: Quarantined rows per batch and rule, and the rules' top reasons
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    top_reasons: list[dict[str, Any]] = field(default_factory=list)
    batches: list[BatchRecord] = field(default_factory=list)

    def worst_first(self) -> list[int]:
        """Meter rows ordered worst first: lowest mean completeness over the days they have."""
        if not self.meters:
            return []
        with np.errstate(invalid="ignore"):
            mean = np.where(np.isnan(self.completeness), 0.0, self.completeness).mean(axis=1)
        return sorted(range(len(self.meters)), key=lambda i: (mean[i], self.meters[i]))

    def summary(self) -> dict[str, Any]:
        """The report's numbers as JSON-ready values (`GET /quality/summary`)."""
        cells = self.completeness
        with warnings.catch_warnings():  # a day no meter has is NaN, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            day_mean = np.nanmean(cells, axis=0) if cells.size else np.zeros(0)
            day_min = np.nanmin(cells, axis=0) if cells.size else np.zeros(0)
            meter_mean = np.where(np.isnan(cells), 0.0, cells).mean(axis=1) if cells.size else np.zeros(0)
        incomplete = (np.where(np.isnan(cells), 0.0, cells) < 1.0).sum(axis=1) if cells.size else np.zeros(0)
        total = [sum(v[i] for v in self.intervals.values()) for i in range(len(self.days))]
        estimated = [t - self.intervals.get(READ, [0] * len(self.days))[i] for i, t in enumerate(total)]
        by_rule: dict[str, int] = {}
        for row in self.quarantine:
            by_rule[row["rule"]] = by_rule.get(row["rule"], 0) + row["rows"]
        return {
            "source": self.source,
            "from": self.first_day.isoformat(),
            "to": self.last_day.isoformat(),
            "timezone": self.timezone,
            "generated_at": self.generated_at.isoformat(),
            "meters": len(self.meters),
            "dst_days": [d.isoformat() for d in self.dst_days],
            "completeness": {
                "mean": _number(float(np.nanmean(cells))) if cells.size and not np.isnan(cells).all() else None,
                "by_day": [
                    {"date": d.isoformat(), "mean": _number(day_mean[i]), "min": _number(day_min[i])}
                    for i, d in enumerate(self.days)
                ],
                "worst_meters": [
                    {
                        "meter_id": self.meters[i],
                        "mean": _number(meter_mean[i]),
                        "days_incomplete": int(incomplete[i]),
                    }
                    for i in self.worst_first()[:WORST_METERS]
                ],
            },
            "estimates": {
                "by_day": [
                    {
                        "date": d.isoformat(),
                        "intervals": total[i],
                        "estimated": estimated[i],
                        "share": _number(estimated[i] / total[i]) if total[i] else None,
                        "by_category": {k: v[i] for k, v in self.intervals.items() if v[i]},
                    }
                    for i, d in enumerate(self.days)
                ],
                "by_category": {k: sum(v) for k, v in self.intervals.items()},
            },
            "portfolio": {
                "hours": len(self.load_hours),
                "energy_kwh": {k: _number(float(sum(v))) for k, v in self.load.items()},
                "peak_kwh_per_hour": {k: _number(float(max(v))) for k, v in self.load.items() if v},
            },
            "meter": self.meter,
            "quarantine": {
                "rows": sum(by_rule.values()),
                "by_rule": dict(sorted(by_rule.items(), key=lambda kv: -kv[1])),
                "by_batch": self.quarantine,
                "top_reasons": self.top_reasons,
            },
            "batches": [_batch(b) for b in self.batches],
        }


def _number(value: float) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 6)


def _batch(record: BatchRecord) -> dict[str, Any]:
    finished = record.finished_at
    return {
        "batch_id": record.batch_id,
        "source": record.source,
        "kind": record.kind,
        "status": record.status,
        "started_at": record.started_at.isoformat(),
        "seconds": round((finished - record.started_at).total_seconds(), 3) if finished else None,
        "rows_in": record.record_count,
        "layers": {
            m.layer: {
                "seconds": round(m.duration_seconds, 3),
                "rows_in": m.records_in,
                "rows_out": m.records_out,
                "quarantined": m.quarantined,
            }
            for m in record.layers
        },
    }


def dst_days(zone: str, first_day: date, last_day: date) -> list[date]:
    """The local days of `zone` in the range whose length is not 24 hours (the clocks change)."""
    tz = ZoneInfo(zone)
    days, day = [], first_day
    while day <= last_day:
        start = datetime.combine(day, time(), tz)
        end = datetime.combine(day + timedelta(days=1), time(), tz)
        if end.astimezone(UTC) - start.astimezone(UTC) != timedelta(days=1):
            days.append(day)
        day += timedelta(days=1)
    return days


def _days_filter(first_day: date, last_day: date) -> list[tuple[str, str, Any]]:
    return [("local_date", ">=", first_day), ("local_date", "<=", last_day)]


def _date_range(store: ReportTables, filters: ReportFilters) -> tuple[date, date]:
    oldest = newest = None
    if (filters.first_day is None or filters.last_day is None) and store.exists(GOLD_DAILY_METER_ENERGY.name):
        gold = store.read(GOLD_DAILY_METER_ENERGY).select(
            nw.col("local_date").min().alias("first"), nw.col("local_date").max().alias("last")
        )
        bounds = store.collect(gold).to_pylist()[0]
        oldest, newest = bounds["first"], bounds["last"]
    last = filters.last_day or newest or datetime.now(UTC).date()
    first = filters.first_day or max(last - timedelta(days=DEFAULT_DAYS - 1), oldest or last)
    if first > last:
        raise ConfigurationError(f"--from {first.isoformat()} is after --to {last.isoformat()}")
    return first, last


def _source_meters(store: ReportTables, source: str, first: date, last: date) -> nw.LazyFrame[Any] | None:
    if not store.exists(SILVER_READINGS.name):
        return None
    silver = store.read(SILVER_READINGS, where=_days_filter(first, last))
    return silver.filter(nw.col("source") == source).select("meter_id").unique()


def build_report(
    store: ReportTables,
    metadata: MetadataStore,
    filters: ReportFilters,
    *,
    timezone: str,
    now: datetime | None = None,
) -> QualityReport:
    """The report's numbers for `filters`; `timezone` is the zone whose clock changes are marked
    (the source's series zone, or the lake's default)."""
    first, last = _date_range(store, filters)
    report = QualityReport(
        source=filters.source,
        first_day=first,
        last_day=last,
        timezone=timezone,
        generated_at=now or datetime.now(UTC),
        dst_days=dst_days(timezone, first, last),
    )
    report.days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    meters = _source_meters(store, filters.source, first, last) if filters.source else None
    _completeness(store, report, meters)
    _intervals(store, report, filters.source)
    _load(store, report)
    _profile(store, report, filters.meter)
    _quarantine(store, metadata, report, filters)
    return report


def _completeness(store: ReportTables, report: QualityReport, meters: nw.LazyFrame[Any] | None) -> None:
    if not store.exists(GOLD_DAILY_METER_ENERGY.name):
        return
    gold = store.read(GOLD_DAILY_METER_ENERGY, where=_days_filter(report.first_day, report.last_day))
    if meters is not None:
        gold = gold.join(meters, on="meter_id", how="semi")
    # A meter-day with import and export channels is as complete as its least complete one.
    cells = store.collect(
        gold.group_by("meter_id", "local_date").agg(nw.col("completeness").min().alias("completeness"))
    )
    if cells.num_rows == 0:
        return
    names = pc.unique(cells["meter_id"]).sort()
    row = pc.index_in(cells["meter_id"], value_set=names).to_numpy()
    first = np.datetime64(report.first_day, "D").astype(np.int64)
    column = cells["local_date"].cast(pa.int32()).to_numpy() - first
    grid = np.full((len(names), len(report.days)), np.nan)
    grid[row, column] = cells["completeness"].to_numpy()
    report.meters = names.to_pylist()
    report.completeness = grid


def _intervals(store: ReportTables, report: QualityReport, source: str | None) -> None:
    if not store.exists(SILVER_READINGS.name):
        return
    silver = store.read(SILVER_READINGS, where=_days_filter(report.first_day, report.last_day))
    if source:
        silver = silver.filter(nw.col("source") == source)
    counts = store.collect(
        silver.group_by("local_date", "quality_flag", "estimation_method").agg(nw.len().alias("intervals")),
    ).to_pylist()
    index = {d: i for i, d in enumerate(report.days)}
    intervals: dict[str, list[int]] = {}
    for r in counts:
        if r["estimation_method"]:
            category = r["estimation_method"]
        elif r["quality_flag"] == "estimated":
            category = SOURCE_ESTIMATE
        else:
            category = READ
        per_day = intervals.setdefault(category, [0] * len(report.days))
        per_day[index[r["local_date"]]] += int(r["intervals"])
    report.intervals = dict(sorted(intervals.items(), key=lambda kv: (kv[0] != READ, kv[0])))


def _load(store: ReportTables, report: QualityReport) -> None:
    if not store.exists(GOLD_HOURLY_PORTFOLIO_LOAD.name):
        return
    zone = ZoneInfo(report.timezone)
    start = datetime.combine(report.first_day, time(), zone).astimezone(UTC)
    end = datetime.combine(report.last_day + timedelta(days=1), time(), zone).astimezone(UTC)
    load = store.read(GOLD_HOURLY_PORTFOLIO_LOAD, where=[("hour_utc", ">=", start), ("hour_utc", "<", end)]).select(
        "hour_utc", "direction", "energy_kwh"
    )
    rows = store.collect(load).sort_by([("hour_utc", "ascending")])
    hours = pc.unique(rows["hour_utc"])
    report.load_hours = hours.to_pylist()
    for direction in sorted(set(rows["direction"].to_pylist())):
        mine = rows.filter(pc.equal(rows["direction"], direction))
        values = np.zeros(len(hours))
        values[pc.index_in(mine["hour_utc"], value_set=hours).to_numpy()] = mine["energy_kwh"].to_numpy()
        report.load[direction] = values.tolist()


def _profile(store: ReportTables, report: QualityReport, meter: str | None) -> None:
    if meter is None:
        order = report.worst_first()
        meter = report.meters[order[0]] if order else None
    report.meter = meter
    if meter is None or not store.exists(SILVER_READINGS.name):
        return
    silver = store.read(
        SILVER_READINGS, where=[*_days_filter(report.first_day, report.last_day), ("meter_id", "in", [meter])]
    )
    rows = store.collect(
        silver.select("interval_start_utc", "direction", "energy_kwh", "quality_flag", "estimation_method"),
    )
    report.profile = rows.sort_by([("direction", "ascending"), ("interval_start_utc", "ascending")])


def _quarantine(store: ReportTables, metadata: MetadataStore, report: QualityReport, filters: ReportFilters) -> None:
    report.batches = metadata.list_batches(limit=filters.batches, source=filters.source)
    if not store.exists(QUARANTINE_READINGS.name) or not report.batches:
        return
    ids = [b.batch_id for b in report.batches]
    started = {b.batch_id: b.started_at for b in report.batches}
    rows = store.read(QUARANTINE_READINGS, where=[("batch_id", "in", ids)])
    per_batch = store.collect(rows.group_by("batch_id", "rule").agg(nw.len().alias("rows"))).to_pylist()
    report.quarantine = sorted(
        (
            {"batch_id": r["batch_id"], "started_at": started[r["batch_id"]].isoformat(), "rule": r["rule"],
             "rows": int(r["rows"])}
            for r in per_batch
        ),
        key=lambda r: (r["started_at"], r["rule"]),
    )  # fmt: skip
    reasons = store.collect(
        rows.group_by("rule").agg(nw.len().alias("rows"), nw.col("raw_record").min().alias("example")),
    ).to_pylist()
    report.top_reasons = [
        {"rule": r["rule"], "rows": int(r["rows"]), "example": _clipped(r["example"])}
        for r in sorted(reasons, key=lambda r: (-int(r["rows"]), r["rule"]))[:10]
    ]


def _clipped(text: str | None, limit: int = 200) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def parse_day(text: str | None, option: str) -> date | None:
    """A `--from`/`--to` date (YYYY-MM-DD), or an error naming the option."""
    if text is None:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ConfigurationError(f"{option} {text!r} is not a date (YYYY-MM-DD)") from None


def report_filters(
    *, source: str | None, first: str | None, last: str | None, meter: str | None, known_sources: Sequence[str]
) -> ReportFilters:
    """Checked filters: a source the configuration declares, dates in order."""
    if source is not None and source not in known_sources:
        raise ConfigurationError(f"unknown source {source!r}; declared sources: {', '.join(sorted(known_sources))}")
    filters = ReportFilters(
        source=source, first_day=parse_day(first, "--from"), last_day=parse_day(last, "--to"), meter=meter
    )
    if filters.first_day and filters.last_day and filters.first_day > filters.last_day:
        raise ConfigurationError(f"--from {first} is after --to {last}")
    return filters


def report_timezone(zones: dict[str, str], source: str | None) -> str:
    """The zone whose clock changes a report marks: the source's series zone, else the zone the
    sources share (the most common one when they differ), else UTC. `zones`: source -> zone."""
    if source is not None and source in zones:
        return zones[source]
    if not zones:
        return "UTC"
    counts: dict[str, int] = {}
    for zone in zones.values():
        counts[zone] = counts.get(zone, 0) + 1
    return min(counts, key=lambda z: (-counts[z], z))


def source_report(
    store: ReportTables,
    metadata: MetadataStore,
    zones: dict[str, str],
    *,
    source: str | None,
    first: str | None,
    last: str | None,
    meter: str | None,
) -> QualityReport:
    """The report for the filters as given (`--from`/`--to` text), over the sources `zones`
    declares (source -> series zone): what the CLI and the service both serve."""
    filters = report_filters(source=source, first=first, last=last, meter=meter, known_sources=list(zones))
    return build_report(store, metadata, filters, timezone=report_timezone(zones, filters.source))
