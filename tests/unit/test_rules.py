"""Validation rules on tiny parsed frames: which rule a row fails, and energy in kWh."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from app.domain.parsing import parsed_readings, parsed_schema, with_local_time
from app.domain.rules import MALFORMED_ROW, RULE_NAMES, RuleParams, rule_checks, validated_readings
from app.domain.sources import SourceConfig
from app.infrastructure.repositories.pandas_repository import PandasDeltaStore


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


NOW = utc(2025, 7, 1, 12, 0)
PARAMS = RuleParams(
    now_utc=NOW, interval_minutes=30, series_timezone="Europe/London", max_demand_kw=10.0, bidirectional=False
)
#: The schema parsing produces (no raw columns); local time is derived from the instant below.
PARSED = parsed_schema([])


def _row(**overrides: Any) -> dict[str, Any]:
    """A parsed row that passes every rule under PARAMS: 0.5 kWh at 11:00 BST on 1 June."""
    row: dict[str, Any] = {
        "meter_id": "M1",
        "direction": "import",
        "interval_start_utc": utc(2025, 6, 1, 10, 0),
        "timestamp_status": "ok",
        "value": 0.5,
        "value_status": "ok",
        "unit": "kwh",
        "interval_minutes": 30,
        "quality": "actual",
        "source_file": "in.csv",
        "line_number": 2,
        "row_order": 0,
    }
    row.update(overrides)
    return row


def _validate(
    engine: PandasDeltaStore, rows: list[dict[str, Any]], params: RuleParams = PARAMS
) -> list[dict[str, Any]]:
    parsed = with_local_time(pa.Table.from_pylist(rows, schema=PARSED), params.series_timezone)
    frame = engine.frame(parsed)
    return engine.to_arrow(validated_readings(frame, params)).to_pylist()


def _rules(engine: PandasDeltaStore, rows: list[dict[str, Any]], params: RuleParams = PARAMS) -> list[str | None]:
    return [r["rejection_rule"] for r in _validate(engine, rows, params)]


CASES: list[tuple[str, dict[str, Any]]] = [
    ("meter_id_missing", {"meter_id": ""}),
    ("timestamp_unparseable", {"timestamp_status": "unparseable", "interval_start_utc": None}),
    ("timestamp_in_dst_gap", {"timestamp_status": "dst_gap", "interval_start_utc": None}),
    ("timestamp_ambiguous", {"timestamp_status": "ambiguous", "interval_start_utc": None}),
    ("timestamp_off_grid", {"interval_start_utc": utc(2025, 6, 1, 10, 17)}),
    ("timestamp_off_grid", {"interval_start_utc": utc(2025, 6, 1, 10, 0, 30)}),
    ("timestamp_off_grid", {"interval_start_utc": utc(2025, 6, 1, 10, 15)}),
    ("timestamp_off_grid", {"interval_start_utc": datetime(2025, 6, 1, 10, 0, 0, 1, tzinfo=UTC)}),
    ("timestamp_in_future", {"interval_start_utc": NOW}),
    ("timestamp_in_future", {"interval_start_utc": NOW + timedelta(days=30)}),
    ("value_missing", {"value_status": "missing", "value": None}),
    ("value_unparseable", {"value_status": "unparseable", "value": None}),
    ("unit_unknown", {"unit": "kwhh"}),
    ("unit_unknown", {"unit": ""}),
    ("unit_unknown", {"unit": "kvarh"}),
    ("direction_unknown", {"direction": "sideways"}),
    ("direction_unknown", {"direction": ""}),
    ("negative_import", {"value": -0.1}),
    ("above_physical_max", {"value": 5.01}),  # 5.01 kWh in 30 min = 10.02 kW > 10 kW
    ("above_physical_max", {"value": 10.5, "unit": "kw"}),  # 10.5 kW average demand > 10 kW
]


@pytest.mark.parametrize(("rule", "change"), CASES, ids=[f"{rule}-{i}" for i, (rule, _) in enumerate(CASES)])
def test_each_rule_fires_for_its_row_only(engine: PandasDeltaStore, rule: str, change: dict[str, Any]) -> None:
    assert _rules(engine, [_row(), _row(**change), _row(meter_id="M2")]) == [None, rule, None]


def test_every_rule_has_a_case() -> None:
    names = [name for name, _ in rule_checks(PARAMS)]
    assert set(names) == {rule for rule, _ in CASES}
    assert list(RULE_NAMES) == [MALFORMED_ROW, *names]


def test_a_valid_row_passes_and_gets_its_energy(engine: PandasDeltaStore) -> None:
    (row,) = _validate(engine, [_row()])
    assert row["rejection_rule"] is None
    assert row["energy_kwh"] == 0.5
    # Parsed columns pass through unchanged.
    assert {k: row[k] for k in _row()} == _row()


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"meter_id": "", "value_status": "missing", "value": None}, "meter_id_missing"),
        ({"meter_id": "", "timestamp_status": "unparseable", "interval_start_utc": None}, "meter_id_missing"),
        ({"timestamp_status": "unparseable", "interval_start_utc": None, "unit": "?"}, "timestamp_unparseable"),
        ({"timestamp_status": "dst_gap", "interval_start_utc": None, "value": -1.0}, "timestamp_in_dst_gap"),
        ({"timestamp_status": "ambiguous", "interval_start_utc": None, "value": 99.0}, "timestamp_ambiguous"),
        ({"interval_start_utc": utc(2025, 8, 1, 10, 17)}, "timestamp_off_grid"),
        ({"interval_start_utc": utc(2025, 8, 1, 10), "value_status": "missing", "value": None}, "timestamp_in_future"),
        ({"value_status": "missing", "value": None, "unit": "?"}, "value_missing"),
        ({"value_status": "unparseable", "value": None, "direction": "?"}, "value_unparseable"),
        ({"unit": "?", "direction": "?"}, "unit_unknown"),
        ({"direction": "?", "value": 99.0}, "direction_unknown"),
        ({"value": -99.0}, "negative_import"),
    ],
)
def test_the_first_failing_rule_wins(engine: PandasDeltaStore, change: dict[str, Any], rule: str) -> None:
    assert _rules(engine, [_row(**change)]) == [rule]


# --- Boundaries and exemptions ----------------------------------------------------------------


def test_negative_values_are_rejected_only_on_import_channels_of_one_way_sources(engine: PandasDeltaStore) -> None:
    rows = [_row(value=-0.1), _row(value=-0.1, direction="export"), _row(value=-0.0), _row(value=0.0)]
    assert _rules(engine, rows) == ["negative_import", None, None, None]
    bidirectional = RuleParams(NOW, 30, "Europe/London", 10.0, bidirectional=True)
    assert _rules(engine, rows, bidirectional) == [None, None, None, None]


def test_demand_is_energy_over_the_interval_and_the_maximum_itself_is_allowed(engine: PandasDeltaStore) -> None:
    rows = [_row(value=5.0), _row(value=5.01), _row(value=-5.01, direction="export")]
    assert _rules(engine, rows) == [None, "above_physical_max", "above_physical_max"]
    # 2.6 kWh is 5.2 kW over 30 minutes but 10.4 kW over 15.
    assert _rules(engine, [_row(value=2.6)]) == [None]
    quarter_hourly = RuleParams(NOW, 15, "Europe/London", 10.0, bidirectional=False)
    assert _rules(engine, [_row(value=2.6), _row(value=2.5)], quarter_hourly) == ["above_physical_max", None]
    hourly = RuleParams(NOW, 60, "Europe/London", 10.0, bidirectional=False)
    assert _rules(engine, [_row(value=10.0), _row(value=10.1)], hourly) == [None, "above_physical_max"]


def test_future_is_relative_to_now_and_an_interval_must_have_ended(engine: PandasDeltaStore) -> None:
    last_complete = NOW - timedelta(minutes=30)
    rows = [_row(interval_start_utc=last_complete), _row(interval_start_utc=last_complete + timedelta(minutes=30))]
    assert _rules(engine, rows) == [None, "timestamp_in_future"]
    earlier = RuleParams(utc(2025, 6, 1, 10, 15), 30, "Europe/London", 10.0, bidirectional=False)
    later = RuleParams(utc(2025, 6, 1, 10, 30), 30, "Europe/London", 10.0, bidirectional=False)
    assert _rules(engine, [_row()], earlier) == ["timestamp_in_future"]
    assert _rules(engine, [_row()], later) == [None]


@pytest.mark.parametrize(
    ("zone", "minutes", "start", "rule"),
    [
        # The grid is the series' local clock: India is UTC+05:30.
        ("Asia/Kolkata", 60, utc(2025, 6, 1, 4, 30), None),
        ("Asia/Kolkata", 60, utc(2025, 6, 1, 4, 0), "timestamp_off_grid"),
        ("UTC", 60, utc(2025, 6, 1, 4, 30), "timestamp_off_grid"),
        ("UTC", 60, utc(2025, 6, 1, 4, 0), None),
        # Daily intervals start at local midnight: 23:00 UTC in a London summer.
        ("Europe/London", 1440, utc(2025, 5, 31, 23), None),
        ("Europe/London", 1440, utc(2025, 6, 1, 0), "timestamp_off_grid"),
        ("Europe/London", 1440, utc(2025, 1, 15, 0), None),
        ("Europe/Berlin", 1440, utc(2025, 5, 31, 22), None),
        ("Europe/London", 15, utc(2025, 6, 1, 10, 45), None),
        ("Europe/London", 15, utc(2025, 6, 1, 10, 50), "timestamp_off_grid"),
        # Across the fall-back: the repeated local 01:30 is on the grid both times.
        ("Europe/London", 30, utc(2025, 10, 26, 0, 30), None),
        ("Europe/London", 30, utc(2025, 10, 26, 1, 30), None),
    ],
)
def test_the_grid_is_checked_in_the_series_time_zone(
    engine: PandasDeltaStore, zone: str, minutes: int, start: datetime, rule: str | None
) -> None:
    params = RuleParams(utc(2030, 1, 1), minutes, zone, 1e9, bidirectional=False)
    assert _rules(engine, [_row(interval_start_utc=start)], params) == [rule]


# --- Units ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "minutes", "kwh"),
    [
        (500.0, "wh", 30, 0.5),
        (1.5, "kwh", 30, 1.5),
        (0.001, "mwh", 30, 1.0),
        (0.000002, "gwh", 60, 2.0),
        (2.0, "kw", 30, 1.0),  # 2 kW for half an hour
        (2.0, "kw", 15, 0.5),
        (2.0, "kw", 60, 2.0),
        (2000.0, "w", 30, 1.0),
        (0.002, "mw", 30, 1.0),
        (1.0, "kw", 1440, 24.0),
    ],
)
def test_units_convert_to_kwh_over_the_interval(
    engine: PandasDeltaStore, value: float, unit: str, minutes: int, kwh: float
) -> None:
    params = RuleParams(NOW, minutes, "UTC", 1e9, bidirectional=False)
    (row,) = _validate(engine, [_row(value=value, unit=unit, interval_start_utc=utc(2025, 6, 1))], params)
    assert row["rejection_rule"] is None
    assert row["energy_kwh"] == pytest.approx(kwh)


def test_energy_is_null_for_an_unknown_unit_or_a_missing_value(engine: PandasDeltaStore) -> None:
    rows = _validate(engine, [_row(unit="kvarh"), _row(value=None, value_status="missing")])
    assert [r["energy_kwh"] for r in rows] == [None, None]


def test_rule_params_follow_the_source() -> None:
    source = SourceConfig(
        name="s", path="x", unit="kW", interval_minutes=15, series_timezone="Europe/Berlin", max_demand_kw=7.5
    )
    params = RuleParams.for_source(source.model_copy(update={"bidirectional": True}), now_utc=NOW)
    assert params == RuleParams(NOW, 15, "Europe/Berlin", 7.5, bidirectional=True)


# --- From raw text to a rule ------------------------------------------------------------------


def test_raw_rows_from_a_local_time_feed_reach_the_right_rule(engine: PandasDeltaStore) -> None:
    lines = [
        ("M1", "2024-10-27 00:30", "0.4", "kWh", None),
        ("M1", "2024-10-27 01:30", "0.4", "kWh", "timestamp_ambiguous"),  # the repeated hour of 2024
        ("M1", "2025-03-30 01:30", "0.4", "kWh", "timestamp_in_dst_gap"),
        ("M1", "2025-03-30 00:15", "0.4", "kWh", "timestamp_off_grid"),
        ("M1", "2025-02-30 00:00", "0.4", "kWh", "timestamp_unparseable"),
        ("M1", "2025-07-01 12:30", "0.4", "kWh", None),  # 11:30 UTC, ended at NOW
        ("M1", "2025-07-01 13:00", "0.4", "kWh", "timestamp_in_future"),  # 12:00 UTC, still running
        ("M1", "2025-06-01 10:00", "N/A", "kWh", "value_missing"),
        ("M1", "2025-06-01 10:00", "12,5", "kWh", "value_unparseable"),
        ("M1", "2025-06-01 10:00", "1", "kvarh", "unit_unknown"),
        ("M1", "2025-06-01 10:00", "-1", "kWh", "negative_import"),
        ("M1", "2025-06-01 10:00", "2", "MWh", "above_physical_max"),
        ("  ", "2025-06-01 10:00", "1", "kWh", "meter_id_missing"),
        ("M1", "2025-06-01 10:00", "800", " WH ", None),
        ("M1", "2025-06-01 10:00", "3", "kW", None),
    ]
    raw = pa.table(
        {
            "meter_id": [line[0] for line in lines],
            "timestamp": [line[1] for line in lines],
            "value": [line[2] for line in lines],
            "unit": [line[3] for line in lines],
            "source_file": ["in.csv"] * len(lines),
            "line_number": pa.array(range(2, len(lines) + 2), pa.int64()),
        }
    )
    source = SourceConfig(
        name="meters",
        path="in.csv",
        columns={"unit": "unit"},
        timestamp_timezone="Europe/London",
        series_timezone="Europe/London",
        max_demand_kw=100.0,
    )
    parsed = parsed_readings(raw, source).append_column("row_order", pa.array(range(len(lines)), pa.int64()))
    params = RuleParams.for_source(source, now_utc=NOW)
    rows = engine.to_arrow(validated_readings(engine.frame(parsed), params)).to_pylist()
    assert [r["rejection_rule"] for r in rows] == [line[4] for line in lines]
    assert [r["energy_kwh"] for r in rows[-2:]] == pytest.approx([0.8, 1.5])
