"""Silver and gold transforms on tiny frames: de-duplication, local days, DST-aware completeness."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import narwhals as nw
import pyarrow as pa
import pytest

from app.domain.parsing import parsed_schema, with_local_time
from app.domain.schemas import GOLD_DAILY_METER_ENERGY, GOLD_HOURLY_PORTFOLIO_LOAD, SILVER_READINGS, UTC_TIMESTAMP
from app.domain.transforms import (
    SilverParams,
    deduplicated_readings,
    gold_daily_meter_energy,
    gold_hourly_portfolio_load,
    local_day_minutes,
    silver_readings,
)
from app.infrastructure.repositories.pandas_repository import PandasDeltaStore


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


SPRING, AUTUMN, SUMMER = date(2025, 3, 30), date(2025, 10, 26), date(2025, 6, 1)

# --- silver_readings --------------------------------------------------------------------------

#: What validation produces: the parsed schema plus energy and the rejecting rule.
VALIDATED = (
    parsed_schema([])
    .append(pa.field("energy_kwh", pa.float64()))
    .append(pa.field("rejection_rule", pa.string()))
    .append(pa.field("validation_flags", pa.string()))
)


def _validated(*rows: dict[str, Any]) -> pa.Table:
    """Validated rows; `row_order` and `line_number` default to the position in the list."""
    full = []
    for i, overrides in enumerate(rows):
        row: dict[str, Any] = {
            "meter_id": "M1",
            "direction": "import",
            "interval_start_utc": utc(2025, 6, 1, 10),
            "timestamp_status": "ok",
            "value": 0.5,
            "value_status": "ok",
            "unit": "kwh",
            "interval_minutes": 30,
            "quality": "actual",
            "source_file": "in.csv",
            "line_number": i + 2,
            "row_order": i,
            "energy_kwh": 0.5,
            "rejection_rule": None,
            "validation_flags": "",
        }
        row.update(overrides)
        full.append(row)
    return pa.Table.from_pylist(full, schema=VALIDATED)


def _as_vee_output(frame: nw.LazyFrame[Any]) -> nw.LazyFrame[Any]:
    """De-duplicated batch rows as the VEE stage passes them on (no series rule fired)."""
    return deduplicated_readings(frame).with_columns(
        role=nw.lit("batch"),
        quality_flag=nw.col("quality"),
        reported_kwh=nw.lit(None, nw.Float64()),
        estimation_method=nw.lit(None, nw.String()),
    )


def _silver(engine: PandasDeltaStore, table: pa.Table, zone: str = "Europe/London") -> list[dict[str, Any]]:
    frame = silver_readings(
        _as_vee_output(engine.frame(with_local_time(table, zone))), SilverParams("meters", "batch-1", zone)
    )
    data = engine.to_arrow(frame)
    return data.select(SILVER_READINGS.schema.names).cast(SILVER_READINGS.schema).to_pylist()


def test_silver_keeps_the_latest_read_per_meter_interval_and_direction(engine: PandasDeltaStore) -> None:
    table = _validated(
        {"energy_kwh": 1.0, "row_order": 4},
        {"energy_kwh": 3.0, "row_order": 9},  # the latest read wins, wherever it sits in the frame
        {"energy_kwh": 2.0, "row_order": 7},
        {"energy_kwh": 0.1, "direction": "export", "row_order": 1},
        {"energy_kwh": 7.0, "meter_id": "M2", "row_order": 2},
        {"energy_kwh": 0.5, "interval_start_utc": utc(2025, 6, 1, 10, 30), "row_order": 3},
    )
    rows = _silver(engine, table)
    got = {(r["meter_id"], r["direction"], r["interval_start_utc"]): (r["energy_kwh"], r["line_number"]) for r in rows}
    assert got == {
        ("M1", "import", utc(2025, 6, 1, 10)): (3.0, 3),
        ("M1", "export", utc(2025, 6, 1, 10)): (0.1, 5),
        ("M2", "import", utc(2025, 6, 1, 10)): (7.0, 6),
        ("M1", "import", utc(2025, 6, 1, 10, 30)): (0.5, 7),
    }
    assert len(rows) == 4


def test_silver_prefers_the_best_quality_and_then_the_latest_read(engine: PandasDeltaStore) -> None:
    # Best quality first, then the latest: a later estimate does not replace an actual read.
    table = _validated(
        {"energy_kwh": 3.0, "row_order": 2},
        {"energy_kwh": 4.0, "row_order": 8, "quality": "estimated"},
        {"energy_kwh": 5.0, "row_order": 3, "quality": "substituted"},
    )
    (row,) = _silver(engine, table)
    assert (row["energy_kwh"], row["quality_flag"], row["quality_rank"]) == (3.0, "actual", 3)


def test_silver_drops_rejected_rows_and_a_rejected_correction_does_not_win(engine: PandasDeltaStore) -> None:
    table = _validated(
        {"energy_kwh": 1.0, "row_order": 0},
        {"energy_kwh": None, "value": None, "value_status": "missing", "rejection_rule": "value_missing"},
        {"meter_id": "M2", "energy_kwh": -1.0, "rejection_rule": "negative_import"},
    )
    rows = _silver(engine, table)
    assert [(r["meter_id"], r["energy_kwh"]) for r in rows] == [("M1", 1.0)]


def test_silver_keeps_the_warning_flags_of_accepted_rows(engine: PandasDeltaStore) -> None:
    three = "timestamp_in_future;negative_import;above_physical_max"
    table = _validated(
        {"meter_id": "M1"},
        {"meter_id": "M2", "energy_kwh": -0.1, "validation_flags": "negative_import"},
        {"meter_id": "M3", "energy_kwh": -6.0, "validation_flags": three},
        # Rejected, though flagged: it does not reach silver.
        {"meter_id": "M4", "validation_flags": "above_physical_max", "rejection_rule": "direction_unknown"},
    )
    flags = {r["meter_id"]: r["validation_flags"] for r in _silver(engine, table)}
    assert flags == {"M1": "", "M2": "negative_import", "M3": three}


def test_silver_stamps_batch_values_and_has_exactly_the_silver_columns(engine: PandasDeltaStore) -> None:
    table = with_local_time(_validated({}), "Europe/Berlin")
    frame = silver_readings(_as_vee_output(engine.frame(table)), SilverParams("meters", "batch-1", "Europe/Berlin"))
    assert frame.collect_schema().names() == SILVER_READINGS.schema.names
    (row,) = _silver(engine, _validated({}), zone="Europe/Berlin")
    assert row == {
        "meter_id": "M1",
        "direction": "import",
        "interval_start_utc": utc(2025, 6, 1, 10),
        "interval_minutes": 30,
        "energy_kwh": 0.5,
        "quality_flag": "actual",
        "estimation_method": None,
        "reported_kwh": None,
        "validation_flags": "",
        "quality_rank": 3,
        "local_date": SUMMER,
        "local_month": SUMMER.replace(day=1),
        "timezone": "Europe/Berlin",
        "source": "meters",
        "batch_id": "batch-1",
        "source_file": "in.csv",
        "line_number": 2,
    }


@pytest.mark.parametrize(
    ("start", "zone", "local_date"),
    [
        (utc(2025, 6, 1, 23, 30), "Europe/London", date(2025, 6, 2)),  # 00:30 BST
        (utc(2025, 6, 1, 22, 30), "Europe/London", date(2025, 6, 1)),  # 23:30 BST
        (utc(2025, 6, 1, 22, 30), "Europe/Berlin", date(2025, 6, 2)),  # 00:30 CEST
        (utc(2025, 6, 1, 21, 30), "Europe/Berlin", date(2025, 6, 1)),
        (utc(2025, 1, 15, 23, 30), "Europe/London", date(2025, 1, 15)),  # GMT = UTC in winter
        (utc(2025, 1, 15, 23, 30), "Europe/Berlin", date(2025, 1, 16)),
        (utc(2025, 6, 1, 23, 30), "UTC", date(2025, 6, 1)),
        (utc(2025, 3, 29, 23, 30), "Europe/London", date(2025, 3, 29)),  # still GMT before the switch
        (utc(2025, 10, 25, 23, 0), "Europe/London", AUTUMN),  # 00:00 BST on the fall-back day
        (utc(2025, 10, 26, 23, 30), "Europe/London", AUTUMN),  # 23:30 GMT after it
    ],
)
def test_silver_local_date_is_the_series_calendar_day(
    engine: PandasDeltaStore, start: datetime, zone: str, local_date: date
) -> None:
    (row,) = _silver(engine, _validated({"interval_start_utc": start}), zone=zone)
    assert (row["local_date"], row["timezone"]) == (local_date, zone)


# --- local_day_minutes ------------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["Europe/London", "Europe/Berlin"])
def test_local_day_minutes_follow_dst(zone: str) -> None:
    days = [(SPRING, zone), (AUTUMN, zone), (SUMMER, zone), (date(2025, 1, 15), zone), (SPRING, "UTC"), (AUTUMN, "UTC")]
    minutes = {(r["local_date"], r["timezone"]): r["day_minutes"] for r in local_day_minutes(days).to_pylist()}
    assert minutes == {
        (SPRING, zone): 1380,
        (AUTUMN, zone): 1500,
        (SUMMER, zone): 1440,
        (date(2025, 1, 15), zone): 1440,
        (SPRING, "UTC"): 1440,
        (AUTUMN, "UTC"): 1440,
    }


def test_local_day_minutes_dedupes_and_types_its_table() -> None:
    table = local_day_minutes(iter([(AUTUMN, "Europe/London"), (SPRING, "Europe/London"), (AUTUMN, "Europe/London")]))
    assert table.schema == pa.schema(
        [("local_date", pa.date32()), ("timezone", pa.string()), ("day_minutes", pa.int64())]
    )
    assert table.to_pylist() == [
        {"local_date": SPRING, "timezone": "Europe/London", "day_minutes": 1380},
        {"local_date": AUTUMN, "timezone": "Europe/London", "day_minutes": 1500},
    ]


@pytest.mark.parametrize(
    ("day", "zone", "minutes"),
    [
        (date(2025, 3, 9), "America/New_York", 1380),
        (date(2025, 11, 2), "America/New_York", 1500),
        (date(2025, 4, 6), "Australia/Lord_Howe", 1470),  # a half-hour DST shift
        (date(2025, 4, 5), "America/Santiago", 1500),  # clocks go back at midnight
        (date(2025, 9, 7), "America/Santiago", 1380),  # and forward at midnight
    ],
)
def test_local_day_minutes_elsewhere(day: date, zone: str, minutes: int) -> None:
    assert local_day_minutes([(day, zone)])["day_minutes"].to_pylist() == [minutes]


# --- gold_daily_meter_energy ------------------------------------------------------------------

SILVER_COLUMNS = ["meter_id", "direction", "interval_start_utc", "interval_minutes", "energy_kwh", "local_date"]


def _day_starts(day: date, zone: str, minutes: int) -> list[datetime]:
    """UTC starts of every interval of the local day `day` in `zone`."""
    tz = ZoneInfo(zone)
    first = datetime.combine(day, time(), tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), tz).astimezone(UTC)
    return [first + timedelta(minutes=minutes * i) for i in range(int((end - first).total_seconds()) // (60 * minutes))]


def _silver_table(
    rows: list[tuple[str, str, datetime, float, date]],
    zone: str,
    minutes: int = 30,
    quality: str | list[str] = "actual",
) -> pa.Table:
    return pa.table(
        {
            "meter_id": pa.array([r[0] for r in rows], pa.string()),
            "direction": pa.array([r[1] for r in rows], pa.string()),
            "interval_start_utc": pa.array([r[2] for r in rows], UTC_TIMESTAMP),
            "interval_minutes": pa.array([minutes] * len(rows), pa.int32()),
            "energy_kwh": pa.array([r[3] for r in rows], pa.float64()),
            "quality_flag": pa.array([quality] * len(rows) if isinstance(quality, str) else quality, pa.string()),
            "local_date": pa.array([r[4] for r in rows], pa.date32()),
            "timezone": pa.array([zone] * len(rows), pa.string()),
        }
    )


def _gold_daily(engine: PandasDeltaStore, silver: pa.Table) -> list[dict[str, Any]]:
    pairs = zip(silver["local_date"].to_pylist(), silver["timezone"].to_pylist(), strict=True)
    frame = gold_daily_meter_energy(engine.frame(silver), engine.frame(local_day_minutes(pairs)))
    assert frame.collect_schema().names() == GOLD_DAILY_METER_ENERGY.schema.names
    rows = engine.to_arrow(frame).select(GOLD_DAILY_METER_ENERGY.schema.names).cast(GOLD_DAILY_METER_ENERGY.schema)
    return sorted(rows.to_pylist(), key=lambda r: (r["meter_id"], r["direction"], r["local_date"]))


@pytest.mark.parametrize("zone", ["Europe/London", "Europe/Berlin"])
@pytest.mark.parametrize(
    ("day", "minutes", "expected"),
    [
        (SPRING, 30, 46),
        (AUTUMN, 30, 50),
        (SUMMER, 30, 48),
        (SPRING, 15, 92),
        (AUTUMN, 15, 100),
        (SUMMER, 15, 96),
        (AUTUMN, 60, 25),
    ],
)
def test_a_complete_day_has_the_dst_aware_interval_count(
    engine: PandasDeltaStore, zone: str, day: date, minutes: int, expected: int
) -> None:
    starts = _day_starts(day, zone, minutes)
    assert len(starts) == expected  # the fixture itself is DST-aware
    silver = _silver_table([("M1", "import", s, 0.25, day) for s in starts], zone, minutes)
    (row,) = _gold_daily(engine, silver)
    assert (row["interval_count"], row["expected_interval_count"]) == (expected, expected)
    assert row["completeness"] == pytest.approx(1.0)
    assert row["energy_kwh"] == pytest.approx(0.25 * expected)
    assert (row["local_date"], row["timezone"]) == (day, zone)


@pytest.mark.parametrize(("day", "expected"), [(SPRING, 46), (AUTUMN, 50), (SUMMER, 48)])
def test_completeness_is_covered_minutes_over_local_day_minutes(
    engine: PandasDeltaStore, day: date, expected: int
) -> None:
    starts = _day_starts(day, "Europe/London", 30)
    del starts[7]  # one interval missing
    silver = _silver_table([("M1", "import", s, 0.5, day) for s in starts], "Europe/London")
    (row,) = _gold_daily(engine, silver)
    assert (row["interval_count"], row["expected_interval_count"]) == (expected - 1, expected)
    assert row["completeness"] == pytest.approx((expected - 1) / expected)


def test_an_all_actual_day_has_no_estimates(engine: PandasDeltaStore) -> None:
    starts = _day_starts(SPRING, "Europe/London", 30)[:45]
    silver = _silver_table([("M1", "import", s, 0.5, SPRING) for s in starts], "Europe/London")
    (row,) = _gold_daily(engine, silver)
    assert (row["actual_interval_count"], row["estimated_interval_count"]) == (45, 0)
    assert (row["estimated_share"], row["estimated_kwh"]) == (0.0, 0.0)


def test_completeness_counts_read_intervals_only(engine: PandasDeltaStore) -> None:
    starts = _day_starts(SPRING, "Europe/London", 30)
    energies = [0.5] * 45 + [1.5]
    # 40 actual, 2 substituted (reads), 4 estimated (by the source or here): 46 of 46 present.
    quality = ["actual"] * 40 + ["substituted"] * 2 + ["estimated"] * 4
    rows = [("M1", "import", s, e, SPRING) for s, e in zip(starts, energies, strict=True)]
    (row,) = _gold_daily(engine, _silver_table(rows, "Europe/London", quality=quality))
    assert (row["interval_count"], row["expected_interval_count"]) == (46, 46)
    assert (row["actual_interval_count"], row["estimated_interval_count"]) == (42, 4)
    assert row["completeness"] == pytest.approx(42 / 46)
    assert row["estimated_share"] == pytest.approx(4 / 46)
    assert row["estimated_kwh"] == pytest.approx(3 * 0.5 + 1.5)
    assert row["energy_kwh"] == pytest.approx(45 * 0.5 + 1.5)
    assert row["peak_demand_kw"] == pytest.approx(3.0)  # estimated intervals count for demand


def test_peak_demand_and_energy_sum_per_day(engine: PandasDeltaStore) -> None:
    starts = _day_starts(SUMMER, "Europe/London", 30)[:4]
    energies = [0.5, 2.0, 0.25, 1.0]
    silver = _silver_table([("M1", "import", s, e, SUMMER) for s, e in zip(starts, energies, strict=True)], "UTC")
    (row,) = _gold_daily(engine, silver)
    assert row["energy_kwh"] == pytest.approx(3.75)
    assert row["peak_demand_kw"] == pytest.approx(4.0)  # 2 kWh in half an hour
    assert row["completeness"] == pytest.approx(4 * 30 / 1440)

    quarter = _silver_table([("M1", "import", s, e, SUMMER) for s, e in zip(starts, energies, strict=True)], "UTC", 15)
    (row,) = _gold_daily(engine, quarter)
    assert row["peak_demand_kw"] == pytest.approx(8.0)  # 2 kWh in a quarter hour
    assert row["completeness"] == pytest.approx(4 * 15 / 1440)


def test_import_export_meters_and_days_are_kept_apart(engine: PandasDeltaStore) -> None:
    t = utc(2025, 6, 1, 10)
    next_day = SUMMER + timedelta(days=1)
    silver = _silver_table(
        [
            ("M1", "import", t, 1.0, SUMMER),
            ("M1", "import", t + timedelta(minutes=30), 1.5, SUMMER),
            ("M1", "export", t, 0.4, SUMMER),
            ("M1", "export", t + timedelta(minutes=30), 0.6, SUMMER),
            ("M2", "import", t, 3.0, SUMMER),
            ("M1", "import", t + timedelta(days=1), 2.0, next_day),
        ],
        "Europe/London",
    )
    got = {(r["meter_id"], r["direction"], r["local_date"]): r for r in _gold_daily(engine, silver)}
    assert {k: (v["energy_kwh"], v["interval_count"], v["peak_demand_kw"]) for k, v in got.items()} == {
        ("M1", "import", SUMMER): (pytest.approx(2.5), 2, pytest.approx(3.0)),
        ("M1", "export", SUMMER): (pytest.approx(1.0), 2, pytest.approx(1.2)),
        ("M2", "import", SUMMER): (pytest.approx(3.0), 1, pytest.approx(6.0)),
        ("M1", "import", next_day): (pytest.approx(2.0), 1, pytest.approx(4.0)),
    }


# --- gold_hourly_portfolio_load ---------------------------------------------------------------


def _gold_hourly(engine: PandasDeltaStore, silver: pa.Table) -> list[dict[str, Any]]:
    frame = gold_hourly_portfolio_load(engine.frame(silver))
    assert frame.collect_schema().names() == GOLD_HOURLY_PORTFOLIO_LOAD.schema.names
    rows = (
        engine.to_arrow(frame).select(GOLD_HOURLY_PORTFOLIO_LOAD.schema.names).cast(GOLD_HOURLY_PORTFOLIO_LOAD.schema)
    )
    return sorted(rows.to_pylist(), key=lambda r: (r["hour_utc"], r["direction"]))


def test_hourly_load_sums_per_utc_hour_and_direction_and_counts_distinct_meters(engine: PandasDeltaStore) -> None:
    t = utc(2025, 6, 1, 10)
    half = timedelta(minutes=30)
    silver = _silver_table(
        [
            ("M1", "import", t, 1.0, SUMMER),
            ("M1", "import", t + half, 1.0, SUMMER),
            ("M2", "import", t + half, 2.0, SUMMER),
            ("M1", "export", t + half, 0.5, SUMMER),
            ("M2", "import", t + 2 * half, 3.0, SUMMER),
        ],
        "Europe/London",
    )
    assert _gold_hourly(engine, silver) == [
        {"hour_utc": t, "direction": "export", "energy_kwh": 0.5, "meter_count": 1},
        {"hour_utc": t, "direction": "import", "energy_kwh": 4.0, "meter_count": 2},
        {"hour_utc": t + 2 * half, "direction": "import", "energy_kwh": 3.0, "meter_count": 1},
    ]


def test_hourly_load_splits_the_repeated_local_hour_into_two_utc_hours(engine: PandasDeltaStore) -> None:
    # 01:00-02:00 local happens twice in London on 26 October: 00:00 and 01:00 UTC.
    starts = [utc(2025, 10, 26, 0, 0), utc(2025, 10, 26, 0, 30), utc(2025, 10, 26, 1, 0), utc(2025, 10, 26, 1, 30)]
    silver = _silver_table(
        [("M1", "import", s, 1.0, AUTUMN) for s in starts] + [("M2", "import", starts[3], 0.5, AUTUMN)],
        "Europe/London",
    )
    assert [(r["hour_utc"], r["energy_kwh"], r["meter_count"]) for r in _gold_hourly(engine, silver)] == [
        (utc(2025, 10, 26, 0), 2.0, 1),
        (utc(2025, 10, 26, 1), 2.5, 2),
    ]


def test_hourly_load_truncates_quarter_hours(engine: PandasDeltaStore) -> None:
    t = utc(2025, 6, 1, 23)
    silver = _silver_table(
        [("M1", "import", t + timedelta(minutes=15 * i), 0.25, SUMMER) for i in range(6)], "UTC", minutes=15
    )
    assert [(r["hour_utc"], r["energy_kwh"], r["meter_count"]) for r in _gold_hourly(engine, silver)] == [
        (t, 1.0, 1),
        (utc(2025, 6, 2, 0), 0.5, 1),
    ]


# --- Bug found --------------------------------------------------------------------------------


def test_pandas_store_collects_silver_with_exactly_its_columns(tmp_path: Path) -> None:
    store = PandasDeltaStore(tmp_path)
    table = with_local_time(_validated({"rejection_rule": "value_missing"}, {}), "UTC")
    frame = silver_readings(_as_vee_output(store.frame(table)), SilverParams("meters", "batch-1", "UTC"))
    assert frame.collect_schema().names() == SILVER_READINGS.schema.names
    assert store.to_arrow(frame).column_names == SILVER_READINGS.schema.names
    assert (
        store.to_arrow(store.frame(table).filter(nw.col("rejection_rule").is_null())).column_names == table.column_names
    )


def test_highest_takes_each_groups_largest_values_and_no_null(engine: Any) -> None:
    """`store.highest` (a top-n per group: DuckDB's own query, narwhals' rank elsewhere) keeps the
    rows of each group's n largest values, ties counted one by one, and never a null value."""
    rows = pa.table(
        {
            "meter_id": ["A"] * 6 + ["B"] * 3 + ["C"],
            "direction": ["import"] * 10,
            "at": list(range(10)),
            "energy_kwh": pa.array([1.0, 5.0, None, 5.0, 2.0, 4.0, 3.0, None, 1.0, None], pa.float64()),
        }
    )
    kept = engine.collect(engine.highest(engine.frame(rows), ["meter_id", "direction"], "energy_kwh", 3))
    got = sorted(zip(kept["meter_id"].to_pylist(), kept["energy_kwh"].to_pylist(), strict=True))
    assert got == [("A", 4.0), ("A", 5.0), ("A", 5.0), ("B", 1.0), ("B", 3.0)]
    assert kept.column_names == rows.column_names
