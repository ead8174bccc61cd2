"""Source config keys given meaning, and the parsing bugs they close, each on a tiny reproducer.

- strptime formats: impossible dates are rejected for any format, a format may not repeat a
  directive, and a `%z` offset is judged against the DST gap like an ISO 8601 one;
- daily intervals are local calendar days (23 or 25 hours at the DST changes);
- a fixed meter id goes with a `columns` table;
- interval ends (`columns.interval_end`, `columns.period`): rows that are not the source's
  interval are `interval_invalid`;
- `value_scale` (per source and per series), `unit_values`, the `negative_export` rule;
- keys that the source's format or layout does not read are refused by name.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from app.domain.errors import ConfigurationError
from app.domain.parsing import parse_positions, parse_timestamps, parsed_readings
from app.domain.rules import RuleParams, validated_readings
from app.domain.sources import CANONICAL_MAPPING, ColumnMapping, SourceConfig
from app.infrastructure.readers import HEAD_BYTES, KIND_ERROR, KIND_ROW, raw_read_table, read_header
from app.infrastructure.repositories.pandas_repository import PandasDeltaStore
from app.infrastructure.source_config import load_sources

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sources.toml"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def _source(**changes: Any) -> SourceConfig:
    fields: dict[str, Any] = {"name": "test", "path": "x.csv", "unit": "kWh"}
    fields.update(changes)
    return SourceConfig(**fields)


def _refused(**changes: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        _source(**changes)
    return str(caught.value)


def _ts(values: list[str | None], **changes: Any) -> list[tuple[datetime | None, str]]:
    instants, status = parse_timestamps(pa.chunked_array([values], pa.string()), _source(**changes))
    return list(zip(instants.to_pylist(), status.to_pylist(), strict=True))


def _raw(columns: dict[str, list[str | None]], file: str = "in.csv") -> pa.Table:
    n = len(next(iter(columns.values())))
    data: dict[str, Any] = {name: pa.array(values, pa.string()) for name, values in columns.items()}
    data["source_file"] = pa.array([file] * n, pa.string())
    data["line_number"] = pa.array(range(2, n + 2), pa.int64())
    data["row_order"] = pa.array(range(n), pa.int64())
    return pa.table(data)


def _validated(raw: pa.Table, source: SourceConfig) -> list[dict[str, Any]]:
    store = PandasDeltaStore(Path("unused"))
    parsed = parsed_readings(raw, source)
    params = RuleParams.for_source(source, now_utc=NOW)
    return store.to_arrow(validated_readings(store.frame(parsed), params)).to_pylist()


def _load(tmp_path: Path, body: str) -> dict[str, SourceConfig]:
    config = tmp_path / "sources.toml"
    config.write_text(body, encoding="utf-8")
    return load_sources(config)


# --- 1. strptime formats ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "raw"),
    [
        ("%d.%m.%Y %H:%M", "29.02.2025 00:00"),
        ("%d %b %Y %H:%M", "31 Apr 2025 10:00"),  # a month name: the day still gives it away
        ("%Y%m%d%H%M", "202502301000"),  # no separators at all
        ("%m/%d/%Y %I:%M %p", "02/30/2025 10:00 AM"),
        ("%Y-%m-%d %H:%M:%S", "2025-06-01 10:00:60"),  # a leap second moves to the next minute
        ("%Y-%m-%dT%H:%M:%S%z", "2025-02-30T10:00:00+01:00"),
    ],
)
def test_any_strptime_format_rejects_impossible_dates(fmt: str, raw: str) -> None:
    assert _ts([raw], timestamp_format=fmt) == [(None, "unparseable")]


@pytest.mark.parametrize(
    ("fmt", "raw", "expected"),
    [
        # strptime accepts what strftime never writes: unpadded numbers, any case, more blanks.
        ("%d/%m/%Y %H:%M", "1/6/2025 9:30", utc(2025, 6, 1, 9, 30)),
        ("%d/%m/%Y %H:%M", "01/06/2025  09:30", utc(2025, 6, 1, 9, 30)),
        ("%d %b %Y %H:%M", "01 JUN 2025 10:00", utc(2025, 6, 1, 10)),
        ("%m/%d/%Y %I:%M %p", "6/1/2025 1:00 pm", utc(2025, 6, 1, 13)),
        ("%d/%m/%Y %H:%M", "31/05/2025 24:00", utc(2025, 6, 1)),  # hour ending 24
        ("%Y-%m-%dT%H:%M:%S%z", "2025-06-01T10:00:00+01:00", utc(2025, 6, 1, 9)),
        ("%Y-%m-%dT%H:%M:%S%z", "2025-06-01T10:00:00Z", utc(2025, 6, 1, 10)),
        ("%Y-%m-%dT%H:%M:%S%z", "2025-06-01T10:00:00-05", utc(2025, 6, 1, 15)),
        # The offset need not come last: a date after it is not taken for one.
        ("%H:%M%z %d-%m-%Y", "10:00+0200 01-06-2025", utc(2025, 6, 1, 8)),
    ],
)
def test_strptime_formats_accept_what_they_can_read(fmt: str, raw: str, expected: datetime) -> None:
    assert _ts([raw], timestamp_format=fmt) == [(expected, "ok")]


@pytest.mark.parametrize(
    ("zone", "raw", "expected"),
    [
        ("Europe/Berlin", "2025-03-30 02:30+0200", (None, "dst_gap")),
        ("Europe/London", "2025-03-30 01:30+01:00", (None, "dst_gap")),
        ("Europe/London", "2025-03-30 01:30+0000", (utc(2025, 3, 30, 1, 30), "ok")),  # UTC is an instant
        ("Europe/London", "2025-10-26 01:30+0000", (utc(2025, 10, 26, 1, 30), "ok")),
        ("Europe/London", "2025-06-01 10:00+99:00", (None, "unparseable")),
    ],
)
def test_a_strptime_offset_is_judged_like_an_iso_offset(
    zone: str, raw: str, expected: tuple[datetime | None, str]
) -> None:
    assert _ts([raw], timestamp_format="%Y-%m-%d %H:%M%z", timestamp_timezone=zone) == [expected]
    iso = raw.replace(" ", "T")
    assert _ts([iso], timestamp_timezone=zone) == [expected]


def test_positions_reject_impossible_dates_in_any_format() -> None:
    source = _source(timestamp_format="%d.%m.%Y", interval_minutes=60)
    dates = pa.chunked_array([["30.02.2025", "01.03.2025"]], pa.string())
    positions = pa.chunked_array([["1", "1"]], pa.string())
    instants, status = parse_positions(dates, positions, source)
    assert list(zip(instants.to_pylist(), status.to_pylist(), strict=True)) == [
        (None, "unparseable"),
        (utc(2025, 3, 1), "ok"),
    ]


@pytest.mark.parametrize(
    ("fmt", "directive"),
    [
        ("%Y-%m-%d %H:%M to %Y-%m-%d %H:%M", "%Y"),
        ("%d.%m.%Y %H:%M - %H:%M", "%H"),
        ("%F %T (%H)", "%H"),  # %T is %H:%M:%S
    ],
)
def test_a_format_that_repeats_a_directive_is_refused_at_load(fmt: str, directive: str) -> None:
    message = _refused(timestamp_format=fmt)
    assert "timestamp_format" in message
    assert f"repeats {directive}" in message
    assert "columns.period" in message and "columns.interval_end" in message


def test_a_zone_name_directive_is_refused_at_load() -> None:
    message = _refused(timestamp_format="%Y-%m-%d %H:%M %Z")
    assert "timestamp_format" in message and "%Z (a zone name such as CET) cannot be read" in message
    assert "use %z" in message


def test_a_format_with_glibc_flags_is_refused_at_load() -> None:
    # Arrow's strptime never matches %-d: every row of such a source would be unparseable.
    message = _refused(timestamp_format="%-d/%-m/%Y %H:%M")
    assert "%-d, %-m cannot be read" in message and "use %d, %m" in message


def test_literal_percent_signs_are_not_directives() -> None:
    assert _ts(["2025-06-01 10:00 %Y"], timestamp_format="%Y-%m-%d %H:%M %%Y") == [(utc(2025, 6, 1, 10), "ok")]


# --- 2. Daily intervals are local days --------------------------------------------------------------

AMSTERDAM = {"timestamp_timezone": "Europe/Amsterdam", "series_timezone": "Europe/Amsterdam"}


def test_end_labelled_daily_reads_start_at_the_previous_local_midnight() -> None:
    # 31 March 2024 has 23 hours in Amsterdam, 27 October 2024 has 25.
    ends = ["2024-03-31T00:00:00", "2024-04-01T00:00:00", "2024-04-02T00:00:00", "2024-10-28T00:00:00"]
    assert _ts(ends, timestamp_label="end", interval_minutes=1440, **AMSTERDAM) == [
        (utc(2024, 3, 29, 23), "ok"),
        (utc(2024, 3, 30, 23), "ok"),  # 31 March 00:00 CET: the 23-hour day
        (utc(2024, 3, 31, 22), "ok"),
        (utc(2024, 10, 26, 22), "ok"),  # 27 October 00:00 CEST: the 25-hour day
    ]


def test_end_labelled_daily_reads_across_the_spring_change_pass_the_grid(engine: PandasDeltaStore) -> None:
    days = ["2024-03-31", "2024-04-01", "2024-04-02"]
    raw = _raw({"meter_id": ["M1"] * 3, "timestamp": [f"{d}T00:00:00" for d in days], "value": ["10"] * 3})
    source = _source(timestamp_label="end", interval_minutes=1440, max_demand_kw=1e6, **AMSTERDAM)
    parsed = parsed_readings(raw, source)
    params = RuleParams.for_source(source, now_utc=NOW)
    rows = engine.to_arrow(validated_readings(engine.frame(parsed), params)).to_pylist()
    assert [(r["local_date"].isoformat(), r["rejection_rule"]) for r in rows] == [
        ("2024-03-30", None),
        ("2024-03-31", None),
        ("2024-04-01", None),
    ]


def test_a_rows_own_daily_interval_is_a_local_day_too() -> None:
    raw = _raw(
        {"meter_id": ["M1", "M1"], "timestamp": ["2024-04-01T00:00:00"] * 2, "value": ["1", "1"], "len": ["1440", "15"]}
    )
    source = _source(timestamp_label="end", interval_minutes=15, columns={"interval_minutes": "len"}, **AMSTERDAM)
    assert parsed_readings(raw, source)["interval_start_utc"].to_pylist() == [
        utc(2024, 3, 30, 23),
        utc(2024, 3, 31, 21, 45),
    ]


# --- 3. A fixed meter id with a columns table ---------------------------------------------------------


def test_a_fixed_meter_id_goes_with_a_columns_table(tmp_path: Path) -> None:
    sources = _load(
        tmp_path,
        '[sources.solar]\npath = "in/*.csv"\nunit = "kWh"\nmeter_id = "{file_stem}"\n'
        'columns = { timestamp = "time", value = "kwh" }\n',
    )
    solar = sources["solar"]
    assert solar.columns.meter_id is None
    assert solar.columns.required() == ["time", "kwh"]
    raw = _raw({"time": ["2025-06-01T10:00:00Z"], "kwh": ["1"]}, file="landing/roof_7.csv")
    assert parsed_readings(raw, solar)["meter_id"].to_pylist() == ["roof_7"]


def test_a_fixed_meter_id_without_a_columns_table_loads(tmp_path: Path) -> None:
    sources = _load(tmp_path, '[sources.solar]\npath = "in/*.csv"\nunit = "kWh"\nmeter_id = "roof"\n')
    assert sources["solar"].columns.meter_id is None


def test_a_fixed_meter_id_and_a_meter_column_together_stay_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="exactly one of 'meter_id'"):
        _load(tmp_path, '[sources.x]\npath = "a.csv"\nunit = "kWh"\nmeter_id = "m"\ncolumns = { meter_id = "id" }\n')


# --- 4. Interval ends and periods ---------------------------------------------------------------------


def _spans(raw: pa.Table, source: SourceConfig) -> list[tuple[datetime | None, int | None, str]]:
    table = parsed_readings(raw, source)
    return list(
        zip(
            table["interval_start_utc"].to_pylist(),
            table["interval_minutes"].to_pylist(),
            table["timestamp_status"].to_pylist(),
            strict=True,
        )
    )


def test_a_period_that_is_not_the_daily_interval_is_invalid() -> None:
    periods = [
        "2024-03-30 00:00 to 2024-03-31 00:00",
        "2024-03-31 00:00 to 2024-04-01 00:00",  # 23 hours: a local day
        "2024-10-27 00:00 to 2024-10-28 00:00",  # 25 hours: a local day
        "2024-01-01 00:00 to 2025-01-01 00:00",  # the year's total, dated 1 January
        "2024-04-02 00:00 to 2024-04-02 00:00",  # ends where it starts
        "2024-04-03 00:00 to 2024-04-02 00:00",  # ends before it starts
        "2024-04-02 00:00",  # no end
    ]
    raw = _raw({"meter_id": ["M1"] * len(periods), "period": periods, "value": ["1"] * len(periods)})
    source = _source(
        timestamp_format="%Y-%m-%d %H:%M", interval_minutes=1440, columns={"period": "period"}, **AMSTERDAM
    )
    assert _spans(raw, source) == [
        (utc(2024, 3, 29, 23), 1440, "ok"),
        (utc(2024, 3, 30, 23), 1440, "ok"),
        (utc(2024, 10, 26, 22), 1440, "ok"),
        (utc(2023, 12, 31, 23), None, "ok"),
        (utc(2024, 4, 1, 22), None, "ok"),
        (utc(2024, 4, 2, 22), None, "ok"),
        (None, 1440, "unparseable"),
    ]
    rules = [r["rejection_rule"] for r in _validated(raw, source.model_copy(update={"max_demand_kw": 1e6}))]
    assert rules == [
        None,
        None,
        None,
        "interval_invalid",
        "interval_invalid",
        "interval_invalid",
        "timestamp_unparseable",
    ]


def test_interval_end_columns_give_each_rows_length() -> None:
    raw = _raw(
        {
            "meter_id": ["M1"] * 4,
            "from_date": ["01.06.2025"] * 4,
            "from_time": ["00:00", "00:15", "00:30", "00:45"],
            "to_date": ["01.06.2025"] * 4,
            "to_time": ["00:15", "00:30", "01:30", "junk"],
            "value": ["1"] * 4,
        }
    )
    source = _source(
        timestamp_format="%d.%m.%Y %H:%M",
        interval_minutes=15,
        columns={"timestamp": ["from_date", "from_time"], "interval_end": ["to_date", "to_time"]},
    )
    assert source.columns.required() == ["meter_id", "from_date", "from_time", "value", "to_date", "to_time"]
    assert _spans(raw, source) == [
        (utc(2025, 6, 1, 0, 0), 15, "ok"),
        (utc(2025, 6, 1, 0, 15), 15, "ok"),
        (utc(2025, 6, 1, 0, 30), None, "ok"),  # an hour in a quarter-hourly source
        (None, 15, "unparseable"),
    ]


def test_interval_ends_around_the_fall_back_hour() -> None:
    # Berlin, 27 October 2024: 02:00-03:00 is lived twice; the file lists it twice, in order.
    periods = [
        "27.10.2024 01:45 - 27.10.2024 02:00",  # ends in the repeated hour: the start decides
        "27.10.2024 02:45 - 27.10.2024 03:00",  # the first 02:45 ends when the clock goes back
        "27.10.2024 02:45 - 27.10.2024 03:00",
        "27.10.2024 03:00 - 27.10.2024 03:15",
    ]
    raw = _raw({"meter_id": ["M1"] * 4, "mtu": periods, "value": ["1"] * 4})
    raw = raw.append_column("occurrence", pa.array([0, 0, 1, 0], pa.int32()))
    source = _source(
        timestamp_format="%d.%m.%Y %H:%M",
        timestamp_timezone="Europe/Berlin",
        series_timezone="Europe/Berlin",
        ambiguous_time="order",
        interval_minutes=15,
        period_separator=" - ",
        columns={"period": "mtu"},
    )
    assert _spans(raw, source) == [
        (utc(2024, 10, 26, 23, 45), 15, "ok"),
        (utc(2024, 10, 27, 0, 45), 15, "ok"),
        (utc(2024, 10, 27, 1, 45), 15, "ok"),
        (utc(2024, 10, 27, 2), 15, "ok"),
    ]


def test_written_offsets_on_interval_ends_are_the_truth() -> None:
    periods = ["2024-10-27T02:45+02:00/2024-10-27T02:00+01:00", "2024-10-27T02:45+02:00/2024-10-27T03:00+01:00"]
    raw = _raw({"meter_id": ["M1"] * 2, "p": periods, "value": ["1"] * 2})
    source = _source(interval_minutes=15, period_separator="/", columns={"period": "p"})
    assert _spans(raw, source) == [(utc(2024, 10, 27, 0, 45), 15, "ok"), (utc(2024, 10, 27, 0, 45), None, "ok")]


def test_a_file_without_the_period_column_is_a_file_error(tmp_path: Path) -> None:
    source = _source(columns={"period": "Period"}, interval_minutes=60)
    assert source.columns.required() == ["meter_id", "Period", "value"]
    path = tmp_path / "in.csv"
    good = b"meter_id,Period,value\nM1,2025-06-01T00:00Z to 2025-06-01T01:00Z,1\n"
    path.write_bytes(good)
    header = read_header(str(path), good[:HEAD_BYTES], source)
    rows = raw_read_table(0, str(path), good, source, header)
    assert rows["kind"].to_pylist() == [KIND_ROW]
    assert _spans(rows, source) == [(utc(2025, 6, 1), 60, "ok")]
    bad = b"meter_id,timestamp,value\nM1,2025-06-01T00:00Z,1\n"
    error = raw_read_table(0, str(path), bad, source, header)
    assert error["kind"].to_pylist() == [KIND_ERROR]
    assert "missing required column(s) Period" in error["detail"][0].as_py()


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"columns": {"interval_end": "to"}, "timestamp_label": "end"}, "key 'timestamp_label' does not apply"),
        ({"columns": {"period": "p"}, "timestamp_label": "start"}, "key 'timestamp_label' does not apply"),
        ({"period_separator": " - "}, "key 'period_separator' does not apply"),
        ({"columns": {"period": "p", "interval_end": "to"}}, "key 'columns.interval_end' does not apply"),
        ({"columns": {"period": "p", "timestamp": "ts"}}, "key 'columns.timestamp' does not apply"),
        ({"columns": {"period": "p", "interval_minutes": "len"}}, "key 'columns.interval_minutes' does not apply"),
        ({"columns": {"interval_end": "to", "position": "pos"}}, "key 'columns.position' does not apply"),
    ],
)
def test_keys_that_interval_ends_make_meaningless_are_refused(changes: dict[str, Any], needle: str) -> None:
    message = _refused(**changes)
    assert needle in message and "remove it" in message


# --- 5. Signs and scales ----------------------------------------------------------------------------


def test_value_scale_turns_a_negative_export_channel_positive() -> None:
    raw = _raw({"meter_id": ["M1", "M1"], "timestamp": ["2025-06-01T10:00:00Z"] * 2, "value": ["-1.5", "2"]})
    plain = _validated(raw, _source(direction="export"))
    assert [(r["energy_kwh"], r["rejection_rule"]) for r in plain] == [(-1.5, "negative_export"), (2.0, None)]
    scaled = _validated(raw, _source(direction="export", value_scale=-1))
    assert [(r["energy_kwh"], r["rejection_rule"]) for r in scaled] == [(1.5, None), (-2.0, "negative_export")]


def test_value_scale_applies_before_the_unit() -> None:
    raw = _raw({"meter_id": ["M1"], "timestamp": ["2025-06-01T10:00:00Z"], "value": ["2500"]})
    (row,) = _validated(raw, _source(unit="kW", value_scale=0.001))
    assert row["value"] == pytest.approx(2.5)
    assert row["energy_kwh"] == pytest.approx(1.25)  # 2.5 kW for half an hour


def test_a_negative_scale_turns_zero_into_zero_not_minus_zero() -> None:
    raw = _raw({"meter_id": ["M1", "M1"], "timestamp": ["2025-06-01T10:00:00Z"] * 2, "value": ["0", "2"]})
    values = parsed_readings(raw, _source(value_scale=-1))["value"].to_pylist()
    assert values == [0.0, -2.0]
    assert str(values[0]) == "0.0"  # -0.0 would be stored, and compare, as a negative zero


def test_a_series_value_scale_applies_to_its_column_only() -> None:
    source = _source(
        layout="wide",
        value_scale=0.001,
        columns={"timestamp": "ts"},
        series=[{"column": "feed_in", "value_scale": -1}, {"column": "usage"}],
    )
    raw = _raw(
        {
            "meter_id": ["feed_in", "usage"],
            "timestamp": ["2025-06-01T10:00:00Z"] * 2,
            "value": ["-4", "3000"],
            "unit": ["kWh", "Wh"],
            "direction": ["export", "import"],
            "quality": ["", ""],
            "interval_minutes": ["", ""],
            "column": ["feed_in", "usage"],
        }
    )
    assert parsed_readings(raw, source)["value"].to_pylist() == pytest.approx([4.0, 3.0])
    # Without the reader's `column`, every value takes the source's scale.
    assert parsed_readings(raw.drop_columns(["column"]), source)["value"].to_pylist() == pytest.approx([-0.004, 3.0])


def test_value_scale_applies_to_register_reads() -> None:
    raw = _raw(
        {
            "meter_id": ["M1", "M1"],
            "timestamp": ["2025-06-01T00:00:00Z", "2025-06-02T00:00:00Z"],
            "value": ["1000", "1500"],
        }
    )
    source = _source(value_kind="register", unit="Wh", value_scale=10, interval_minutes=1440)
    assert parsed_readings(raw, source)["value"].to_pylist() == [10000.0, 15000.0]


# --- 6. Unit names ------------------------------------------------------------------------------------


def test_unit_values_map_unit_texts_before_they_are_judged() -> None:
    units = ["kWh", "Kilowattuur", "KILOWATTUUR", "m³", "Wattuur "]
    raw = _raw({"meter_id": ["M1"] * 5, "timestamp": ["2025-06-01T10:00:00Z"] * 5, "value": ["1000"] * 5, "u": units})
    source = _source(unit=None, columns={"unit": "u"}, unit_values={"Kilowattuur": "kWh", "wattuur": "Wh"})
    rows = _validated(raw, source)
    assert [(r["unit"], r["energy_kwh"], r["rejection_rule"]) for r in rows] == [
        ("kwh", 1000.0, "above_physical_max"),
        ("kwh", 1000.0, "above_physical_max"),
        ("kwh", 1000.0, "above_physical_max"),
        ("m³", None, "unit_unknown"),  # not mapped: still not energy
        ("wh", 1.0, None),
    ]


def test_unit_values_must_map_to_known_units() -> None:
    message = _refused(unit=None, columns={"unit": "u"}, unit_values={"Kubieke meter": "m3"})
    assert "unit_values" in message and "'Kubieke meter'" in message and "'m3'" in message
    assert "known: Wh, kWh" in message


def test_unit_values_without_a_unit_column_are_refused() -> None:
    message = _refused(unit="kWh", unit_values={"Kilowattuur": "kWh"})
    assert "key 'unit_values' does not apply" in message


# --- 7. Keys the format or layout does not read -------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "key", "where"),
    [
        ({"format": "nem12", "unit": None, "layout": "long"}, "layout", "format 'nem12'"),
        ({"format": "nem12", "unit": None, "delimiter": ";"}, "delimiter", "format 'nem12'"),
        ({"format": "nem12", "unit": None, "decimal": ","}, "decimal", "format 'nem12'"),
        ({"format": "nem12", "unit": None, "timestamp_format": "%Y%m%d"}, "timestamp_format", "format 'nem12'"),
        ({"format": "nem12", "unit": None, "timestamp_label": "end"}, "timestamp_label", "format 'nem12'"),
        ({"format": "nem12", "unit": "kWh"}, "unit", "format 'nem12'"),
        ({"format": "nem12", "unit": None, "columns": {"value": "v"}}, "columns", "format 'nem12'"),
        ({"format": "nem12", "unit": None, "meter_id": "m"}, "meter_id", "format 'nem12'"),
        ({"format": "greenbutton", "unit": None, "skip_lines": 2}, "skip_lines", "format 'greenbutton'"),
        ({"format": "greenbutton", "unit": None, "encoding": "latin-1"}, "encoding", "format 'greenbutton'"),
        (
            {"format": "greenbutton", "unit": None, "timestamp_timezone": "+10:00"},
            "timestamp_timezone",
            "format 'greenbutton'",
        ),
        ({"format": "greenbutton", "unit": None, "header": ["a"]}, "header", "format 'greenbutton'"),
        ({"format": "parquet", "delimiter": ";"}, "delimiter", "format 'parquet'"),
        ({"format": "parquet", "encoding": "latin-1"}, "encoding", "format 'parquet'"),
        ({"format": "parquet", "decimal": ","}, "decimal", "format 'parquet'"),
        ({"series": [{"column": "a"}]}, "series", "layout 'long'"),
        ({"unit_pattern": r"\[(?P<unit>\w+)\]"}, "unit_pattern", "layout 'long'"),
        ({"interval_columns": r"^\d"}, "interval_columns", "layout 'long'"),
        (
            {"layout": "wide", "columns": {"timestamp": "ts", "value": "v"}, "series": [{"column": "a"}]},
            "columns.value",
            "layout 'wide'",
        ),
        (
            {"layout": "wide", "columns": {"timestamp": "ts", "direction": "d"}, "series": [{"column": "a"}]},
            "columns.direction",
            "layout 'wide'",
        ),
        ({"layout": "wide", "meter_id": "m", "series": [{"column": "a"}]}, "meter_id", "layout 'wide'"),
        (
            {"layout": "wide", "interval_columns": "x", "series": [{"column": "a"}]},
            "interval_columns",
            "layout 'wide'",
        ),
        (
            {"layout": "time_of_day", "columns": {"timestamp": "date"}, "series": [{"column": "a"}]},
            "series",
            "layout 'time_of_day'",
        ),
        (
            {"layout": "time_of_day", "columns": {"timestamp": "date", "value": "v"}},
            "columns.value",
            "layout 'time_of_day'",
        ),
        (
            {"layout": "time_of_day", "columns": {"timestamp": "date", "position": "p"}},
            "columns.position",
            "layout 'time_of_day'",
        ),
        (
            {"layout": "time_of_day", "columns": {"timestamp": "date", "interval_minutes": "len"}},
            "columns.interval_minutes",
            "layout 'time_of_day'",
        ),
        (
            {"layout": "time_of_day", "columns": {"timestamp": "date"}, "timestamp_label": "end"},
            "timestamp_label",
            "layout 'time_of_day'",
        ),
    ],
)
def test_a_key_the_format_or_layout_does_not_read_is_refused_by_name(
    changes: dict[str, Any], key: str, where: str
) -> None:
    message = _refused(**changes)
    assert f"key '{key}' does not apply to {where}" in message
    assert "remove it" in message


def test_every_unread_key_is_named_at_once() -> None:
    message = _refused(format="nem12", unit=None, delimiter=";", skip_lines=1, fill_down=["a"])
    for key in ("delimiter", "skip_lines", "fill_down"):
        assert f"key '{key}' does not apply to format 'nem12'" in message


def test_keys_a_format_reads_are_still_accepted() -> None:
    nem12 = _source(format="nem12", unit=None, timestamp_timezone="+10:00", quality_values={"V": "estimated"})
    assert nem12.reading_columns() == CANONICAL_MAPPING
    green = _source(format="greenbutton", unit="Wh", direction="export", series_timezone="America/New_York")
    assert green.unit == "Wh"
    parquet = _source(format="parquet", fill_down=["meter_id"], header=["meter_id", "timestamp", "value"])
    assert parquet.reading_columns() == parquet.columns


def test_a_wide_meter_column_excludes_series_meter_ids() -> None:
    wide = {"layout": "wide", "columns": {"timestamp": "ts", "meter_id": "site"}}
    assert _source(**wide, series=[{"column": "a"}]).reading_columns().meter_id == "meter_id"
    message = _refused(**wide, series=[{"column": "a"}, {"column": "b", "meter_id": "b1"}])
    assert "series 'b'" in message and "meter_id" in message and "columns.meter_id" in message


def test_zero_when_quality_needs_a_quality_column_in_the_wide_layout_too() -> None:
    message = _refused(layout="wide", columns={"timestamp": "ts"}, series=[{"column": "a"}], zero_when_quality=["0"])
    assert "zero_when_quality" in message and "columns.quality" in message


def test_the_time_of_day_layout_mirrors_the_long_layouts_checks() -> None:
    base = {"layout": "time_of_day", "columns": {"timestamp": "date", "meter_id": "ean"}}
    assert "columns.timestamp" in _refused(layout="time_of_day")
    assert "exactly one of 'unit'" in _refused(**base, unit=None)
    assert "exactly one of 'meter_id'" in _refused(**base, meter_id="m")
    source = _source(**base)
    mapping = source.reading_columns()
    assert (mapping.timestamp, mapping.position, mapping.value, mapping.meter_id) == (
        "timestamp",
        "position",
        "value",
        "meter_id",
    )
    fixed = _source(layout="time_of_day", columns={"timestamp": "date"}, meter_id="{file_stem}")
    assert fixed.reading_columns().meter_id is None


def test_the_wide_layout_reads_canonical_rows() -> None:
    wide = _source(layout="wide", columns={"timestamp": "ts"}, series=[{"column": "a"}])
    assert wide.reading_columns().position is None
    positioned = _source(layout="wide", columns={"timestamp": "d", "position": "p"}, series=[{"column": "a"}])
    assert positioned.reading_columns().position == "position"
    by_period = _source(layout="wide", columns={"period": "mtu"}, series=[{"column": "a"}], interval_minutes=15)
    assert by_period.columns.timestamp_columns() == ("mtu",)
    assert by_period.reading_columns().period == "timestamp"


def test_the_example_sources_still_load() -> None:
    sources = load_sources(EXAMPLES)
    assert {"nem12", "greenbutton", "tennet_wind", "fluvius_gas", "aemo_demand"} <= set(sources)
    assert isinstance(sources["tennet_wind"].columns, ColumnMapping)


def test_columns_required_lists_interval_end_columns() -> None:
    assert ColumnMapping(interval_end="to").required() == ["meter_id", "timestamp", "value", "to"]
    assert ColumnMapping(period="p").timestamp_columns() == ("p",)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"header": ("a", "", "c")}, "header names must not be empty (position(s) 2)"),
        ({"header": ("a", "b", "a")}, "header names must differ; repeated: a"),
    ],
)
def test_header_names_are_checked_at_load(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        SourceConfig(name="s", path="x.csv", unit="kWh", **changes)


def test_the_time_of_day_layout_needs_whole_intervals_on_dst_days() -> None:
    base: dict[str, Any] = {
        "name": "s",
        "path": "x.csv",
        "unit": "kWh",
        "layout": "time_of_day",
        "meter_id": "M",
        "columns": {"timestamp": "Date"},
    }
    SourceConfig(**base, interval_minutes=15)
    with pytest.raises(ValidationError, match="dividing an hour"):
        SourceConfig(**base, interval_minutes=120)
    with pytest.raises(ValidationError, match="key 'ambiguous_time' does not apply to layout 'time_of_day'"):
        SourceConfig(**base, ambiguous_time="order")
