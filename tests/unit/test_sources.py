"""SourceConfig: what a source declaration accepts, and error messages that name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.domain.sources import DEFAULT_MISSING_VALUES, ColumnMapping, SourceConfig, builtin_meter_readings


def _config(**changes: Any) -> SourceConfig:
    fields: dict[str, Any] = {"name": "grid", "path": "in/*.csv", "unit": "kWh"}
    fields.update(changes)
    return SourceConfig(**fields)


def _error(**changes: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        _config(**changes)
    return caught.value


def test_builtin_meter_readings_declares_the_long_csv_conventions() -> None:
    source = builtin_meter_readings("data/readings.csv")
    assert source.name == "meter_readings"
    assert source.path == "data/readings.csv"
    assert (source.timestamp_timezone, source.series_timezone) == ("Europe/London", "Europe/London")
    assert source.interval_minutes == 30
    assert (source.unit, source.columns.unit) == (None, "unit")
    assert source.columns.required() == ["meter_id", "timestamp", "value", "unit"]
    assert (source.direction, source.bidirectional, source.ambiguous_time) == ("import", False, "reject")
    assert (source.timestamp_format, source.timestamp_label) == ("iso8601", "start")
    assert source.missing_values == DEFAULT_MISSING_VALUES


@pytest.mark.parametrize(
    ("field", "zone"),
    [
        ("timestamp_timezone", "Mars/Base"),
        ("timestamp_timezone", "+24:00"),
        ("timestamp_timezone", "+10:60"),
        ("timestamp_timezone", "10:00"),
        ("timestamp_timezone", "+1000"),
        ("series_timezone", "Mars/Base"),
        ("series_timezone", "Europe/Londn"),
        # A series lives in a real place: fixed offsets are for timestamps only.
        ("series_timezone", "+10:00"),
    ],
)
def test_an_unknown_time_zone_is_rejected_naming_the_field(field: str, zone: str) -> None:
    error = _error(**{field: zone})
    assert [e["loc"] for e in error.errors()] == [(field,)]
    message = str(error)
    assert field in message
    assert f"unknown time zone {zone!r}" in message


@pytest.mark.parametrize(
    ("field", "zone"),
    [
        ("timestamp_timezone", "+10:00"),
        ("timestamp_timezone", "-05:30"),
        ("timestamp_timezone", "UTC"),
        ("timestamp_timezone", "Europe/Berlin"),
        ("series_timezone", "Europe/London"),
        ("series_timezone", "America/New_York"),
        ("series_timezone", "UTC"),
    ],
)
def test_known_zones_and_fixed_timestamp_offsets_are_accepted(field: str, zone: str) -> None:
    assert getattr(_config(**{field: zone}), field) == zone


@pytest.mark.parametrize("minutes", [7, 11, 25, 100, 1000])
def test_an_interval_that_does_not_divide_a_day_is_rejected_naming_the_field(minutes: int) -> None:
    error = _error(interval_minutes=minutes)
    assert [e["loc"] for e in error.errors()] == [("interval_minutes",)]
    assert "interval_minutes" in str(error)
    assert f"{minutes} does not divide a 24-hour day" in str(error)


@pytest.mark.parametrize("minutes", [0, -30, 1441, 2880])
def test_an_interval_out_of_range_is_rejected_naming_the_field(minutes: int) -> None:
    error = _error(interval_minutes=minutes)
    assert [e["loc"] for e in error.errors()] == [("interval_minutes",)]


@pytest.mark.parametrize("minutes", [1, 5, 15, 30, 60, 1440])
def test_intervals_that_divide_a_day_are_accepted(minutes: int) -> None:
    assert _config(interval_minutes=minutes).interval_minutes == minutes


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"unit": None}, id="neither"),
        pytest.param({"unit": "kWh", "columns": ColumnMapping(unit="unit")}, id="both"),
        pytest.param({"unit": "kWh", "columns": {"unit": "uom"}}, id="both-from-dict"),
    ],
)
def test_exactly_one_of_unit_and_unit_column_must_be_declared(changes: dict[str, Any]) -> None:
    message = str(_error(**changes))
    assert "'unit'" in message
    assert "'columns.unit'" in message
    assert "exactly one" in message


def test_a_unit_column_alone_or_a_fixed_unit_alone_is_accepted() -> None:
    assert _config(unit=None, columns={"unit": "uom"}).columns.required() == ["meter_id", "timestamp", "value", "uom"]
    assert _config(unit="MWh").columns.unit is None


@pytest.mark.parametrize("unit", ["kWhh", "kvarh", "J", "", "k Wh"])
def test_an_unknown_unit_is_rejected_naming_the_field(unit: str) -> None:
    error = _error(unit=unit)
    assert [e["loc"] for e in error.errors()] == [("unit",)]
    assert "unit" in str(error)
    assert f"unknown unit {unit!r}" in str(error)


@pytest.mark.parametrize("unit", ["Wh", "kWh", "MWh", "GWh", "W", "kW", "MW", "KWH", "mwh"])
def test_known_units_are_accepted_in_any_case(unit: str) -> None:
    assert _config(unit=unit).unit == unit


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"name": "Grid-Load"}, "name"),
        ({"name": "1grid"}, "name"),
        ({"delimiter": ";;"}, "delimiter"),
        ({"max_demand_kw": 0}, "max_demand_kw"),
        ({"ambiguous_time": "first"}, "ambiguous_time"),
        ({"timestamp_label": "middle"}, "timestamp_label"),
        ({"direction": "both"}, "direction"),
        ({"encoding": "utf-16"}, "encoding"),
    ],
)
def test_other_invalid_fields_are_named(changes: dict[str, Any], field: str) -> None:
    error = _error(**changes)
    assert [e["loc"][0] for e in error.errors()] == [field]
    assert field in str(error)


def test_a_source_is_frozen() -> None:
    source = _config()
    with pytest.raises(ValidationError):
        source.interval_minutes = 15  # type: ignore[misc]


def test_column_mapping_lists_optional_columns_only_when_declared() -> None:
    assert ColumnMapping().required() == ["meter_id", "timestamp", "value"]
    mapping = ColumnMapping(meter_id="LCLid", timestamp="DateTime", value="KWH/hh", direction="flow")
    assert mapping.required() == ["LCLid", "DateTime", "KWH/hh", "flow"]
