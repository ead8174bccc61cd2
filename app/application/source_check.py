"""`sources check`: what a run of a source would do with its files, computed in memory.

The files go through the pipeline's own pieces: the reader, typing, register differencing, the
row rules, de-duplication and `apply_vee`, on Arrow tables (the narwhals transforms on pandas
frames with Arrow dtypes, as the local pandas engine runs them). There is no table store, metadata
database or lake lock: nothing is written and nothing in `DATA_DIR` is read, so the series rules
and estimation judge the files alone (a run also looks back at stored silver). The result adds
what a person needs to get a config right: the first rows as parsed, the DST change days with
their interval counts per series, totals per series, and hints for the usual mistakes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import narwhals as nw
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from app.application.ports import FileReader
from app.application.stages import parse_rows, register_params, vee_batch_rows, vee_input_schema, vee_params
from app.domain.errors import ConfigurationError, InputFileError
from app.domain.parsing import TS_UNPARSEABLE, VALUE_OK, parse_values, raw_column
from app.domain.registers import difference_registers, spread_register_spans
from app.domain.rules import (
    DUPLICATE_REPLACED,
    MALFORMED_ROW,
    MISSING_INTERVALS,
    SERIES_RULES,
    RuleParams,
    validated_readings,
)
from app.domain.schemas import KIND_ERROR, KIND_MALFORMED, KIND_ROW, read_schema
from app.domain.sources import SourceConfig
from app.domain.transforms import local_day_minutes
from app.domain.vee import ROLE_BATCH, ROLE_ESTIMATE, apply_vee

#: Share of the rows with a value that must fail a rule before a hint names a likely cause.
HINT_SHARE = 0.1
#: Zones that mean "UTC" for naive timestamps.
_UTC_NAMES = ("UTC", "Etc/UTC", "GMT", "+00:00", "-00:00")
_OFFSET_AT_END = re.compile(r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)\s*$")
_FIRST_FIELDS = re.compile(r"^\D*?(\d{1,2})[./-](\d{1,2})[./-]\d{2,4}")
#: Unit (lower case) -> the unit 1000 times smaller, as written in a config.
_SMALLER_UNIT = {"kwh": "Wh", "mwh": "kWh", "gwh": "MWh", "kw": "W", "mw": "kW"}
_UNIT_SPELLING = {
    "wh": "Wh",
    "kwh": "kWh",
    "mwh": "MWh",
    "gwh": "GWh",
    "therm": "therm",
    "w": "W",
    "kw": "kW",
    "mw": "MW",
}
_INTERVAL_NAMES = {5: "5-minute intervals", 15: "quarter-hours", 30: "half-hours", 60: "hours", 1440: "days"}


@dataclass(frozen=True)
class ParsedRow:
    """One row as the pipeline types it: where it came from, its instant, its energy and fate."""

    file: str
    line: int
    meter_id: str
    direction: str
    timestamp_text: str
    local_time: str | None
    utc: str | None
    energy_kwh: float | None
    rule: str | None
    flags: str


@dataclass(frozen=True)
class DstDay:
    """A DST change day of the series' zone in the data's range: intervals per series on it."""

    local_date: date
    zone: str
    day_minutes: int
    interval_minutes: int
    expected: int
    #: Read intervals on the day -> how many series have that many.
    series_by_count: dict[int, int]

    def describe(self) -> list[str]:
        name = _INTERVAL_NAMES.get(self.interval_minutes, f"{self.interval_minutes}-minute intervals")
        hours = self.day_minutes // 60
        return [
            f"{self.local_date} {self.zone} ({hours}-hour day): {count} of {self.expected} {name} for {series} series"
            for count, series in sorted(self.series_by_count.items(), reverse=True)
        ]


@dataclass(frozen=True)
class SeriesTotal:
    """One series' accepted reads and estimates over its local days."""

    meter_id: str
    direction: str
    first_day: date
    last_day: date
    interval_minutes: int
    intervals: int
    energy_kwh: float
    estimated_intervals: int
    estimated_kwh: float


@dataclass(frozen=True)
class Hint:
    """A likely mistake in the config, with what to change."""

    key: str
    message: str


@dataclass
class SourceCheck:
    """What a run of a source would do with its files."""

    source: str
    series_timezone: str
    files: list[tuple[str, int]]
    rows_read: int
    accepted: int
    quarantined: int
    duplicates_replaced: int
    rule_counts: dict[str, int]
    severities: dict[str, str]
    estimated: dict[str, int]
    first_rows: list[ParsedRow]
    dst_days: list[DstDay]
    series: list[SeriesTotal]
    hints: list[Hint] = field(default_factory=list)

    @property
    def failures(self) -> dict[str, int]:
        """Rules of severity `fail` that rows failed: a run would stop before writing anything."""
        return {rule: rows for rule, rows in self.rule_counts.items() if rows and self.severities[rule] == "fail"}

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (dates as ISO text)."""
        return {
            "source": self.source,
            "series_timezone": self.series_timezone,
            "files": [{"path": path, "rows": rows} for path, rows in self.files],
            "rows_read": self.rows_read,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "duplicates_replaced": self.duplicates_replaced,
            "run_would_fail": bool(self.failures),
            "rule_counts": [
                {"rule": rule, "severity": self.severities[rule], "rows": rows}
                for rule, rows in self.rule_counts.items()
            ],
            "estimated": self.estimated,
            "first_rows": [asdict(r) for r in self.first_rows],
            "dst_days": [
                {**_plain(asdict(d)), "series_by_count": {str(k): v for k, v in d.series_by_count.items()}}
                | {"text": d.describe()}
                for d in self.dst_days
            ],
            "series": [_plain(asdict(s)) for s in self.series],
            "hints": [asdict(h) for h in self.hints],
        }


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in values.items()}


def find_source(sources: dict[str, SourceConfig], name: str) -> SourceConfig:
    """The source called `name`, or an error listing the declared ones."""
    if name not in sources:
        raise ConfigurationError(f"unknown source {name!r}; declared sources: {', '.join(sorted(sources))}")
    return sources[name]


# --- reading and typing ---------------------------------------------------------------------------


def _read(reader: FileReader, source: SourceConfig, paths: list[Path]) -> tuple[pa.Table, list[str]]:
    """Every file as raw-read rows under the batch header; a file-level error raises, as in a run."""
    header = list(dict.fromkeys(c for p in paths for c in reader.read_header(str(p), reader.read_head(p), source)))
    tables = []
    for index, path in enumerate(paths):
        try:
            data = path.read_bytes()
        except OSError as error:
            raise InputFileError(str(path), f"cannot be read: {error.strerror}") from None
        table = reader.raw_read_table(index, str(path), data, source, header)
        failed = table.filter(pc.equal(table["kind"], KIND_ERROR))
        if failed.num_rows:
            raise InputFileError(str(path), failed["detail"][0].as_py(), line=failed["line_number"][0].as_py())
        tables.append(table)
    return (pa.concat_tables(tables) if tables else read_schema(header).empty_table()), header


def _frame(table: pa.Table) -> nw.LazyFrame[Any]:
    """An Arrow table as a frame of the local pandas engine (pandas with Arrow dtypes), for the
    pipeline's narwhals transforms. Not narwhals' pyarrow backend: there the de-duplication kept a
    different number of rows from one call to the next."""
    return nw.from_native(table.to_pandas(types_mapper=pd.ArrowDtype), eager_only=True).lazy()


def _arrow(frame: nw.LazyFrame[Any]) -> pa.Table:
    return pa.Table.from_pandas(frame.collect().to_native(), preserve_index=False)


def _validated(parsed: pa.Table, source: SourceConfig, now: datetime) -> tuple[pa.Table, pa.Table]:
    """Parsed rows -> (validated rows, accepted rows), register reads differenced and spread as in a run."""
    params = RuleParams.for_source(source, now_utc=now)
    if source.value_kind == "register":
        parsed = difference_registers(parsed, register_params(source, params))
    validated = _arrow(validated_readings(_frame(parsed), params))
    accepted = validated.filter(pc.is_null(validated["rejection_rule"]))
    if source.value_kind == "register":
        accepted = spread_register_spans(accepted, series_timezone=source.series_timezone)
    return validated, accepted


def _vee(validated: pa.Table, accepted: pa.Table, source: SourceConfig, now: datetime) -> pa.Table:
    """Series rules and estimation over the batch's rows alone, as a run's VEE stage runs them."""
    batch = _arrow(vee_batch_rows(_frame(validated), _frame(accepted)))
    schema = vee_input_schema()
    return apply_vee(batch.select(schema.names).cast(schema), vee_params(source, now), ordered=False)


# --- counts ---------------------------------------------------------------------------------------


def _value_counts(column: pa.ChunkedArray | pa.Array) -> dict[Any, int]:
    return {row["values"]: int(row["counts"]) for row in pc.value_counts(column).to_pylist()}


@dataclass(frozen=True)
class _Counts:
    rules: dict[str, int]
    quarantined: int
    duplicates: int
    estimates: dict[str, int]
    #: Rows added by booking register spans on each of their intervals.
    spread: int


def _counts(validated: pa.Table, accepted_rows: pa.Table, vee: pa.Table, malformed: int) -> _Counts:
    """Rows per rule (rejected or flagged), duplicates and estimates, as a run counts them."""
    counts: Counter[str] = Counter()
    row_rules = _value_counts(validated["rejection_rule"].drop_null())
    counts.update(row_rules)
    quarantined = sum(row_rules.values()) + malformed
    if malformed:
        counts[MALFORMED_ROW] += malformed
    batch = vee.filter(pc.equal(vee["role"], ROLE_BATCH))
    series_rules = {r: n for r, n in _value_counts(batch["rejection_rule"].drop_null()).items() if r in SERIES_RULES}
    counts.update(series_rules)
    quarantined += sum(series_rules.values())
    for (rule, flags), n in Counter(
        zip(batch["rejection_rule"].to_pylist(), batch["validation_flags"].to_pylist(), strict=True)
    ).items():
        for flag in filter(None, (flags or "").split(";")):
            if flag != rule:
                counts[flag] += n
    accepted = validated.num_rows - sum(row_rules.values())
    spread = accepted_rows.num_rows - accepted
    kept = int(pc.sum(pc.is_null(batch["rejection_rule"])).as_py() or 0)
    duplicates = accepted + spread - kept - sum(series_rules.values())
    if duplicates:
        counts[DUPLICATE_REPLACED] += duplicates
    generated = vee.filter(pc.not_equal(vee["role"], ROLE_BATCH))
    estimates = _value_counts(generated.filter(pc.equal(generated["role"], ROLE_ESTIMATE))["estimation_method"])
    if generated.num_rows:
        counts[MISSING_INTERVALS] += generated.num_rows
    return _Counts(dict(sorted(counts.items())), quarantined, duplicates, dict(sorted(estimates.items())), spread)


# --- what the rows look like ----------------------------------------------------------------------


def _timestamp_text(parsed: pa.Table, source: SourceConfig, header: list[str]) -> pa.ChunkedArray:
    """Each row's timestamp as the file wrote it (columns joined by a space)."""
    mapping = source.reading_columns()
    names = [*mapping.timestamp_columns(), *([mapping.position] if mapping.position else [])]
    parts = [pc.fill_null(parsed[raw_column(header.index(c))], "") for c in names if c in header]
    if not parts:
        return pa.chunked_array([pa.repeat(pa.scalar(""), parsed.num_rows)])
    return parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, " ")


def _first_rows(validated: pa.Table, stamps: pa.ChunkedArray, zone: str, limit: int) -> list[ParsedRow]:
    head = validated.slice(0, limit).to_pylist()
    tz = ZoneInfo(zone)
    rows = []
    for row, text in zip(head, stamps.slice(0, limit).to_pylist(), strict=True):
        start: datetime | None = row["interval_start_utc"]
        rows.append(
            ParsedRow(
                file=row["source_file"],
                line=row["line_number"],
                meter_id=row["meter_id"],
                direction=row["direction"],
                timestamp_text=text,
                local_time=start.astimezone(tz).isoformat(sep=" ", timespec="minutes") if start else None,
                utc=start.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ") if start else None,
                energy_kwh=row["energy_kwh"],
                rule=row["rejection_rule"],
                flags=row["validation_flags"] or "",
            )
        )
    return rows


def _series_totals(vee: pa.Table) -> list[SeriesTotal]:
    read = pc.and_(pc.equal(vee["role"], ROLE_BATCH), pc.is_null(vee["rejection_rule"]))
    estimate = pc.equal(vee["role"], ROLE_ESTIMATE)
    kept = vee.filter(pc.or_(read, estimate)).append_column("is_read", pc.filter(read, pc.or_(read, estimate)))
    kept = kept.append_column("read_kwh", pc.if_else(kept["is_read"], kept["energy_kwh"], 0.0))
    kept = kept.append_column("is_estimate", pc.invert(kept["is_read"]))
    kept = kept.append_column("estimate_kwh", pc.if_else(kept["is_read"], 0.0, kept["energy_kwh"]))
    grouped = kept.group_by(["meter_id", "direction"]).aggregate(
        [
            ("local_date", "min"),
            ("local_date", "max"),
            ("is_read", "sum"),
            ("read_kwh", "sum"),
            ("is_estimate", "sum"),
            ("estimate_kwh", "sum"),
        ]
    )
    lengths = kept.group_by(["meter_id", "direction", "interval_minutes"]).aggregate([("is_read", "count")])
    interval: dict[tuple[str, str], tuple[int, int]] = {}
    for r in lengths.to_pylist():  # the series' most common interval length
        key, candidate = (r["meter_id"], r["direction"]), (int(r["is_read_count"]), int(r["interval_minutes"] or 0))
        interval[key] = max(interval.get(key, candidate), candidate)
    totals = [
        SeriesTotal(
            meter_id=r["meter_id"],
            direction=r["direction"],
            first_day=r["local_date_min"],
            last_day=r["local_date_max"],
            interval_minutes=interval[(r["meter_id"], r["direction"])][1],
            intervals=int(r["is_read_sum"] or 0),
            energy_kwh=round(float(r["read_kwh_sum"] or 0.0), 6),
            estimated_intervals=int(r["is_estimate_sum"] or 0),
            estimated_kwh=round(float(r["estimate_kwh_sum"] or 0.0), 6),
        )
        for r in grouped.to_pylist()
    ]
    return sorted(totals, key=lambda s: (s.meter_id, s.direction))


def _days(first: date, last: date) -> Iterable[date]:
    return (first + timedelta(days=n) for n in range((last - first).days + 1))


def dst_days(zone: str, first: date, last: date) -> dict[date, int]:
    """Local days of `zone` between `first` and `last` that are not 24 hours long -> their minutes."""
    if zone in _UTC_NAMES:
        return {}
    calendar = local_day_minutes((day, zone) for day in _days(first, last)).to_pylist()
    return {r["local_date"]: int(r["day_minutes"]) for r in calendar if r["day_minutes"] != 1440}


def _dst_days(vee: pa.Table, series: list[SeriesTotal], zone: str) -> list[DstDay]:
    if not series:
        return []
    changes = dst_days(zone, min(s.first_day for s in series), max(s.last_day for s in series))
    if not changes:
        return []
    read = vee.filter(pc.and_(pc.equal(vee["role"], ROLE_BATCH), pc.is_null(vee["rejection_rule"])))
    on_days = read.filter(pc.is_in(read["local_date"], value_set=pa.array(list(changes), pa.date32())))
    per_day = Counter(
        zip(
            on_days["meter_id"].to_pylist(),
            on_days["direction"].to_pylist(),
            on_days["local_date"].to_pylist(),
            strict=True,
        )
    )
    result = []
    for day, minutes in sorted(changes.items()):
        groups: dict[int, Counter[int]] = {}
        for s in series:
            if s.first_day <= day <= s.last_day and s.interval_minutes <= minutes:
                groups.setdefault(s.interval_minutes, Counter())[per_day[(s.meter_id, s.direction, day)]] += 1
        for interval, by_count in sorted(groups.items()):
            result.append(DstDay(day, zone, minutes, interval, max(minutes // interval, 1), dict(by_count)))
    return result


# --- hints ----------------------------------------------------------------------------------------


def _rule_rows(validated: pa.Table, rule: str) -> pa.Table:
    """Validated rows that fail `rule`, rejected by it or flagged."""
    flagged = pc.match_substring_regex(pc.fill_null(validated["validation_flags"], ""), rf"(^|;){rule}(;|$)")
    return validated.filter(pc.or_(pc.fill_null(pc.equal(validated["rejection_rule"], rule), False), flagged))


def _unit_fix(source: SourceConfig, unit: str, smaller: str, meter: str) -> str:
    """What to change for a unit 1000 times too large: the fixed unit, a series' unit, or the file."""
    if source.format != "csv":
        return f"the file itself states {unit}: check its values"
    if source.layout == "wide":
        return f'declare unit = "{smaller}" for series {meter!r}'
    if source.columns.unit:
        return f"the unit column {source.columns.unit!r} says {unit}: check the file"
    return f'set unit = "{smaller}"'


def _unit_hint(validated: pa.Table, source: SourceConfig) -> Hint | None:
    """Many readings above the physical maximum: a unit 1000 times too large, probably."""
    valued = int(pc.sum(pc.equal(validated["value_status"], VALUE_OK)).as_py() or 0)
    failing = _rule_rows(validated, "above_physical_max")
    if not failing.num_rows or failing.num_rows < HINT_SHARE * valued:
        return None
    (unit, _), (meter, _) = (Counter(failing[c].to_pylist()).most_common(1)[0] for c in ("unit", "meter_id"))
    unit, meter = str(unit), str(meter)
    spelled = _UNIT_SPELLING.get(unit, unit)
    demand = pc.divide(pc.multiply(pc.abs(failing["energy_kwh"]), 60.0), pc.cast(failing["interval_minutes"], "double"))
    message = (
        f"{failing.num_rows:,} of {valued:,} readings fail above_physical_max (demand above "
        f"{source.max_demand_kw:,g} kW; median {pc.approximate_median(demand).as_py():,.0f} kW) in unit {spelled}, "
        f"most of them of series {meter!r}"
    )
    smaller = _SMALLER_UNIT.get(unit)
    if smaller:
        passing = int(pc.sum(pc.less_equal(pc.divide(demand, 1000.0), source.max_demand_kw)).as_py() or 0)
        message += (
            f": if the values are in {smaller} (1000 times smaller; {passing:,} of them would then pass), "
            f"{_unit_fix(source, spelled, smaller, meter)}; if the demand is real (a grid or plant series), "
            "raise max_demand_kw"
        )
    else:
        message += ": check the values' unit, or raise max_demand_kw if the demand is real"
    return Hint("unit", message)


def _naive(stamps: pa.ChunkedArray) -> bool:
    """True when most timestamps carry no UTC offset."""
    with_offset = pc.sum(pc.match_substring_regex(stamps, _OFFSET_AT_END.pattern)).as_py() or 0
    return with_offset * 2 < len(stamps)


def _clock_change(zone: str, day: date) -> tuple[datetime, timedelta, timedelta] | None:
    """The instant the clocks change on `day` in `zone`, with the offsets before and after."""
    tz = ZoneInfo(zone)
    start = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
    step = timedelta(minutes=15)
    moment = start
    before = moment.astimezone(tz).utcoffset()
    while moment < start + timedelta(hours=26):
        moment += step
        after = moment.astimezone(tz).utcoffset()
        if after != before and before is not None and after is not None:
            return moment, before, after
    return None


def _timezone_hint(parsed: pa.Table, stamps: pa.ChunkedArray, source: SourceConfig, days: list[DstDay]) -> Hint | None:
    """Naive wall times read as UTC for a series zone with DST: a missing or repeated hour at a change."""
    if source.timestamp_timezone not in _UTC_NAMES or not days or not _naive(stamps):
        return None
    start = parsed["interval_start_utc"]
    for day in sorted({d.local_date for d in days}):
        change = _clock_change(source.series_timezone, day)
        if change is None:
            continue
        moment, before, after = change
        # The hour the change skips or repeats, as wall-clock times; read as UTC they are these instants.
        wall_from = (moment + min(before, after)).replace(tzinfo=UTC)
        wall_to = (moment + max(before, after)).replace(tzinfo=UTC)
        inside = parsed.filter(pc.and_(pc.greater_equal(start, wall_from), pc.less(start, wall_to)))
        hour = f"{wall_from:%H:%M}-{wall_to:%H:%M} on {wall_from:%Y-%m-%d}"
        advice = f'the times look local: set timestamp_timezone = "{source.series_timezone}"'
        if after > before:  # spring forward: a local file has no rows in the skipped hour
            around = parsed.filter(
                pc.and_(
                    pc.greater_equal(start, wall_from - timedelta(hours=1)),
                    pc.less(start, wall_to + timedelta(hours=1)),
                )
            )
            if around.num_rows and not inside.num_rows:
                return Hint(
                    "timestamp_timezone",
                    f"timestamps have no offset and are read as {source.timestamp_timezone}, but the series zone "
                    f"{source.series_timezone} has DST and the file has no rows at {hour}, the hour its clocks skip: "
                    f"{advice}",
                )
        else:  # fall back: a local file repeats the hour
            keys = Counter(
                zip(
                    inside["meter_id"].to_pylist(),
                    inside["direction"].to_pylist(),
                    inside["interval_start_utc"].to_pylist(),
                    strict=True,
                )
            )
            if any(n > 1 for n in keys.values()):
                if source.ambiguous_time != "order":
                    advice += ' (and ambiguous_time = "order" if the file lists the repeats in order)'
                return Hint(
                    "timestamp_timezone",
                    f"timestamps have no offset and are read as {source.timestamp_timezone}, but the series zone "
                    f"{source.series_timezone} has DST and the file repeats {hour}, the hour its clocks repeat: "
                    f"{advice}",
                )
    return None


def _swapped(timestamp_format: str) -> str | None:
    if "%d" in timestamp_format and "%m" in timestamp_format:
        return timestamp_format.replace("%d", "\x00").replace("%m", "%d").replace("\x00", "%m")
    return None


def _day_month_hint(parsed: pa.Table, stamps: pa.ChunkedArray, source: SourceConfig) -> Hint | None:
    """Many unparseable timestamps whose first field is above 12: day and month swapped."""
    unparseable = pc.equal(parsed["timestamp_status"], TS_UNPARSEABLE)
    texts = pc.filter(stamps, unparseable).to_pylist()
    suspects = [t for t in texts if (m := _FIRST_FIELDS.match(t)) and int(m.group(1)) > 12 and int(m.group(2)) <= 12]
    if not suspects or len(suspects) * 2 < len(texts) or len(suspects) < HINT_SHARE * parsed.num_rows:
        return None
    swapped = _swapped(source.timestamp_format)
    fix = f'try timestamp_format = "{swapped}"' if swapped else "declare a day-first timestamp_format"
    return Hint(
        "timestamp_format",
        f"{len(texts):,} rows fail timestamp_unparseable and {len(suspects):,} of them start with a field above 12 "
        f"(e.g. {suspects[0]!r}, read with {source.timestamp_format!r}): day and month look swapped; {fix}",
    )


def _downs_and_ups(values: np.ndarray, series: np.ndarray, order: np.ndarray) -> tuple[int, int]:
    """Steps down and up between consecutive values of each series, in `order`."""
    v, s = values[order], series[order]
    same = s[1:] == s[:-1]
    step = np.diff(v)[same]
    return int((step < 0).sum()), int((step > 0).sum())


def _register_hint(rows: pa.Table, parsed: pa.Table, source: SourceConfig) -> Hint | None:
    """Cumulative reads that go down more often than up: listed newest-first, or not a register."""
    if source.value_kind != "register" or not parsed.num_rows:
        return None
    reads, status = parse_values(rows[source.reading_columns().value], source)
    good = pc.and_(pc.equal(status, VALUE_OK), pc.is_valid(parsed["interval_start_utc"]))
    keep = np.asarray(good.to_numpy(zero_copy_only=False), dtype=bool)
    if keep.sum() < 3:
        return None
    key = pc.binary_join_element_wise(parsed["meter_id"], parsed["direction"], parsed["unit"], "\x1f")
    series = np.asarray(pc.dictionary_encode(key).combine_chunks().indices.to_numpy(), dtype=np.int64)[keep]
    values = np.asarray(reads.to_numpy(zero_copy_only=False), dtype=np.float64)[keep]
    times = np.asarray(pc.cast(parsed["interval_start_utc"], pa.int64()).to_numpy(zero_copy_only=False))[keep]
    file_down, file_up = _downs_and_ups(values, series, np.argsort(series, kind="stable"))
    time_down, time_up = _downs_and_ups(values, series, np.lexsort((times, series)))
    if time_down > time_up:
        return Hint(
            "value_kind",
            f"the cumulative reads go down {time_down:,} times and up {time_up:,} times in time order: "
            'this is probably not a register; declare value_kind = "interval" if the values are interval energy',
        )
    if file_down > file_up:
        return Hint(
            "value_kind",
            f"the cumulative reads go down {file_down:,} times and up {file_up:,} times in file order but not in "
            "time order: the file looks listed newest-first (fine: the platform differences reads in time order)",
        )
    return None


# --- the check ------------------------------------------------------------------------------------


def check_source(
    reader: FileReader, source: SourceConfig, paths: list[Path], *, now: datetime, sample_rows: int = 10
) -> SourceCheck:
    """Read, type and validate `paths` as `source` in memory, and say what a run would do."""
    raw, header = _read(reader, source, paths)
    kinds = raw["kind"]
    rows = raw.filter(pc.equal(kinds, KIND_ROW))
    malformed = int(pc.sum(pc.equal(kinds, KIND_MALFORMED)).as_py() or 0)
    per_file = Counter(raw["source_file"].to_pylist())
    parsed = parse_rows(rows, source=source, header=header)
    validated, accepted = _validated(parsed, source, now)
    vee = _vee(validated, accepted, source, now)
    counts = _counts(validated, accepted, vee, malformed)
    stamps = _timestamp_text(parsed, source, header)
    series = _series_totals(vee)
    days = _dst_days(vee, series, source.series_timezone)
    hints = [
        _unit_hint(validated, source),
        _timezone_hint(parsed, stamps, source, days),
        _day_month_hint(parsed, stamps, source),
        _register_hint(rows, parsed, source),
    ]
    return SourceCheck(
        source=source.name,
        series_timezone=source.series_timezone,
        files=[(str(p), per_file.get(str(p), 0)) for p in paths],
        rows_read=raw.num_rows,
        accepted=raw.num_rows + counts.spread - counts.quarantined - counts.duplicates,
        quarantined=counts.quarantined,
        duplicates_replaced=counts.duplicates,
        rule_counts=counts.rules,
        severities={rule: source.severity(rule) for rule in counts.rules},
        estimated=counts.estimates,
        first_rows=_first_rows(validated, stamps, source.series_timezone, sample_rows),
        dst_days=days,
        series=series,
        hints=[h for h in hints if h is not None],
    )
