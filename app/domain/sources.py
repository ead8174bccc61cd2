"""Source declarations: how a file's columns, timestamps and units are to be read."""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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

_FIXED_OFFSET = re.compile(r"^[+-](?:[01]\d|2[0-3]):[0-5]\d$")


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

Severity = Literal["warn", "quarantine", "fail"]
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
        return (self.timestamp,) if isinstance(self.timestamp, str) else self.timestamp

    def required(self) -> list[str]:
        """File columns that must be present in the header."""
        named = [self.meter_id, *self.timestamp_columns(), self.value]
        named += [self.unit, self.direction, self.quality, self.position, self.interval_minutes]
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


#: Rule name -> default severity. Row rules first, then series (VEE) rules.
DEFAULT_SEVERITIES: dict[str, Severity] = {
    "malformed_row": "quarantine",
    "meter_id_missing": "quarantine",
    "timestamp_unparseable": "quarantine",
    "timestamp_in_dst_gap": "quarantine",
    "timestamp_ambiguous": "quarantine",
    "timestamp_off_grid": "quarantine",
    "timestamp_in_future": "quarantine",
    "value_missing": "quarantine",
    "value_unparseable": "quarantine",
    "unit_unknown": "quarantine",
    "direction_unknown": "quarantine",
    "quality_unknown": "quarantine",
    "interval_invalid": "quarantine",
    "register_start": "quarantine",
    "register_reset": "quarantine",
    "negative_import": "quarantine",
    "negative_export": "quarantine",
    "above_physical_max": "quarantine",
    "duplicate_replaced": "warn",
    "missing_intervals": "warn",
    "spike": "warn",
    "high_low": "warn",
    "zero_run": "warn",
}

#: Rules that judge a reading the source did not keep: they can warn or fail, not quarantine.
NO_QUARANTINE = ("duplicate_replaced", "missing_intervals")
#: Rules whose failure cannot be kept as a row: they can quarantine or fail, not warn.
NO_WARN = tuple(
    name
    for name in DEFAULT_SEVERITIES
    if name not in NO_QUARANTINE
    and name not in (
        "spike",
        "high_low",
        "zero_run",
        "negative_import",
        "negative_export",
        "above_physical_max",
        "timestamp_in_future",
    )
)


class SourceConfig(BaseModel):
    """One declared source. Frozen, so transforms can take it as a parameter object."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    format: Literal["csv", "nem12", "greenbutton", "parquet"] = "csv"
    path: str = Field(description="File path or glob; relative paths are read from the config file's folder.")
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
    # VEE
    rules: dict[str, RuleSetting] = Field(default_factory=dict, description="Severity per rule name.")
    validation: Validation = Validation()
    estimation: Estimation = Estimation()

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

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() not in UNITS:
            raise ValueError(f"unknown unit {value!r}; known: Wh, kWh, MWh, GWh, therm, W, kW, MW")
        return value.strip() if value is not None else None

    @field_validator("unit_pattern")
    @classmethod
    def _unit_group(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                pattern = re.compile(value)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error}") from None
            if "unit" not in pattern.groupindex:
                raise ValueError("needs a named group (?P<unit>...)")
        return value

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: dict[str, RuleSetting]) -> dict[str, RuleSetting]:
        for name, setting in value.items():
            if name not in DEFAULT_SEVERITIES:
                raise ValueError(f"unknown rule {name!r}; known: {', '.join(DEFAULT_SEVERITIES)}")
            if setting.severity == "quarantine" and name in NO_QUARANTINE:
                raise ValueError(f"rule {name!r} has no row to quarantine; use 'warn' or 'fail'")
            if setting.severity == "warn" and name in NO_WARN:
                raise ValueError(f"rule {name!r} leaves no value to keep; use 'quarantine' or 'fail'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SourceConfig:
        if self.zero_when_quality and self.reading_columns().quality is None:
            raise ValueError("zero_when_quality needs a quality column (columns.quality)")
        if self.format != "csv" or self.layout == "wide":
            return self._check_canonical()
        if (self.unit is None) == (self.columns.unit is None):
            raise ValueError("declare exactly one of 'unit' (fixed) or 'columns.unit' (a unit column)")
        if (self.meter_id is None) == (self.columns.meter_id is None):
            raise ValueError("declare exactly one of 'meter_id' (fixed) or 'columns.meter_id' (a column)")
        return self

    def _check_canonical(self) -> SourceConfig:
        if self.layout == "wide":
            if self.format != "csv":
                raise ValueError("layout 'wide' applies to format 'csv' only")
            if not self.series:
                raise ValueError("layout 'wide' needs 'series': the value columns")
            for series in self.series:
                if series.unit is None and self.unit is None and self.unit_pattern is None:
                    raise ValueError(
                        f"series {series.column!r}: no unit (set its unit, the source's unit or unit_pattern)"
                    )
        return self

    def severity(self, rule: str) -> Severity:
        """The severity of `rule` for this source: configured, else the default."""
        setting = self.rules.get(rule)
        return setting.severity if setting else DEFAULT_SEVERITIES[rule]

    def reading_columns(self) -> ColumnMapping:
        """Column mapping of the rows the reader hands to parsing."""
        if self.format != "csv":
            return CANONICAL_MAPPING
        if self.layout == "wide":
            position = "position" if self.columns.position else None
            return CANONICAL_MAPPING.model_copy(update={"position": position})
        return self.columns


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
