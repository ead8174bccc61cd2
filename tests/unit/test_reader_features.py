"""Reader features on tiny reproducers: read order within a line, ESPI flow directions, the wide
layout's meter column and `column` lineage, header names, the time-of-day layout, Parquet, and
gzip / ZIP inputs. A few run a whole batch on a temporary lake, to show what reaches silver and gold.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from app.application.runner import run_batch
from app.domain.errors import InputFileError
from app.domain.parsing import parse_positions, parsed_readings, parsed_schema
from app.domain.sources import CANONICAL_COLUMNS, SeriesColumn, SourceConfig
from app.infrastructure.formats.greenbutton import flow_direction, read_greenbutton
from app.infrastructure.readers import (
    HEAD_BYTES,
    KIND_ERROR,
    KIND_ROW,
    canonical_header,
    raw_read_table,
    read_head,
    read_header,
    resolve_inputs,
    sha256_of,
    unique_names,
)
from app.infrastructure.settings import Settings
from app.wiring import LocalPlatform, open_platform

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "readers"
NOW = datetime(2025, 11, 1, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def _src(**changes: Any) -> SourceConfig:
    fields: dict[str, Any] = {"name": "t", "path": "x.csv", "unit": "kWh"}
    fields.update(changes)
    return SourceConfig(**fields)


def _raw(path: Path, source: SourceConfig, *, file_index: int = 0) -> tuple[list[str], pa.Table]:
    """(batch header, raw-read rows) of one file, as the pipeline reads it: the head, then the bytes."""
    header = read_header(str(path), read_head(path), source)
    table = raw_read_table(file_index, str(path), path.read_bytes(), source, header)
    errors = table.filter(pc.equal(table["kind"], KIND_ERROR)).to_pylist()
    if errors:
        raise InputFileError(str(path), errors[0]["detail"], line=errors[0]["line_number"])
    return header, table


def _rows(path: Path, source: SourceConfig, **kwargs: Any) -> list[dict[str, Any]]:
    _, table = _raw(path, source, **kwargs)
    return table.filter(pc.equal(table["kind"], KIND_ROW)).to_pylist()


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# --- Pipeline runs on a temporary lake -----------------------------------------------------------


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[LocalPlatform]:
    with open_platform(Settings(data_dir=tmp_path / "lake", _env_file=None)) as opened:  # type: ignore[call-arg]
        yield opened


def _table(platform: LocalPlatform, name: str) -> list[dict[str, Any]]:
    return DeltaTable(platform.store.location(name)).to_pyarrow_table().to_pylist()


def _run(platform: LocalPlatform, tmp_path: Path, config: str, path: Path) -> Any:
    config_file = _write(tmp_path / "sources.toml", config)
    result = run_batch(platform, source_name="s", config_file=config_file, input_path=str(path), now=NOW)
    assert result.status == "succeeded", result.error
    return result


def _one_row_per_key_and_complete_at_most(platform: LocalPlatform) -> list[dict[str, Any]]:
    silver = _table(platform, "silver_readings")
    keys = [(r["meter_id"], r["interval_start_utc"], r["direction"]) for r in silver]
    assert len(keys) == len(set(keys)), "one silver row per (meter, interval, direction)"
    gold = _table(platform, "gold_daily_meter_energy")
    assert gold and all(r["completeness"] <= 1.0 for r in gold), [r["completeness"] for r in gold]
    return silver


# --- 1. Read order: each reading its own row_order -------------------------------------------------

_GB_HEAD = '<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom">'


def _one_line_feed(readings: list[tuple[int, str]], flow: str = "1") -> str:
    """A Green Button feed on one line: a MeterReading, its hourly Wh ReadingType, one block."""
    block = "".join(
        f"<IntervalReading><timePeriod><duration>3600</duration><start>{start}</start></timePeriod>"
        f"<value>{value}</value></IntervalReading>"
        for start, value in readings
    )
    return (
        _GB_HEAD + '<entry><link rel="self" href="RetailCustomer/1/UsagePoint/7/MeterReading/1"/>'
        '<link rel="related" href="ReadingType/1"/><content><MeterReading xmlns="http://naesb.org/espi"/></content>'
        '</entry><entry><link rel="self" href="ReadingType/1"/><content><ReadingType xmlns="http://naesb.org/espi">'
        f"<flowDirection>{flow}</flowDirection><intervalLength>3600</intervalLength>"
        "<powerOfTenMultiplier>0</powerOfTenMultiplier><uom>72</uom></ReadingType></content></entry>"
        '<entry><link rel="up" href="RetailCustomer/1/UsagePoint/7/MeterReading/1/IntervalBlock"/>'
        f'<content><IntervalBlock xmlns="http://naesb.org/espi">{block}</IntervalBlock></content></entry></feed>\n'
    )


#: 2025-06-10 00:00 UTC and the next hour.
T0, T1 = 1749513600, 1749517200

WIDE_TWICE = "ts,a,b\n2025-06-10T00:00:00Z,1,2\n2025-06-10T00:30:00Z,3,4\n"
WIDE_TWICE_SOURCE = _src(
    layout="wide",
    columns={"timestamp": "ts"},
    series=(SeriesColumn(column="a", meter_id="M"), SeriesColumn(column="b", meter_id="M")),
)


def test_row_order_is_unique_per_reading_and_follows_reading_order(tmp_path: Path) -> None:
    wide = _rows(_write(tmp_path / "w.csv", WIDE_TWICE), WIDE_TWICE_SOURCE, file_index=2)
    assert [r["line_number"] for r in wide] == [2, 2, 3, 3]
    assert [r["row_order"] - (2 << 32) for r in wide] == [1, 2, 3, 4]  # 1-based ordinal in reading order
    feed = _write(tmp_path / "gb.xml", _one_line_feed([(T0, "100"), (T0, "300"), (T1, "200")]))
    source = SourceConfig(name="gb", path="x", format="greenbutton")
    rows = _rows(feed, source, file_index=1)
    assert {r["line_number"] for r in rows} == {1}
    assert [(r["value"], r["row_order"] - (1 << 32)) for r in rows] == [("100", 1), ("300", 2), ("200", 3)]


def test_a_malformed_line_keeps_its_line_as_read_order(tmp_path: Path) -> None:
    _, table = _raw(_write(tmp_path / "m.csv", "meter_id,timestamp,value\nM,2025-06-10T00:00Z,1,9\nM,x,1\n"), _src())
    by_kind = {r["kind"]: r["row_order"] for r in table.to_pylist()}
    assert by_kind == {"row": 1, "malformed": 2}


def test_one_line_green_button_reaches_silver_once_per_key(platform: LocalPlatform, tmp_path: Path) -> None:
    """Two readings of one hour on one line: the later one wins, as a later line would."""
    path = _write(tmp_path / "in" / "gb.xml", _one_line_feed([(T0, "100"), (T0, "300"), (T1, "200")]))
    config = '[sources.s]\nformat = "greenbutton"\npath = "in/*.xml"\ninterval_minutes = 60\n'
    result = _run(platform, tmp_path, config, path)
    silver = _one_row_per_key_and_complete_at_most(platform)
    assert sorted((r["interval_start_utc"], r["energy_kwh"]) for r in silver if r["estimation_method"] is None) == [
        (utc(2025, 6, 10, 0), 0.3),
        (utc(2025, 6, 10, 1), 0.2),
    ]
    assert result.reconciliation.duplicates_replaced == 1


def test_wide_columns_of_one_meter_and_direction_reach_silver_once(platform: LocalPlatform, tmp_path: Path) -> None:
    path = _write(tmp_path / "in" / "w.csv", WIDE_TWICE + "2025-06-10T01:00:00Z,5,x\n")
    config = (
        '[sources.s]\npath = "in/*.csv"\nlayout = "wide"\nunit = "kWh"\ncolumns = { timestamp = "ts" }\n'
        'series = [{ column = "a", meter_id = "M" }, { column = "b", meter_id = "M" }]\n'
    )
    result = _run(platform, tmp_path, config, path)
    silver = _one_row_per_key_and_complete_at_most(platform)
    read = sorted((r["interval_start_utc"], r["energy_kwh"]) for r in silver if r["estimation_method"] is None)
    assert read == [(utc(2025, 6, 10, 0), 2.0), (utc(2025, 6, 10, 0, 30), 4.0), (utc(2025, 6, 10, 1), 5.0)]
    assert result.reconciliation.duplicates_replaced == 2
    # The quarantined cell says which column it was read from (3: lineage of the wide layout).
    [rejected] = _table(platform, "quarantine_readings")
    assert (rejected["rule"], rejected["line_number"]) == ("value_unparseable", 4)
    assert json.loads(rejected["raw_record"]) == {
        "meter_id": "M", "timestamp": "2025-06-10T01:00:00Z", "value": "x", "unit": "kWh", "direction": "import",
        "quality": "", "interval_minutes": "", "column": "b",
    }  # fmt: skip


# --- 1b. ESPI flow directions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "direction"),
    [
        ("1", "import"),
        ("19", "export"),
        ("", "import"),
        ("4", "net"),
        ("20", "total"),
        ("0", "none"),
        ("21", "totalByPhase"),
        ("6", "flowDirection 6"),
        ("99", "flowDirection 99"),
    ],
)
def test_flow_directions_are_named(code: str, direction: str) -> None:
    assert flow_direction(code, "import") == direction
    if code:
        raw = read_greenbutton("gb.xml", _one_line_feed([(T0, "1")], flow=code).encode(), _src(format="greenbutton"))
        assert raw.table["direction"].to_pylist() == [direction]


def test_net_flow_is_refused_by_name_or_mapped_with_direction_values(platform: LocalPlatform, tmp_path: Path) -> None:
    path = _write(tmp_path / "in" / "net.xml", _one_line_feed([(T0, "-500"), (T1, "700")], flow="4"))
    config = '[sources.s]\nformat = "greenbutton"\npath = "in/*.xml"\ninterval_minutes = 60\n'
    _run(platform, tmp_path, config, path)
    rejected = _table(platform, "quarantine_readings")
    assert sorted(r["rule"] for r in rejected) == ["direction_unknown"] * 2
    assert {json.loads(r["raw_record"])["direction"] for r in rejected} == {"net"}

    mapped = config + 'direction_values = { "net" = "import" }\nbidirectional = true\n'
    config_file = _write(tmp_path / "sources.toml", mapped)
    result = run_batch(platform, source_name="s", config_file=config_file, input_path=str(path), now=NOW, force=True)
    assert result.status == "succeeded", result.error
    silver = [r for r in _table(platform, "silver_readings") if r["estimation_method"] is None]
    assert sorted((r["direction"], round(r["energy_kwh"], 9)) for r in silver) == [("import", -0.5), ("import", 0.7)]


# --- 2. and 3. The wide layout's meter column and `column` lineage -----------------------------------


def test_wide_layout_reads_the_meter_from_a_meter_column(tmp_path: Path) -> None:
    text = "meter,ts,imp,exp\nA,2025-06-10T00:00Z,1,2\nB,2025-06-10T00:00Z,3,4\n"
    source = _src(
        layout="wide",
        columns={"meter_id": "meter", "timestamp": "ts"},
        series=(SeriesColumn(column="imp"), SeriesColumn(column="exp", direction="export")),
    )
    path = _write(tmp_path / "w.csv", text)
    header, table = _raw(path, source)
    assert header == [*CANONICAL_COLUMNS, "column"]
    rows = table.filter(pc.equal(table["kind"], KIND_ROW))
    assert rows.select(["meter_id", "value", "direction", "column", "line_number"]).to_pylist() == [
        {"meter_id": "A", "value": "1", "direction": "import", "column": "imp", "line_number": 2},
        {"meter_id": "A", "value": "2", "direction": "export", "column": "exp", "line_number": 2},
        {"meter_id": "B", "value": "3", "direction": "import", "column": "imp", "line_number": 3},
        {"meter_id": "B", "value": "4", "direction": "export", "column": "exp", "line_number": 3},
    ]
    parsed = parsed_readings(rows, source, header)
    keys = list(zip(parsed["meter_id"].to_pylist(), parsed["direction"].to_pylist(), strict=True))
    assert keys == [("A", "import"), ("A", "export"), ("B", "import"), ("B", "export")]
    with pytest.raises(InputFileError, match=r"missing required column\(s\) meter"):
        _raw(_write(tmp_path / "n.csv", "ts,imp,exp\n2025-06-10T00:00Z,1,2\n"), source)


def test_column_lineage_only_where_values_come_from_named_columns() -> None:
    wide = _src(layout="wide", columns={"timestamp": "t", "position": "p"}, series=(SeriesColumn(column="v"),))
    assert canonical_header(wide) == [*CANONICAL_COLUMNS, "position", "column"]
    assert canonical_header(_src(layout="time_of_day", columns={"timestamp": "d"})) == [
        *CANONICAL_COLUMNS,
        "position",
        "column",
    ]
    for fmt in ("nem12", "greenbutton"):
        assert canonical_header(SourceConfig(name="t", path="x", format=fmt)) == list(CANONICAL_COLUMNS)  # type: ignore[arg-type]


# --- 4. Header names --------------------------------------------------------------------------------


def test_unique_names_follow_pandas() -> None:
    assert unique_names(["Usage", "Units", "Usage", "Usage", "Units"]) == [
        "Usage",
        "Units",
        "Usage.1",
        "Usage.2",
        "Units.1",
    ]
    assert unique_names(["a", "a", "a.1"]) == ["a", "a.2", "a.1"]


def test_repeated_header_names_are_numbered_and_the_bare_name_is_the_first(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.csv", "meter_id,timestamp,value,unit,value\nM1,2025-06-10T00:00Z,0.5,kWh,0.6\n")
    source = _src(unit=None, columns={"unit": "unit"})
    header, table = _raw(path, source)
    assert header == ["meter_id", "timestamp", "value", "unit", "value.1"]
    assert parsed_readings(table, source, header)["value"].to_pylist() == [0.5]
    second = _src(unit=None, columns={"unit": "unit", "value": "value.1"})
    assert parsed_readings(_raw(path, second)[1], second, header)["value"].to_pylist() == [0.6]


def test_repeated_header_names_keep_quarantine_records_whole(platform: LocalPlatform, tmp_path: Path) -> None:
    path = _write(tmp_path / "in" / "r.csv", "meter_id,timestamp,value,unit,value\nM1,2025-06-10T00:00Z,x,kWh,0.6\n")
    _run(platform, tmp_path, '[sources.s]\npath = "in/*.csv"\ncolumns = { unit = "unit" }\n', path)
    [rejected] = _table(platform, "quarantine_readings")
    assert rejected["rule"] == "value_unparseable"
    assert json.loads(rejected["raw_record"]) == {
        "meter_id": "M1", "timestamp": "2025-06-10T00:00Z", "value": "x", "unit": "kWh", "value.1": "0.6"
    }  # fmt: skip


def test_header_from_the_config_replaces_the_files_names(tmp_path: Path) -> None:
    text = "Title\nVerbrauch;Zeit;Zähler;Zeit\n0,5;2025-06-10T00:00Z;M1;x\n"
    source = _src(
        delimiter=";",
        decimal=",",
        skip_lines=1,
        header=("value", "timestamp", "meter_id", "clock"),
    )
    header, table = _raw(_write(tmp_path / "h.csv", text), source)
    assert header == ["value", "timestamp", "meter_id", "clock"]
    assert [r["line_number"] for r in table.to_pylist()] == [3]  # the header row is still skipped
    parsed = parsed_readings(table, source, header)
    assert (parsed["meter_id"][0].as_py(), parsed["value"][0].as_py()) == ("M1", 0.5)
    with pytest.raises(InputFileError) as caught:
        _raw(_write(tmp_path / "short.csv", "Title\nVerbrauch;Zeit;Zähler\n0,5;2025-06-10T00:00Z;M1\n"), source)
    assert caught.value.line == 2
    assert "has 3 column(s) but the source's `header` names 4 (rule: header)" in caught.value.message


# --- 5. The time-of-day layout ----------------------------------------------------------------------

#: Fluvius-like export: EAN, date, unit, then 100 quarter-hour columns (elapsed time: the last four
#: only filled on the fall-back day). Rows: 2025-03-30 (spring forward: wall-clock positions, 02:00-02:45
#: blank), 2025-10-25 (a normal day, 97-100 blank and position 40 missing), 2025-10-26 (fall back, 100).
TIME_OF_DAY = FIXTURES / "time_of_day_brussels.csv"
BRUSSELS = _src(
    layout="time_of_day",
    delimiter=";",
    decimal=",",
    unit=None,
    columns={"meter_id": "EAN", "timestamp": "Datum", "unit": "Eenheid"},
    timestamp_format="%d.%m.%Y",
    timestamp_timezone="Europe/Brussels",
    series_timezone="Europe/Brussels",
    interval_minutes=15,
)


def _starts(rows: list[dict[str, Any]], source: SourceConfig) -> list[Any]:
    days = pa.chunked_array([[r["timestamp"] for r in rows]], pa.string())
    positions = pa.chunked_array([[r["position"] for r in rows]], pa.string())
    return parse_positions(days, positions, source)[0].to_pylist()


def test_time_of_day_rows_per_interval_column_across_dst(tmp_path: Path) -> None:
    lines = TIME_OF_DAY.read_text().splitlines()
    header, table = _raw(TIME_OF_DAY, BRUSSELS)
    assert header == [*CANONICAL_COLUMNS, "position", "column"]
    rows = table.filter(pc.equal(table["kind"], KIND_ROW)).to_pylist()
    per_day = {d: [r for r in rows if r["timestamp"] == d] for d in ("30.03.2025", "25.10.2025", "26.10.2025")}
    assert {d: len(r) for d, r in per_day.items()} == {"30.03.2025": 92, "25.10.2025": 96, "26.10.2025": 100}
    assert len(rows) == 288
    first = rows[0]
    assert first == first | {
        "meter_id": '="541448000000000001"', "unit": "kWh", "direction": "import", "quality": "",
        "interval_minutes": "", "position": "1", "column": "00:00 - 00:15", "line_number": 2,
        "value": lines[1].split(";")[3],
    }  # fmt: skip
    # Every cell of every line, in reading order, the value as in the file.
    for day, line_number in (("30.03.2025", 2), ("25.10.2025", 3), ("26.10.2025", 4)):
        cells = lines[line_number - 1].split(";")[3:]
        assert all(r["line_number"] == line_number for r in per_day[day])
        assert [r["value"] for r in per_day[day]] == [cells[int(r["position"]) - 1] for r in per_day[day]]
    spring = per_day["30.03.2025"]
    assert [int(r["position"]) for r in spring] == [*range(1, 9), *range(13, 97)]  # 02:00-02:45 does not exist
    assert _starts(spring, BRUSSELS)[7:9] == [utc(2025, 3, 30, 0, 45), utc(2025, 3, 30, 1)]  # 01:45 CET, 03:00 CEST
    normal = per_day["25.10.2025"]
    assert normal[39]["value"] == "" and normal[39]["position"] == "40"  # missing, but a day's interval: kept
    fall = per_day["26.10.2025"]
    assert [r["column"] for r in fall][-1] == "24:45 - 25:00"
    assert _starts(fall, BRUSSELS) == [utc(2025, 10, 25, 22) + timedelta(minutes=15 * i) for i in range(100)]
    assert len({r["row_order"] for r in rows}) == len(rows)
    parsed = parsed_readings(table, BRUSSELS, header).to_pylist()
    assert {r["meter_id"] for r in parsed} == {"541448000000000001"}
    assert [r["timestamp_status"] for r in parsed] == ["ok"] * 288
    assert [r["value_status"] for r in parsed].count("missing") == 1
    assert parsed[0]["value"] == float(lines[1].split(";")[3].replace(",", "."))


def test_time_of_day_batch_gives_complete_dst_days(platform: LocalPlatform, tmp_path: Path) -> None:
    config = (
        '[sources.s]\npath = "x.csv"\nlayout = "time_of_day"\ndelimiter = ";"\ndecimal = ","\n'
        'timestamp_format = "%d.%m.%Y"\ntimestamp_timezone = "Europe/Brussels"\nseries_timezone = "Europe/Brussels"\n'
        'interval_minutes = 15\ncolumns = { meter_id = "EAN", timestamp = "Datum", unit = "Eenheid" }\n'
    )
    result = _run(platform, tmp_path, config, TIME_OF_DAY)
    assert result.reconciliation.rows_read == 288
    assert result.rule_counts.get("value_missing") == 1
    gold = {r["local_date"]: r for r in _table(platform, "gold_daily_meter_energy")}
    assert {d: (r["expected_interval_count"], r["actual_interval_count"]) for d, r in gold.items()} == {
        date(2025, 3, 30): (92, 92),
        date(2025, 10, 25): (96, 95),  # position 40 is missing: estimated
        date(2025, 10, 26): (100, 100),
    }
    assert gold[date(2025, 10, 26)]["completeness"] == 1.0
    _one_row_per_key_and_complete_at_most(platform)


def _time_of_day_file(tmp_path: Path, days: list[tuple[str, list[str]]], columns: int) -> Path:
    names = [f"{(i * 15) // 60:02d}:{(i * 15) % 60:02d}" for i in range(columns)]
    text = "day," + ",".join(names) + "\n" + "".join(f"{d}," + ",".join(v) + "\n" for d, v in days)
    return _write(tmp_path / "tod.csv", text)


TOD = _src(
    layout="time_of_day",
    meter_id="{file_stem}",
    columns={"meter_id": None, "timestamp": "day"},
    timestamp_format="%Y-%m-%d",
    timestamp_timezone="Europe/Brussels",
    interval_minutes=15,
)


def test_time_of_day_keeps_a_value_at_a_position_the_day_lacks(tmp_path: Path) -> None:
    """Only a blank (or missing-marker) cell beyond the day is not a reading; a value there is kept."""
    cells = ["1"] * 96 + ["", "-", "7", " "]
    rows = _rows(_time_of_day_file(tmp_path, [("2025-06-10", cells)], 100), TOD)
    assert [r["position"] for r in rows[95:]] == ["96", "99"]
    assert {r["meter_id"] for r in rows} == {"tod"}  # the fixed meter id, {file_stem} replaced
    assert _starts(rows[-1:], TOD) == [None]  # fails timestamp_unparseable downstream, with its value


def test_time_of_day_date_that_does_not_parse_keeps_every_cell(tmp_path: Path) -> None:
    rows = _rows(_time_of_day_file(tmp_path, [("2025-13-01", ["1"] * 96 + [""] * 4)], 100), TOD)
    assert len(rows) == 100


def test_time_of_day_needs_a_days_worth_of_interval_columns(tmp_path: Path) -> None:
    with pytest.raises(InputFileError) as caught:
        _raw(_time_of_day_file(tmp_path, [("2025-06-10", ["1"] * 95)], 95), TOD)
    assert caught.value.line == 1
    assert "95 column(s) match interval_columns" in caught.value.message
    assert "has 96, a 25-hour day 100 (rule: interval_columns)" in caught.value.message
    with pytest.raises(InputFileError, match=r"101 column\(s\) match.*rule: interval_columns"):
        _raw(_time_of_day_file(tmp_path, [("2025-06-10", ["1"] * 101)], 101), TOD)
    # A 96-column file cannot hold the fall-back day: that line is named.
    days = [("2025-10-25", ["1"] * 96), ("2025-10-26", ["1"] * 96)]
    with pytest.raises(InputFileError) as caught:
        _raw(_time_of_day_file(tmp_path, days, 96), TOD)
    assert caught.value.line == 3
    assert "'2025-10-26' has more than 96 intervals" in caught.value.message
    assert "(rule: interval_columns)" in caught.value.message


# --- 6a. Parquet ------------------------------------------------------------------------------------


def _parquet(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _typed_table() -> pa.Table:
    return pa.table(
        {
            "meter": pa.array(["M1", None], pa.string()),
            "at": pa.array(
                [datetime(2025, 6, 1, 10), datetime(2025, 6, 1, 10, 15, 0, 500000)], pa.timestamp("us", "UTC")
            ),
            "local": pa.array([datetime(2025, 6, 1, 10), None], pa.timestamp("ms", "Europe/Brussels")),
            "naive": pa.array([datetime(2025, 6, 1, 10), datetime(2025, 6, 1, 10, 15)], pa.timestamp("ns")),
            "day": pa.array([date(2025, 6, 1), date(2025, 6, 2)], pa.date32()),
            "kwh": pa.array([0.1, 1e-7], pa.float64()),
            "f32": pa.array([0.25, 2.0], pa.float32()),
            "n": pa.array([3, None], pa.int64()),
            "dec": pa.array([Decimal("1.50"), Decimal("-2.00")], pa.decimal128(5, 2)),
            "ok": pa.array([True, False]),
            "tags": pa.array([["a", "b"], []], pa.list_(pa.string())),
            "unit": pa.array(["kWh", "kWh"]).dictionary_encode(),
            "raw": pa.array([b"ok", b"\xff\x00"], pa.binary()),
        }
    )


def test_parquet_fields_become_text_the_parser_reads(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "p.parquet", _typed_table())
    source = _src(format="parquet", columns={"meter_id": "meter", "timestamp": "at", "value": "kwh"})
    header, table = _raw(path, source)
    assert header == _typed_table().column_names
    rows = table.filter(pc.equal(table["kind"], KIND_ROW)).to_pylist()
    assert [{c: r[c] for c in header} for r in rows] == [
        {"meter": "M1", "at": "2025-06-01T10:00:00+00:00", "local": "2025-06-01T12:00:00+02:00",
         "naive": "2025-06-01T10:00:00", "day": "2025-06-01", "kwh": "0.1", "f32": "0.25", "n": "3", "dec": "1.50",
         "ok": "true", "tags": '["a", "b"]', "unit": "kWh", "raw": "ok"},
        {"meter": "", "at": "2025-06-01T10:15:00.5+00:00", "local": "", "naive": "2025-06-01T10:15:00",
         "day": "2025-06-02", "kwh": "1e-7", "f32": "2", "n": "", "dec": "-2.00", "ok": "false", "tags": "[]",
         "unit": "kWh", "raw": "0xff00"},
    ]  # fmt: skip
    assert [r["line_number"] for r in rows] == [1, 2]  # for Parquet a line is a row number
    parsed = parsed_readings(table, source, header).cast(parsed_schema(header))
    half = timedelta(seconds=0.5)
    assert parsed["interval_start_utc"].to_pylist() == [utc(2025, 6, 1, 10), utc(2025, 6, 1, 10, 15) + half]
    assert parsed["value"].to_pylist() == [0.1, 1e-7]


def test_parquet_head_is_its_schema_however_large_the_file(tmp_path: Path) -> None:
    n = 200_000
    table = pa.table(
        {"meter_id": ["M"] * n, "timestamp": pa.array(range(n), pa.int64()), "value": pa.array(range(n), pa.float64())}
    )
    path = _parquet(tmp_path / "big.parquet", table)
    assert path.stat().st_size > 2 * HEAD_BYTES
    head = read_head(path)
    assert len(head) < HEAD_BYTES and head[:4] == head[-4:] == b"PAR1"
    source = _src(format="parquet")
    assert read_header(str(path), head, source) == ["meter_id", "timestamp", "value"]
    rows = _rows(path, source)
    assert len(rows) == n and rows[-1]["line_number"] == n and rows[-1]["value"] == "199999"


def test_parquet_checks_names_and_format(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "p.parquet", pa.table({"meter_id": ["M"], "ts": ["x"], "value": [1.0]}))
    with pytest.raises(InputFileError, match=r"missing required column\(s\) timestamp"):
        _raw(path, _src(format="parquet"))
    renamed = _src(format="parquet", header=("meter_id", "timestamp", "value"))
    assert _raw(path, renamed)[0] == ["meter_id", "timestamp", "value"]
    with pytest.raises(
        InputFileError, match=r"schema has 3 column\(s\) but the source's `header` names 2 \(rule: header\)"
    ):
        _raw(path, _src(format="parquet", header=("a", "b")))
    text = _write(tmp_path / "t.parquet", "meter_id,timestamp,value\nM,x,1\n")
    with pytest.raises(InputFileError, match=r"is not a Parquet file \(rule: format\)"):
        _raw(text, _src(format="parquet"))
    empty = _parquet(tmp_path / "e.parquet", pa.table({"meter_id": pa.array([], pa.string())}))
    with pytest.raises(InputFileError, match="has a schema but no rows"):
        _raw(empty, _src(format="parquet", columns={"timestamp": "meter_id", "value": "meter_id"}))


def test_parquet_wide_and_time_of_day_layouts(tmp_path: Path) -> None:
    wide = _src(
        format="parquet",
        layout="wide",
        columns={"meter_id": "site", "timestamp": "at"},
        series=(SeriesColumn(column="imp"), SeriesColumn(column="exp", direction="export")),
    )
    stamps = pa.array([datetime(2025, 6, 1, 10)], pa.timestamp("s", "UTC"))
    path = _parquet(tmp_path / "w.parquet", pa.table({"site": ["S"], "at": stamps, "imp": [1.0], "exp": [0.5]}))
    rows = _rows(path, wide)
    assert [(r["meter_id"], r["timestamp"], r["value"], r["direction"], r["column"]) for r in rows] == [
        ("S", "2025-06-01T10:00:00+00:00", "1", "import", "imp"),
        ("S", "2025-06-01T10:00:00+00:00", "0.5", "export", "exp"),
    ]
    hourly = {f"{h:02d}:00": [float(h)] for h in range(24)}
    tod = _src(format="parquet", layout="time_of_day", meter_id="M", columns={"timestamp": "day"}, interval_minutes=60)
    path = _parquet(tmp_path / "t.parquet", pa.table({"day": pa.array([date(2025, 6, 1)], pa.date32()), **hourly}))
    rows = _rows(path, tod)
    assert [(r["timestamp"], r["position"], r["value"]) for r in rows][:2] == [
        ("2025-06-01", "1", "0"),
        ("2025-06-01", "2", "1"),
    ]
    assert len(rows) == 24 and _starts(rows, tod)[-1] == utc(2025, 6, 1, 23)


# --- 6b. gzip and ZIP inputs --------------------------------------------------------------------------

CSV = "meter_id,timestamp,value\nM1,2025-06-10T00:00Z,1\nM1,2025-06-10T00:30Z,2\n"


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return _write(path, buffer.getvalue())


def test_gzip_and_one_file_zip_read_as_their_content(tmp_path: Path) -> None:
    plain = _rows(_write(tmp_path / "a.csv", CSV), _src())
    expected = [(r["timestamp"], r["value"], r["line_number"]) for r in plain]
    packed = [
        _write(tmp_path / "a.csv.gz", gzip.compress(CSV.encode())),
        _write(tmp_path / "gzip_named.csv", gzip.compress(CSV.encode())),  # by its magic bytes
        _zip(tmp_path / "a.zip", {"export/a.csv": CSV.encode()}),
        _zip(tmp_path / "mac.zip", {"a.csv": CSV.encode(), "__MACOSX/._a.csv": b"\x00\x05"}),
        _zip(tmp_path / "nested.zip", {"a.csv.gz": gzip.compress(CSV.encode())}),
    ]
    for path in packed:
        rows = _rows(path, _src())
        assert [(r["timestamp"], r["value"], r["line_number"]) for r in rows] == expected, path.name
        assert {r["source_file"] for r in rows} == {str(path)}
    assert sha256_of(packed[0]) != sha256_of(tmp_path / "a.csv")  # the checksum is of the file as stored


def test_read_head_unpacks_a_bounded_start(tmp_path: Path) -> None:
    body = "".join(f"M1,2025-06-10T00:00Z,{i}\n" for i in range(20_000))
    big = _write(tmp_path / "big.csv.gz", gzip.compress(("meter_id,timestamp,value\n" + body).encode()))
    head = read_head(big)
    assert len(head) == HEAD_BYTES and head.startswith(b"meter_id,timestamp,value\nM1,")
    zipped = _zip(tmp_path / "big.zip", {"big.csv": ("meter_id,timestamp,value\n" + body).encode()})
    assert read_head(zipped) == head
    parquet = io.BytesIO()
    pq.write_table(pa.table({"meter_id": ["M"], "timestamp": ["x"], "value": [1.0]}), parquet)
    in_zip = _zip(tmp_path / "p.zip", {"p.parquet": parquet.getvalue()})
    assert read_header(str(in_zip), read_head(in_zip), _src(format="parquet")) == ["meter_id", "timestamp", "value"]
    assert [r["value"] for r in _rows(in_zip, _src(format="parquet"))] == ["1"]


def test_archives_that_cannot_be_read_say_why(tmp_path: Path) -> None:
    two = _zip(tmp_path / "two.zip", {"a.csv": b"x", "b.csv": b"y"})
    with pytest.raises(InputFileError, match=r"ZIP archive with 2 member file\(s\) \(a.csv, b.csv\).*rule: archive"):
        _raw(two, _src())
    with pytest.raises(InputFileError, match=r"ZIP archive with 0 member file\(s\) \(none\)"):
        _raw(_zip(tmp_path / "none.zip", {}), _src())
    workbook = _zip(
        tmp_path / "book.csv", {"[Content_Types].xml": b"<x/>", "xl/workbook.xml": b"<x/>", "xl/sheet1.xml": b"<x/>"}
    )
    with pytest.raises(InputFileError, match=r"is a ZIP archive holding an Excel workbook.*export the sheet as CSV"):
        _raw(workbook, _src())
    with pytest.raises(InputFileError, match=r"is named \.gz but is not gzip-compressed.*rule: archive"):
        _raw(_write(tmp_path / "plain.csv.gz", CSV), _src())
    truncated = _write(tmp_path / "cut.csv.gz", gzip.compress(CSV.encode())[:-12])
    with pytest.raises(InputFileError, match=r"is gzip-compressed but cannot be unpacked.*rule: archive"):
        _raw(truncated, _src())
    with pytest.raises(InputFileError, match=r"is xz-compressed"):
        _raw(_write(tmp_path / "x.csv", b"\xfd7zXZ\x00\x00rest"), _src())


def test_errors_in_unpacked_content_say_where_the_line_is(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.csv.gz", gzip.compress(b"meter_id,timestamp,value\n"))
    with pytest.raises(InputFileError) as caught:
        _raw(path, _src())
    assert caught.value.line == 1
    assert caught.value.message == "has a header but no data rows (in the gzip-decompressed file)"
    zipped = _zip(tmp_path / "b.zip", {"in/b.csv": b"meter_id,timestamp,value\nM1,2025-06-10T00:00Z,\xff\n"})
    with pytest.raises(InputFileError) as caught:
        _raw(zipped, _src())
    assert caught.value.line == 2 and "(in ZIP member 'in/b.csv')" in caught.value.message


def test_a_folder_takes_compressed_files_of_the_format(tmp_path: Path) -> None:
    for name in ("a.csv", "b.csv.gz", "c.zip", "d.xml", "e.xml.gz", "f.parquet", "g.json.gz"):
        _write(tmp_path / name, "x")
    assert [p.name for p in resolve_inputs(str(tmp_path))] == ["a.csv", "b.csv.gz", "c.zip"]
    assert [p.name for p in resolve_inputs(str(tmp_path), "greenbutton")] == ["c.zip", "d.xml", "e.xml.gz"]
    assert [p.name for p in resolve_inputs(str(tmp_path), "parquet")] == ["c.zip", "f.parquet"]


def test_a_batch_of_compressed_files(platform: LocalPlatform, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _write(folder / "a.csv.gz", gzip.compress(CSV.encode()))
    _zip(folder / "b.zip", {"b.csv": CSV.replace("M1", "M2").encode()})
    config = '[sources.s]\npath = "in"\nunit = "kWh"\n'
    result = _run(platform, tmp_path, config, folder)
    assert result.reconciliation.rows_read == 4
    silver = [r for r in _table(platform, "silver_readings") if r["estimation_method"] is None]
    assert sorted((r["meter_id"], r["source_file"], r["line_number"]) for r in silver) == [
        ("M1", str(folder / "a.csv.gz"), 2),
        ("M1", str(folder / "a.csv.gz"), 3),
        ("M2", str(folder / "b.zip"), 2),
        ("M2", str(folder / "b.zip"), 3),
    ]
