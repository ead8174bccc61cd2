"""`sources infer`: a first `[sources.NAME]` table drafted from one file.

What a file states is read from it: the format (delimited text, NEM12, Green Button XML), the
encoding, the delimiter (by counting it over the first lines; `csv.Sniffer` only when counting
cannot decide), the decimal mark, the preamble above the header row, the timestamp columns and
their format (typed by the platform's own parser), the interval (the most common spacing of a
series' timestamps), units in column names, and a long or wide layout. What a file cannot say
(above all the time zone of timestamps without an offset) gets the safe default and a comment
saying "check this". Every key carries a comment saying how it was found.
"""

from __future__ import annotations

import csv
import json
import math
import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from app.application.ports import FileReader
from app.domain.errors import ConfigurationError, InputFileError
from app.domain.parsing import TS_OK, VALUE_OK, VALUE_UNPARSEABLE, clean_text, parse_timestamps, parse_values
from app.domain.sources import DEFAULT_MISSING_VALUES, UNITS, SourceConfig

#: Bytes of a delimited file read to infer from (all of most files; the head of large ones).
SAMPLE_BYTES = 1 << 22
#: Lines over which delimiters are counted and the header is looked for.
_DIALECT_LINES = 200
#: Values per column typed to find a timestamp format.
_STAMP_SAMPLE = 400
_DELIMITERS = (",", ";", "\t", "|")
_LINE_END = re.compile(r"\r\n|\n|\r")
_XML_FEED = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(?:feed|entry)[\s>/]")
_ISO_LIKE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}[Tt ]\d{1,2}:\d{2}")
_OFFSET = re.compile(r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)\s*$")
_DATE_LIKE = re.compile(r"\d{1,4}[-./]\d{1,2}[-./]\d{1,4}")
_NUMBER_LIKE = re.compile(r"^[+-]?[\d.,\s]*\d[\d.,\s]*$")
_DAY_FIRST = ("%d/%m/%Y", "%d.%m.%Y", "%d-%m-%Y", "%d/%m/%y", "%d.%m.%y", "%d-%m-%y")
_DATE_FORMATS = (
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%Y.%m.%d",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%d.%m.%Y",
    "%m.%d.%Y",
    "%d-%m-%Y",
    "%m-%d-%Y",
    "%d/%m/%y",
    "%m/%d/%y",
    "%d.%m.%y",
    "%d-%m-%y",
    "%m-%d-%y",
    "%Y%m%d",
)
_TIME_FORMATS = ("%H:%M:%S", "%H:%M")
#: Units as written in column names: "[MW]", "(kW)", or a bare word such as "kWh".
_UNIT_PATTERNS = (r"\[(?P<unit>[^\]]+)\]", r"\((?P<unit>[^)]+)\)")
_SPELLING = {"wh": "Wh", "kwh": "kWh", "mwh": "MWh", "gwh": "GWh", "kw": "kW", "mw": "MW"}
_UNIT_WORD = re.compile(r"(?i)(?<![a-z])(?P<unit>kwh|mwh|gwh|wh|kw|mw)(?![a-z])")
#: Numeric columns that are not energy or power, by name.
_NOT_ENERGY = re.compile(
    r"(?i)price|rrp|cost|eur|usd|aud|gbp|€|\$|volt|current|intensity|amp|reactive|kvar|temperat|humid|"
    r"factor|frequen|\bhz\b|gas|water|m3|m³|calori|percent|%|anteil|share"
)
_ENERGY_NAME = re.compile(
    r"(?i)kwh|mwh|wh\b|\bkw\b|\bmw\b|volume|value|demand|energy|consum|load|usage|read|generat|product|"
    r"verbrauch|verbruik|waarde|wert|power|electric|import|export"
)
_POWER_NAME = re.compile(r"(?i)power|demand|load|leistung|vermogen")
#: Meter-like column names, strongest first.
_METER_NAMES = (
    re.compile(r"(?i)\b(ean|nmi|mpan|mprn|pod|lclid|meter[ _]?id|meter[ _]?number|site[ _]?id)\b"),
    re.compile(r"(?i)(^|[\s_])id$|^id([\s_]|$)"),
    re.compile(r"(?i)\b(meter|site|region|station|device|customer|account|z[aä]e?hler)\b(?!.*type)"),
)
_UNIT_COLUMN = re.compile(r"(?i)^\s*(unit|units|uom|eenheid|einheit|unit[eé])\s*$")
_DIRECTION_COLUMN = re.compile(r"(?i)register|direction|flow|richting|richtung|channel")
_QUALITY_COLUMN = re.compile(r"(?i)status|quality|validation|validatie|qualit|flag")
_POSITION_COLUMN = re.compile(r"(?i)position|period|interval|viertelstunde|kwartier|slot|^pos\b|^nr\b")
_EXPORT_WORDS = re.compile(
    r"(?i)inject|export|return|feed|einspeis|terug|production|generat|surplus|lieferung|received"
)
_IMPORT_WORDS = re.compile(r"(?i)offtake|afname|import|consum|deliver|bezug|verbrauch|levering|usage|load")
_QUALITY_WORDS = (
    ("estimated", re.compile(r"(?i)estimat|geschat|schätz|schaetz|forecast")),
    ("substituted", re.compile(r"(?i)substitut|correct|replac|ersatz|vervang|edited")),
    ("actual", re.compile(r"(?i)^read$|actual|measur|gemeten|gemessen|valid|real|^ok$|^a$|no consumption|verbruik")),
)
_ZERO_WORDS = re.compile(r"(?i)no consumption|geen verbruik|kein verbrauch|zero")
#: Green Button LocalTimeParameters tzOffset (seconds) -> the zone it most likely is (North America).
_TZ_OFFSETS = {
    -18000: "America/New_York",
    -21600: "America/Chicago",
    -25200: "America/Denver",
    -28800: "America/Los_Angeles",
    -32400: "America/Anchorage",
    -36000: "Pacific/Honolulu",
}
#: Zones tried against a repeated wall-clock hour, to name candidates in a comment.
_CANDIDATE_ZONES = (
    "Europe/London",
    "Europe/Brussels",
    "Europe/Berlin",
    "Europe/Helsinki",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "Australia/Sydney",
    "Pacific/Auckland",
)
_CHECK = "check this"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Guess:
    """One key of the drafted table, with how it was found."""

    key: str
    value: Any
    comment: str


@dataclass
class InferredSource:
    """A drafted `[sources.NAME]` table."""

    name: str
    path: Path
    guesses: list[Guess] = field(default_factory=list)

    def add(self, key: str, value: Any, comment: str) -> None:
        self.guesses.append(Guess(key, value, comment))

    def amend(self, key: str, more: str) -> None:
        """Add to the comment of `key`."""
        self.guesses = [Guess(g.key, g.value, g.comment + more) if g.key == key else g for g in self.guesses]

    def table(self) -> dict[str, Any]:
        """The table's keys and values, as the config loader reads them."""
        return {g.key: g.value for g in self.guesses}

    def toml(self) -> str:
        """The table as TOML, a comment on each key."""
        lines = [
            f"# Drafted by `energy-platform sources infer` from {self.path.name}.",
            f'# Keys marked "{_CHECK}" are guesses the file cannot settle. Try the config with',
            f"#   energy-platform sources check --config FILE --source {self.name}",
            f"[sources.{self.name}]",
        ]
        for guess in self.guesses:
            line = f"{guess.key} = {toml_value(guess.value)}"
            if "\n" in line or len(line) + len(guess.comment) > 116:
                lines += [f"# {guess.comment}", line]
            else:
                lines.append(f"{line}  # {guess.comment}")
        return "\n".join(lines) + "\n"


# --- TOML ---------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f']")


def _toml_string(text: str) -> str:
    if "\\" in text and not _CONTROL.search(text):
        return f"'{text}'"  # a literal string: regular expressions stay readable
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    """A value as TOML: strings, numbers, booleans, arrays and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 100_000 else str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, dict):
        items = [f"{k if _BARE_KEY.match(k) else _toml_string(k)} = {toml_value(v)}" for k, v in value.items()]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, list | tuple):
        if any(isinstance(v, dict) for v in value):
            return "[\n" + "".join(f"    {toml_value(v)},\n" for v in value) + "]"
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


# --- entry point --------------------------------------------------------------------------------


def source_name(path: Path) -> str:
    """A valid source name from a file name: lower case, words joined by "_"."""
    name = re.sub(r"[^a-z0-9]+", "_", path.stem.lower()).strip("_")[:40].strip("_")
    return name if _NAME.match(name) else f"source_{name}".rstrip("_")


def infer_source(reader: FileReader, path: Path, *, name: str | None = None) -> InferredSource:
    """Draft a source config for `path`, reading its rows with `reader` where the format needs it;
    the result is checked by the config model before it is returned."""
    try:
        with path.open("rb") as handle:
            data = handle.read(SAMPLE_BYTES)
            truncated = bool(handle.read(1))
    except OSError as error:
        raise InputFileError(str(path), f"cannot be read: {error.strerror or error}") from None
    if not data.strip():
        raise InputFileError(str(path), "is empty (no header, no rows)")
    if name is not None and not _NAME.match(name):
        raise ConfigurationError(f"--name {name!r}: use lower-case letters, digits and _, starting with a letter")
    name = name or source_name(path)
    inferred = InferredSource(name=name, path=path.resolve())
    kind = _format_of(data)
    if kind == "greenbutton":
        _greenbutton(inferred, path.read_bytes(), reader)
    elif kind == "nem12":
        _nem12(inferred, path.read_bytes(), reader)
    else:
        _delimited(inferred, data, truncated=truncated)
    _validated(inferred)
    return inferred


def _validated(inferred: InferredSource) -> None:
    """The drafted table must load as the loader loads it: a draft that does not is a bug here."""
    document = tomllib.loads(inferred.toml())
    try:
        SourceConfig.model_validate({"name": inferred.name, **document["sources"][inferred.name]})
    except ValidationError as error:
        raise ConfigurationError(f"{inferred.path}: could not draft a valid config: {error}") from None


def _format_of(data: bytes) -> str:
    head = data[: 1 << 16].lstrip(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"<") and _XML_FEED.search(head):
        return "greenbutton"
    first = next((line.strip() for line in _LINE_END.split(head.decode("latin-1")) if line.strip()), "")
    if first.startswith(("100,", "200,")):
        return "nem12"
    return "csv"


def _mode(values: Iterable[int]) -> tuple[int, int] | None:
    """(most common value, its count); ties go to the smaller value."""
    counts = Counter(values)
    if not counts:
        return None
    value, count = min(counts.items(), key=lambda item: (-item[1], item[0]))
    return value, count


# --- NEM12 and Green Button ---------------------------------------------------------------------


def _format_interval(inferred: InferredSource, data: bytes, source: SourceConfig, reader: FileReader) -> None:
    """interval_minutes: the most common reading length the format's reader finds."""
    rows = reader.parse_raw_bytes(str(inferred.path), data, source).table
    lengths = [int(v) for v in rows["interval_minutes"].to_pylist() if v and v.isdigit() and 1440 % int(v) == 0]
    found = _mode(lengths)
    if found is None:
        inferred.add("interval_minutes", 60, f"{_CHECK}: no reading length in the file divides a day")
        return
    minutes, count = found
    inferred.add(
        "interval_minutes", minutes, f"the most common reading length ({count:,} of {rows.num_rows:,} readings)"
    )


def _nem12(inferred: InferredSource, data: bytes, reader: FileReader) -> None:
    inferred.add("format", "nem12", "200/300 records: AEMO NEM12")
    inferred.add("path", str(inferred.path), "the file this was drafted from; a glob reads several")
    inferred.add("timestamp_timezone", "+10:00", "NEM12 times are NEM time, UTC+10 all year")
    probe = SourceConfig(name="probe", format="nem12", path="", timestamp_timezone="+10:00")
    _format_interval(inferred, data, probe, reader)
    inferred.add(
        "series_timezone",
        "Australia/Brisbane",
        f"{_CHECK}: the meters' zone, for local days (Brisbane keeps NEM time; NSW, VIC, SA and TAS have DST)",
    )


def _greenbutton(inferred: InferredSource, data: bytes, reader: FileReader) -> None:
    inferred.add("format", "greenbutton", "an Atom feed of ESPI resources: Green Button XML")
    inferred.add("path", str(inferred.path), "the file this was drafted from; a glob reads several")
    probe = SourceConfig(name="probe", format="greenbutton", path="")
    _format_interval(inferred, data, probe, reader)
    found = re.search(rb"<(?:[\w.-]+:)?tzOffset>\s*(-?\d+)\s*<", data)
    offset = int(found.group(1)) if found else 0
    zone = _TZ_OFFSETS.get(offset) if found else None
    if zone:
        comment = f"{_CHECK}: from LocalTimeParameters tzOffset {offset} (UTC{offset / 3600:+g}); the meters' zone"
        inferred.add("series_timezone", zone, comment)
    else:
        inferred.add("series_timezone", "UTC", f"{_CHECK}: no known LocalTimeParameters; set the meters' zone")


# --- delimited text: dialect --------------------------------------------------------------------


def _encoding(data: bytes) -> tuple[str, str]:
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig", "a UTF-8 byte order mark"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(data) - 4:  # not just a character cut at the end of the sample
            if re.search(rb"[\x80-\x9f]", data):
                return "cp1252", "not UTF-8, with bytes 0x80-0x9f (Windows punctuation)"
            return "latin-1", f"not UTF-8 (e.g. byte 0x{data[error.start]:02x})"
    return "utf-8", "valid UTF-8"


def _split(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter, quotechar='"'), [])


def _trimmed(fields: list[str]) -> list[str]:
    end = len(fields)
    while end and fields[end - 1].strip() == "":
        end -= 1
    return fields[:end]


def _delimiter(path: str, lines: list[str]) -> tuple[str, str]:
    """The delimiter that splits the most lines into the same number of fields (more fields win ties)."""
    body = [line for line in lines[:_DIALECT_LINES] if line.strip()]
    tail = body[len(body) // 3 :] or body
    best: tuple[float, int, str] | None = None
    for delimiter in _DELIMITERS:
        counts = [len(_split(line, delimiter)) for line in tail]
        found = _mode(counts)
        if found is None or found[0] < 2:
            continue
        share = found[1] / len(counts)
        score = (round(share, 1), found[0], delimiter)
        if share >= 0.8 and (best is None or score[:2] > best[:2]):
            best = score
    if best is not None:
        return best[2], f"splits {best[0]:.0%} of the lines into {best[1]} fields"
    try:
        sniffed = csv.Sniffer().sniff("\n".join(body[:50]), delimiters="".join(_DELIMITERS)).delimiter
    except csv.Error:
        raise InputFileError(path, "no delimiter splits its lines into columns: is this delimited text?") from None
    return sniffed, f"{_CHECK}: csv.Sniffer's guess (counting found no consistent delimiter)"


def _data_like(fields: list[str]) -> bool:
    """A line of values rather than names: a date in it, or mostly numbers."""
    filled = [f.strip() for f in fields if f.strip()]
    if any(_DATE_LIKE.search(f) or _ISO_LIKE.match(f) for f in filled):
        return True
    numbers = sum(1 for f in filled if _NUMBER_LIKE.match(f.lstrip("=").strip('"')))
    return bool(filled) and numbers * 2 > len(filled)


def _header_line(lines: list[str], delimiter: str, *, trim: bool) -> int | None:
    """The first line with the field count of the lines below it that reads as names, not values."""
    sample = lines[:_DIALECT_LINES]
    split = [_split(line, delimiter) for line in sample]
    counts = [len(_trimmed(f)) if trim else len(f) for f in split]
    for index, count in enumerate(counts[:-1]):
        below = _mode(c for c, line in zip(counts[index + 1 :], sample[index + 1 :], strict=True) if line.strip())
        if below is not None and count == below[0] and count >= 2 and not _data_like(split[index]):
            return index
    return None


@dataclass(frozen=True)
class _Table:
    """The file split into a header and rows of equal width."""

    header: list[str]
    rows: list[list[str]]
    skip_lines: int
    trim: bool


def _table(path: str, text: str, delimiter: str, *, truncated: bool) -> _Table:
    lines = _LINE_END.split(text)
    if truncated:
        lines = lines[:-1]  # the sample ends inside a line
    header_at = _header_line(lines, delimiter, trim=False)
    trim = header_at is None
    if trim:
        header_at = _header_line(lines, delimiter, trim=True)
    if header_at is None:
        raise InputFileError(
            path, "found no header row (a line of column names with as many fields as the rows below it)"
        )
    header = [h.strip().lstrip("\ufeff") for h in _split(lines[header_at], delimiter)]
    if trim:
        header = _trimmed(header)
    width = len(header)
    rows = []
    for line in lines[header_at + 1 :]:
        if not line.strip():
            continue
        fields = _split(line, delimiter)
        if trim and len(fields) > width:
            fields = fields[:width] if not any(f.strip() for f in fields[width:]) else fields
        if len(fields) == width:
            rows.append(fields)
    return _Table(header, rows, header_at, trim)


def _decimal(table: _Table, skip: set[int]) -> tuple[str, str]:
    """The decimal mark most numbers use, where they are unambiguous ("1,234" is not)."""
    votes: Counter[str] = Counter()
    for row in table.rows[:5000]:
        for index, cell in enumerate(row):
            if index in skip:
                continue
            text = cell.strip().strip('="')
            if not re.fullmatch(r"[+-]?\d[\d.,]*\d", text) or text.count(",") + text.count(".") == 0:
                continue
            if "," in text and "." in text:
                votes["," if text.rfind(",") > text.rfind(".") else "."] += 1
            elif text.count(",") == 1 or text.count(".") == 1:
                mark = "," if "," in text else "."
                if not re.fullmatch(rf"[+-]?[1-9]\d{{0,2}}\{mark}\d{{3}}", text):  # "1,234": thousands or not
                    votes[mark] += 1
    if not votes:
        return ".", "no decimal numbers seen: the default"
    mark = "," if votes[","] > votes["."] else "."
    word = "comma" if mark == "," else "point"
    return mark, f"{votes[mark]:,} numbers with a decimal {word}, {votes[',' if mark == '.' else '.']:,} otherwise"


# --- delimited text: columns --------------------------------------------------------------------


@dataclass(frozen=True)
class _Stamp:
    """How a column holds time."""

    kind: str  # "datetime", "date" or "time"
    format: str
    with_offset: bool
    ambiguous: bool  # day-first chosen though every day was at most 12


@dataclass
class _Column:
    index: int
    name: str
    values: list[str]  # cleaned text, "" where empty
    numeric: bool = False
    markers: tuple[str, ...] = ()
    stamp: _Stamp | None = None

    def filled(self) -> list[str]:
        return [v for v in self.values if v]


def _probe(timestamp_format: str) -> SourceConfig:
    return SourceConfig(name="probe", path="", timestamp_format=timestamp_format, unit="kWh", meter_id="probe")


def parses_all(values: Sequence[str], timestamp_format: str) -> bool:
    """True if the platform's parser reads every value in `timestamp_format` (read as UTC)."""
    if not values:
        return False
    _, status = parse_timestamps(pa.chunked_array([pa.array(values, pa.string())]), _probe(timestamp_format))
    return bool(pc.all(pc.equal(status, TS_OK)).as_py())


def _spread(values: list[str], limit: int) -> list[str]:
    """Up to `limit` values taken evenly through the list (so late days > 12 are seen too)."""
    if len(values) <= limit:
        return values
    step = len(values) / limit
    return [values[int(i * step)] for i in range(limit)]


def _swapped(timestamp_format: str) -> str:
    return timestamp_format.replace("%d", "\x00").replace("%m", "%d").replace("\x00", "%m")


def _stamp(values: list[str]) -> _Stamp | None:
    sample = _spread([v for v in values if v], _STAMP_SAMPLE)
    if not sample or not any(ch.isdigit() for ch in sample[0]):
        return None
    if all(_ISO_LIKE.match(v) for v in sample) and parses_all(sample, "iso8601"):
        offsets = sum(1 for v in sample if _OFFSET.search(v))
        return _Stamp("datetime", "iso8601", offsets * 2 > len(sample), ambiguous=False)
    kinds = (
        ("datetime", [f"{d} {t}" for d in _DATE_FORMATS for t in _TIME_FORMATS]),
        ("date", list(_DATE_FORMATS)),
        ("time", list(_TIME_FORMATS)),
    )
    for kind, formats in kinds:
        for candidate in formats:
            if parses_all(sample, candidate):
                day_first = candidate.split(" ")[0] in _DAY_FIRST
                return _Stamp(kind, candidate, False, ambiguous=day_first and parses_all(sample, _swapped(candidate)))
    return None


def _numeric(column: _Column, decimal: str) -> None:
    """Mark a column numeric when nine in ten of its filled values are numbers; the rest are markers."""
    filled = column.filled()
    if not filled:
        return
    probe = _probe("iso8601").model_copy(update={"decimal": decimal})
    _, status = parse_values(pa.chunked_array([pa.array(filled, pa.string())]), probe)
    ok = int(pc.sum(pc.equal(status, VALUE_OK)).as_py() or 0)
    bad = pc.filter(pa.array(filled, pa.string()), pc.equal(status, VALUE_UNPARSEABLE).combine_chunks())
    markers = sorted(set(bad.to_pylist()))
    if ok and ok >= 0.9 * (ok + len(bad)) and len(markers) <= 5 and not any(c.isdigit() for m in markers for c in m):
        column.numeric = True
        column.markers = tuple(markers)


def _columns(table: _Table) -> list[_Column]:
    """The named columns, their values cleaned as the parser cleans them, timestamps recognised."""
    columns = []
    for index, name in enumerate(table.header):
        if not name:
            continue  # a trailing delimiter's empty column
        raw = pa.array([row[index] for row in table.rows], pa.string())
        column = _Column(index, name, clean_text(raw).to_pylist())
        column.stamp = _stamp(column.values)
        columns.append(column)
    return columns


# --- delimited text: timestamps -----------------------------------------------------------------


@dataclass(frozen=True)
class _Time:
    """The columns that make a row's timestamp, and how to read them."""

    columns: list[_Column]
    format: str
    position: _Column | None
    with_offset: bool
    ambiguous: bool


def _position(columns: list[_Column], date_column: _Column) -> _Column | None:
    """An interval-number column (1, 2, ... within each day) beside a date column."""
    for column in columns:
        if column is date_column or not column.numeric:
            continue
        numbers = [v for v in column.filled() if v.isdigit()]
        if len(numbers) < 0.9 * len(column.filled()) or not numbers:
            continue
        values = [int(v) for v in numbers]
        first = min(values)
        # Counting up through the day (a row per series repeats a number), then starting again.
        steps = sum(1 for a, b in pairwise(values) if b in (a, a + 1) or b == first)
        counting = steps >= 0.95 * (len(values) - 1) and any(b < a for a, b in pairwise(values))
        if first in (0, 1) and max(values) <= 300 and (counting or _POSITION_COLUMN.search(column.name)):
            return column
    return None


def _time(path: str, columns: list[_Column]) -> _Time:
    stamped = [c for c in columns if c.stamp is not None]
    full = [c for c in stamped if c.stamp and c.stamp.kind == "datetime"]
    if full:
        stamp = full[0].stamp
        assert stamp is not None
        return _Time([full[0]], stamp.format, None, stamp.with_offset, stamp.ambiguous)
    dates = [c for c in stamped if c.stamp and c.stamp.kind == "date"]
    times = [c for c in stamped if c.stamp and c.stamp.kind == "time"]
    if dates and times:
        date_column = dates[0]
        time_column = next((t for t in times if t.index > date_column.index), times[0])
        assert date_column.stamp is not None and time_column.stamp is not None
        return _Time(
            [date_column, time_column],
            f"{date_column.stamp.format} {time_column.stamp.format}",
            None,
            False,
            date_column.stamp.ambiguous,
        )
    if dates and dates[0].stamp is not None:  # interval numbers within the day, or daily values
        position = _position(columns, dates[0])
        return _Time([dates[0]], dates[0].stamp.format, position, False, dates[0].stamp.ambiguous)
    raise InputFileError(
        path,
        "found no timestamp column (ISO 8601, or a date and time in a common day-first or month-first format)",
    )


def _filled_down(column: _Column) -> bool:
    """Mostly empty cells below a value (a date written on a day's first row only): fill them down."""
    values = column.values
    return bool(values) and values[0] != "" and values.count("") * 2 >= len(values)


def _instants(time: _Time) -> np.ndarray:
    """Each row's timestamp as UTC microseconds (wall times read as UTC), -1 where unreadable."""
    parts = []
    for column in time.columns:
        values = column.values
        if _filled_down(column):
            filled, last = [], ""
            for v in values:
                last = v or last
                filled.append(last)
            values = filled
        parts.append(pa.array(values, pa.string()))
    text = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, " ")
    starts, _ = parse_timestamps(pa.chunked_array([text]), _probe(time.format))
    micros = pc.fill_null(pc.cast(starts, pa.int64()), -1)
    return np.asarray(micros.to_numpy(zero_copy_only=False), dtype=np.int64)


def _series_keys(rows: int, key_columns: list[_Column]) -> np.ndarray:
    if not key_columns:
        return np.zeros(rows, dtype=np.int64)
    keys = ["\x1f".join(parts) for parts in zip(*(c.values for c in key_columns), strict=True)]
    return np.asarray(pc.dictionary_encode(pa.array(keys)).indices.to_numpy(), dtype=np.int64)


def _spacing(instants: np.ndarray, series: np.ndarray) -> tuple[int, int] | None:
    """(most common positive spacing in minutes, how often) of consecutive timestamps per series."""
    keep = instants >= 0
    t, s = instants[keep], series[keep]
    order = np.lexsort((t, s))
    t, s = t[order], s[order]
    steps = np.diff(t)[(s[1:] == s[:-1])]
    minutes = steps[steps > 0] // 60_000_000
    return _mode(int(m) for m in minutes if m > 0)


def _repeated_wall_times(instants: np.ndarray, series: np.ndarray) -> list[datetime]:
    """Wall times that occur twice in a series (naive timestamps): a fall-back hour, in order."""
    keep = instants >= 0
    pairs = Counter(zip(series[keep].tolist(), instants[keep].tolist(), strict=True))
    repeated = [
        datetime(1970, 1, 1) + timedelta(microseconds=t) for t in sorted({t for (_, t), n in pairs.items() if n > 1})
    ]
    by_day: dict[object, list[datetime]] = {}
    for moment in repeated:
        by_day.setdefault(moment.date(), []).append(moment)
    # A fall-back hour repeats at most an hour or two of one day a season; more is plain duplication.
    if len(by_day) > max(2, len(repeated) // 100) or any(d[-1] - d[0] > timedelta(hours=2) for d in by_day.values()):
        return []
    return repeated


def _fitting_zones(repeated: list[datetime]) -> list[str]:
    """Zones whose clocks repeat the first repeated wall time."""
    first = repeated[0]
    fits = []
    for zone in _CANDIDATE_ZONES:
        tz = ZoneInfo(zone)
        if first.replace(tzinfo=tz, fold=0).utcoffset() != first.replace(tzinfo=tz, fold=1).utcoffset():
            fits.append(zone)
    return fits


# --- delimited text: what the columns hold ------------------------------------------------------


def _meter_column(columns: list[_Column], used: set[int], rows: int) -> _Column | None:
    for pattern in _METER_NAMES:
        for column in columns:
            if column.index in used or column.stamp is not None or not pattern.search(column.name):
                continue
            distinct = len(set(column.values))
            if column.filled() and distinct <= max(1, rows // 2):
                return column
    return None


def _named(columns: list[_Column], used: set[int], pattern: re.Pattern[str]) -> _Column | None:
    for column in columns:
        if column.index not in used and not column.numeric and column.stamp is None and pattern.search(column.name):
            distinct = set(column.filled())
            if 0 < len(distinct) <= 30:
                return column
    return None


def _unit_column(columns: list[_Column], used: set[int]) -> _Column | None:
    named = _named(columns, used, _UNIT_COLUMN)
    if named is not None:
        return named
    for column in columns:
        filled = column.filled()
        known = sum(1 for v in filled if v.lower() in UNITS)
        if column.index not in used and filled and known >= 0.8 * len(filled):
            return column
    return None


def _unit_in_name(name: str) -> tuple[str | None, str | None]:
    """(unit, the pattern that found it) from a column name like "demand (MW)" or "Verbrauch kWh"."""
    for pattern in _UNIT_PATTERNS:
        found = re.search(pattern, name)
        if found and found.group("unit").strip().lower() in UNITS:
            return found.group("unit").strip(), pattern
    found = _UNIT_WORD.search(name)
    return (_SPELLING[found.group("unit").lower()], None) if found else (None, None)


def _other_unit_in_name(name: str) -> bool:
    """A unit in brackets that is not energy or power, e.g. "(EUR/MWh)", "[kVAR]" or "(%)"."""
    for pattern in _UNIT_PATTERNS:
        found = re.search(pattern, name)
        if found and re.fullmatch(r"\S{1,10}", found.group("unit").strip()):
            return found.group("unit").strip().lower() not in UNITS
    return False


def _value_columns(columns: list[_Column], used: set[int]) -> tuple[list[_Column], list[_Column]]:
    """(numeric columns that look like energy or power, other numeric columns)."""
    values, others = [], []
    for column in columns:
        if column.index in used or not column.numeric:
            continue
        unit, _ = _unit_in_name(column.name)
        if unit is None and (_NOT_ENERGY.search(column.name) or _other_unit_in_name(column.name)):
            others.append(column)
        else:
            values.append(column)
    return values, others


def _mapping(values: Iterable[str], words: Sequence[tuple[str, re.Pattern[str]]]) -> tuple[dict[str, str], list[str]]:
    """Values -> the first word group they match; (mapped, unmatched)."""
    mapped, unmatched = {}, []
    for value in sorted(set(values)):
        target = next((name for name, pattern in words if pattern.search(value)), None)
        if target is None:
            unmatched.append(value)
        elif value.lower() != target:
            mapped[value] = target
    return mapped, unmatched


# --- delimited text: the draft ------------------------------------------------------------------


@dataclass
class _Draft:
    """What has been found about a delimited file, for the keys that depend on each other."""

    inferred: InferredSource
    table: _Table
    columns: list[_Column]
    time: _Time
    used: set[int] = field(default_factory=set)
    markers: set[str] = field(default_factory=set)
    series_columns: list[_Column] = field(default_factory=list)
    unit_of: dict[int, str] = field(default_factory=dict)  # value column -> unit, where the file says it
    guessed_unit_of: dict[int, str] = field(default_factory=dict)  # value column -> the unit guessed for it


def _delimited(inferred: InferredSource, data: bytes, *, truncated: bool) -> None:
    path = str(inferred.path)
    encoding, why = _encoding(data)
    text = data.decode(encoding, errors="replace")
    delimiter, why_delimiter = _delimiter(path, _LINE_END.split(text))
    table = _table(path, text, delimiter, truncated=truncated)
    inferred.add("format", "csv", "delimited text")
    inferred.add("path", path, "the file this was drafted from; a glob reads several")
    inferred.add("encoding", encoding, why)
    inferred.add("delimiter", delimiter, why_delimiter)
    if table.skip_lines:
        inferred.add("skip_lines", table.skip_lines, f"the header is on line {table.skip_lines + 1}")
    if table.trim:
        inferred.add("trim_trailing_delimiters", True, "lines end in empty fields the header does not name")
    columns = _columns(table)
    decimal, why_decimal = _decimal(table, {c.index for c in columns if c.stamp is not None})
    if decimal != ".":
        inferred.add("decimal", decimal, why_decimal)
    for column in columns:
        if column.stamp is None:
            _numeric(column, decimal)
    time = _time(path, columns)
    draft = _Draft(inferred, table, columns, time, used={c.index for c in time.columns})
    if time.position is not None:
        draft.used.add(time.position.index)
    meter = _meter_column(columns, draft.used, len(table.rows))
    values, others = _value_columns(columns, draft.used | ({meter.index} if meter else set()))
    if not values:
        raise InputFileError(path, "found no numeric column of energy or power values")
    if meter is not None:
        _long(draft, meter, values, others)
    else:
        _wide(draft, values, others)
    minutes = _time_keys(draft)
    _values_keys(draft, minutes)


def _long(draft: _Draft, meter: _Column, values: list[_Column], others: list[_Column]) -> None:
    inferred = draft.inferred
    value = next((c for c in values if _ENERGY_NAME.search(c.name)), values[0])
    draft.used |= {meter.index, value.index}
    unit = _unit_column(draft.columns, draft.used)
    if unit is not None:
        draft.used.add(unit.index)
    direction = _named(draft.columns, draft.used, _DIRECTION_COLUMN)
    if direction is not None:
        draft.used.add(direction.index)
    quality = _named(draft.columns, draft.used, _QUALITY_COLUMN)
    directions = _directions(direction) if direction is not None else None
    qualities = _qualities(quality, value) if quality is not None else None
    mapping: dict[str, Any] = {"meter_id": meter.name, "timestamp": _timestamp_columns(draft.time), "value": value.name}
    if draft.time.position is not None:
        mapping["position"] = draft.time.position.name
    draft.series_columns = [meter]
    if unit is not None:
        mapping["unit"] = unit.name
        draft.series_columns.append(unit)
    if direction is not None and directions is not None:
        mapping["direction"] = direction.name
        draft.series_columns.append(direction)
    if quality is not None and qualities is not None:
        mapping["quality"] = quality.name
    notes = [f"{meter.name!r} names the meter ({len(set(meter.filled())):,} distinct in the sample): long layout"]
    skipped = [c.name for c in values + others if c is not value]
    if skipped:
        notes.append(f"not read: {', '.join(skipped)}")
    inferred.add("columns", mapping, "; ".join(notes))
    for guess in [*(directions or []), *(qualities or [])]:
        inferred.guesses.append(guess)
    if unit is None:
        _fixed_unit(draft, value)
    draft.markers.update(value.markers)


def _timestamp_columns(time: _Time) -> str | list[str]:
    names = [c.name for c in time.columns]
    return names[0] if len(names) == 1 else names


def _fixed_unit(draft: _Draft, value: _Column) -> None:
    found, _ = _unit_in_name(value.name)
    if found:
        draft.inferred.add("unit", found, f"from the column name {value.name!r}")
        draft.unit_of[value.index] = found
    elif _POWER_NAME.search(value.name):
        draft.inferred.add("unit", "kW", f"{_CHECK}: no unit in the file; {value.name!r} sounds like power")
        draft.guessed_unit_of[value.index] = "kW"
    else:
        draft.inferred.add("unit", "kWh", f"{_CHECK}: no unit in the file")
        draft.guessed_unit_of[value.index] = "kWh"


def _directions(column: _Column) -> list[Guess] | None:
    """direction_values for a register or direction column; None if none of its values is understood."""
    words = (("export", _EXPORT_WORDS), ("import", _IMPORT_WORDS))
    mapped, unmatched = _mapping(column.filled(), words)
    if len(unmatched) == len(set(column.filled())):
        return None
    comment = "mapped by the words in them"
    if unmatched:
        comment = f"{_CHECK}: {', '.join(map(repr, unmatched))} not mapped (direction_unknown)"
    return [Guess("direction_values", mapped, comment)] if mapped else []


def _qualities(column: _Column, value: _Column) -> list[Guess] | None:
    """quality_values (and zero_when_quality) for a status column; None if no value is understood."""
    mapped, unmatched = _mapping(column.filled(), _QUALITY_WORDS)
    if len(unmatched) == len(set(column.filled())):
        return None
    comment = "mapped by the words in them"
    if unmatched:
        comment = f"{_CHECK}: {', '.join(map(repr, unmatched))} not mapped (quality_unknown)"
    guesses = [Guess("quality_values", mapped, comment)] if mapped else []
    zero = sorted({q for q, v in zip(column.values, value.values, strict=True) if v == "" and _ZERO_WORDS.search(q)})
    if zero:
        guesses.append(Guess("zero_when_quality", zero, "an empty value with this status means nothing flowed"))
    return guesses


def _wide(draft: _Draft, values: list[_Column], others: list[_Column]) -> None:
    inferred = draft.inferred
    inferred.add("layout", "wide", "no meter column: each numeric column is a series")
    mapping: dict[str, Any] = {"timestamp": _timestamp_columns(draft.time)}
    if draft.time.position is not None:
        mapping["position"] = draft.time.position.name
    comment = "the timestamp" + (" and the interval number" if draft.time.position is not None else "")
    if others:
        comment += f"; not read: {', '.join(c.name for c in others)}"
    inferred.add("columns", mapping, comment)
    found = {c.index: _unit_in_name(c.name) for c in values}
    patterns = {pattern for _, pattern in found.values()}
    shared = patterns.pop() if len(patterns) == 1 else None
    series = [
        _series_entry(draft, column, found[column.index][0], single=len(values) == 1, shared=shared)
        for column in values
    ]
    unstated = any(found[c.index][0] is None and "unit" not in e for e, c in zip(series, values, strict=True))
    if shared is not None:
        inferred.add("unit_pattern", shared, "every series names its unit this way")
    elif unstated:
        inferred.add("unit", "kWh", f"{_CHECK}: no unit in the file for series without one")
    why = "one series, named after the file" if len(values) == 1 else "one per numeric column, named after it"
    if any(e.get("unit") == "kW" and found[c.index][0] is None for e, c in zip(series, values, strict=True)):
        why += f"; {_CHECK}: unit kW guessed from names that sound like power"
    if any("direction" in e for e in series):
        why += "; direction export where the name says so"
    inferred.add("series", series, why)
    draft.series_columns = []


def _series_entry(
    draft: _Draft, column: _Column, unit: str | None, *, single: bool, shared: str | None
) -> dict[str, Any]:
    """One `series` entry of a wide file: its column, and its id, unit and direction where needed."""
    entry: dict[str, Any] = {"column": column.name}
    if single:
        entry["meter_id"] = "{file_stem}"
    if unit:
        draft.unit_of[column.index] = unit
        if shared is None:
            entry["unit"] = unit
    elif _POWER_NAME.search(column.name):
        entry["unit"] = "kW"  # a guess, said in the series comment
        draft.guessed_unit_of[column.index] = "kW"
    else:
        draft.guessed_unit_of[column.index] = "kWh"  # the source's unit, a guess
    if _EXPORT_WORDS.search(column.name):
        entry["direction"] = "export"
    draft.markers.update(column.markers)
    return entry


# --- delimited text: time and value keys --------------------------------------------------------


def _time_keys(draft: _Draft) -> int:
    """The keys of time; returns the interval length."""
    inferred, time = draft.inferred, draft.time
    comment = "reads every sampled timestamp"
    if time.format == "iso8601":
        comment = "ISO 8601 " + ("with UTC offsets: the offsets give the instants" if time.with_offset else "times")
    if time.ambiguous:
        comment = f"{_CHECK}: no day above 12 in the sample, so day-first is a guess"
    inferred.add("timestamp_format", time.format, comment)
    fill = [c.name for c in time.columns if _filled_down(c)]
    if fill:
        inferred.add("fill_down", fill, "the date is written on a day's first row only")
    instants = _instants(time)
    series = _series_keys(len(instants), draft.series_columns)
    minutes, reason = _interval(time, instants, series)
    if not time.with_offset:
        inferred.add("timestamp_timezone", "UTC", f"guessed: no offsets in the file; set the meters' zone ({_CHECK})")
        repeated = _repeated_wall_times(instants, series) if time.position is None else []
        zones = _fitting_zones(repeated) if repeated else []
        if zones:  # repeats no zone's clocks explain are plain duplicates
            inferred.add(
                "ambiguous_time",
                "order",
                f"{repeated[0]:%Y-%m-%d %H:%M} appears twice per series: a fall-back hour in local time, in order "
                f"(fits {', '.join(zones[:3])})",
            )
        if time.position is None:
            _label(inferred, instants, minutes)
    inferred.add("interval_minutes", minutes, reason)
    inferred.add("series_timezone", "UTC", f"{_CHECK}: the meters' zone, whose calendar days gold reports")
    return minutes


def _interval(time: _Time, instants: np.ndarray, series: np.ndarray) -> tuple[int, str]:
    """The interval length and how it was found: interval numbers per day, or timestamp spacing."""
    if time.position is not None:
        per_day: dict[int, int] = {}
        for day, position in zip(instants.tolist(), time.position.values, strict=True):
            if position.isdigit() and day >= 0:
                per_day[day] = max(per_day.get(day, 0), int(position))
        found = _mode(per_day.values())
        count = found[0] if found else 0
        minutes = 1440 // count if count and 1440 % count == 0 else 0
        reason = f"most days have {count} interval numbers"
    else:
        spacing = _spacing(instants, series)
        minutes = min(spacing[0], 1440) if spacing else 0
        reason = f"the most common spacing of a series' timestamps ({spacing[1]:,} times)" if spacing else ""
        if minutes == 1440:
            reason = "daily: " + reason
    if minutes and 1440 % minutes == 0:
        return minutes, reason
    return 30, f"{_CHECK}: no spacing that divides a day was found"


def _label(inferred: InferredSource, instants: np.ndarray, minutes: int) -> None:
    """Times that start one interval after midnight and end at midnight mark interval ends."""
    valid = instants[instants >= 0]
    if not len(valid) or minutes >= 1440:
        return
    day_us = 86_400_000_000
    first, last = int(valid.min()) % day_us, int(valid.max()) % day_us
    if first == minutes * 60_000_000 and last == 0:
        start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(valid.min()))
        inferred.add(
            "timestamp_label",
            "end",
            f"{_CHECK}: the first time is {start:%H:%M} and the last midnight, so times look like interval ends",
        )


def _values_keys(draft: _Draft, minutes: int) -> None:
    markers = [m for m in sorted(draft.markers) if m not in DEFAULT_MISSING_VALUES]
    if markers:
        draft.inferred.add(
            "missing_values",
            [*DEFAULT_MISSING_VALUES, *markers],
            f"the defaults and {', '.join(map(repr, markers))}, seen among the numbers",
        )
    _demand_limit(draft, minutes)


def _demand_kw(draft: _Draft, units: dict[int, str], minutes: int) -> float | None:
    """The 99th percentile of the demand the value columns imply in `units` (None without values)."""
    demands: list[float] = []
    probe = _probe("iso8601").model_copy(update={"decimal": draft.inferred.table().get("decimal", ".")})
    for column in draft.columns:
        unit = units.get(column.index)
        if unit is None:
            continue
        quantity, factor = UNITS[unit.lower()]
        scale = factor if quantity == "power" else factor * 60 / minutes
        numbers, _ = parse_values(pa.chunked_array([pa.array(column.values, pa.string())]), probe)
        demands += [abs(v) * scale for v in numbers.to_pylist() if v is not None]
    return float(np.percentile(demands, 99)) if demands else None


def _demand_limit(draft: _Draft, minutes: int) -> None:
    """max_demand_kw above the default where the file states its units and its values are a grid's;
    where the unit is a guess, a comment when the values would fail the default limit."""
    stated = _demand_kw(draft, draft.unit_of, minutes)
    if stated is not None and stated > 500:
        draft.inferred.add(
            "max_demand_kw",
            int(10 ** math.ceil(math.log10(stated * 10))),
            f"the 99th percentile of demand is {stated:,.0f} kW (a grid or plant series); far above it fails",
        )
    guessed = _demand_kw(draft, draft.guessed_unit_of, minutes)
    limit = SourceConfig.model_fields["max_demand_kw"].default
    if guessed is not None and guessed > limit:
        key = "unit" if "unit" in draft.inferred.table() else "series"
        draft.inferred.amend(
            key,
            f"; read so, the values reach {guessed:,.0f} kW, above max_demand_kw ({limit:,g}): check the unit "
            "(1000 times smaller, or a grid's MW?) and max_demand_kw",
        )
