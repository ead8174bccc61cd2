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


class ColumnMapping(BaseModel):
    """Which file column holds each field; unit and direction are optional columns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    meter_id: str = "meter_id"
    timestamp: str = "timestamp"
    value: str = "value"
    unit: str | None = None
    direction: str | None = None

    def required(self) -> list[str]:
        """File columns that must be present in the header."""
        optional = [self.unit, self.direction]
        return [self.meter_id, self.timestamp, self.value, *[c for c in optional if c]]


class SourceConfig(BaseModel):
    """One declared source. Frozen, so transforms can take it as a parameter object."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    format: Literal["csv"] = "csv"
    path: str = Field(description="File path or glob; relative paths are read from the config file's folder.")
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: Literal["utf-8", "utf-8-sig", "latin-1", "cp1252"] = "utf-8"
    columns: ColumnMapping = ColumnMapping()
    timestamp_format: str = Field(default="iso8601", description="'iso8601' or a strptime format.")
    timestamp_timezone: str = "UTC"
    timestamp_label: Literal["start", "end"] = "start"
    interval_minutes: int = Field(default=30, ge=1, le=1440)
    series_timezone: str = "UTC"
    unit: str | None = Field(default=None, description="Fixed unit when the file has no unit column.")
    direction: Literal["import", "export"] = "import"
    bidirectional: bool = False
    ambiguous_time: Literal["reject", "earliest", "latest"] = "reject"
    missing_values: tuple[str, ...] = DEFAULT_MISSING_VALUES
    max_demand_kw: float = Field(default=1000.0, gt=0)

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
            raise ValueError(f"unknown unit {value!r}; known: Wh, kWh, MWh, GWh, W, kW, MW")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _one_unit(self) -> SourceConfig:
        if (self.unit is None) == (self.columns.unit is None):
            raise ValueError("declare exactly one of 'unit' (fixed) or 'columns.unit' (a unit column)")
        return self


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
