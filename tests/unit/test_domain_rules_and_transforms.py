"""Rules and transforms on tiny frames, through the engine fixture."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pytest

from app.domain.parsing import with_local_time
from app.domain.rules import RuleParams, validated_readings
from app.domain.schemas import UTC_TIMESTAMP
from app.domain.transforms import (
    SilverParams,
    gold_daily_meter_energy,
    gold_hourly_portfolio_load,
    local_day_minutes,
    silver_readings,
)

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
    table = pa.Table.from_pylist(rows)
    return table.set_column(2, "interval_start_utc", table["interval_start_utc"].cast(UTC_TIMESTAMP))


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
        ],
    )
    assert [r["rejection_rule"] for r in rows] == [None, None, None, None, "meter_id_missing"]
    assert [r["energy_kwh"] for r in rows[1:4]] == pytest.approx([0.5, 1.0, 1.0])
    bidirectional = RuleParams(NOW, 30, "Europe/London", 10, bidirectional=True)
    assert _validate(engine, [_row(value=-0.1)], bidirectional)[0]["rejection_rule"] is None


def test_silver_keeps_the_latest_read_and_the_local_day(engine: Any) -> None:
    late_evening = datetime(2025, 6, 1, 23, 30, tzinfo=UTC)  # 00:30 BST on 2 June
    rows = [
        _row(value=1.0, row_order=0),
        _row(value=2.0, row_order=5),
        _row(value=9.0, row_order=9, unit="??"),
        _row(interval_start_utc=late_evening, row_order=1),
    ]
    validated = validated_readings(engine.frame(with_local_time(_parsed(rows), "Europe/London")), PARAMS)
    silver = engine.to_arrow(silver_readings(validated, SilverParams("s", "b1", 30, "Europe/London")))
    by_start = {r["interval_start_utc"]: r for r in silver.to_pylist()}
    assert len(by_start) == 2
    assert by_start[datetime(2025, 6, 1, 11, tzinfo=UTC)]["energy_kwh"] == 2.0
    assert by_start[late_evening]["local_date"] == date(2025, 6, 2)


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


def _silver(rows: list[tuple[str, str, datetime, float, date]]) -> pa.Table:
    return pa.table(
        {
            "meter_id": [r[0] for r in rows],
            "direction": [r[1] for r in rows],
            "interval_start_utc": pa.array([r[2] for r in rows], UTC_TIMESTAMP),
            "interval_minutes": pa.array([30] * len(rows), pa.int32()),
            "energy_kwh": [r[3] for r in rows],
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
    assert imp["completeness"] == pytest.approx(45 / 46)
    assert imp["energy_kwh"] == pytest.approx(44 * 0.5 + 2.0)
    assert imp["peak_demand_kw"] == pytest.approx(4.0)
    assert by_direction["export"]["energy_kwh"] == pytest.approx(0.2)


def test_gold_hourly_sums_per_utc_hour_and_counts_meters(engine: Any) -> None:
    t = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
    d = date(2025, 6, 1)
    silver = _silver(
        [("M1", "import", t, 1.0, d), ("M1", "import", t.replace(minute=30), 1.0, d), ("M2", "import", t, 0.5, d)]
    )
    hourly = engine.to_arrow(gold_hourly_portfolio_load(engine.frame(silver))).to_pylist()
    assert hourly == [{"hour_utc": t, "direction": "import", "energy_kwh": 2.5, "meter_count": 2}]
