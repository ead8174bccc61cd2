"""Rules and transforms on tiny frames, through the engine fixture."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import narwhals as nw
import pyarrow as pa
import pytest

from app.domain.parsing import parsed_schema, with_local_time
from app.domain.rules import RuleParams, validated_readings
from app.domain.schemas import UTC_TIMESTAMP
from app.domain.transforms import (
    SilverParams,
    deduplicated_readings,
    gold_daily_meter_energy,
    gold_hourly_portfolio_load,
    local_day_minutes,
    silver_readings,
)
from app.infrastructure.repositories.pandas_repository import PandasDeltaStore

NOW = datetime(2025, 7, 1, tzinfo=UTC)
PARAMS = RuleParams(
    now_utc=NOW, interval_minutes=30, series_timezone="Europe/London", max_demand_kw=10, bidirectional=False
)


def _row(**overrides: Any) -> dict[str, Any]:
    row = {
        "meter_id": "M1",
        "direction": "import",
        "interval_start_utc": datetime(2025, 6, 1, 11, 0, tzinfo=UTC),
        "timestamp_status": "ok",
        "value": 0.5,
        "value_status": "ok",
        "unit": "kwh",
        "interval_minutes": 30,
        "quality": "actual",
        "source_file": "f.csv",
        "line_number": 2,
        "row_order": 0,
    }
    return {**row, **overrides}


def _parsed(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows typed as parsing types them (`interval_minutes` int32, ...); local time is added later."""
    return pa.Table.from_pylist(rows, schema=parsed_schema([]))


def _validate(engine: Any, rows: list[dict[str, Any]], params: RuleParams = PARAMS) -> list[dict[str, Any]]:
    parsed = with_local_time(_parsed(rows), params.series_timezone)
    return engine.to_arrow(validated_readings(engine.frame(parsed), params)).to_pylist()


CASES = [
    ("meter_id_missing", {"meter_id": ""}),
    ("timestamp_unparseable", {"timestamp_status": "unparseable", "interval_start_utc": None}),
    ("timestamp_in_dst_gap", {"timestamp_status": "dst_gap", "interval_start_utc": None}),
    ("timestamp_ambiguous", {"timestamp_status": "ambiguous", "interval_start_utc": None}),
    ("timestamp_off_grid", {"interval_start_utc": datetime(2025, 6, 1, 10, 17, tzinfo=UTC)}),
    ("timestamp_off_grid", {"interval_start_utc": datetime(2025, 6, 1, 10, 0, 30, tzinfo=UTC)}),
    ("timestamp_in_future", {"interval_start_utc": datetime(2025, 7, 1, 0, 0, tzinfo=UTC)}),
    ("value_missing", {"value_status": "missing", "value": None}),
    ("value_unparseable", {"value_status": "unparseable", "value": None}),
    ("unit_unknown", {"unit": "kwhh"}),
    ("direction_unknown", {"direction": "sideways"}),
    ("interval_invalid", {"interval_minutes": None}),
    ("register_start", {"value_status": "register_start", "value": None}),
    ("register_reset", {"value_status": "register_reset", "value": None}),
    ("quality_unknown", {"quality": "V"}),
    ("negative_import", {"value": -0.1}),
    ("above_physical_max", {"value": 5.5}),  # 5.5 kWh in 30 min = 11 kW > 10 kW
]


@pytest.mark.parametrize(("rule", "change"), CASES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(CASES)])
def test_each_rule_fails_only_its_row(engine: Any, rule: str, change: dict[str, Any]) -> None:
    good, bad = _validate(engine, [_row(), _row(**change)])
    assert good["rejection_rule"] is None
    assert bad["rejection_rule"] == rule


def test_exemptions_units_and_first_rule_wins(engine: Any) -> None:
    rows = _validate(
        engine,
        [
            _row(value=-0.1, direction="export"),
            _row(value=500, unit="wh"),
            _row(value=2, unit="kw"),
            _row(value=0.001, unit="mwh"),
            _row(meter_id="", value_status="missing", value=None),
            _row(value=2, unit="kw", interval_minutes=15),
            _row(value=2, unit="kw", interval_minutes=60),
        ],
    )
    # A negative export is quarantined unless the channel is bidirectional (negative_export).
    assert [r["rejection_rule"] for r in rows] == [
        "negative_export",
        None,
        None,
        None,
        "meter_id_missing",
        None,
        None,
    ]
    # Power over each row's own interval: 2 kW for 30, 15 and 60 minutes.
    assert [r["energy_kwh"] for r in rows[1:4]] == pytest.approx([0.5, 1.0, 1.0])
    assert [r["energy_kwh"] for r in rows[5:]] == pytest.approx([0.5, 2.0])
    bidirectional = RuleParams(NOW, 30, "Europe/London", 10, bidirectional=True)
    assert _validate(engine, [_row(value=-0.1)], bidirectional)[0]["rejection_rule"] is None
    assert _validate(engine, [_row(value=-0.1, direction="export")], bidirectional)[0]["rejection_rule"] is None


def _as_vee_output(frame: Any) -> Any:
    """De-duplicated batch rows as the VEE stage passes them on (no series rule fired)."""
    return deduplicated_readings(frame).with_columns(
        role=nw.lit("batch"),
        quality_flag=nw.col("quality"),
        reported_kwh=nw.lit(None, nw.Float64()),
        estimation_method=nw.lit(None, nw.String()),
    )


def test_silver_keeps_the_latest_read_and_the_local_day(engine: Any) -> None:
    late_evening = datetime(2025, 6, 1, 23, 30, tzinfo=UTC)  # 00:30 BST on 2 June
    eleven, noon = datetime(2025, 6, 1, 11, tzinfo=UTC), datetime(2025, 6, 1, 12, tzinfo=UTC)
    rows = [
        _row(value=1.0, row_order=0),
        _row(value=2.0, row_order=5),
        _row(value=9.0, row_order=9, unit="??"),  # rejected: a later read that does not win
        _row(interval_start_utc=late_evening, row_order=1),
        # Best quality first, then the latest: a later estimate does not replace an actual read.
        _row(interval_start_utc=noon, value=3.0, row_order=2),
        _row(interval_start_utc=noon, value=4.0, row_order=8, quality="estimated"),
        _row(interval_start_utc=noon, value=5.0, row_order=3, quality="substituted"),
    ]
    validated = validated_readings(engine.frame(with_local_time(_parsed(rows), "Europe/London")), PARAMS)
    vee_rows = _as_vee_output(validated)
    silver = engine.to_arrow(silver_readings(vee_rows, SilverParams("s", "b1", "Europe/London")))
    by_start = {r["interval_start_utc"]: r for r in silver.to_pylist()}
    assert len(by_start) == 3 == silver.num_rows
    assert by_start[eleven]["energy_kwh"] == 2.0
    assert by_start[late_evening]["local_date"] == date(2025, 6, 2)
    assert (by_start[noon]["energy_kwh"], by_start[noon]["quality_flag"], by_start[noon]["quality_rank"]) == (
        3.0,
        "actual",
        3,
    )


def test_warn_flags_reach_silver_and_are_identical_on_every_engine(engine: Any, tmp_path: Path) -> None:
    """The flag expression (concat, squeeze, strip) gives the same strings on pandas and Spark."""
    params = RuleParams(
        NOW,
        30,
        "Europe/London",
        10,
        bidirectional=False,
        severities={"negative_import": "warn", "above_physical_max": "warn", "timestamp_in_future": "warn"},
    )
    future = datetime(2025, 7, 1, 0, 0, tzinfo=UTC)
    rows = [
        _row(row_order=0),
        _row(value=-0.1, row_order=1, meter_id="M2"),
        _row(value=6.0, row_order=2, meter_id="M3"),
        _row(value=-6.0, row_order=3, meter_id="M4"),
        _row(value=-6.0, interval_start_utc=future, row_order=4, meter_id="M5"),
        _row(interval_start_utc=future, row_order=5, meter_id="M6"),
        _row(value=-6.0, unit="??", row_order=6, meter_id="M7"),  # rejected, nothing flagged
        # Rejected and still flagged (not negative_import: that judges import channels only).
        _row(value=-6.0, direction="?", row_order=7, meter_id="M8"),
    ]
    expected = [
        (None, ""),
        (None, "negative_import"),
        (None, "above_physical_max"),
        (None, "negative_import;above_physical_max"),
        (None, "timestamp_in_future;negative_import;above_physical_max"),
        (None, "timestamp_in_future"),
        ("unit_unknown", ""),
        ("direction_unknown", "above_physical_max"),
    ]
    got = [(r["rejection_rule"], r["validation_flags"]) for r in _validate(engine, rows, params)]
    assert got == expected
    # The same frame on pandas, the reference engine.
    reference = [
        (r["rejection_rule"], r["validation_flags"]) for r in _validate(PandasDeltaStore(tmp_path), rows, params)
    ]
    assert got == reference
    # Accepted flagged rows keep their flags through silver.
    validated = validated_readings(engine.frame(with_local_time(_parsed(rows), "Europe/London")), params)
    silver = engine.to_arrow(silver_readings(_as_vee_output(validated), SilverParams("s", "b1", "Europe/London")))
    flags = {r["meter_id"]: r["validation_flags"] for r in silver.to_pylist()}
    assert flags == {f"M{i + 1}": flag for i, (rule, flag) in enumerate(expected) if rule is None}


@pytest.mark.parametrize("zone", ["Europe/London", "Europe/Berlin"])
def test_local_day_lengths_follow_dst(zone: str) -> None:
    days = [(date(2025, 3, 30), zone), (date(2025, 10, 26), zone), (date(2025, 6, 1), zone), (date(2025, 3, 30), "UTC")]
    table = local_day_minutes(days).to_pylist()
    minutes = {(r["local_date"], r["timezone"]): r["day_minutes"] for r in table}
    assert minutes == {
        (date(2025, 3, 30), zone): 1380,
        (date(2025, 10, 26), zone): 1500,
        (date(2025, 6, 1), zone): 1440,
        (date(2025, 3, 30), "UTC"): 1440,
    }


def _silver(rows: list[tuple[str, str, datetime, float, date]], quality: str | list[str] = "actual") -> pa.Table:
    return pa.table(
        {
            "meter_id": [r[0] for r in rows],
            "direction": [r[1] for r in rows],
            "interval_start_utc": pa.array([r[2] for r in rows], UTC_TIMESTAMP),
            "interval_minutes": pa.array([30] * len(rows), pa.int32()),
            "energy_kwh": [r[3] for r in rows],
            "quality_flag": [quality] * len(rows) if isinstance(quality, str) else quality,
            "local_date": pa.array([r[4] for r in rows], pa.date32()),
            "timezone": ["Europe/London"] * len(rows),
        }
    )


def test_gold_daily_completeness_is_dst_aware_and_directions_stay_apart(engine: Any) -> None:
    spring = date(2025, 3, 30)
    start = datetime(2025, 3, 30, 0, 0, tzinfo=UTC)
    rows = [("M1", "import", start.replace(hour=h // 2, minute=30 * (h % 2)), 0.5, spring) for h in range(45)]
    rows.append(("M1", "export", start, 0.2, spring))
    rows[10] = ("M1", "import", rows[10][2], 2.0, spring)
    silver = _silver(rows)
    calendar = local_day_minutes([(spring, "Europe/London")])
    gold = engine.to_arrow(gold_daily_meter_energy(engine.frame(silver), engine.frame(calendar))).to_pylist()
    by_direction = {r["direction"]: r for r in gold}
    imp = by_direction["import"]
    assert (imp["interval_count"], imp["expected_interval_count"]) == (45, 46)
    assert (imp["actual_interval_count"], imp["estimated_interval_count"]) == (45, 0)
    assert imp["completeness"] == pytest.approx(45 / 46)
    assert imp["energy_kwh"] == pytest.approx(44 * 0.5 + 2.0)
    assert imp["peak_demand_kw"] == pytest.approx(4.0)
    assert (imp["estimated_share"], imp["estimated_kwh"]) == (0.0, 0.0)
    assert by_direction["export"]["energy_kwh"] == pytest.approx(0.2)
    assert (by_direction["export"]["interval_count"], by_direction["export"]["completeness"]) == (1, 30 / 1380)


def test_gold_daily_completeness_counts_read_intervals_only(engine: Any) -> None:
    spring = date(2025, 3, 30)
    start = datetime(2025, 3, 30, 0, 0, tzinfo=UTC)
    rows = [("M1", "import", start.replace(hour=h // 2, minute=30 * (h % 2)), 0.5, spring) for h in range(46)]
    # 40 actual, 2 substituted (reads), 4 estimated (by the source or here): 46 of 46 present.
    quality = ["actual"] * 40 + ["substituted"] * 2 + ["estimated"] * 4
    rows[45] = ("M1", "import", rows[45][2], 1.5, spring)
    calendar = local_day_minutes([(spring, "Europe/London")])
    silver = engine.frame(_silver(rows, quality))
    (row,) = engine.to_arrow(gold_daily_meter_energy(silver, engine.frame(calendar))).to_pylist()
    assert (row["interval_count"], row["expected_interval_count"]) == (46, 46)
    assert (row["actual_interval_count"], row["estimated_interval_count"]) == (42, 4)
    assert row["completeness"] == pytest.approx(42 / 46)
    assert row["estimated_share"] == pytest.approx(4 / 46)
    assert row["estimated_kwh"] == pytest.approx(3 * 0.5 + 1.5)
    assert row["energy_kwh"] == pytest.approx(45 * 0.5 + 1.5)
    assert row["peak_demand_kw"] == pytest.approx(3.0)  # estimated intervals count for demand


def test_gold_hourly_sums_per_utc_hour_and_counts_meters(engine: Any) -> None:
    t = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
    d = date(2025, 6, 1)
    silver = _silver(
        [("M1", "import", t, 1.0, d), ("M1", "import", t.replace(minute=30), 1.0, d), ("M2", "import", t, 0.5, d)]
    )
    hourly = engine.to_arrow(gold_hourly_portfolio_load(engine.frame(silver))).to_pylist()
    assert hourly == [{"hour_utc": t, "direction": "import", "energy_kwh": 2.5, "meter_count": 2}]
