"""AEMO NEM12 meter data files -> canonical rows, one per interval reading.

NEM12 is a record-per-line CSV whose first field names the record type:

- 100 header (optional: many exported files, like AEMO samples cut from a larger
  file, start straight at a 200 record), 900 end of data;
- 200 NMI data details: NMI (field 2), NMISuffix (field 5, e.g. E1 / B1), UOM (field 8,
  e.g. KWH) and IntervalLength in minutes (field 9), which decides how the following
  300 records are read;
- 300 interval data: IntervalDate (YYYYMMDD), 1440 / IntervalLength values, then
  QualityMethod, ReasonCode, ReasonDescription, UpdateDateTime, MSATSLoadDateTime;
- 400 interval event: StartInterval, EndInterval, QualityMethod, ... giving the quality
  of a range of intervals of the preceding 300 record (used when that record's
  QualityMethod is V, variable);
- 500 B2B details: ignored (it carries no readings).

Conventions of the rows produced:

- `meter_id` is `NMI + "_" + NMISuffix` (e.g. `6123456789_E1`): one NMI has a channel
  per suffix, and the underscore keeps the two parts readable and splittable.
- `direction` is "export" when the suffix starts with B (generation fed to the grid),
  otherwise "import" (E = consumption), following the NEM12 suffix convention.
- `timestamp` is the naive local start of the interval, `YYYY-MM-DDTHH:MM:SS`. Interval
  i of a 300 record is the period *ending* at i x IntervalLength after midnight; its
  start is written. NEM12 times are NEM time (UTC+10 all year), which the source
  declares as its `timestamp_timezone`; no offset is applied here.
- `value` is the value text exactly as in the file; the parser types it.
- `unit` maps the UOM KWH/WH/MWH/KW/MW (any case) to kWh/Wh/MWh/kW/MW; any other UOM
  (KVARH, ...) is passed on as written so that it fails `unit_unknown` downstream.
- `quality` maps the first letter of the QualityMethod: A -> actual, S and F ->
  substituted, E -> estimated. V (variable) is resolved per interval by the 400 records;
  intervals of a V record that no 400 record covers keep "V", which fails
  `quality_unknown` downstream rather than being guessed. Other letters (N = null
  data, ...) are passed on as written.
- `line_number` is the physical line of the 300 record for all its intervals.

A 300 record that cannot be read (wrong number of values for the interval length, an
impossible date) is returned in `malformed`, as is a 400 record that cannot be read or
that follows an unreadable 300 record: those lines are quarantined, never dropped.
Structural problems (not NEM12, a 300 or 400 record out of order, an unusable 200
record, no 300 records) raise InputFileError naming the line and the rule.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache
from pathlib import Path

from app.domain.errors import InputFileError
from app.domain.sources import CANONICAL_COLUMNS, SourceConfig
from app.infrastructure.formats import CanonicalRows, RawFile

#: NEM12 UOM (upper case) -> the unit name the parser knows.
UNITS = {"KWH": "kWh", "WH": "Wh", "MWH": "MWh", "KW": "kW", "MW": "MW"}
#: First letter of a QualityMethod -> canonical quality; V waits for 400 records.
QUALITY = {"A": "actual", "S": "substituted", "F": "substituted", "E": "estimated"}

# A QualityMethod: a quality flag letter, optionally followed by a two-digit method.
_QUALITY_METHOD = re.compile(r"^[A-Z][0-9]{0,2}$")
# 300 record: indicator, date, N values, then 5 trailing fields (QualityMethod first); any
# further fields must be empty (a trailing comma).
_TRAILING_300 = 5
_COUNT = re.compile(r"^[0-9]{1,4}$")
_RECORD_TYPES = ("100", "200", "300", "400", "500", "900")


@cache
def _start_times(interval_minutes: int) -> tuple[str, ...]:
    """`THH:MM:SS` starts of the intervals of a day: interval i starts at (i - 1) x length."""
    return tuple(
        f"T{(i * interval_minutes) // 60:02d}:{(i * interval_minutes) % 60:02d}:00"
        for i in range(1440 // interval_minutes)
    )


def _quality(method: str) -> str:
    letter = method[:1].upper()
    return QUALITY.get(letter, letter)


def _date(text: str) -> str | None:
    """`YYYYMMDD` -> `YYYY-MM-DD`, or None for anything that is not a real date."""
    if len(text) != 8 or not (text.isascii() and text.isdigit()):
        return None
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return None
    return f"{text[:4]}-{text[4:6]}-{text[6:]}"


class _Channel:
    """What a 200 record declares for the 300 records under it."""

    def __init__(self, path: str, fields: list[str], line: int) -> None:
        if len(fields) < 9:
            raise InputFileError(
                path, f"200 record has {len(fields)} fields, needs at least 9 (rule: nem12_nmi_details)", line=line
            )
        nmi, suffix, uom, length = fields[1].strip(), fields[4].strip(), fields[7].strip(), fields[8].strip()
        if not nmi or not suffix:
            raise InputFileError(path, "200 record has no NMI or no NMISuffix (rule: nem12_nmi_details)", line=line)
        minutes = int(length) if length.isascii() and length.isdigit() else 0
        if minutes <= 0 or 1440 % minutes:
            raise InputFileError(
                path,
                f"200 record IntervalLength {length!r} is not a number of minutes dividing a day "
                "(rule: nem12_nmi_details)",
                line=line,
            )
        self.meter_id = f"{nmi}_{suffix}"
        self.direction = "export" if suffix[:1].upper() == "B" else "import"
        self.unit = UNITS.get(uom.upper(), uom)
        self.minutes = minutes
        self.interval_text = str(minutes)
        self.count = 1440 // minutes


class _Day:
    """One readable 300 record, held until the 400 records after it have been applied."""

    def __init__(self, channel: _Channel, date: str, values: list[str], quality: str, line: int) -> None:
        self.channel = channel
        self.date = date
        self.values = values
        self.qualities = [quality] * len(values)
        self.line = line

    def emit(self, rows: CanonicalRows) -> None:
        channel = self.channel
        for start, value, quality in zip(_start_times(channel.minutes), self.values, self.qualities, strict=True):
            rows.append(
                channel.meter_id,
                self.date + start,
                value,
                channel.unit,
                channel.direction,
                quality,
                channel.interval_text,
                self.line,
            )


def _read_day(channel: _Channel, fields: list[str], line: int) -> _Day | None:
    """A 300 record's intervals, or None when it cannot be read (it is then malformed)."""
    n = channel.count
    if len(fields) < 2 + n + 1 or any(f.strip() for f in fields[2 + n + _TRAILING_300 :]):
        return None
    method = fields[2 + n].strip()
    # With one value too many or too few the QualityMethod is not where the interval
    # length puts it; a shifted record must not be read as the wrong intervals.
    if not _QUALITY_METHOD.match(method):
        return None
    date = _date(fields[1].strip())
    if date is None:
        return None
    return _Day(channel, date, fields[2 : 2 + n], _quality(method), line)


def _apply_event(day: _Day, fields: list[str]) -> bool:
    """Apply a 400 record's quality to its interval range; False when it cannot be read."""
    if len(fields) < 4:
        return False
    start, end, method = fields[1].strip(), fields[2].strip(), fields[3].strip()
    if not (_COUNT.match(start) and _COUNT.match(end) and _QUALITY_METHOD.match(method)):
        return False
    first, last = int(start), int(end)
    if not 1 <= first <= last <= len(day.values):
        return False
    quality = _quality(method)
    day.qualities[first - 1 : last] = [quality] * (last - first + 1)
    return True


def _decode(path: str, data: bytes, encoding: str) -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputFileError(
            path, f"byte 0x{data[error.start]:02x} is not valid {encoding} (rule: encoding)", line=line
        ) from None
    return text.lstrip("\ufeff")


class _Reader:
    """The state of a read: the channel (200) in force and the 300 record awaiting its 400s."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.rows = CanonicalRows()
        self.malformed: list[tuple[int, str]] = []
        self.channel: _Channel | None = None
        self.day: _Day | None = None  # the last readable 300 record, waiting for its 400 records
        self.last_300_bad = False  # the last 300 record was malformed: its 400 records are too
        self.ended = False  # a 900 record was read
        self.days = 0

    def record(self, number: int, line: str) -> None:
        fields = line.split(",")
        kind = fields[0].strip()
        if kind not in _RECORD_TYPES:
            raise InputFileError(
                self.path,
                f"record type {kind[:20] or '(empty)'} is not a NEM12 record (rule: nem12_record_type)",
                line=number,
            )
        if self.ended and kind != "100":
            raise InputFileError(
                self.path, f"{kind} record after the 900 end-of-data record (rule: nem12_record_order)", line=number
            )
        if kind == "400":
            self._event(number, line, fields)
            return
        self.flush()
        if kind == "100":
            version = fields[1].strip().upper() if len(fields) > 1 else ""
            if version != "NEM12":
                raise InputFileError(
                    self.path,
                    f"header declares {version or 'no format'}, not NEM12 (rule: nem12_header)",
                    line=number,
                )
            self.channel, self.ended = None, False
        elif kind == "200":
            self.channel = _Channel(self.path, fields, number)
        elif kind == "300":
            self._interval_data(number, line, fields)
        elif kind == "900":
            self.ended = True
        # 500 records carry no readings.

    def _interval_data(self, number: int, line: str, fields: list[str]) -> None:
        if self.channel is None:
            raise InputFileError(self.path, "300 record before any 200 record (rule: nem12_record_order)", line=number)
        self.days += 1
        self.day = _read_day(self.channel, fields, number)
        if self.day is None:
            self.malformed.append((number, line))
            self.last_300_bad = True

    def _event(self, number: int, line: str, fields: list[str]) -> None:
        if self.day is None and not self.last_300_bad:
            raise InputFileError(
                self.path, "400 record does not follow a 300 record (rule: nem12_record_order)", line=number
            )
        if self.day is None or not _apply_event(self.day, fields):
            self.malformed.append((number, line))

    def flush(self) -> None:
        """Emit the 300 record held for its 400 records: a record of another type has come."""
        if self.day is not None:
            self.day.emit(self.rows)
            self.day = None
        self.last_300_bad = False


def read_nem12(path: str, data: bytes, source: SourceConfig) -> RawFile:
    """One NEM12 file's bytes -> canonical rows (see the module docstring for conventions)."""
    if not data.strip():
        raise InputFileError(path, "is empty (no NEM12 records)")
    if data[:2] == b"\x1f\x8b":
        raise InputFileError(path, "is gzip-compressed; decompress it first", line=1)
    reader = _Reader(path)
    for number, raw in enumerate(_decode(path, data, source.encoding).split("\n"), start=1):
        line = raw.rstrip("\r")
        if line.strip():
            reader.record(number, line)
    reader.flush()
    if reader.days == 0:
        raise InputFileError(path, "has no 300 interval data records (rule: nem12_no_data)")
    return RawFile(
        path=Path(path), header=list(CANONICAL_COLUMNS), table=reader.rows.table(), malformed=reader.malformed
    )
