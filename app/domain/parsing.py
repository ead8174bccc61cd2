"""Typing raw string rows in Arrow: timestamps to UTC interval starts, numbers, units.

Vectorised over whole columns with pyarrow.compute, so it runs per Arrow batch in
local mode and unchanged inside Spark's `mapInArrow`. It never drops a row: a
field that cannot be typed becomes null and its status column says why, and the
validation rules turn statuses into quarantine decisions.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from app.domain.schemas import UTC_TIMESTAMP
from app.domain.sources import SourceConfig

RAW_PREFIX = "raw_"

_ISO = (
    r"^\s*(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<hm>\d{2}:\d{2})(?P<sec>:\d{2})?"
    r"(?P<frac>\.\d{1,6})?\s*(?P<off>Z|[+-](?:[01]\d|2[0-3])(?::?[0-5]\d)?)?\s*$"
)
_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_WALL_FORMAT = "%Y-%m-%dT%H:%M:%S"

TS_OK, TS_UNPARSEABLE, TS_DST_GAP, TS_AMBIGUOUS = "ok", "unparseable", "dst_gap", "ambiguous"
VALUE_OK, VALUE_MISSING, VALUE_UNPARSEABLE = "ok", "missing", "unparseable"


def raw_column(index: int) -> str:
    """Name under which the parsed table keeps the file's column number `index` as received."""
    return f"{RAW_PREFIX}{index}"


def _is_iana(zone: str) -> bool:
    return zone[0] not in "+-" and zone not in ("UTC", "Etc/UTC", "GMT")


def _strip(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.utf8_trim_whitespace(column)


def _localize(
    wall: pa.ChunkedArray, zone: str, ambiguous: str = "raise", nonexistent: str = "raise"
) -> pa.ChunkedArray:
    """Wall times in `zone` -> UTC instants."""
    local = pc.assume_timezone(wall, timezone=zone, ambiguous=ambiguous, nonexistent=nonexistent)
    return pc.cast(local, UTC_TIMESTAMP)


def _offset_minutes(offset: pa.ChunkedArray) -> pa.ChunkedArray:
    """`Z`, `+HH`, `+HHMM` or `+HH:MM` -> signed minutes east of UTC (0 where absent)."""
    digits = pc.replace_substring(offset, ":", "")
    hours = pc.utf8_slice_codeunits(digits, 1, 3)
    minutes = pc.utf8_slice_codeunits(digits, 3, 5)
    as_int = lambda s: pc.cast(pc.if_else(pc.equal(s, ""), "0", s), pa.int64())  # noqa: E731
    total = pc.add(pc.multiply(as_int(hours), 60), as_int(minutes))
    return pc.if_else(pc.starts_with(offset, "-"), pc.negate(total), total)


def _parse_iso(raw: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray, pa.ChunkedArray]:
    """ISO 8601 -> (naive wall time, has explicit offset, offset minutes); null when invalid."""
    parts = pc.extract_regex(pc.fill_null(raw, ""), _ISO)

    def part(name: str) -> pa.ChunkedArray:
        return pc.fill_null(pc.struct_field(parts, name), "")

    seconds = part("sec")
    wall_text = pc.binary_join_element_wise(
        part("date"), "T", part("hm"), pc.if_else(pc.equal(seconds, ""), ":00", seconds), ""
    )
    wall = pc.strptime(wall_text, format=_WALL_FORMAT, unit="us", error_is_null=True)
    # strptime normalises 2025-02-30 to 2025-03-02: a round trip catches impossible dates.
    exact = pc.equal(pc.strftime(pc.cast(wall, pa.timestamp("s")), format=_WALL_FORMAT), wall_text)
    wall = pc.if_else(pc.and_(pc.is_valid(parts), exact), wall, pa.scalar(None, wall.type))
    frac = pc.utf8_slice_codeunits(part("frac"), 1)
    micros = pc.cast(pc.if_else(pc.equal(frac, ""), "0", pc.utf8_rpad(frac, 6, "0")), pa.int64())
    wall = pc.add(wall, pc.cast(micros, pa.duration("us")))
    offset = part("off")
    return wall, pc.not_equal(offset, ""), _offset_minutes(offset)


def parse_timestamps(raw: pa.ChunkedArray, source: SourceConfig) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Raw timestamps -> (interval start in UTC, status) following the source's conventions."""
    zone = source.timestamp_timezone
    if source.timestamp_format == "iso8601":
        wall, has_offset, offset_minutes = _parse_iso(raw)
    else:
        text = _strip(pc.fill_null(raw, ""))
        parsed = pc.strptime(text, format=source.timestamp_format, unit="us", error_is_null=True)
        # With %z in the format Arrow returns UTC instants; treat them as UTC wall times
        # carrying an explicit offset of zero.
        is_instant = parsed.type.tz is not None
        wall = pc.cast(parsed, pa.timestamp("us")) if is_instant else parsed
        has_offset = pc.fill_null(pc.is_valid(parsed), False) if is_instant else pc.equal(text, "\x00")
        offset_minutes = pc.multiply(pc.cast(pc.is_valid(parsed), pa.int64()), 0)

    from_offset = pc.subtract(
        _localize(wall, "UTC"), pc.cast(pc.multiply(offset_minutes, 60_000_000), pa.duration("us"))
    )
    status = pc.if_else(pc.is_null(wall), TS_UNPARSEABLE, TS_OK)
    if _is_iana(zone):
        early = _localize(wall, zone, "earliest", "earliest")
        late_gap = _localize(wall, zone, "earliest", "latest")
        late = _localize(wall, zone, "latest", "latest")
        in_gap = pc.not_equal(early, late_gap)
        is_ambiguous = pc.not_equal(late_gap, late)
        chosen = late if source.ambiguous_time == "latest" else late_gap
        from_wall = chosen
        # A written offset is authoritative, but a non-UTC one on a wall time that cannot
        # exist in the source's zone marks a mislabelled feed, not an instant to trust.
        explicit_local = pc.and_(has_offset, pc.not_equal(offset_minutes, 0))
        gap = pc.and_(in_gap, pc.or_(pc.invert(has_offset), explicit_local))
        status = pc.if_else(pc.fill_null(gap, False), TS_DST_GAP, status)
        if source.ambiguous_time == "reject":
            undecided = pc.and_(pc.invert(has_offset), is_ambiguous)
            status = pc.if_else(pc.fill_null(undecided, False), TS_AMBIGUOUS, status)
    else:
        from_wall = _localize(wall, zone)
    instant = pc.if_else(has_offset, from_offset, from_wall)
    instant = pc.if_else(pc.equal(status, TS_OK), instant, pa.scalar(None, UTC_TIMESTAMP))
    if source.timestamp_label == "end":
        instant = pc.subtract(instant, pa.scalar(source.interval_minutes * 60_000_000, pa.duration("us")))
    return pc.cast(instant, UTC_TIMESTAMP), status


def local_time(instants: pa.ChunkedArray | pa.Array, zone: str) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """UTC instants -> (local calendar date, seconds since local midnight) in `zone`.

    Computed here in Arrow rather than on the engine, because Spark keeps one time zone
    per session and cannot convert a column to another zone.
    """
    local = pc.local_timestamp(pc.cast(instants, pa.timestamp("us", tz=zone)))
    seconds = pc.add(pc.add(pc.multiply(pc.hour(local), 3600), pc.multiply(pc.minute(local), 60)), pc.second(local))
    return pc.cast(local, pa.date32()), pc.cast(seconds, pa.int64())


def with_local_time(table: pa.Table, zone: str) -> pa.Table:
    """`table` with `local_date` and `local_seconds` of its `interval_start_utc` in `zone`."""
    local_date, local_seconds = local_time(table["interval_start_utc"], zone)
    for name, column in (("local_date", local_date), ("local_seconds", local_seconds)):
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, column)
    return table


def parse_values(raw: pa.ChunkedArray, source: SourceConfig) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Raw numbers -> (float64, status); missing markers are told apart from junk."""
    text = _strip(pc.fill_null(raw, ""))
    missing = pc.is_in(text, value_set=pa.array(list(source.missing_values), pa.string()))
    numeric = pc.match_substring_regex(text, _NUMBER)
    value = pc.cast(pc.if_else(numeric, text, "0"), pa.float64())
    finite = pc.is_finite(value)
    status = pc.if_else(missing, VALUE_MISSING, pc.if_else(pc.and_(numeric, finite), VALUE_OK, VALUE_UNPARSEABLE))
    value = pc.if_else(pc.equal(status, VALUE_OK), value, pa.scalar(None, pa.float64()))
    return value, status


def _text_or_fixed(raw: pa.Table, column: str | None, fixed: str) -> pa.ChunkedArray:
    if column is None:
        return pa.chunked_array([pa.repeat(fixed, raw.num_rows)], pa.string())
    return pc.utf8_lower(_strip(pc.fill_null(raw[column], "")))


#: Columns a raw read carries besides the file's own; never part of the raw record.
_LINEAGE_COLUMNS = ("file_index", "source_file", "line_number", "row_order", "kind", "detail")


def parsed_readings(raw: pa.Table, source: SourceConfig, header: list[str] | None = None) -> pa.Table:
    """Raw rows (file columns as strings plus lineage) -> typed columns with statuses.

    Keeps every raw column (`header`, in order; by default every non-lineage column),
    renamed `raw_<i>`, so a rejected row can be quarantined exactly as received. Rows are
    typed independently of each other, so any split of the rows into batches gives the
    same result.
    """
    cols = source.columns
    meter = _strip(pc.fill_null(raw[cols.meter_id], ""))
    interval_start, ts_status = parse_timestamps(raw[cols.timestamp], source)
    value, value_status = parse_values(raw[cols.value], source)
    unit = _text_or_fixed(raw, cols.unit, (source.unit or "").lower())
    direction = _text_or_fixed(raw, cols.direction, source.direction)
    local_date, local_seconds = local_time(interval_start, source.series_timezone)
    typed = {
        "meter_id": meter,
        "direction": direction,
        "interval_start_utc": interval_start,
        "local_date": local_date,
        "local_seconds": local_seconds,
        "timestamp_status": ts_status,
        "value": value,
        "value_status": value_status,
        "unit": unit,
        "source_file": raw["source_file"],
        "line_number": raw["line_number"],
    }
    if "row_order" in raw.column_names:
        typed["row_order"] = raw["row_order"]
    file_columns = header if header is not None else [n for n in raw.column_names if n not in _LINEAGE_COLUMNS]
    for index, name in enumerate(file_columns):
        typed[raw_column(index)] = raw[name]
    return pa.table(typed)


def parsed_schema(header: list[str]) -> pa.Schema:
    """Schema of `parsed_readings` over a raw read with `header` (row_order included)."""
    return pa.schema(
        [
            ("meter_id", pa.string()),
            ("direction", pa.string()),
            ("interval_start_utc", UTC_TIMESTAMP),
            ("local_date", pa.date32()),
            ("local_seconds", pa.int64()),
            ("timestamp_status", pa.string()),
            ("value", pa.float64()),
            ("value_status", pa.string()),
            ("unit", pa.string()),
            ("source_file", pa.string()),
            ("line_number", pa.int64()),
            ("row_order", pa.int64()),
            *((raw_column(i), pa.string()) for i in range(len(header))),
        ]
    )
