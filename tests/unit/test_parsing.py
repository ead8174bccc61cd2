"""Arrow parsing: raw timestamp strings to UTC interval starts, raw numbers to floats.

DST cases use the 2025 transitions: Europe/London 01:00 -> 02:00 on 30 March and
02:00 -> 01:00 on 26 October; Europe/Berlin 02:00 -> 03:00 and 03:00 -> 02:00 on the
same days. Both switch at 01:00 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from app.domain.parsing import parse_timestamps, parse_values, parsed_readings
from app.domain.rules import RuleParams, validated_readings
from app.domain.sources import SourceConfig
from app.infrastructure.repositories.pandas_repository import PandasDeltaStore


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def _source(**changes: Any) -> SourceConfig:
    fields: dict[str, Any] = {"name": "test", "path": "x.csv", "unit": "kWh"}
    fields.update(changes)
    return SourceConfig(**fields)


def _ts(values: list[str | None], **changes: Any) -> list[tuple[datetime | None, str]]:
    instants, status = parse_timestamps(pa.chunked_array([values], pa.string()), _source(**changes))
    assert instants.type == pa.timestamp("us", tz="UTC")
    return list(zip(instants.to_pylist(), status.to_pylist(), strict=True))


def _one(value: str | None, **changes: Any) -> tuple[datetime | None, str]:
    return _ts([value], **changes)[0]


def _values(values: list[str | None], **changes: Any) -> list[tuple[float | None, str]]:
    numbers, status = parse_values(pa.chunked_array([values], pa.string()), _source(**changes))
    return list(zip(numbers.to_pylist(), status.to_pylist(), strict=True))


# --- ISO 8601 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-06-01T12:00:00Z", utc(2025, 6, 1, 12)),
        ("2025-06-01T12:00:00+01:00", utc(2025, 6, 1, 11)),
        ("2025-06-01T12:00:00+0100", utc(2025, 6, 1, 11)),
        ("2025-06-01T12:00:00+01", utc(2025, 6, 1, 11)),
        ("2025-06-01T12:00:00-05:30", utc(2025, 6, 1, 17, 30)),
        ("2025-06-01T12:00:00-0530", utc(2025, 6, 1, 17, 30)),
        ("2025-06-01T00:30:00+05:45", utc(2025, 5, 31, 18, 45)),
        ("2025-06-01T12:00:00+00:00", utc(2025, 6, 1, 12)),
        ("2025-06-01 12:00Z", utc(2025, 6, 1, 12)),
        ("2025-06-01T12:00", utc(2025, 6, 1, 12)),
        ("2025-06-01T12:00:00.5Z", datetime(2025, 6, 1, 12, 0, 0, 500_000, tzinfo=UTC)),
        ("2025-06-01T12:00:00.123456+02:00", datetime(2025, 6, 1, 10, 0, 0, 123_456, tzinfo=UTC)),
        ("2025-01-01T00:00:00.5+00:00", datetime(2025, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)),
        ("2025-06-01T12:00:00.000Z", utc(2025, 6, 1, 12)),
        ("  2025-06-01T12:00:00Z  ", utc(2025, 6, 1, 12)),
        ("2024-02-29T00:00:00Z", utc(2024, 2, 29)),
        ("2025-12-31T23:30:00-01:00", utc(2026, 1, 1, 0, 30)),
    ],
)
def test_iso_8601_offsets_and_fractions_become_utc(raw: str, expected: datetime) -> None:
    assert _one(raw) == (expected, "ok")


def test_a_written_offset_wins_over_the_source_zone() -> None:
    london = {"timestamp_timezone": "Europe/London"}
    assert _ts(["2025-06-01T12:00:00Z", "2025-06-01T12:00:00+02:00", "2025-06-01T12:00:00"], **london) == [
        (utc(2025, 6, 1, 12), "ok"),
        (utc(2025, 6, 1, 10), "ok"),
        (utc(2025, 6, 1, 11), "ok"),  # naive: BST
    ]


@pytest.mark.parametrize(
    "raw",
    [
        "2025-02-30T00:00:00Z",
        "2025-02-29T12:00:00Z",  # 2025 is not a leap year
        "2025-04-31T00:00:00Z",
        "2025-06-01T25:00:00Z",
        "2025-06-01T12:60:00Z",
        "2025-06-01T12:00:61Z",
        "2025-13-01T00:00:00Z",
        "2025-00-10T00:00:00Z",
        "2025-06-01",
        "01/06/2025 12:00",
        "2025-06-01T12:00:00+1",
        "2025-06-01T12:00:00.1234567Z",
        "2025-06-01T12:00:00 UTC",
        "yesterday",
        "",
        None,
    ],
)
def test_impossible_or_junk_iso_timestamps_are_unparseable(raw: str | None) -> None:
    assert _one(raw) == (None, "unparseable")


@pytest.mark.parametrize("zone", ["UTC", "Europe/London", "+10:00"])
def test_impossible_dates_are_unparseable_in_every_zone(zone: str) -> None:
    assert _ts(["2025-02-30T12:00:00", "2025-06-01T25:00:00"], timestamp_timezone=zone) == [
        (None, "unparseable"),
        (None, "unparseable"),
    ]


def test_parsing_keeps_every_row_in_order() -> None:
    raw = ["2025-06-01T00:00:00Z", "junk", None, "2025-06-01T00:30:00Z"]
    assert _ts(raw) == [
        (utc(2025, 6, 1, 0, 0), "ok"),
        (None, "unparseable"),
        (None, "unparseable"),
        (utc(2025, 6, 1, 0, 30), "ok"),
    ]


# --- Naive local times across DST -------------------------------------------------------------

ZONES = {
    # zone: (wall time in the spring gap, wall time repeated in autumn)
    "Europe/London": ("2025-03-30 01:30", "2025-10-26 01:30"),
    "Europe/Berlin": ("2025-03-30 02:30", "2025-10-26 02:30"),
}
FORMATS = {
    "iso": ("iso8601", lambda wall: wall.replace(" ", "T") + ":00"),
    "strptime": ("%d/%m/%Y %H:%M", lambda wall: f"{wall[8:10]}/{wall[5:7]}/{wall[:4]} {wall[11:]}"),
    "strptime_ymd": ("%Y-%m-%d %H:%M", lambda wall: wall),
}


def _local(zone: str, fmt: str, walls: list[str], **changes: Any) -> list[tuple[datetime | None, str]]:
    timestamp_format, render = FORMATS[fmt]
    return _ts([render(w) for w in walls], timestamp_timezone=zone, timestamp_format=timestamp_format, **changes)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("ambiguous_time", ["reject", "earliest", "latest"])
def test_a_naive_time_in_the_spring_forward_gap_is_a_dst_gap(zone: str, fmt: str, ambiguous_time: str) -> None:
    gap, _ = ZONES[zone]
    assert _local(zone, fmt, [gap], ambiguous_time=ambiguous_time) == [(None, "dst_gap")]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("zone", ZONES)
def test_a_naive_repeated_fall_back_time_is_ambiguous_or_resolved_as_declared(zone: str, fmt: str) -> None:
    _, repeated = ZONES[zone]
    assert _local(zone, fmt, [repeated]) == [(None, "ambiguous")]
    assert _local(zone, fmt, [repeated], ambiguous_time="earliest") == [(utc(2025, 10, 26, 0, 30), "ok")]
    assert _local(zone, fmt, [repeated], ambiguous_time="latest") == [(utc(2025, 10, 26, 1, 30), "ok")]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("zone", "walls", "expected"),
    [
        (
            "Europe/London",
            ["2025-03-30 00:30", "2025-03-30 02:00", "2025-10-26 00:30", "2025-10-26 02:00"],
            [utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 1), utc(2025, 10, 25, 23, 30), utc(2025, 10, 26, 2)],
        ),
        (
            "Europe/Berlin",
            ["2025-03-30 01:30", "2025-03-30 03:00", "2025-10-26 01:30", "2025-10-26 03:00"],
            [utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 1), utc(2025, 10, 25, 23, 30), utc(2025, 10, 26, 2)],
        ),
        (
            "Europe/London",
            ["2025-01-15 12:00", "2025-07-01 12:00"],
            [utc(2025, 1, 15, 12), utc(2025, 7, 1, 11)],
        ),
        (
            "Europe/Berlin",
            ["2025-01-15 12:00", "2025-07-01 12:00"],
            [utc(2025, 1, 15, 11), utc(2025, 7, 1, 10)],
        ),
    ],
)
def test_naive_times_next_to_the_transitions_are_fine(
    zone: str, fmt: str, walls: list[str], expected: list[datetime]
) -> None:
    assert _local(zone, fmt, walls) == [(e, "ok") for e in expected]


def test_the_same_wall_times_in_utc_are_neither_gap_nor_ambiguous() -> None:
    assert _ts(["2025-03-30T01:30:00", "2025-10-26T01:30:00"], timestamp_timezone="UTC") == [
        (utc(2025, 3, 30, 1, 30), "ok"),
        (utc(2025, 10, 26, 1, 30), "ok"),
    ]


def test_a_naive_fraction_in_the_gap_is_still_a_gap() -> None:
    assert _one("2025-03-30T01:59:59.999", timestamp_timezone="Europe/London") == (None, "dst_gap")


# --- Offsets on wall times that do not exist, or exist twice, in the source zone --------------


@pytest.mark.parametrize(
    ("zone", "raw", "expected"),
    [
        # A non-UTC offset on a wall time inside the gap marks a mislabelled feed.
        ("Europe/London", "2025-03-30T01:30:00+01:00", (None, "dst_gap")),
        ("Europe/London", "2025-03-30T01:30:00+0100", (None, "dst_gap")),
        ("Europe/Berlin", "2025-03-30T02:30:00+02:00", (None, "dst_gap")),
        # A UTC offset is an instant, whatever the wall clock in the zone did.
        ("Europe/London", "2025-03-30T01:30:00Z", (utc(2025, 3, 30, 1, 30), "ok")),
        ("Europe/London", "2025-03-30T01:30:00+00:00", (utc(2025, 3, 30, 1, 30), "ok")),
        ("Europe/Berlin", "2025-03-30T02:30:00Z", (utc(2025, 3, 30, 2, 30), "ok")),
        # A wall time that exists is taken at its written offset.
        ("Europe/London", "2025-03-30T02:30:00+01:00", (utc(2025, 3, 30, 1, 30), "ok")),
        # An offset resolves the repeated hour, even when the source rejects ambiguity.
        ("Europe/London", "2025-10-26T01:30:00+01:00", (utc(2025, 10, 26, 0, 30), "ok")),
        ("Europe/London", "2025-10-26T01:30:00+00:00", (utc(2025, 10, 26, 1, 30), "ok")),
        ("Europe/Berlin", "2025-10-26T02:30:00+02:00", (utc(2025, 10, 26, 0, 30), "ok")),
        ("Europe/Berlin", "2025-10-26T02:30:00+01:00", (utc(2025, 10, 26, 1, 30), "ok")),
    ],
)
def test_offsets_on_transition_wall_times(zone: str, raw: str, expected: tuple[datetime | None, str]) -> None:
    assert _one(raw, timestamp_timezone=zone) == expected


# --- Interval labels, strptime formats, fixed offsets -----------------------------------------


@pytest.mark.parametrize(
    ("raw", "changes", "expected"),
    [
        ("2025-06-01T00:30:00Z", {}, utc(2025, 6, 1, 0, 0)),
        ("2025-06-01T00:00:00Z", {}, utc(2025, 5, 31, 23, 30)),
        ("2025-06-01T00:30:00Z", {"interval_minutes": 60}, utc(2025, 5, 31, 23, 30)),
        ("2025-06-01T00:15:00Z", {"interval_minutes": 15}, utc(2025, 6, 1, 0, 0)),
        (
            "2025-06-02T00:00:00",
            {"interval_minutes": 1440, "timestamp_timezone": "Europe/London"},
            utc(2025, 5, 31, 23),
        ),
        ("2025-06-01T00:30:00", {"timestamp_timezone": "Europe/London"}, utc(2025, 5, 31, 23, 0)),
        ("2025-10-26T02:00:00", {"timestamp_timezone": "Europe/London"}, utc(2025, 10, 26, 1, 30)),
    ],
)
def test_end_labels_shift_back_one_interval(raw: str, changes: dict[str, Any], expected: datetime) -> None:
    assert _one(raw, timestamp_label="end", **changes) == (expected, "ok")


def test_end_labels_leave_rejected_timestamps_rejected() -> None:
    assert _ts(["junk", "2025-03-30T01:30:00"], timestamp_label="end", timestamp_timezone="Europe/London") == [
        (None, "unparseable"),
        (None, "dst_gap"),
    ]


@pytest.mark.parametrize(
    ("fmt", "zone", "raw", "expected"),
    [
        ("%d/%m/%Y %H:%M", "UTC", "01/06/2025 10:00", (utc(2025, 6, 1, 10), "ok")),
        ("%d/%m/%Y %H:%M", "UTC", " 31/12/2025 23:30 ", (utc(2025, 12, 31, 23, 30), "ok")),
        ("%d/%m/%Y %H:%M", "Europe/London", "01/06/2025 10:00", (utc(2025, 6, 1, 9), "ok")),
        ("%d/%m/%Y %H:%M", "Europe/Berlin", "15/01/2025 10:00", (utc(2025, 1, 15, 9), "ok")),
        ("%d/%m/%Y %H:%M", "UTC", "2025-06-01 10:00", (None, "unparseable")),
        ("%d/%m/%Y %H:%M", "UTC", "01/06/2025 25:00", (None, "unparseable")),
        ("%d/%m/%Y %H:%M", "UTC", "", (None, "unparseable")),
        ("%d/%m/%Y %H:%M", "UTC", None, (None, "unparseable")),
        ("%Y%m%d%H%M", "UTC", "202506011030", (utc(2025, 6, 1, 10, 30), "ok")),
        ("%Y-%m-%d", "Europe/London", "2025-06-01", (utc(2025, 5, 31, 23), "ok")),
        ("%Y-%m-%dT%H:%M:%S%z", "UTC", "2025-06-01T10:00:00+0200", (utc(2025, 6, 1, 8), "ok")),
        ("%Y-%m-%dT%H:%M:%S%z", "Europe/London", "2025-06-01T10:00:00+0200", (utc(2025, 6, 1, 8), "ok")),
        ("%Y-%m-%dT%H:%M:%S%z", "Europe/London", "2025-10-26T01:30:00+0100", (utc(2025, 10, 26, 0, 30), "ok")),
    ],
)
def test_strptime_formats(fmt: str, zone: str, raw: str | None, expected: tuple[datetime | None, str]) -> None:
    assert _one(raw, timestamp_format=fmt, timestamp_timezone=zone) == expected


@pytest.mark.parametrize(
    ("zone", "raw", "fmt", "expected"),
    [
        ("+10:00", "2025-06-01T10:00:00", "iso8601", utc(2025, 6, 1, 0)),
        ("+10:00", "2025-01-01 10:00", "iso8601", utc(2025, 1, 1, 0)),  # no DST in a fixed offset
        ("+10:00", "01/06/2025 09:30", "%d/%m/%Y %H:%M", utc(2025, 5, 31, 23, 30)),
        ("+10:00", "2025-06-01T10:00:00Z", "iso8601", utc(2025, 6, 1, 10)),  # a written offset wins
        ("-05:30", "2025-06-01T10:00:00", "iso8601", utc(2025, 6, 1, 15, 30)),
        ("+00:00", "2025-03-30T01:30:00", "iso8601", utc(2025, 3, 30, 1, 30)),
    ],
)
def test_fixed_offset_zones(zone: str, raw: str, fmt: str, expected: datetime) -> None:
    assert _one(raw, timestamp_timezone=zone, timestamp_format=fmt) == (expected, "ok")


def test_fixed_offset_zones_have_no_dst_gap_or_ambiguity() -> None:
    fixed = {"timestamp_timezone": "+01:00"}
    assert _ts(["2025-03-30T01:30:00", "2025-10-26T01:30:00"], **fixed) == [
        (utc(2025, 3, 30, 0, 30), "ok"),
        (utc(2025, 10, 26, 0, 30), "ok"),
    ]


# --- Values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", 1.0),
        (" 2.5 ", 2.5),
        ("\t2.5\t", 2.5),
        (".5", 0.5),
        ("-0", 0.0),
        ("+3", 3.0),
        ("1.", 1.0),
        ("-12.75", -12.75),
        ("1e3", 1000.0),
        ("1E-3", 0.001),
        ("0007", 7.0),
    ],
)
def test_numbers_parse(raw: str, expected: float) -> None:
    assert _values([raw]) == [(expected, "ok")]


@pytest.mark.parametrize("raw", ["", "   ", "N/A", "NA", "n/a", "?", "-", "null", "NULL", "NaN", "nan", None])
def test_default_missing_markers_are_missing(raw: str | None) -> None:
    assert _values([raw]) == [(None, "missing")]


@pytest.mark.parametrize(
    "raw", ["abc", "12,5", "1 000", "1e309", "-1e309", "inf", "Infinity", "0x10", "1.2.3", "--1", "5kWh", "e5", "."]
)
def test_junk_and_non_finite_numbers_are_unparseable(raw: str) -> None:
    assert _values([raw]) == [(None, "unparseable")]


def test_custom_missing_values_replace_the_defaults() -> None:
    custom = {"missing_values": ("-999", "x")}
    assert _values(["-999", " x ", "", "N/A", "5"], **custom) == [
        (None, "missing"),
        (None, "missing"),
        (None, "unparseable"),
        (None, "unparseable"),
        (5.0, "ok"),
    ]


# --- parsed_readings --------------------------------------------------------------------------


def _raw(columns: dict[str, list[str | None]]) -> pa.Table:
    n = len(next(iter(columns.values())))
    data: dict[str, Any] = {name: pa.array(values, pa.string()) for name, values in columns.items()}
    data["source_file"] = pa.array(["in.csv"] * n, pa.string())
    data["line_number"] = pa.array(range(2, n + 2), pa.int64())
    return pa.table(data)


def test_parsed_readings_types_columns_and_keeps_the_raw_record() -> None:
    raw = _raw(
        {
            "id": [" M1 ", None, "M3"],
            "ts": ["2025-06-01T10:00:00Z", "2025-06-01 11:00", "nope"],
            "kwh": ["1.5", "N/A", "x"],
            "uom": [" KWH ", "Wh", None],
            "flow": [" Export ", "IMPORT", None],
        }
    )
    source = _source(
        unit=None,
        columns={"meter_id": "id", "timestamp": "ts", "value": "kwh", "unit": "uom", "direction": "flow"},
        timestamp_timezone="Europe/London",
    )
    rows = parsed_readings(raw, source).to_pylist()
    assert [(r["meter_id"], r["direction"], r["unit"]) for r in rows] == [
        ("M1", "export", "kwh"),
        ("", "import", "wh"),
        ("M3", "", ""),
    ]
    assert [(r["interval_start_utc"], r["timestamp_status"]) for r in rows] == [
        (utc(2025, 6, 1, 10), "ok"),
        (utc(2025, 6, 1, 10), "ok"),
        (None, "unparseable"),
    ]
    assert [(r["value"], r["value_status"]) for r in rows] == [(1.5, "ok"), (None, "missing"), (None, "unparseable")]
    assert [(r["source_file"], r["line_number"]) for r in rows] == [("in.csv", 2), ("in.csv", 3), ("in.csv", 4)]
    # The file's columns, in file order and exactly as received, for quarantine.
    assert [[r[f"raw_{i}"] for i in range(5)] for r in rows] == [
        [" M1 ", "2025-06-01T10:00:00Z", "1.5", " KWH ", " Export "],
        [None, "2025-06-01 11:00", "N/A", "Wh", "IMPORT"],
        ["M3", "nope", "x", None, None],
    ]


def test_parsed_readings_applies_a_fixed_unit_and_direction() -> None:
    raw = _raw({"meter_id": ["M1", "M2"], "timestamp": ["2025-06-01T10:00:00Z"] * 2, "value": ["1", "2"]})
    table = parsed_readings(raw, _source(unit="MWh", direction="export"))
    assert table["unit"].to_pylist() == ["mwh", "mwh"]
    assert table["direction"].to_pylist() == ["export", "export"]
    assert table.num_rows == 2


# --- Bugs found, fixed -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "raw"),
    [("%d/%m/%Y %H:%M", "30/02/2025 10:00"), ("%d/%m/%Y %H:%M", "31/04/2025 10:00"), ("%Y-%m-%d", "2025-02-29")],
)
def test_impossible_dates_in_a_strptime_format_are_unparseable(fmt: str, raw: str) -> None:
    assert _one(raw, timestamp_format=fmt) == (None, "unparseable")


@pytest.mark.parametrize("raw", ["2025-06-01T10:00:00+99:99", "2025-06-01T10:00:00+24:00", "2025-06-01T10:00:00+01:75"])
def test_out_of_range_utc_offsets_are_unparseable(raw: str) -> None:
    assert _one(raw) == (None, "unparseable")


def test_a_strptime_offset_in_the_gap_is_treated_like_iso() -> None:
    raw = "2025-03-30T01:30:00+0100"
    iso = _one(raw, timestamp_timezone="Europe/London")
    assert iso == (None, "dst_gap")
    assert _one(raw, timestamp_timezone="Europe/London", timestamp_format="%Y-%m-%dT%H:%M:%S%z") == iso


def test_a_fixed_unit_accepted_with_spaces_is_usable(engine: PandasDeltaStore) -> None:
    source = _source(unit=" kWh ")
    raw = _raw({"meter_id": ["M1"], "timestamp": ["2025-06-01T10:00:00Z"], "value": ["1"]})
    parsed = parsed_readings(raw, source)
    params = RuleParams.for_source(source, now_utc=utc(2025, 7, 1))
    validated = engine.to_arrow(validated_readings(engine.frame(parsed), params)).to_pylist()
    assert [(r["energy_kwh"], r["rejection_rule"]) for r in validated] == [(1.0, None)]
