"""Register differencing and the spreading of a span over its intervals, on tiny tables."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import narwhals as nw
import pyarrow as pa
import pytest

from app.domain.parsing import parsed_readings
from app.domain.registers import RegisterParams, difference_registers, spread_register_spans
from app.domain.rules import RuleParams, validated_readings
from app.domain.sources import ColumnMapping, SourceConfig

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _source(**changes: Any) -> SourceConfig:
    fields: dict[str, Any] = {
        "name": "reg",
        "path": "x.csv",
        "unit": "kWh",
        "value_kind": "register",
        "interval_minutes": 15,
        "timestamp_label": "end",
        "columns": ColumnMapping(meter_id="meter", timestamp="time", value="read"),
    }
    fields.update(changes)
    return SourceConfig(**fields)


def _differenced(rows: list[tuple[str, str, str]], source: SourceConfig) -> list[dict[str, Any]]:
    raw = pa.table(
        {
            "meter": pa.array([r[0] for r in rows], pa.string()),
            "time": pa.array([r[1] for r in rows], pa.string()),
            "read": pa.array([r[2] for r in rows], pa.string()),
            "source_file": pa.array(["in.csv"] * len(rows), pa.string()),
            "line_number": pa.array(range(2, len(rows) + 2), pa.int64()),
            "row_order": pa.array(range(2, len(rows) + 2), pa.int64()),
        }
    )
    parsed = parsed_readings(raw, source, ["meter", "time", "read"])
    rules = RuleParams.for_source(source, now_utc=NOW)
    params = RegisterParams(rules=rules, label=source.timestamp_label, series_timezone=source.series_timezone)
    table = difference_registers(parsed, params)
    validated = validated_readings(nw.from_native(table).lazy(), rules).collect().to_native()
    spread = spread_register_spans(validated, series_timezone=source.series_timezone)
    return sorted(spread.to_pylist(), key=lambda r: (r["meter_id"], r["interval_start_utc"], r["line_number"]))


def _accepted(rows: list[dict[str, Any]]) -> list[tuple[str, str, float, str | None]]:
    return [
        (r["meter_id"], r["interval_start_utc"].strftime("%H:%M"), r["energy_kwh"], r["estimation_method"])
        for r in rows
        if r["rejection_rule"] is None
    ]


def _rules(rows: list[dict[str, Any]]) -> dict[int, str]:
    return {r["line_number"]: r["rejection_rule"] for r in rows if r["rejection_rule"]}


def test_series_are_differenced_in_time_order_whatever_the_file_order() -> None:
    rows = [("M", f"2025-06-02T0{h}:00Z", str(100 + 10 * h)) for h in (3, 1, 2, 0)]
    result = _differenced(rows, _source(interval_minutes=60))

    assert _accepted(result) == [("M", f"0{h}:00", 10.0, None) for h in (0, 1, 2)]
    assert _rules(result) == {5: "register_start"}  # the 00:00 read, last in the file


def test_start_labels_book_a_difference_on_the_interval_the_earlier_read_opens() -> None:
    rows = [("M", "2025-06-02T00:00Z", "100"), ("M", "2025-06-02T01:00Z", "101.5")]
    result = _differenced(rows, _source(interval_minutes=60, timestamp_label="start"))

    assert _accepted(result) == [("M", "00:00", 1.5, None)]


def test_a_span_is_spread_in_equal_shares_adding_up_to_the_difference() -> None:
    rows = [("M", "2025-06-02T00:00Z", "100"), ("M", "2025-06-02T00:45Z", "101")]
    result = _differenced(rows, _source())

    accepted = _accepted(result)
    assert [(t, m) for _, t, _, m in accepted] == [(t, "register_spread") for t in ("00:00", "00:15", "00:30")]
    assert math.fsum(e for _, _, e, _ in accepted) == 1.0
    assert {r["line_number"] for r in result if r["rejection_rule"] is None} == {3}


def test_reads_at_one_instant_are_duplicates_and_the_next_read_takes_the_later_one() -> None:
    rows = [
        ("M", "2025-06-02T00:00Z", "100"),
        ("M", "2025-06-02T00:15Z", "101"),
        ("M", "2025-06-02T00:15Z", "101.5"),  # a correction, later in the file
        ("M", "2025-06-02T00:30Z", "102"),
    ]
    result = _differenced(rows, _source())

    # Both reads of 00:15 are differenced against 00:00 (de-duplication keeps the later); 00:30
    # is taken against the read that wins 00:15.
    assert _accepted(result) == [("M", "00:00", 1.0, None), ("M", "00:00", 1.5, None), ("M", "00:15", 0.5, None)]


def test_a_reset_starts_a_new_count_and_a_misread_is_no_base() -> None:
    rows = [
        ("M", "2025-06-02T00:00Z", "100"),
        ("M", "2025-06-02T00:15Z", "99999"),  # implies 400 MW
        ("M", "2025-06-02T00:30Z", "101"),
        ("M", "2025-06-02T00:45Z", "0.5"),  # the meter was exchanged
        ("M", "2025-06-02T01:00Z", "1.5"),
    ]
    result = _differenced(rows, _source())

    assert _rules(result) == {2: "register_start", 3: "above_physical_max", 5: "register_reset"}
    assert _accepted(result) == [
        ("M", "00:00", 0.5, "register_spread"),
        ("M", "00:15", 0.5, "register_spread"),
        ("M", "00:45", 1.0, None),
    ]


@pytest.mark.parametrize("bad", ["abc", "", "1e309"])
def test_a_read_rejected_on_its_own_value_is_no_base(bad: str) -> None:
    rows = [("M", "2025-06-02T00:00Z", "100"), ("M", "2025-06-02T00:15Z", bad), ("M", "2025-06-02T00:30Z", "102")]
    result = _differenced(rows, _source())

    assert [energy for _, _, energy, _ in _accepted(result)] == [1.0, 1.0]
    assert 3 in _rules(result)


def test_daily_reads_step_by_local_days_across_dst() -> None:
    source = _source(
        interval_minutes=1440,
        timestamp_format="%Y-%m-%d",
        timestamp_timezone="Europe/Amsterdam",
        series_timezone="Europe/Amsterdam",
        timestamp_label="start",
    )
    rows = [("M", d, r) for d, r in (("2024-03-30", "100"), ("2024-04-01", "120"))]
    result = _differenced(rows, source)

    accepted = [r for r in result if r["rejection_rule"] is None]
    assert [(str(r["local_date"]), r["energy_kwh"]) for r in accepted] == [("2024-03-30", 10.0), ("2024-03-31", 10.0)]
    assert {r["estimation_method"] for r in accepted} == {"register_spread"}


def test_each_direction_is_its_own_series_and_bad_reads_are_skipped() -> None:
    source = _source(columns=ColumnMapping(meter_id="meter", timestamp="time", value="read", direction="direction"))
    text = [
        ("M1|import", "2025-06-01T00:15Z", "100.5"),
        ("M1|export", "2025-06-01T00:15Z", "7"),
        ("M1|import", "2025-06-01T00:30Z", "101.25"),
        ("M1|import", "2025-06-01T00:45Z", "N/A"),
        ("M1|import", "2025-06-01T01:00Z", "102"),
        ("M1|export", "2025-06-01T00:30Z", "junk"),
        ("M1|export", "2025-06-01T00:45Z", "7.1"),
    ]
    raw = pa.table(
        {
            "meter": [m.split("|")[0] for m, _, _ in text],
            "direction": [m.split("|")[1] for m, _, _ in text],
            "time": [t for _, t, _ in text],
            "read": [r for _, _, r in text],
            "source_file": ["in.csv"] * len(text),
            "line_number": pa.array(range(2, len(text) + 2), pa.int64()),
            "row_order": pa.array(range(2, len(text) + 2), pa.int64()),
        }
    )
    parsed = parsed_readings(raw, source, ["meter", "direction", "time", "read"])
    params = RegisterParams(RuleParams.for_source(source, now_utc=NOW), "end", "UTC")
    rows = difference_registers(parsed, params).to_pylist()

    assert [(r["direction"], r["value"], r["value_status"]) for r in rows] == [
        ("import", None, "register_start"),
        ("export", None, "register_start"),
        ("import", 0.75, "ok"),
        ("import", None, "missing"),
        ("import", 0.75, "ok"),  # against the last good read, over two quarter-hours
        ("export", None, "unparseable"),
        ("export", pytest.approx(0.1), "ok"),
    ]
    spans = {r["line_number"]: r["span_minutes"] for r in rows if r["value_status"] == "ok"}
    assert spans == {4: 15, 6: 30, 8: 30}


def test_a_decimal_comma_register() -> None:
    source = _source(decimal=",")
    rows = [("M", "2025-06-01T00:15Z", "1.234,5"), ("M", "2025-06-01T00:30Z", "1.235,75")]
    assert _accepted(_differenced(rows, source)) == [("M", "00:15", 1.25, None)]
