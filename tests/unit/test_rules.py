"""Validation rules on tiny parsed frames: which rule a row fails, and energy in kWh."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from app.domain.parsing import parsed_readings, parsed_schema, with_local_time
from app.domain.rules import MALFORMED_ROW, RULE_NAMES, RuleParams, rule_checks, validated_readings
from app.domain.sources import DEFAULT_SEVERITIES, ColumnMapping, SourceConfig
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
    ("interval_invalid", {"interval_minutes": None}),
    ("register_start", {"value_status": "register_start", "value": None}),
    ("register_reset", {"value_status": "register_reset", "value": None}),
    ("quality_unknown", {"quality": "V"}),
    ("quality_unknown", {"quality": ""}),
    ("quality_unknown", {"quality": "Actual"}),  # parsing lower-cases; the rule itself is exact
    ("negative_import", {"value": -0.1}),
    ("negative_export", {"value": -0.1, "direction": "export"}),
    ("above_physical_max", {"value": 5.01}),  # 5.01 kWh in 30 min = 10.02 kW > 10 kW
    ("above_physical_max", {"value": 10.5, "unit": "kw"}),  # 10.5 kW average demand > 10 kW
]


@pytest.mark.parametrize(("rule", "change"), CASES, ids=[f"{rule}-{i}" for i, (rule, _) in enumerate(CASES)])
def test_each_rule_fires_for_its_row_only(engine: PandasDeltaStore, rule: str, change: dict[str, Any]) -> None:
    assert _rules(engine, [_row(), _row(**change), _row(meter_id="M2")]) == [None, rule, None]


def test_every_rule_has_a_case() -> None:
    names = [name for name, _ in rule_checks(PARAMS)]
    # late_beyond_horizon needs a stream's watermark: its own test below.
    assert set(names) == {rule for rule, _ in CASES} | {"late_beyond_horizon"}
    assert list(RULE_NAMES) == [MALFORMED_ROW, *names]


def test_a_read_older_than_the_watermark_minus_the_lateness_is_late(engine: PandasDeltaStore) -> None:
    """Flagged (warn, kept) by default; never without a watermark, as in a batch."""
    watermark = utc(2025, 6, 8, 10, 0)
    late = RuleParams(**{**vars(PARAMS), "late_before": watermark - timedelta(days=7)})
    rows = [_row(), _row(interval_start_utc=utc(2025, 6, 1, 9, 30)), _row(interval_start_utc=utc(2025, 6, 1, 10, 30))]
    judged = _validate(engine, rows, late)
    assert [(r["rejection_rule"], r["validation_flags"]) for r in judged] == [
        (None, ""),
        (None, "late_beyond_horizon"),
        (None, ""),
    ]
    assert [r["validation_flags"] for r in _validate(engine, rows)] == ["", "", ""]
    quarantining = RuleParams(**{**vars(late), "severities": {"late_beyond_horizon": "quarantine"}})
    assert _rules(engine, rows, quarantining) == [None, "late_beyond_horizon", None]


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
        # The new rules in their places.
        (
            {"timestamp_status": "ambiguous", "interval_start_utc": None, "interval_minutes": None},
            "timestamp_ambiguous",
        ),
        ({"interval_minutes": None, "interval_start_utc": utc(2025, 6, 1, 10, 17)}, "interval_invalid"),
        ({"interval_minutes": None, "interval_start_utc": utc(2025, 8, 1, 10)}, "interval_invalid"),
        (
            {"interval_start_utc": utc(2025, 8, 1, 10), "value_status": "register_start", "value": None},
            "timestamp_in_future",
        ),
        ({"value_status": "register_start", "value": None, "unit": "?"}, "register_start"),
        ({"value_status": "register_reset", "value": None, "direction": "?"}, "register_reset"),
        ({"unit": "?", "quality": "V"}, "unit_unknown"),
        ({"direction": "?", "quality": "V"}, "direction_unknown"),
        ({"quality": "V", "value": -99.0}, "quality_unknown"),
    ],
)
def test_the_first_failing_rule_wins(engine: PandasDeltaStore, change: dict[str, Any], rule: str) -> None:
    assert _rules(engine, [_row(**change)]) == [rule]


# --- Boundaries and exemptions ----------------------------------------------------------------


def test_negative_values_are_rejected_on_either_channel_of_one_way_sources(engine: PandasDeltaStore) -> None:
    rows = [
        _row(value=-0.1),
        _row(value=-0.1, direction="export"),
        _row(value=-0.0),
        _row(value=0.0),
        _row(value=-0.0, direction="export"),
        _row(value=0.1, direction="export"),
    ]
    assert _rules(engine, rows) == ["negative_import", "negative_export", None, None, None, None]
    bidirectional = RuleParams(NOW, 30, "Europe/London", 10.0, bidirectional=True)
    assert _rules(engine, rows, bidirectional) == [None] * 6


def test_negative_export_can_warn_and_keep_the_value(engine: PandasDeltaStore) -> None:
    (kept,) = _validate(engine, [_row(value=-0.1, direction="export")], _with(negative_export="warn"))
    assert (kept["rejection_rule"], kept["validation_flags"]) == (None, "negative_export")
    assert kept["energy_kwh"] == pytest.approx(-0.1)


def test_demand_is_energy_over_the_interval_and_the_maximum_itself_is_allowed(engine: PandasDeltaStore) -> None:
    rows = [_row(value=5.0), _row(value=5.01), _row(value=-5.01, direction="export")]
    assert _rules(engine, rows) == [None, "above_physical_max", "negative_export"]
    # Demand is the energy's size: a channel that may run backwards has a maximum both ways.
    bidirectional = RuleParams(NOW, 30, "Europe/London", 10.0, bidirectional=True)
    assert _rules(engine, rows, bidirectional) == [None, "above_physical_max", "above_physical_max"]
    # 2.6 kWh is 5.2 kW over 30 minutes but 10.4 kW over 15.
    assert _rules(engine, [_row(value=2.6)]) == [None]
    quarter_hourly = RuleParams(NOW, 15, "Europe/London", 10.0, bidirectional=False)
    rows = [_row(value=2.6, interval_minutes=15), _row(value=2.5, interval_minutes=15)]
    assert _rules(engine, rows, quarter_hourly) == ["above_physical_max", None]
    hourly = RuleParams(NOW, 60, "Europe/London", 10.0, bidirectional=False)
    rows = [_row(value=10.0, interval_minutes=60), _row(value=10.1, interval_minutes=60)]
    assert _rules(engine, rows, hourly) == [None, "above_physical_max"]
    # Demand is judged over the row's own interval, whatever the source declares.
    assert _rules(engine, [_row(value=2.6), _row(value=2.6, interval_minutes=15)], hourly) == [
        None,
        "above_physical_max",
    ]


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
    assert _rules(engine, [_row(interval_start_utc=start, interval_minutes=minutes)], params) == [rule]


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
    change = {"value": value, "unit": unit, "interval_start_utc": utc(2025, 6, 1), "interval_minutes": minutes}
    (row,) = _validate(engine, [_row(**change)], params)
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


# --- Severities: warn flags and keeps, quarantine and fail reject --------------------------------


def _with(**severities: str) -> RuleParams:
    """PARAMS with some rules' severities changed."""
    return RuleParams(NOW, 30, "Europe/London", 10.0, bidirectional=False, severities=severities)  # type: ignore[arg-type]


def _outcome(engine: PandasDeltaStore, rows: list[dict[str, Any]], params: RuleParams) -> list[tuple[str | None, str]]:
    return [(r["rejection_rule"], r["validation_flags"]) for r in _validate(engine, rows, params)]


def test_a_warn_rule_keeps_the_row_and_names_itself_in_the_flags(engine: PandasDeltaStore) -> None:
    rows = [_row(), _row(value=-0.1), _row(value=5.01)]
    assert _outcome(engine, rows, PARAMS) == [(None, ""), ("negative_import", ""), ("above_physical_max", "")]
    warn = _with(negative_import="warn")
    assert _outcome(engine, rows, warn) == [(None, ""), (None, "negative_import"), ("above_physical_max", "")]
    (kept,) = _validate(engine, [_row(value=-0.1)], warn)
    assert kept["energy_kwh"] == pytest.approx(-0.1)  # the value is kept as read


def test_two_warn_rules_on_one_row_are_listed_in_rule_order(engine: PandasDeltaStore) -> None:
    # -6 kWh on an import channel: negative, and 12 kW of demand over half an hour.
    warn = _with(negative_import="warn", above_physical_max="warn", timestamp_in_future="warn")
    rows = [_row(value=-6.0), _row(value=-6.0, interval_start_utc=NOW), _row(value=6.0), _row()]
    assert _outcome(engine, rows, warn) == [
        # Rule order, not alphabetical ("above_physical_max" sorts first).
        (None, "negative_import;above_physical_max"),
        (None, "timestamp_in_future;negative_import;above_physical_max"),
        (None, "above_physical_max"),
        (None, ""),
    ]
    names = [name for name, _ in rule_checks(PARAMS)]
    assert names.index("timestamp_in_future") < names.index("negative_import") < names.index("above_physical_max")


def test_warn_flags_are_identical_on_every_engine(engine: PandasDeltaStore, tmp_path: Path) -> None:
    """The flag expression (concat, squeeze, strip) gives the same strings on DuckDB and Spark as on pandas."""
    warn = _with(negative_import="warn", above_physical_max="warn", timestamp_in_future="warn")
    rows = [
        _row(row_order=0),
        _row(value=-0.1, row_order=1, meter_id="M2"),
        _row(value=6.0, row_order=2, meter_id="M3"),
        _row(value=-6.0, row_order=3, meter_id="M4"),
        _row(value=-6.0, interval_start_utc=NOW, row_order=4, meter_id="M5"),
        _row(interval_start_utc=NOW, row_order=5, meter_id="M6"),
        _row(value=-6.0, unit="??", row_order=6, meter_id="M7"),  # rejected, nothing flagged
        # Rejected and still flagged (not negative_import: that judges import channels only).
        _row(value=-6.0, direction="?", row_order=7, meter_id="M8"),
    ]
    got = _outcome(engine, rows, warn)
    assert got == [
        (None, ""),
        (None, "negative_import"),
        (None, "above_physical_max"),
        (None, "negative_import;above_physical_max"),
        (None, "timestamp_in_future;negative_import;above_physical_max"),
        (None, "timestamp_in_future"),
        ("unit_unknown", ""),
        ("direction_unknown", "above_physical_max"),
    ]
    # The same frame on pandas, the reference engine.
    assert _outcome(PandasDeltaStore(tmp_path), rows, warn) == got


@pytest.mark.parametrize("severity", ["quarantine", "fail"])
def test_quarantine_and_fail_reject_the_row(engine: PandasDeltaStore, severity: str) -> None:
    # A severity "fail" rejects like "quarantine": the pipeline then stops the batch on the
    # rule's count, so the row must not reach silver on the way.
    params = _with(negative_import=severity, timestamp_in_future=severity)
    rows = [_row(value=-0.1), _row(interval_start_utc=NOW), _row()]
    assert _outcome(engine, rows, params) == [("negative_import", ""), ("timestamp_in_future", ""), (None, "")]


def test_a_warn_rule_does_not_hide_a_later_rejecting_rule(engine: PandasDeltaStore) -> None:
    warn = _with(negative_import="warn", timestamp_in_future="warn")
    rows = [
        # negative (warn) and 12 kW (quarantine): rejected by the later rule, the warning kept.
        _row(value=-6.0),
        # in the future (warn) and a bad direction (quarantine).
        _row(interval_start_utc=NOW, direction="?"),
        # A negative value in an unknown unit: unit_unknown rejects, and negative_import
        # does not fire at all, because it judges energy and there is no energy without a
        # unit (-1 kvarh says nothing about imported kWh).
        _row(value=-1.0, unit="kvarh"),
    ]
    assert _outcome(engine, rows, warn) == [
        ("above_physical_max", "negative_import"),
        ("direction_unknown", "timestamp_in_future"),
        ("unit_unknown", ""),
    ]


def test_warn_severity_of_a_rejecting_rule_earlier_in_order_lets_a_later_one_decide(engine: PandasDeltaStore) -> None:
    # RuleParams itself does not police which rules may warn (SourceConfig does); a warn
    # rule is skipped in the rejection chain wherever it sits.
    params = _with(meter_id_missing="warn")
    assert _outcome(engine, [_row(meter_id="", value=-0.1)], params) == [("negative_import", "meter_id_missing")]


def test_default_severities_list_the_row_rules_in_the_order_they_are_tried() -> None:
    # The order users read in `rules` error messages and in README's table.
    assert list(DEFAULT_SEVERITIES)[: len(RULE_NAMES)] == list(RULE_NAMES)


def test_every_row_rule_has_a_default_severity() -> None:
    assert set(RULE_NAMES) <= set(DEFAULT_SEVERITIES)
    assert {DEFAULT_SEVERITIES[name] for name in RULE_NAMES if name != "late_beyond_horizon"} == {"quarantine"}
    assert DEFAULT_SEVERITIES["late_beyond_horizon"] == "warn"
    assert PARAMS.severity("negative_import") == "quarantine"
    assert _with(negative_import="warn").severity("negative_import") == "warn"


# --- Quality -------------------------------------------------------------------------------------


def test_quality_estimated_and_substituted_are_accepted_and_an_unknown_code_is_not(engine: PandasDeltaStore) -> None:
    rows = [_row(quality="estimated"), _row(quality="substituted"), _row(quality="V"), _row(quality="actual")]
    assert _rules(engine, rows) == [None, None, "quality_unknown", None]


def _quality_rows(engine: PandasDeltaStore, qualities: list[str], **source: Any) -> list[dict[str, Any]]:
    raw = pa.table(
        {
            "meter_id": ["M1"] * len(qualities),
            "timestamp": ["2025-06-01T10:00:00Z"] * len(qualities),
            "value": ["0.5"] * len(qualities),
            "quality": qualities,
            "source_file": ["in.csv"] * len(qualities),
            "line_number": pa.array(range(2, len(qualities) + 2), pa.int64()),
            "row_order": pa.array(range(len(qualities)), pa.int64()),
        }
    )
    config = SourceConfig(name="q", path="in.csv", unit="kWh", columns=ColumnMapping(quality="quality"), **source)
    parsed = parsed_readings(raw, config)
    params = RuleParams.for_source(config, now_utc=NOW)
    return engine.to_arrow(validated_readings(engine.frame(parsed), params)).to_pylist()


def test_quality_column_values_map_to_qualities_or_fail_quality_unknown(engine: PandasDeltaStore) -> None:
    codes = ["estimated", "A", "V", "", "ESTIMATED"]
    plain = _quality_rows(engine, codes)
    assert [(r["quality"], r["rejection_rule"]) for r in plain] == [
        ("estimated", None),
        ("a", "quality_unknown"),
        ("v", "quality_unknown"),
        ("actual", None),  # a blank quality is an actual read
        ("estimated", None),
    ]
    mapped = _quality_rows(engine, codes, quality_values={"A": "actual", "V": "estimated"})
    assert [(r["quality"], r["rejection_rule"]) for r in mapped] == [
        ("estimated", None),
        ("actual", None),
        ("estimated", None),
        ("actual", None),
        ("estimated", None),
    ]


# --- Per-row interval length -----------------------------------------------------------------------


def test_power_converts_over_each_rows_own_interval(engine: PandasDeltaStore) -> None:
    rows = [
        _row(value=6.0, unit="kw", interval_minutes=5),
        _row(value=6.0, unit="kw", interval_minutes=60),
        _row(value=6.0, unit="kw"),
        _row(value=6.0, unit="kwh", interval_minutes=5),  # energy does not depend on the interval
    ]
    params = RuleParams(NOW, 30, "Europe/London", 1e9, bidirectional=False)
    got = _validate(engine, rows, params)
    assert [r["rejection_rule"] for r in got] == [None, None, None, None]
    assert [r["energy_kwh"] for r in got] == pytest.approx([0.5, 6.0, 3.0, 6.0])
    # The declared length is not used for energy: the same rows under another declaration.
    declared_15 = RuleParams(NOW, 15, "Europe/London", 1e9, bidirectional=False)
    assert [r["energy_kwh"] for r in _validate(engine, rows, declared_15)] == pytest.approx([0.5, 6.0, 3.0, 6.0])


def test_the_grid_is_judged_per_row_interval(engine: PandasDeltaStore) -> None:
    at = utc(2025, 6, 1, 10, 15)  # 11:15 BST
    rows = [
        _row(interval_start_utc=at, interval_minutes=5),
        _row(interval_start_utc=at, interval_minutes=15),
        _row(interval_start_utc=at, interval_minutes=30),
        _row(interval_start_utc=at, interval_minutes=60),
        _row(interval_start_utc=utc(2025, 6, 1, 10, 5), interval_minutes=5),
        _row(interval_start_utc=utc(2025, 6, 1, 10, 5), interval_minutes=15),
    ]
    expected = [None, None, "timestamp_off_grid", "timestamp_off_grid", None, "timestamp_off_grid"]
    assert _rules(engine, rows) == expected
    # The declared length of the source does not move the grid.
    five = RuleParams(NOW, 5, "Europe/London", 10.0, bidirectional=False)
    assert _rules(engine, rows, five) == expected


def test_the_future_is_judged_by_the_declared_interval(engine: PandasDeltaStore) -> None:
    # A 5-minute row that ended 5 minutes ago is still "in the future" for a half-hourly
    # source: the source's declared length decides when an interval may have ended.
    start = NOW - timedelta(minutes=10)
    assert _rules(engine, [_row(interval_start_utc=start, interval_minutes=5)]) == ["timestamp_in_future"]
    five = RuleParams(NOW, 5, "Europe/London", 10.0, bidirectional=False)
    assert _rules(engine, [_row(interval_start_utc=start, interval_minutes=5)], five) == [None]


def test_a_null_interval_is_invalid_and_has_no_power_energy(engine: PandasDeltaStore) -> None:
    rows = _validate(engine, [_row(interval_minutes=None), _row(interval_minutes=None, unit="kw"), _row()])
    assert [r["rejection_rule"] for r in rows] == ["interval_invalid", "interval_invalid", None]
    assert [r["energy_kwh"] for r in rows] == [0.5, None, 0.5]


def test_raw_interval_lengths_that_do_not_divide_a_day_are_invalid(engine: PandasDeltaStore) -> None:
    minutes = ["5", "", "7", "0", "-5", "abc", "60", "1440", "2880"]
    raw = pa.table(
        {
            "meter_id": ["M1"] * len(minutes),
            "timestamp": ["2025-06-01T00:00:00Z"] * len(minutes),
            "value": ["1"] * len(minutes),
            "minutes": minutes,
            "source_file": ["in.csv"] * len(minutes),
            "line_number": pa.array(range(2, len(minutes) + 2), pa.int64()),
            "row_order": pa.array(range(len(minutes)), pa.int64()),
        }
    )
    source = SourceConfig(name="m", path="in.csv", unit="kW", columns=ColumnMapping(interval_minutes="minutes"))
    parsed = parsed_readings(raw, source)
    rows = engine.to_arrow(validated_readings(engine.frame(parsed), RuleParams.for_source(source, now_utc=NOW)))
    got = [(r["interval_minutes"], r["rejection_rule"]) for r in rows.to_pylist()]
    invalid = (None, "interval_invalid")
    assert got == [(5, None), (30, None), invalid, invalid, invalid, invalid, (60, None), (1440, None), invalid]
    assert [r["energy_kwh"] for r in rows.to_pylist()][:2] == pytest.approx([5 / 60, 0.5])


# --- Severities in the source configuration -----------------------------------------------------


def _config(rules: dict[str, Any]) -> dict[str, Any]:
    return {"name": "s", "path": "x", "unit": "kWh", "rules": rules}


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"negative_imports": {"severity": "warn"}}, "unknown rule 'negative_imports'; known: malformed_row, "),
        ({"missing_intervals": {"severity": "quarantine"}}, "rule 'missing_intervals' has no row to quarantine"),
        ({"duplicate_replaced": {"severity": "quarantine"}}, "rule 'duplicate_replaced' has no row to quarantine"),
        ({"value_missing": {"severity": "warn"}}, "rule 'value_missing' leaves no value to keep"),
        ({"interval_invalid": {"severity": "warn"}}, "rule 'interval_invalid' leaves no value to keep"),
        ({"quality_unknown": {"severity": "warn"}}, "rule 'quality_unknown' leaves no value to keep"),
        ({"register_reset": {"severity": "warn"}}, "rule 'register_reset' leaves no value to keep"),
        ({"negative_import": {"severity": "ignore"}}, "Input should be 'warn', 'quarantine' or 'fail'"),
        ({"negative_import": {"severity": "warn", "limit": 1}}, "Extra inputs are not permitted"),
    ],
)
def test_source_config_rejects_unknown_rules_and_impossible_severities(rules: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SourceConfig.model_validate(_config(rules))
    assert message in str(caught.value)
    assert "rules" in str(caught.value)


def test_source_config_names_the_remedy_for_an_impossible_severity() -> None:
    with pytest.raises(ValidationError) as caught:
        SourceConfig.model_validate(_config({"missing_intervals": {"severity": "quarantine"}}))
    assert "use 'warn' or 'fail'" in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        SourceConfig.model_validate(_config({"value_missing": {"severity": "warn"}}))
    assert "use 'quarantine' or 'fail'" in str(caught.value)


@pytest.mark.parametrize(
    ("rule", "severity"),
    [
        ("negative_import", "warn"),
        ("above_physical_max", "warn"),
        ("timestamp_in_future", "warn"),
        ("missing_intervals", "fail"),
        ("duplicate_replaced", "warn"),
        ("value_missing", "fail"),
        ("spike", "quarantine"),
        ("malformed_row", "fail"),
    ],
)
def test_source_config_accepts_possible_severities(rule: str, severity: str) -> None:
    source = SourceConfig.model_validate(_config({rule: {"severity": severity}}))
    assert source.severity(rule) == severity


def test_rule_params_carry_the_configured_severities(engine: PandasDeltaStore) -> None:
    source = SourceConfig.model_validate(
        _config({"negative_import": {"severity": "warn"}, "above_physical_max": {"severity": "fail"}})
    )
    params = RuleParams.for_source(source, now_utc=NOW)
    assert params.severities == {"negative_import": "warn", "above_physical_max": "fail"}
    assert (params.severity("negative_import"), params.severity("above_physical_max")) == ("warn", "fail")
    assert params.severity("unit_unknown") == "quarantine"
    assert RuleParams.for_source(SourceConfig.model_validate(_config({})), now_utc=NOW).severities == {}
    # And they act: the negative read is kept with a flag, the 2 MWh read is rejected.
    rows = [_row(value=-0.1), _row(value=2.0, unit="mwh")]
    assert _outcome(engine, rows, params) == [(None, "negative_import"), ("above_physical_max", "")]
