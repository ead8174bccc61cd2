"""Source declarations: how a file's columns, timestamps and units are to be read."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from app.domain import catalog
from app.domain.catalog import Severity

DEFAULT_MISSING_VALUES = ("", "N/A", "NA", "n/a", "?", "-", "null", "NULL", "NaN", "nan")

#: Unit name (case-insensitive) -> (quantity, factor to kWh or kW).
UNITS: dict[str, tuple[Literal["energy", "power"], float]] = {
    "wh": ("energy", 0.001),
    "kwh": ("energy", 1.0),
    "mwh": ("energy", 1000.0),
    "gwh": ("energy", 1_000_000.0),
    "therm": ("energy", 29.3071),  # US therm, 100,000 BTU (Green Button gas)
    "w": ("power", 0.001),
    "kw": ("power", 1.0),
    "mw": ("power", 1000.0),
}

_KNOWN_UNITS = "Wh, kWh, MWh, GWh, therm, W, kW, MW"

_FIXED_OFFSET = re.compile(r"^[+-](?:[01]\d|2[0-3]):[0-5]\d$")

#: A strptime directive (`%Y`, or `%%` for a literal percent sign), read left to right; glibc's
#: flags (`%-d`) are taken in to be refused: Arrow does not read them.
_DIRECTIVE = re.compile(r"%[-_0^#]?.", re.DOTALL)
#: Directives that stand for several others, and other spellings of one field.
_COMPOSITE = {
    "%T": "%H:%M:%S",
    "%R": "%H:%M",
    "%r": "%I:%M:%S %p",
    "%D": "%m/%d/%y",
    "%F": "%Y-%m-%d",
    "%x": "%m/%d/%y",
    "%X": "%H:%M:%S",
    "%c": "%a %b %d %H:%M:%S %Y",
    "%h": "%b",
    "%e": "%d",
}
#: Directives that read no field of the time: literal %, newline and tab.
_NO_FIELD = ("%%", "%n", "%t")


def format_directives(fmt: str) -> list[str]:
    """The field directives of a strptime format, in order, composites such as %T expanded."""
    found: list[str] = []
    for directive in _DIRECTIVE.findall(fmt):
        expanded = _COMPOSITE.get(directive, directive)
        found += [d for d in _DIRECTIVE.findall(expanded) if d not in _NO_FIELD]
    return found


def split_at_offset(fmt: str) -> tuple[str, str] | None:
    """(the format before `%z`, the format after it), or None when the format has no `%z`."""
    for match in _DIRECTIVE.finditer(fmt):
        if match.group() == "%z":
            return fmt[: match.start()], fmt[match.end() :]
    return None


def check_timezone(name: str, *, allow_fixed_offset: bool) -> str:
    """Return `name` if it is an IANA zone (or a `+HH:MM` offset where allowed)."""
    if allow_fixed_offset and _FIXED_OFFSET.match(name):
        return name
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        allowed = "an IANA zone such as 'Europe/London' or 'UTC'"
        if allow_fixed_offset:
            allowed += ", or a fixed offset such as '+10:00'"
        raise ValueError(f"unknown time zone {name!r}: use {allowed}") from None
    return name


#: Columns every non-delimited reader (and the wide layout) produces, all strings, one row per reading.
CANONICAL_COLUMNS = ("meter_id", "timestamp", "value", "unit", "direction", "quality", "interval_minutes")

#: Quality of a reading as the source reported it, best first; a duplicate read replaces a
#: stored one only if its quality is equal or better.
QUALITY_RANK: dict[str, int] = {"actual": 3, "substituted": 2, "estimated": 1}

Direction = Literal["import", "export"]
Quality = Literal["actual", "substituted", "estimated"]


class ColumnMapping(BaseModel):
    """Which file column holds each field; the optional ones may be absent from a file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    meter_id: str | None = Field(default="meter_id", description="None when `meter_id` on the source is fixed.")
    timestamp: str | tuple[str, ...] = Field(
        default="timestamp", description="One column, or several (date, time) joined by a space before parsing."
    )
    value: str = "value"
    unit: str | None = None
    direction: str | None = None
    quality: str | None = Field(default=None, description="Per-reading quality or validation status.")
    position: str | None = Field(
        default=None, description="Interval number within the local day, 1-based; `timestamp` then holds the date."
    )
    interval_minutes: str | None = None
    interval_end: str | tuple[str, ...] | None = Field(
        default=None,
        description="The interval's end (one column, or date and time columns); its length is end - start.",
    )
    period: str | None = Field(
        default=None, description='One column holding start and end, "A to B" (see `period_separator`).'
    )

    def timestamp_columns(self) -> tuple[str, ...]:
        """Columns holding each row's start: the period column when there is one, else `timestamp`."""
        if self.period is not None:
            return (self.period,)
        return (self.timestamp,) if isinstance(self.timestamp, str) else self.timestamp

    def interval_end_columns(self) -> tuple[str, ...]:
        """Columns holding each row's end (joined by a space, like `timestamp`); none without interval_end."""
        if self.interval_end is None:
            return ()
        return (self.interval_end,) if isinstance(self.interval_end, str) else self.interval_end

    def required(self) -> list[str]:
        """File columns that must be present in the header."""
        named = [self.meter_id, *self.timestamp_columns(), self.value]
        named += [self.unit, self.direction, self.quality, self.position, self.interval_minutes]
        named += self.interval_end_columns()
        return list(dict.fromkeys(c for c in named if c))


#: The column mapping of canonical rows (non-delimited formats and the wide layout).
CANONICAL_MAPPING = ColumnMapping(
    meter_id="meter_id",
    timestamp="timestamp",
    value="value",
    unit="unit",
    direction="direction",
    quality="quality",
    interval_minutes="interval_minutes",
)


class SeriesColumn(BaseModel):
    """One series of a wide file: a value column, and what it measures."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str
    meter_id: str | None = Field(
        default=None,
        description="Series id; default the column name. `{file_stem}` and `{column}` are replaced.",
    )
    unit: str | None = Field(
        default=None, description="Default: from `unit_pattern` on the column name, else the source's unit."
    )
    direction: Direction | None = None
    value_scale: float | None = Field(
        default=None, description="Factor applied to this series' values (default: the source's value_scale)."
    )


class RuleSetting(BaseModel):
    """How a validation rule acts on a failure."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    severity: Severity


class Validation(BaseModel):
    """Thresholds of the series-level (VEE) rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spike_ratio: float = Field(default=10.0, gt=1, description="Day's highest interval / its third-highest.")
    spike_min_kwh: float = Field(default=0.0, ge=0, description="Highest intervals at or below this are never spikes.")
    high_ratio: float = Field(default=3.0, gt=1, description="Day total above this x the look-back daily average.")
    low_ratio: float = Field(default=0.1, ge=0, lt=1, description="Day total below this x the look-back daily average.")
    lookback_days: int = Field(default=28, ge=1, le=366)
    min_lookback_days: int = Field(default=7, ge=1, description="Fewer prior days than this: high/low is not judged.")
    max_zero_intervals: int | None = Field(
        default=None, ge=1, description="Longest allowed run of zero intervals; default one day's worth."
    )


class Estimation(BaseModel):
    """How gaps (missing and rejected intervals) are filled in silver."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    max_linear_minutes: int = Field(default=180, ge=0, description="Gaps up to this long: linear interpolation.")
    like_day_weeks: int = Field(default=4, ge=1, le=52, description="Look-back for like-day, in weeks.")
    max_flat_minutes: int = Field(
        default=180, ge=0, description="One-sided gaps (start or end of the data) up to this long: flat fill."
    )
    max_gap_days: int = Field(default=7, ge=1, description="Gaps longer than this are left missing.")


#: Rule name -> default severity, in the catalogue's order: row rules first, in the order they are
#: tried (a row takes the first it fails), then series (VEE) rules.
DEFAULT_SEVERITIES: dict[str, Severity] = catalog.default_severities()

#: Rules that judge a reading the source did not keep: they can warn or fail, not quarantine.
NO_QUARANTINE = tuple(name for name in catalog.names() if name not in catalog.names(allows="quarantine"))
#: Rules whose failure cannot be kept as a row: they can quarantine or fail, not warn.
NO_WARN = tuple(name for name in catalog.names() if name not in catalog.names(allows="warn"))

#: Formats read as tables of columns, where `layout` and `columns` apply (a Kafka message's JSON
#: fields are its columns).
TABULAR_FORMATS = ("csv", "parquet", "kafka")
#: Formats read from files, at `path`.
FILE_FORMATS = ("csv", "parquet", "nem12", "greenbutton")

#: What each key is for, quoted when a key is refused where nothing reads it.
_PURPOSE = {
    "layout": "how a table lays out its readings",
    "delimiter": "the field separator of delimited text",
    "quote_char": "the quote character of delimited text",
    "encoding": "the character encoding of a text file",
    "skip_lines": "preamble lines above a delimited file's header",
    "trim_trailing_delimiters": "empty fields at the ends of delimited lines",
    "decimal": "the decimal mark of numbers in delimited text",
    "fill_down": "table columns whose empty cells repeat the value above",
    "header": "names for a table's columns in place of its header row",
    "columns": "which table column holds each field",
    "series": "the value columns of the wide layout",
    "unit_pattern": "the unit from a wide column's name",
    "interval_columns": "the interval columns of the time_of_day layout",
    "period_separator": "what separates start and end in columns.period",
    "meter_id": "a fixed meter id in place of a meter column",
    "timestamp_format": "how a table writes its timestamps",
    "timestamp_timezone": "the zone of timestamps written without an offset",
    "timestamp_label": "whether a timestamp marks its interval's start or end",
    "ambiguous_time": "how a repeated fall-back wall time without an offset is read",
    "unit": "a fixed unit where the file names none",
    "direction": "a fixed direction where the file names none",
    "direction_values": "direction column values -> import or export",
    "quality_values": "quality column values -> qualities",
    "unit_values": "unit column values -> unit names",
    "columns.timestamp": "the column holding each interval's start",
    "columns.value": "the value column of the long layout",
    "columns.unit": "a column naming each value's unit",
    "columns.direction": "a column naming each value's direction",
    "columns.position": "interval numbers within the local day",
    "columns.interval_minutes": "a column giving each interval's length",
    "columns.interval_end": "the column(s) holding each interval's end",
    "columns.period": "one column holding each interval's start and end, 'A to B'",
    "path": "the files a source reads",
    "bootstrap_servers": "the Kafka brokers of a topic source",
    "topic": "the Kafka topic a source reads",
    "group_id": "the Kafka consumer group a topic source reports its lag under",
    "consumer": "Kafka consumer settings of a topic source",
}
_KAFKA_KEYS = ("bootstrap_servers", "topic", "group_id", "consumer")
_DELIMITED_TEXT = ("delimiter", "quote_char", "skip_lines", "trim_trailing_delimiters", "decimal")
_TABLE_KEYS = (
    "layout",
    "fill_down",
    "header",
    "columns",
    "series",
    "unit_pattern",
    "interval_columns",
    "period_separator",
    "meter_id",
    "timestamp_format",
    "timestamp_label",
)
#: Keys the reader of a format never reads: NEM12 records and Green Button XML say which field is
#: which, write their own times (NEM12 naive starts in `timestamp_timezone`, Green Button UTC
#: instants) and numbers with a decimal point; NEM12 names unit and direction in every 200 record.
_UNREAD_BY_FORMAT: dict[str, tuple[str, ...]] = {
    "csv": _KAFKA_KEYS,
    "parquet": (*_DELIMITED_TEXT, "encoding", *_KAFKA_KEYS),
    "nem12": (*_DELIMITED_TEXT, *_TABLE_KEYS, "unit", "direction", *_KAFKA_KEYS),
    "greenbutton": (*_DELIMITED_TEXT, *_TABLE_KEYS, "encoding", "timestamp_timezone", "ambiguous_time", *_KAFKA_KEYS),
    # Messages are JSON objects, one reading each: no text layout, no order between them.
    "kafka": (*_DELIMITED_TEXT, "encoding", "fill_down", "header", "path"),
}
#: Keys a table layout never reads. The wide layout takes meters, units and directions from
#: `series` (or columns.meter_id), the time_of_day layout its values and positions from the
#: interval columns, whose starts are fixed by their order.
_UNREAD_BY_LAYOUT: dict[str, tuple[str, ...]] = {
    "long": ("series", "unit_pattern", "interval_columns"),
    "wide": (
        "interval_columns",
        "meter_id",
        "direction_values",
        "columns.value",
        "columns.unit",
        "columns.direction",
        "columns.interval_end",
    ),
    "time_of_day": (
        "series",
        "unit_pattern",
        "timestamp_label",
        "ambiguous_time",
        "columns.value",
        "columns.position",
        "columns.interval_minutes",
        "columns.interval_end",
        "columns.period",
    ),
}
#: Remedies other than "remove it", by key.
_REMEDY = {
    ("layout 'wide'", "meter_id"): "remove it; set meter_id on each series, or columns.meter_id for a meter column",
    ("layout 'wide'", "columns.unit"): "remove it; set unit on each series, the source's unit or unit_pattern",
    ("layout 'wide'", "columns.direction"): "remove it; set direction on each series or the source",
    ("layout 'wide'", "columns.interval_end"): "remove it; a wide file can give its intervals as columns.period",
}


def _unread(key: str, where: str) -> str:
    remedy = _REMEDY.get((where, key), "remove it")
    return f"key {key!r} does not apply to {where} ({_PURPOSE[key]}); {remedy}"


class SourceConfig(BaseModel):
    """One declared source. Frozen, so transforms can take it as a parameter object."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    format: Literal["csv", "nem12", "greenbutton", "parquet", "kafka"] = "csv"
    path: str = Field(
        default="", description="File path, folder or glob; relative paths are read from the config file's folder."
    )
    bootstrap_servers: str | None = Field(default=None, description="Kafka brokers, host:port[,host:port...].")
    topic: str | None = Field(default=None, description="The Kafka topic of readings.")
    group_id: str | None = Field(
        default=None, description="Consumer group for lag monitoring; default energy-platform-<source>."
    )
    consumer: dict[str, str | int | bool] | None = Field(
        default=None, description="Further Kafka consumer settings (librdkafka names), e.g. security settings."
    )
    # Delimited text
    layout: Literal["long", "wide", "time_of_day"] = "long"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote_char: str | None = Field(default='"', max_length=1, description='"" or None: quotes are ordinary characters.')
    encoding: Literal["utf-8", "utf-8-sig", "latin-1", "cp1252"] = "utf-8"
    skip_lines: int = Field(default=0, ge=0, description="Preamble lines before the header row.")
    trim_trailing_delimiters: bool = Field(default=False, description="Drop empty fields at the end of every line.")
    fill_down: tuple[str, ...] = Field(default=(), description="Columns whose empty cells repeat the value above.")
    decimal: Literal[".", ","] = "."
    header: tuple[str, ...] = Field(
        default=(), description="Names for the file's columns, in order, in place of its own header row."
    )
    columns: ColumnMapping = ColumnMapping()
    series: tuple[SeriesColumn, ...] = Field(default=(), description="Wide layout: the value columns.")
    unit_pattern: str | None = Field(default=None, description="Regex with a group 'unit', run on wide column names.")
    interval_columns: str = Field(
        default=r"^\s*\d{1,2}[:.h]\d{2}",
        description="Layout 'time_of_day': regex matching the interval columns, numbered 1, 2, ... in header order.",
    )
    period_separator: str = Field(default=" to ", min_length=1, description="Between start and end in columns.period.")
    meter_id: str | None = Field(default=None, description="Fixed meter id (`{file_stem}` allowed) when no column.")
    # Time
    timestamp_format: str = Field(default="iso8601", description="'iso8601' or a strptime format.")
    timestamp_timezone: str = "UTC"
    timestamp_label: Literal["start", "end"] = "start"
    interval_minutes: int = Field(default=30, ge=1, le=1440)
    series_timezone: str = "UTC"
    ambiguous_time: Literal["reject", "earliest", "latest", "order"] = "reject"
    # Values
    unit: str | None = Field(default=None, description="Fixed unit when the file has no unit column.")
    direction: Direction = "import"
    direction_values: dict[str, Direction] = Field(
        default_factory=dict, description="Direction column value -> direction, for sources that name registers."
    )
    quality_values: dict[str, Quality] = Field(
        default_factory=dict, description="Quality column value -> quality; unmapped values fail quality_unknown."
    )
    zero_when_quality: tuple[str, ...] = Field(
        default=(),
        description="Quality column values meaning nothing flowed: an empty value with one of them is 0.",
    )
    value_kind: Literal["interval", "register"] = "interval"
    value_scale: float = Field(default=1.0, description="Factor applied to every value, e.g. -1 or 0.001.")
    unit_values: dict[str, str] = Field(
        default_factory=dict, description="Unit column value -> unit name, for sources that spell units their way."
    )
    bidirectional: bool = False
    missing_values: tuple[str, ...] = DEFAULT_MISSING_VALUES
    max_demand_kw: float = Field(default=1000.0, gt=0)
    allowed_lateness: timedelta = Field(
        default=timedelta(days=7),
        gt=timedelta(0),
        description="In a stream, reads older than the latest stored interval minus this are late_beyond_horizon "
        "(ISO 8601 'P7D', '36h', '7 days').",
    )
    # VEE
    rules: dict[str, RuleSetting] = Field(default_factory=dict, description="Severity per rule name.")
    validation: Validation = Validation()
    estimation: Estimation = Estimation()

    @field_validator("header")
    @classmethod
    def _header_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        blank = [i + 1 for i, name in enumerate(value) if not name.strip()]
        if blank:
            raise ValueError(f"header names must not be empty (position(s) {', '.join(map(str, blank))})")
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"header names must differ; repeated: {', '.join(repeated)}")
        return value

    @field_validator("quote_char")
    @classmethod
    def _no_quoting(cls, value: str | None) -> str | None:
        return value or None  # TOML has no null: "" switches quoting off

    @field_validator("timestamp_timezone")
    @classmethod
    def _timestamp_zone(cls, value: str) -> str:
        return check_timezone(value, allow_fixed_offset=True)

    @field_validator("series_timezone")
    @classmethod
    def _series_zone(cls, value: str) -> str:
        return check_timezone(value, allow_fixed_offset=False)

    @field_validator("interval_minutes")
    @classmethod
    def _divides_day(cls, value: int) -> int:
        if 1440 % value:
            raise ValueError(f"{value} does not divide a 24-hour day; use 5, 15, 30, 60 or 1440")
        return value

    @field_validator("timestamp_format")
    @classmethod
    def _readable_format(cls, value: str) -> str:
        if value == "iso8601":
            return value
        directives = format_directives(value)
        flagged = [d for d in directives if len(d) > 2]
        if flagged:
            plain = ", ".join("%" + d[-1] for d in flagged)
            raise ValueError(
                f"{value!r}: {', '.join(flagged)} cannot be read (flags are not supported); use {plain}, "
                "which reads numbers with and without leading zeros"
            )
        repeated = list(dict.fromkeys(d for d in directives if directives.count(d) > 1))
        if repeated:
            raise ValueError(
                f"{value!r} repeats {', '.join(repeated)}: a timestamp format reads one instant; for rows that "
                "give an interval's start and end, use columns.period (one column 'A to B', split on "
                "period_separator) or columns.interval_end (the end in its own column or columns)"
            )
        if "%Z" in directives:
            raise ValueError(
                f"{value!r}: %Z (a zone name such as CET) cannot be read; use %z for a written offset "
                "(+01:00, Z), or timestamp_timezone for the zone of times written without one"
            )
        # Parsing writes each parsed time back in this format (without its offset) to catch dates
        # that strptime moves (30/02 -> 02/03): a format Arrow cannot write is refused here.
        split = split_at_offset(value)
        wall_format = value if split is None else "".join(split)
        try:
            pc.strptime(pa.array([""], pa.string()), format=value, unit="us", error_is_null=True)
            pc.strftime(pa.array([0], pa.timestamp("s")), format=wall_format)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise ValueError(
                f"{value!r} cannot be read and written back ({error}); use strptime directives such as "
                "%Y %m %d %H %M %S %b %p and %z for a written offset"
            ) from None
        return value

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() not in UNITS:
            raise ValueError(f"unknown unit {value!r}; known: {_KNOWN_UNITS}")
        return value.strip() if value is not None else None

    @field_validator("unit_values")
    @classmethod
    def _known_unit_targets(cls, value: dict[str, str]) -> dict[str, str]:
        for text, unit in value.items():
            if unit.strip().lower() not in UNITS:
                raise ValueError(
                    f"maps {text!r} to {unit!r}, which is not a unit; known: {_KNOWN_UNITS} "
                    "(leave what is not energy or power, such as m³, unmapped: it fails unit_unknown)"
                )
        return {text: unit.strip() for text, unit in value.items()}

    @field_validator("unit_pattern", "interval_columns")
    @classmethod
    def _regex(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            try:
                pattern = re.compile(value)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error}") from None
            if info.field_name == "unit_pattern" and "unit" not in pattern.groupindex:
                raise ValueError("needs a named group (?P<unit>...)")
        return value

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: dict[str, RuleSetting]) -> dict[str, RuleSetting]:
        for name, setting in value.items():
            error = catalog.severity_error(name, setting.severity)
            if error:
                raise ValueError(error)
        return value

    @model_validator(mode="before")
    @classmethod
    def _fixed_meter_frees_the_meter_column(cls, data: Any) -> Any:
        """A fixed `meter_id` means no meter column: TOML cannot unset columns.meter_id's default."""
        if not isinstance(data, dict) or data.get("meter_id") is None:
            return data
        if data.get("format", "csv") not in TABULAR_FORMATS or data.get("layout", "long") == "wide":
            return data  # nothing reads a fixed meter id there: the key is refused by name
        columns = data.get("columns")
        if isinstance(columns, ColumnMapping):
            if "meter_id" in columns.model_fields_set:
                return data
            columns = {name: getattr(columns, name) for name in columns.model_fields_set}
        if columns is None:
            columns = {}
        if isinstance(columns, dict) and "meter_id" not in columns:
            return {**data, "columns": {**columns, "meter_id": None}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> SourceConfig:
        unread = self._unread_keys()
        if unread:
            raise ValueError("; ".join(unread))
        if self.format == "kafka":
            missing = [key for key in ("bootstrap_servers", "topic") if not getattr(self, key)]
            if missing:
                raise ValueError(f"a kafka source needs {' and '.join(missing)}")
            if self.layout != "long":
                raise ValueError("a kafka source's messages are one reading each: layout must be 'long'")
        elif "path" not in self.model_fields_set:
            raise ValueError("path is required: the file, folder or glob the source reads")
        has_quality = self.columns.quality is not None or self.format not in TABULAR_FORMATS
        if self.zero_when_quality and not has_quality:
            raise ValueError("zero_when_quality needs a quality column (columns.quality)")
        if self.format not in TABULAR_FORMATS:
            return self
        if self.layout == "wide":
            return self._check_wide()
        if self.layout == "time_of_day":
            self._check_time_of_day()
        if (self.unit is None) == (self.columns.unit is None):
            raise ValueError("declare exactly one of 'unit' (fixed) or 'columns.unit' (a unit column)")
        if (self.meter_id is None) == (self.columns.meter_id is None):
            raise ValueError("declare exactly one of 'meter_id' (fixed) or 'columns.meter_id' (a column)")
        return self

    def _check_time_of_day(self) -> None:
        if "timestamp" not in self.columns.model_fields_set:
            raise ValueError("layout 'time_of_day' needs columns.timestamp: the column holding each row's date")
        if 60 % self.interval_minutes and self.interval_minutes != 1440:
            raise ValueError(
                f"layout 'time_of_day' needs interval_minutes dividing an hour (or 1440), so that a 23- or "
                f"25-hour day has whole intervals; {self.interval_minutes} does not"
            )

    def _check_wide(self) -> SourceConfig:
        if not self.series:
            raise ValueError("layout 'wide' needs 'series': the value columns")
        meter_column = "meter_id" in self.columns.model_fields_set and self.columns.meter_id is not None
        for series in self.series:
            if series.unit is None and self.unit is None and self.unit_pattern is None:
                raise ValueError(f"series {series.column!r}: no unit (set its unit, the source's unit or unit_pattern)")
            if meter_column and series.meter_id is not None:
                raise ValueError(
                    f"series {series.column!r}: key 'meter_id' does not apply when columns.meter_id names the "
                    "meter column (each row's meter is that column's value); remove it"
                )
        return self

    def _set_keys(self) -> set[str]:
        """Keys the declaration set, `columns.<field>` for the column mapping's (None, which TOML cannot
        write, is unset)."""
        keys = {name for name in self.model_fields_set if getattr(self, name) is not None}
        keys |= {f"columns.{name}" for name in self.columns.model_fields_set if getattr(self.columns, name) is not None}
        return keys

    def _unread_keys(self) -> list[str]:
        """What the declaration sets that nothing reads for its format and layout, one message per key."""
        keys = self._set_keys()
        unread = [_unread(key, f"format {self.format!r}") for key in _UNREAD_BY_FORMAT[self.format] if key in keys]
        if self.format in TABULAR_FORMATS:
            layout = f"layout {self.layout!r}"
            unread += [_unread(key, layout) for key in _UNREAD_BY_LAYOUT[self.layout] if key in keys]
            unread += self._unread_with_ends(keys)
            unread += self._unread_without_columns(keys)
        return unread

    def _unread_with_ends(self, keys: set[str]) -> list[str]:
        """Keys that interval ends (columns.interval_end, columns.period) make meaningless, and the reverse."""
        columns = self.columns
        with_ends = "a source whose rows give their end in columns.interval_end or columns.period"
        unread = []
        if columns.period is None and "period_separator" in keys:
            unread.append(_unread("period_separator", "a source without columns.period"))
        if columns.interval_end is None and columns.period is None:
            return unread
        if columns.period is not None:
            where = "a source with columns.period, which holds each interval's start and end"
            unread += [_unread(key, where) for key in ("columns.timestamp", "columns.interval_end") if key in keys]
        unread += [
            _unread(key, with_ends)
            for key in ("timestamp_label", "columns.interval_minutes", "columns.position")
            if key in keys
        ]
        return unread

    def _unread_without_columns(self, keys: set[str]) -> list[str]:
        """Maps of column values declared where no such column is read."""
        needed = {"unit_values": "unit", "direction_values": "direction", "quality_values": "quality"}
        return [
            _unread(key, f"a source without columns.{column}")
            for key, column in needed.items()
            if key in keys and getattr(self.columns, column) is None and not self._canonical(column)
        ]

    def _canonical(self, column: str) -> bool:
        """Whether the reader fills canonical `column` on its own (the wide layout's units)."""
        return self.layout == "wide" and column == "unit"

    def severity(self, rule: str) -> Severity:
        """The severity of `rule` for this source: configured, else the default."""
        setting = self.rules.get(rule)
        return setting.severity if setting else DEFAULT_SEVERITIES[rule]

    def reading_columns(self) -> ColumnMapping:
        """Column mapping of the rows the reader hands to parsing.

        Non-tabular formats and the wide and time_of_day layouts are read as canonical rows.
        In the time_of_day layout a fixed meter id, a fixed unit and a fixed direction are the
        source's own (parsing applies them), whatever the reader writes in their columns.
        """
        if self.format not in TABULAR_FORMATS:
            return CANONICAL_MAPPING
        columns = self.columns
        if self.layout == "wide":
            position = "position" if columns.position else None
            period = "timestamp" if columns.period else None
            return CANONICAL_MAPPING.model_copy(update={"position": position, "period": period})
        if self.layout == "time_of_day":
            update = {
                "position": "position",
                "meter_id": None if self.meter_id is not None else "meter_id",
                "unit": "unit" if columns.unit else None,
                "direction": "direction" if columns.direction else None,
            }
            return CANONICAL_MAPPING.model_copy(update=update)
        return columns


def builtin_meter_readings(path: str) -> SourceConfig:
    """The built-in long-CSV source: `meter_id,timestamp,value,unit`, half-hourly."""
    return SourceConfig(
        name="meter_readings",
        path=path,
        columns=ColumnMapping(unit="unit"),
        timestamp_timezone="Europe/London",
        series_timezone="Europe/London",
        interval_minutes=30,
    )
