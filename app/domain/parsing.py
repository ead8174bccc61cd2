"""Typing raw string rows in Arrow: timestamps to UTC interval starts, numbers, units.

Vectorised over whole columns with pyarrow.compute, so it runs per Arrow batch in
local mode and unchanged inside Spark's `mapInArrow`. It never drops a row: a
field that cannot be typed becomes null and its status column says why, and the
validation rules turn statuses into quarantine decisions.

Every row is typed on its own: whatever needs file order (fill-down, register
differences, the occurrence of a repeated wall time) is done by the reader, per whole
file, and reaches parsing as columns of the raw row.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import PurePath

import pyarrow as pa
import pyarrow.compute as pc

from app.domain.errors import ConfigurationError
from app.domain.schemas import UTC_TIMESTAMP
from app.domain.sources import ColumnMapping, SourceConfig, split_at_offset

RAW_PREFIX = "raw_"

#: A written UTC offset: Z, +HH, +HHMM or +HH:MM (hours below 24, minutes below 60).
_OFFSET = r"[Zz]|[+-](?:[01]\d|2[0-3])(?::?[0-5]\d)?"
_ISO = (
    r"^\s*(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<hm>\d{2}:\d{2})(?P<sec>:\d{2})?"
    r"(?P<frac>\.\d{1,6})?\s*(?P<off>" + _OFFSET + r")?\s*$"
)
#: strptime directives that read digits; the others (names, AM/PM) are matched loosely.
_NUMERIC_DIRECTIVES = frozenset("CdeGgHIjMmSUuVWwYy")
_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_WALL_FORMAT = "%Y-%m-%dT%H:%M:%S"
_DATE_FORMAT = "%Y-%m-%d"
#: Excel's way of keeping a number as text: `="123456"`.
_EXCEL_ESCAPED = r'^="(.*)"$'
#: "Hour ending 24": a time of 24:00 (or 24:00:00, 24:00:00.000) is midnight of the next day.
_HOUR_24 = r"(^|[\sTt])24:00(:00(\.0+)?)?([^0-9:.]|$)"
#: Thousands separators removed when the source's decimal mark is a comma.
_THOUSANDS = r"[.\s\x{00a0}\x{202f}]"
_INTEGER = r"^\+?\d{1,6}$"

_US_PER_MINUTE = 60_000_000
_US_PER_DAY = 86_400_000_000

TS_OK, TS_UNPARSEABLE, TS_DST_GAP, TS_AMBIGUOUS = "ok", "unparseable", "dst_gap", "ambiguous"
VALUE_OK, VALUE_MISSING, VALUE_UNPARSEABLE = "ok", "missing", "unparseable"
#: Statuses `registers.difference_registers` gives cumulative reads that yield no interval energy.
VALUE_REGISTER_START, VALUE_REGISTER_RESET = "register_start", "register_reset"


def raw_column(index: int) -> str:
    """Name under which the parsed table keeps the file's column number `index` as received."""
    return f"{RAW_PREFIX}{index}"


def _is_iana(zone: str) -> bool:
    return zone[0] not in "+-" and zone not in ("UTC", "Etc/UTC", "GMT")


def _chunked(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    return column if isinstance(column, pa.ChunkedArray) else pa.chunked_array([column], column.type)


def _strip(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.utf8_trim_whitespace(column)


#: Passed as `occurrence` to parse distinct texts without parsing them by distinct values again.
_NO_OCCURRENCE = pa.chunked_array([], pa.int32())


def _distinct(column: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, pa.ChunkedArray] | None:
    """(position of each row's value among the distinct values, the distinct values) when values
    repeat enough for computing once per distinct value to pay; else None."""
    column = _chunked(column)
    if len(column) < 1024:
        return None
    distinct = pc.unique(column)
    if len(distinct) * 4 > len(column):
        return None
    return pc.index_in(column, value_set=distinct), _chunked(distinct)


def clean_text(raw: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """Raw field -> text to type: null as "", surrounding blanks and Excel's `="..."` removed."""
    repeated = _distinct(raw)
    if repeated is not None:
        positions, distinct = repeated
        return _chunked(pc.take(_clean_text(distinct), positions))
    return _clean_text(raw)


def _clean_text(raw: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    text = _strip(pc.fill_null(_chunked(raw).cast(pa.string()), ""))
    return _strip(pc.replace_substring_regex(text, _EXCEL_ESCAPED, r"\1"))


def _repeat(value: str | float, n: int, type_: pa.DataType) -> pa.ChunkedArray:
    return pa.chunked_array([pa.repeat(pa.scalar(value, type_), n)], type_)


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


def _parse_iso(text: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray, pa.ChunkedArray]:
    """ISO 8601 -> (naive wall time, has explicit offset, offset minutes); null when invalid."""
    parts = pc.extract_regex(text, _ISO)

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
    offset = pc.utf8_upper(part("off"))
    return wall, pc.not_equal(offset, ""), _offset_minutes(offset)


def _format_pattern(fmt: str) -> str:
    """A regular expression (RE2) for text written in strptime format `fmt`: loose, but anchored
    by the format's literal text and digits, enough to tell where such text begins."""
    parts = []
    for token in re.findall(r"%.|\s+|[^%\s]+|%", fmt, re.DOTALL):
        if token == "%%":
            parts.append("%")
        elif len(token) == 2 and token[0] == "%":
            parts.append(r"\d+" if token[1] in _NUMERIC_DIRECTIVES else ".+?")
        elif token.isspace():
            parts.append(r"\s*")
        else:
            parts.append(re.escape(token) if "\\E" in token else rf"\Q{token}\E")
    return "".join(parts)


def _digit_runs(text: pa.ChunkedArray) -> pa.ChunkedArray:
    """The numbers in a text, leading zeros dropped: "01/06/2025 9:30" -> "1 6 2025 9 30"."""
    runs = pc.replace_substring_regex(text, r"[^0-9]+", " ")
    return pc.utf8_trim(pc.replace_substring_regex(runs, r"(^| )0+([0-9])", r"\1\2"), " ")


def _parse_strptime(text: pa.ChunkedArray, fmt: str) -> tuple[pa.ChunkedArray, pa.ChunkedArray, pa.ChunkedArray]:
    """Clean text in strptime format `fmt` -> (naive wall time, has explicit offset, offset minutes).

    Arrow's strptime moves impossible times (30/02 -> 02/03, 10:00:60 -> 10:01) and folds a
    `%z` offset into UTC. So a written offset is cut out of the text and read as in ISO 8601
    (the DST checks then treat it alike), and the wall time parsed without it is written back
    in the format: its numbers must be the text's, leading zeros aside, since strptime also
    reads "1/6/2025 9:30" (and names, AM/PM and blanks in any case and number).
    """
    split = split_at_offset(fmt)
    offset = None
    if split is not None:
        head, tail = split
        parts = pc.extract_regex(text, f"^(?P<wall>.*)(?P<off>{_OFFSET})(?P<rest>{_format_pattern(tail)})$")

        def part(name: str) -> pa.ChunkedArray:
            return pc.fill_null(pc.struct_field(parts, name), "")

        text = pc.binary_join_element_wise(part("wall"), part("rest"), "")
        offset = pc.utf8_upper(part("off"))
        fmt = head + tail
    wall = pc.strptime(text, format=fmt, unit="us", error_is_null=True)
    written = pc.strftime(pc.cast(wall, pa.timestamp("s"), safe=False), format=fmt)
    exact = pc.fill_null(pc.equal(_digit_runs(written), _digit_runs(text)), False)
    wall = pc.if_else(exact, wall, pa.scalar(None, wall.type))
    if offset is None:
        return wall, _repeat(False, len(text), pa.bool_()), _repeat(0, len(text), pa.int64())
    return wall, pc.not_equal(offset, ""), _offset_minutes(offset)


def _parse_wall(
    text: pa.ChunkedArray, source: SourceConfig
) -> tuple[pa.ChunkedArray, pa.ChunkedArray, pa.ChunkedArray]:
    """Clean text -> (naive wall time, has explicit offset, offset minutes), hour 24 resolved."""
    is_24 = pc.match_substring_regex(text, _HOUR_24)
    text = pc.if_else(is_24, pc.replace_substring_regex(text, r"(^|[\sTt])24:00", r"\100:00"), text)
    if source.timestamp_format == "iso8601":
        wall, has_offset, offset_minutes = _parse_iso(text)
    else:
        wall, has_offset, offset_minutes = _parse_strptime(text, source.timestamp_format)
    next_day = pc.add(wall, pa.scalar(_US_PER_DAY, pa.duration("us")))
    return pc.if_else(is_24, next_day, wall), has_offset, offset_minutes


def _interval_us(interval_minutes: pa.ChunkedArray | None, source: SourceConfig, n: int) -> pa.ChunkedArray:
    """Each row's interval in microseconds: its own where valid, else the source's."""
    if interval_minutes is None:
        return _repeat(source.interval_minutes * _US_PER_MINUTE, n, pa.int64())
    minutes = pc.fill_null(pc.cast(interval_minutes, pa.int64()), source.interval_minutes)
    return pc.multiply(minutes, _US_PER_MINUTE)


def _shift_local_days(instants: pa.ChunkedArray, zone: str, days: int) -> pa.ChunkedArray:
    """UTC instants moved `days` local calendar days in `zone`: midnight to midnight is 23 or 25
    hours on DST change days."""
    local = pc.local_timestamp(pc.cast(instants, pa.timestamp("us", tz=zone)))
    moved = pc.add(local, pa.scalar(days * _US_PER_DAY, pa.duration("us")))
    return _localize(moved, zone, "earliest", "latest")


def _step_back(end: pa.ChunkedArray, interval_us: pa.ChunkedArray, zone: str) -> pa.ChunkedArray:
    """Interval ends -> starts: one interval earlier, a daily interval one local day of `zone` earlier."""
    start = pc.subtract(end, pc.cast(interval_us, pa.duration("us")))
    daily = pc.equal(interval_us, _US_PER_DAY)
    if not pc.any(daily).as_py():
        return start
    return pc.if_else(daily, _shift_local_days(end, zone, -1), start)


def parse_timestamps(
    raw: pa.ChunkedArray,
    source: SourceConfig,
    *,
    occurrence: pa.ChunkedArray | None = None,
    interval_minutes: pa.ChunkedArray | None = None,
) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Raw timestamps -> (interval start in UTC, status) following the source's conventions.

    `occurrence` (ambiguous_time "order") says which copy of a repeated wall time a row
    is: 0 the earlier instant, 1 or more the later. `interval_minutes` is each row's
    interval (null: the source's), by which end labels are shifted back; a daily interval
    is the local calendar day of the series' zone, so its start is the previous local midnight.
    """
    if occurrence is None and interval_minutes is None:
        # Interval data repeats each timestamp once per series: parse each distinct text once.
        repeated = _distinct(raw)
        if repeated is not None:
            positions, distinct = repeated
            instants, statuses = parse_timestamps(distinct, source, occurrence=_NO_OCCURRENCE)
            return pc.take(instants, positions), pc.take(statuses, positions)
    elif occurrence is _NO_OCCURRENCE:
        occurrence = None
    instant, status, _, _ = _instants(clean_text(raw), source, occurrence)
    if source.timestamp_label == "end":
        instant = _step_back(instant, _interval_us(interval_minutes, source, len(instant)), source.series_timezone)
    return pc.cast(instant, UTC_TIMESTAMP), status


def _instants(
    text: pa.ChunkedArray, source: SourceConfig, occurrence: pa.ChunkedArray | None
) -> tuple[pa.ChunkedArray, pa.ChunkedArray, pa.ChunkedArray, pa.ChunkedArray]:
    """Clean timestamps -> (UTC instant, status, naive wall time, has explicit offset), no label applied."""
    n = len(text)
    zone = source.timestamp_timezone
    wall, has_offset, offset_minutes = _parse_wall(text, source)

    from_offset = pc.subtract(
        _localize(wall, "UTC"), pc.cast(pc.multiply(offset_minutes, _US_PER_MINUTE), pa.duration("us"))
    )
    status = pc.if_else(pc.is_null(wall), TS_UNPARSEABLE, TS_OK)
    if _is_iana(zone):
        early = _localize(wall, zone, "earliest", "earliest")
        late_gap = _localize(wall, zone, "earliest", "latest")
        late = _localize(wall, zone, "latest", "latest")
        in_gap = pc.not_equal(early, late_gap)
        is_ambiguous = pc.not_equal(late_gap, late)
        if source.ambiguous_time == "latest":
            from_wall = late
        elif source.ambiguous_time == "order":
            occurrences = _repeat(0, n, pa.int32()) if occurrence is None else pc.fill_null(occurrence, 0)
            from_wall = pc.if_else(pc.greater_equal(occurrences, 1), late, late_gap)
        else:
            from_wall = late_gap
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
    return pc.cast(instant, UTC_TIMESTAMP), status, wall, has_offset


def split_periods(text: pa.ChunkedArray, separator: str) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Clean "A to B" texts -> (A, B), cut at the first `separator`; ("", "") where there is none."""
    literal = re.escape(separator) if "\\E" in separator else rf"\Q{separator}\E"
    parts = pc.extract_regex(text, rf"^(?P<start>.*?){literal}(?P<end>.*)$")
    return (
        clean_text(pc.fill_null(pc.struct_field(parts, "start"), "")),
        clean_text(pc.fill_null(pc.struct_field(parts, "end"), "")),
    )


def parse_interval_ends(
    starts: pa.ChunkedArray,
    ends: pa.ChunkedArray,
    source: SourceConfig,
    *,
    occurrence: pa.ChunkedArray | None = None,
) -> tuple[pa.ChunkedArray, pa.ChunkedArray, pa.ChunkedArray]:
    """Raw interval starts and ends -> (interval start in UTC, status, interval minutes).

    Both are read like timestamps (no label applies: the end is given). A row is an interval
    of the source's grid when it lasts `interval_minutes` (a daily source: one local day of
    the series' zone, 23 to 25 hours); otherwise, and when it does not end after its start,
    its interval is null and the row fails `interval_invalid`. Without written offsets a row
    whose wall clock advances by the interval is one too, whatever the clock did meanwhile:
    its end is then taken from its start (the first 02:45-03:00 of a fall-back night ends
    when the clock goes back, and an end inside the spring-forward gap is the gap's end).
    """
    start, start_status, start_wall, start_offset = _instants(clean_text(starts), source, occurrence)
    end, end_status, end_wall, end_offset = _instants(clean_text(ends), source, occurrence)
    naive = pc.invert(pc.or_(start_offset, end_offset))
    if source.interval_minutes == 1440:
        fits = pc.equal(end, _shift_local_days(start, source.series_timezone, 1))
        by_wall = pc.equal(end_wall, pc.add(start_wall, pa.scalar(_US_PER_DAY, pa.duration("us"))))
        by_wall = pc.and_(by_wall, pa.scalar(source.timestamp_timezone == source.series_timezone))
    else:
        step = pa.scalar(source.interval_minutes * _US_PER_MINUTE, pa.duration("us"))
        fits = pc.equal(end, pc.add(start, step))
        by_wall = pc.equal(end_wall, pc.add(start_wall, step))
    by_wall = pc.fill_null(pc.and_(naive, by_wall), False)
    fits = pc.or_(pc.fill_null(fits, False), by_wall)
    end_ok = pc.or_(pc.equal(end_status, TS_OK), by_wall)
    status = pc.if_else(pc.and_(pc.equal(start_status, TS_OK), pc.invert(end_ok)), end_status, start_status)
    start = pc.if_else(pc.equal(status, TS_OK), start, pa.scalar(None, UTC_TIMESTAMP))
    invalid = pc.and_(pc.equal(status, TS_OK), pc.invert(fits))
    minutes = pc.if_else(invalid, pa.scalar(None, pa.int32()), pa.scalar(source.interval_minutes, pa.int32()))
    return pc.cast(start, UTC_TIMESTAMP), status, _chunked(minutes)


def parse_positions(
    dates: pa.ChunkedArray,
    positions: pa.ChunkedArray,
    source: SourceConfig,
    *,
    interval_minutes: pa.ChunkedArray | None = None,
) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """(local date, 1-based interval number within that day) -> (interval start in UTC, status).

    Position p starts (p-1) intervals of elapsed time after local midnight, so a 25-hour
    day runs to 100 quarter-hours. On a short (spring-forward) day positions count wall
    clock intervals instead, the hour that does not exist being zero-filled placeholders:
    there p starts at the wall time midnight + (p-1) intervals, and positions inside the
    missing hour are `dst_gap`. A position beyond the day's count is unparseable.
    """
    text = clean_text(dates)
    n = len(text)
    zone = source.timestamp_timezone
    fmt = _DATE_FORMAT if source.timestamp_format == "iso8601" else source.timestamp_format
    parsed, _, _ = _parse_strptime(text, fmt)
    midnight = pc.floor_temporal(parsed, unit="day")

    position_text = clean_text(positions)
    is_integer = pc.match_substring_regex(position_text, _INTEGER)
    position = pc.cast(pc.if_else(is_integer, position_text, "0"), pa.int64())
    step = _interval_us(interval_minutes, source, n)
    offset_us = pc.multiply(pc.subtract(position, 1), step)
    offset = pc.cast(offset_us, pa.duration("us"))

    if _is_iana(zone):
        start = _localize(midnight, zone, "earliest", "latest")
        end = _localize(pc.add(midnight, pa.scalar(_US_PER_DAY, pa.duration("us"))), zone, "earliest", "latest")
        day_us = pc.cast(pc.subtract(end, start), pa.int64())
        wall = pc.add(midnight, offset)
        early = _localize(wall, zone, "earliest", "earliest")
        by_wall = _localize(wall, zone, "earliest", "latest")
        in_gap = pc.not_equal(early, by_wall)
    else:
        start = _localize(midnight, zone)
        day_us = _repeat(_US_PER_DAY, n, pa.int64())
        by_wall = start
        in_gap = _repeat(False, n, pa.bool_())
    short = pc.less(day_us, _US_PER_DAY)
    count = pc.divide(pc.if_else(short, _US_PER_DAY, day_us), step)
    in_range = pc.and_(is_integer, pc.and_(pc.greater_equal(position, 1), pc.less_equal(position, count)))
    instant = pc.if_else(short, by_wall, pc.add(start, offset))
    status = pc.if_else(pc.fill_null(in_range, False), TS_OK, TS_UNPARSEABLE)
    status = pc.if_else(pc.is_null(midnight), TS_UNPARSEABLE, status)
    gap = pc.and_(pc.equal(status, TS_OK), pc.and_(short, in_gap))
    status = pc.if_else(pc.fill_null(gap, False), TS_DST_GAP, status)
    instant = pc.if_else(pc.equal(status, TS_OK), instant, pa.scalar(None, UTC_TIMESTAMP))
    return pc.cast(instant, UTC_TIMESTAMP), status


def parse_intervals(raw: pa.ChunkedArray | None, source: SourceConfig, n: int) -> pa.ChunkedArray:
    """Interval length per row (int32): the column's integer, blank -> the source's; null when invalid.

    Valid lengths are positive whole minutes that divide a 24-hour day.
    """
    if raw is None:
        return _repeat(source.interval_minutes, n, pa.int32())
    text = clean_text(raw)
    text = pc.if_else(pc.equal(text, ""), str(source.interval_minutes), text)
    is_integer = pc.match_substring_regex(text, _INTEGER)
    minutes = pc.cast(pc.if_else(is_integer, text, "0"), pa.int64())
    positive = pc.greater(minutes, 0)
    divisor = pc.if_else(positive, minutes, 1)
    divides = pc.equal(pc.multiply(pc.divide(1440, divisor), divisor), 1440)
    valid = pc.and_(is_integer, pc.and_(positive, divides))
    return pc.cast(pc.if_else(valid, minutes, pa.scalar(None, pa.int64())), pa.int32())


def local_time(instants: pa.ChunkedArray | pa.Array, zone: str) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """UTC instants -> (local calendar date, seconds since local midnight) in `zone`.

    Computed here in Arrow rather than on the engine, because Spark keeps one time zone
    per session and cannot convert a column to another zone.
    """
    repeated = _distinct(instants)
    if repeated is not None:
        positions, distinct = repeated
        dates, seconds = local_time(distinct, zone)
        return _chunked(pc.take(dates, positions)), _chunked(pc.take(seconds, positions))
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


def number_text(raw: pa.ChunkedArray | pa.Array, source: SourceConfig) -> pa.ChunkedArray:
    """Raw number -> clean text with "." as the decimal mark (thousands separators removed)."""
    text = clean_text(raw)
    if source.decimal == ",":
        text = pc.replace_substring(pc.replace_substring_regex(text, _THOUSANDS, ""), ",", ".")
    return text


def parse_values(raw: pa.ChunkedArray, source: SourceConfig) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Raw numbers -> (float64, status); missing markers are told apart from junk.

    With `decimal = ","`, "." and blanks are thousands separators: "1.234,5" is 1234.5.
    """
    repeated = _distinct(raw)
    if repeated is not None:  # meter values repeat (three decimals): type each text once
        positions, distinct = repeated
        values, statuses = _parse_values(distinct, source)
        return _chunked(pc.take(values, positions)), _chunked(pc.take(statuses, positions))
    return _parse_values(raw, source)


def _parse_values(raw: pa.ChunkedArray, source: SourceConfig) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    text = _clean_text(raw)
    missing = pc.is_in(text, value_set=pa.array(list(source.missing_values), pa.string()))
    number = number_text(text, source)
    numeric = pc.match_substring_regex(number, _NUMBER)
    # Adding zero turns "-0" (and a negative number too small for a double) into 0.0, not -0.0.
    value = pc.add(pc.cast(pc.if_else(numeric, number, "0"), pa.float64()), 0.0)
    finite = pc.is_finite(value)
    status = pc.if_else(pc.and_(numeric, finite), VALUE_OK, VALUE_UNPARSEABLE)
    status = pc.if_else(missing, VALUE_MISSING, status)
    value = pc.if_else(pc.equal(status, VALUE_OK), value, pa.scalar(None, pa.float64()))
    return value, status


def _mapped(text: pa.ChunkedArray, mapping: dict[str, str]) -> pa.ChunkedArray:
    """Clean text -> its mapped value (exact match first, then case-insensitive), else lower-cased."""
    lowered = pc.utf8_lower(text)
    if not mapping:
        return lowered
    exact_keys = pa.array(list(mapping), pa.string())
    exact = pc.take(pa.array(list(mapping.values()), pa.string()), pc.index_in(text, value_set=exact_keys))
    folded: dict[str, str] = {}
    for key, value in mapping.items():
        folded.setdefault(key.strip().lower(), value)
    folded_keys = pa.array(list(folded), pa.string())
    loose = pc.take(pa.array(list(folded.values()), pa.string()), pc.index_in(lowered, value_set=folded_keys))
    return pc.coalesce(exact, loose, lowered)


def _fixed_meter(raw: pa.Table, template: str) -> pa.ChunkedArray:
    """The fixed meter id, `{file_stem}` replaced by the stem of each row's source file."""
    if "{file_stem}" not in template:
        return _repeat(template, raw.num_rows, pa.string())
    files = pc.fill_null(_chunked(raw["source_file"]).cast(pa.string()), "")
    names = pc.unique(files)
    ids = [template.replace("{file_stem}", PurePath(name).stem) for name in names.to_pylist()]
    return _chunked(pc.take(pa.array(ids, pa.string()), pc.index_in(files, value_set=names)))


#: Columns a raw read carries besides the file's own; never part of the raw record.
_LINEAGE_COLUMNS = (
    "file_index",
    "source_file",
    "line_number",
    "row_order",
    "occurrence",
    "kind",
    "detail",
)


def _joined(columns: list[pa.ChunkedArray]) -> pa.ChunkedArray:
    return columns[0] if len(columns) == 1 else pc.binary_join_element_wise(*columns, " ")


def _timing(
    raw: pa.Table, source: SourceConfig, cols: ColumnMapping, occurrence: pa.ChunkedArray
) -> tuple[pa.ChunkedArray, pa.ChunkedArray, pa.ChunkedArray]:
    """Each row's (interval start in UTC, timestamp status, interval minutes)."""
    n = raw.num_rows
    stamps = _joined([clean_text(raw[c]) for c in cols.timestamp_columns()])
    ordered = occurrence if source.ambiguous_time == "order" else None
    if cols.period or cols.interval_end:
        if cols.period:
            starts, ends = split_periods(stamps, source.period_separator)
        else:
            starts, ends = stamps, _joined([clean_text(raw[c]) for c in cols.interval_end_columns()])
        return parse_interval_ends(starts, ends, source, occurrence=ordered)
    interval = parse_intervals(raw[cols.interval_minutes] if cols.interval_minutes else None, source, n)
    if cols.position:
        start, status = parse_positions(stamps, clean_text(raw[cols.position]), source, interval_minutes=interval)
    else:
        own = interval if cols.interval_minutes else None
        start, status = parse_timestamps(stamps, source, occurrence=ordered, interval_minutes=own)
    return start, status, interval


def _value_scales(raw: pa.Table, source: SourceConfig) -> pa.ChunkedArray | None:
    """Each row's value factor, or None when every factor is 1.

    Wide and time_of_day rows carry the file column their value came from (`column`): a
    series' own value_scale applies to its column, the source's to the rest.
    """
    own = {series.column: series.value_scale for series in source.series if series.value_scale is not None}
    if own and "column" in raw.column_names:
        names = pc.fill_null(_chunked(raw["column"]).cast(pa.string()), "")
        found = pc.index_in(names, value_set=pa.array(list(own), pa.string()))
        return _chunked(pc.fill_null(pc.take(pa.array(list(own.values()), pa.float64()), found), source.value_scale))
    if source.value_scale == 1:
        return None
    return _repeat(source.value_scale, raw.num_rows, pa.float64())


def _qualities(
    raw: pa.Table, source: SourceConfig, cols: ColumnMapping, value: pa.ChunkedArray, value_status: pa.ChunkedArray
) -> tuple[pa.ChunkedArray, pa.ChunkedArray, pa.ChunkedArray]:
    """(quality, value, value status): an empty value whose quality says nothing flowed is 0."""
    if not cols.quality:
        return _repeat("actual", raw.num_rows, pa.string()), value, value_status
    quality_text = clean_text(raw[cols.quality])
    if source.zero_when_quality:
        # "No consumption": the source leaves the value empty because nothing flowed.
        nothing = pc.and_(
            pc.is_in(quality_text, value_set=pa.array(list(source.zero_when_quality), pa.string())),
            pc.equal(value_status, VALUE_MISSING),
        )
        value = pc.if_else(nothing, pa.scalar(0.0, pa.float64()), value)
        value_status = pc.if_else(nothing, VALUE_OK, value_status)
    quality = _mapped(quality_text, dict(source.quality_values))
    if "" not in source.quality_values:
        quality = pc.if_else(pc.equal(quality_text, ""), "actual", quality)
    return quality, value, value_status


def parsed_readings(raw: pa.Table, source: SourceConfig, header: list[str] | None = None) -> pa.Table:
    """Raw rows (file columns as strings plus lineage) -> typed columns with statuses.

    Reads the columns of `source.reading_columns()` (the canonical ones for the wide
    layout and non-delimited formats). Keeps every raw column (`header`, in order; by
    default every non-lineage column), renamed `raw_<i>`, so a rejected row can be
    quarantined exactly as received. Rows are typed independently of each other, so any
    split of the rows into batches gives the same result.
    """
    cols = source.reading_columns()
    n = raw.num_rows

    def field(name: str) -> pa.ChunkedArray:
        return clean_text(raw[name])

    meter = field(cols.meter_id) if cols.meter_id else _fixed_meter(raw, source.meter_id or "")
    if "occurrence" in raw.column_names:
        occurrence = pc.fill_null(_chunked(raw["occurrence"]).cast(pa.int32()), 0)
    else:
        occurrence = _repeat(0, n, pa.int32())
    interval_start, ts_status, interval = _timing(raw, source, cols, occurrence)
    # Register sources: the cumulative read; `registers.difference_registers` turns it into energy.
    value, value_status = parse_values(raw[cols.value], source)
    scales = _value_scales(raw, source)
    if scales is not None:  # adding zero keeps -1 x 0 from becoming -0.0
        value = pc.add(pc.multiply(value, scales), 0.0)
    if cols.unit:
        unit = pc.utf8_lower(_mapped(field(cols.unit), dict(source.unit_values)))
    else:
        unit = _repeat((source.unit or "").strip().lower(), n, pa.string())
    if cols.direction:
        direction = _mapped(field(cols.direction), dict(source.direction_values))
    else:
        direction = _repeat(source.direction, n, pa.string())
    quality, value, value_status = _qualities(raw, source, cols, value, value_status)
    local_date, local_seconds = local_time(interval_start, source.series_timezone)
    typed = {
        "meter_id": meter,
        "direction": direction,
        "interval_start_utc": interval_start,
        "interval_minutes": interval,
        "local_date": local_date,
        "local_seconds": local_seconds,
        "timestamp_status": ts_status,
        "value": value,
        "value_status": value_status,
        "unit": unit,
        "quality": quality,
        "source_file": raw["source_file"],
        "line_number": raw["line_number"],
    }
    if "row_order" in raw.column_names:  # always there in a pipeline read
        typed["row_order"] = raw["row_order"]
    typed["occurrence"] = occurrence
    file_columns = header if header is not None else [c for c in raw.column_names if c not in _LINEAGE_COLUMNS]
    for index, name in enumerate(file_columns):
        typed[raw_column(index)] = raw[name]
    return pa.table(typed)


def parsed_schema(header: list[str]) -> pa.Schema:
    """Schema of `parsed_readings` over a raw read with `header`."""
    return pa.schema(
        [
            ("meter_id", pa.string()),
            ("direction", pa.string()),
            ("interval_start_utc", UTC_TIMESTAMP),
            ("interval_minutes", pa.int32()),
            ("local_date", pa.date32()),
            ("local_seconds", pa.int64()),
            ("timestamp_status", pa.string()),
            ("value", pa.float64()),
            ("value_status", pa.string()),
            ("unit", pa.string()),
            ("quality", pa.string()),
            ("source_file", pa.string()),
            ("line_number", pa.int64()),
            ("row_order", pa.int64()),
            ("occurrence", pa.int32()),
            *((raw_column(i), pa.string()) for i in range(len(header))),
        ]
    )


def option_instant(text: str, option: str, *, expected: str = "an ISO 8601 time") -> datetime:
    """A command's time option (`--since`, `--as-of`): an ISO 8601 time with its offset, or a
    date alone (its midnight UTC), in UTC; `expected` names what the option takes in the error."""
    value = text.strip()
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigurationError(f"{option} {text!r} is {expected} such as 2025-06-01T12:00:00+00:00") from None
    if instant.tzinfo is None:
        if "T" in value or " " in value:
            raise ConfigurationError(f"{option} {text!r} has no UTC offset; add one, e.g. {value}+00:00")
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)
