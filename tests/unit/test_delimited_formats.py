"""Delimited files as real sources publish them: reader options, wide layout, registers, DST.

The first part reads the real public files in `examples/data` (see its README for
provenance; each test names its file, repository and commit) with a SourceConfig such as
an example config would declare, and checks the reader and parser against counts taken
independently from the file text. The second part pins each rule on tiny inline files.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from app.domain.errors import InputFileError
from app.domain.parsing import parse_timestamps, parse_values, parsed_readings, parsed_schema
from app.domain.sources import CANONICAL_COLUMNS, ColumnMapping, SeriesColumn, SourceConfig
from app.infrastructure import readers
from app.infrastructure.readers import (
    HEAD_BYTES,
    KIND_ERROR,
    KIND_MALFORMED,
    KIND_ROW,
    RawFile,
    raw_read_table,
    read_header,
    read_schema,
    resolve_inputs,
)

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


class Read:
    """One file through the reader and the parser, as the pipeline does it."""

    def __init__(self, source: SourceConfig, path: Path, data: bytes | None = None) -> None:
        data = path.read_bytes() if data is None else data
        self.header = read_header(str(path), data[:HEAD_BYTES], source)
        self.raw = raw_read_table(0, str(path), data, source, self.header)
        kinds = self.raw["kind"]
        self.rows = self.raw.filter(pc.equal(kinds, KIND_ROW))
        self.malformed = self.raw.filter(pc.equal(kinds, KIND_MALFORMED))
        self.errors = self.raw.filter(pc.equal(kinds, KIND_ERROR))
        self.parsed = parsed_readings(self.rows, source, self.header).cast(parsed_schema(self.header))
        self.records = self.parsed.to_pylist()

    def count(self, column: str) -> Counter[Any]:
        return Counter(self.parsed[column].to_pylist())

    def keys(self) -> set[tuple[Any, ...]]:
        """Distinct series intervals (meter, direction, unit, UTC start) among rows with a start."""
        return {
            (r["meter_id"], r["direction"], r["unit"], r["interval_start_utc"])
            for r in self.records
            if r["interval_start_utc"] is not None
        }


def _data_lines(path: Path, encoding: str, skip: int = 1) -> list[list[str]]:
    """The file's non-blank lines after `skip` lines, split on ';' (none of these files quote)."""
    lines = path.read_text(encoding).splitlines()[skip:]
    return [line.split(";") for line in lines if line.strip()]


def _only(folder: str, prefix: str) -> Path:
    (path,) = sorted((DATA / folder).glob(prefix + "*"))
    return path


# --- Fluvius ------------------------------------------------------------------------------------
# Files: examples/data/fluvius/ from patrickvorgers/Home-Assistant-Import-Energy-Data @
# 3d2ee1837114072293998836c14643c9fd8dffc9, `Datasources/Fluvius/Sample files/` (MIT).
# Belgian DSO exports: ';', decimal comma, UTF-8 BOM, ="EAN" Excel escaping, empty volume
# ("No consumption"), a register name per row, local time whose fall-back hour repeats.

FLUVIUS_EN = SourceConfig(
    name="fluvius_electricity",
    path="fluvius/*.csv",
    delimiter=";",
    decimal=",",
    columns=ColumnMapping(
        meter_id="EAN code",
        timestamp=("From (date)", "From (time)"),
        value="Volume",
        unit="Unit",
        direction="Register",
        quality="Validation status",
    ),
    timestamp_format="%d/%m/%Y %H:%M:%S",
    timestamp_timezone="Europe/Brussels",
    series_timezone="Europe/Brussels",
    interval_minutes=15,
    ambiguous_time="order",
    direction_values={
        "Offtake Day": "import",
        "Offtake Night": "import",
        "Injection Day": "export",
        "Injection Night": "export",
    },
    quality_values={"Read": "actual", "No consumption": "actual", "Estimated": "estimated"},
)

FLUVIUS_NL = FLUVIUS_EN.model_copy(
    update={
        "name": "fluvius_elektriciteit",
        "columns": ColumnMapping(
            meter_id="EAN",
            timestamp=("Van datum", "Van tijdstip"),
            value="Volume",
            unit="Eenheid",
            direction="Register",
            quality="Validatiestatus",
        ),
        "timestamp_format": "%d-%m-%Y %H:%M:%S",
        "direction_values": {
            "Afname Dag": "import",
            "Afname Nacht": "import",
            "Injectie Dag": "export",
            "Injectie Nacht": "export",
        },
        "quality_values": {"Gevalideerd": "actual", "Geen verbruik": "actual", "Geschat": "estimated"},
    }
)

FLUVIUS_GAS = FLUVIUS_EN.model_copy(
    update={"name": "fluvius_gas", "interval_minutes": 60, "direction_values": {"Offtake": "import"}}
)


def test_fluvius_english_electricity() -> None:
    path = _only("fluvius", "Consumption_history_electricity")
    lines = _data_lines(path, "utf-8-sig")
    read = Read(FLUVIUS_EN, path)

    assert read.header[0] == "From (date)"  # the BOM is not part of the first name
    assert read.rows.num_rows == len(lines) == 13640
    assert read.malformed.num_rows == 0 and read.errors.num_rows == 0
    assert read.rows["line_number"].to_pylist() == list(range(2, len(lines) + 2))
    assert read.count("meter_id") == {"123456879123456789": len(lines)}  # ="..." unescaped
    assert read.count("timestamp_status") == {"ok": len(lines)}
    empty = sum(1 for f in lines if f[8] == "")
    assert read.count("value_status") == {"ok": len(lines) - empty, "missing": empty} == {"ok": 13638, "missing": 2}
    offtake = sum(1 for f in lines if f[7].startswith("Offtake"))
    assert read.count("direction") == {"import": offtake, "export": len(lines) - offtake}
    assert read.count("quality") == {"actual": len(lines)}
    assert read.count("unit") == {"kwh": len(lines)}
    assert read.count("interval_minutes") == {15: len(lines)}
    # Decimal comma: line 4 is "Offtake Night;0,173".
    assert (read.records[2]["line_number"], read.records[2]["value"]) == (4, 0.173)

    # 29/10/2023 02:00-02:45 appears twice per register, without a marker: by order of
    # appearance the first is CEST (00:xx UTC), the second CET (01:xx UTC).
    repeated = [r for r in read.records if r["raw_0"] == "29/10/2023" and r["raw_1"].startswith("02:")]
    assert len(repeated) == sum(1 for f in lines if f[0] == "29/10/2023" and f[1].startswith("02:")) == 16
    starts = sorted(r["interval_start_utc"] for r in repeated if r["direction"] == "import")
    assert starts == [utc(2023, 10, 29, 0, 0) + timedelta(minutes=15 * i) for i in range(8)]
    assert Counter(r["occurrence"] for r in repeated) == {0: 8, 1: 8}
    assert len(read.keys()) == len(lines)  # every row its own interval
    day = Counter(r["direction"] for r in read.records if r["local_date"] == date(2023, 10, 29))
    assert day == {"import": 100, "export": 100}  # a 25-hour day of quarter-hours


def test_fluvius_dutch_electricity() -> None:
    path = _only("fluvius", "Verbruikshistoriek_elektriciteit")
    lines = _data_lines(path, "utf-8-sig")
    read = Read(FLUVIUS_NL, path)

    assert read.header[0] == "Van datum"
    assert read.rows.num_rows == len(lines) == 3848  # the last line has no line end
    assert read.malformed.num_rows == 0
    empty = sum(1 for f in lines if f[8] == "")
    assert read.count("value_status") == {"ok": len(lines) - empty, "missing": empty}
    estimated = sum(1 for f in lines if f[10] == "Geschat")
    assert (
        read.count("quality")
        == {"actual": len(lines) - estimated, "estimated": estimated}
        == {
            "actual": 3494,
            "estimated": 354,
        }
    )
    afname = sum(1 for f in lines if f[7].startswith("Afname"))
    assert read.count("direction") == {"import": afname, "export": len(lines) - afname}
    assert read.count("timestamp_status") == {"ok": len(lines)}
    assert len(read.keys()) == len(lines)
    fall_back = [r for r in read.records if r["local_date"] == date(2021, 10, 31)]
    assert len(fall_back) == sum(1 for f in lines if f[0] == "31-10-2021") == 200


def test_fluvius_gas_keeps_both_units_and_the_repeated_hour_apart() -> None:
    path = _only("fluvius", "Consumption_history_gas")
    lines = _data_lines(path, "utf-8-sig")
    read = Read(FLUVIUS_GAS, path)

    assert read.rows.num_rows == len(lines) == 3398
    cubic = sum(1 for f in lines if f[9] == "m³")
    assert read.count("unit") == {"m³": cubic, "kwh": len(lines) - cubic} == {"m³": 1699, "kwh": 1699}
    assert read.count("direction") == {"import": len(lines)}
    assert read.count("interval_minutes") == {60: len(lines)}
    # 02:00 on 29/10/2023 comes twice for each unit: two hours, per unit.
    repeated = [r for r in read.records if r["raw_0"] == "29/10/2023" and r["raw_1"] == "02:00:00"]
    assert sorted((r["unit"], r["interval_start_utc"]) for r in repeated) == [
        ("kwh", utc(2023, 10, 29, 0)),
        ("kwh", utc(2023, 10, 29, 1)),
        ("m³", utc(2023, 10, 29, 0)),
        ("m³", utc(2023, 10, 29, 1)),
    ]
    assert len(read.keys()) == len(lines)


# --- DSMR reader ----------------------------------------------------------------------------------
# File: examples/data/dsmr/dsmrreader-data-export-hour.csv from
# patrickvorgers/Home-Assistant-Import-Energy-Data @ 3d2ee1837114072293998836c14643c9fd8dffc9,
# `Datasources/DSMR-reader/Sample files/dsmrreader-data-export-hour.csv` (MIT).
# Wide hourly file, ISO 8601 with offsets; the gas column is m³, not a series here.

DSMR_COLUMNS = {
    "Electricity 1 (Dutch Users: Low Tariff)": ("{file_stem}_t1", "import"),
    "Electricity 2 (Dutch Users: Normal Tariff)": ("{file_stem}_t2", "import"),
    "Electricity 1 Returned (Dutch Users: Low Tariff)": ("{file_stem}_t1", "export"),
    "Electricity 2 Returned (Dutch Users: Normal Tariff)": ("{file_stem}_t2", "export"),
}
DSMR = SourceConfig(
    name="dsmr",
    path="dsmr/*.csv",
    layout="wide",
    columns=ColumnMapping(timestamp="Hour Start"),
    series=tuple(
        SeriesColumn(column=c, meter_id=m, direction=d)  # type: ignore[arg-type]
        for c, (m, d) in DSMR_COLUMNS.items()
    ),
    unit="kWh",
    interval_minutes=60,
    timestamp_timezone="Europe/Amsterdam",
    series_timezone="Europe/Amsterdam",
)


def test_dsmr_hourly_wide_file() -> None:
    path = DATA / "dsmr" / "dsmrreader-data-export-hour.csv"
    lines = [line.split(",") for line in path.read_text().splitlines()[1:] if line]
    read = Read(DSMR, path)

    assert read.header == [*CANONICAL_COLUMNS, "column"]
    assert read.rows.num_rows == 4 * len(lines) == 35016
    assert read.rows["line_number"].to_pylist()[:8] == [2, 2, 2, 2, 3, 3, 3, 3]  # line-major
    stem = path.stem
    assert read.count("meter_id") == {f"{stem}_t1": 2 * len(lines), f"{stem}_t2": 2 * len(lines)}
    assert read.count("direction") == {"import": 2 * len(lines), "export": 2 * len(lines)}
    assert read.count("timestamp_status") == {"ok": 4 * len(lines)}
    assert read.count("value_status") == {"ok": 4 * len(lines)}
    assert read.count("unit") == {"kwh": 4 * len(lines)}
    # The gas column is no series: each line gives exactly the four electricity values.
    assert read.rows["value"].to_pylist()[:8] == [*lines[0][1:5], *lines[1][1:5]]
    # 2024-10-27T02:00:00+02:00 then 02:00:00+01:00: two hours.
    repeated = [r for r in read.records if r["raw_1"].startswith("2024-10-27T02:00") and r["meter_id"].endswith("t1")]
    assert sorted(r["interval_start_utc"] for r in repeated if r["direction"] == "import") == [
        utc(2024, 10, 27, 0),
        utc(2024, 10, 27, 1),
    ]
    assert len(read.keys()) == 4 * len(lines)
    first = read.records[0]
    assert (first["interval_start_utc"], first["value"], first["local_date"]) == (
        utc(2023, 12, 31, 23),
        0.196,
        date(2024, 1, 1),
    )


# --- German TSO wind files --------------------------------------------------------------------------
# Files: examples/data/tso_wind/ from Open-Power-System-Data/time_series @
# cc7ef860c5e1d7886a2f4568263a99bc0252a7b1, `downloads/` (MIT; operators' terms apply).

TENNET = SourceConfig(
    name="tennet_wind",
    path="tso_wind/TenneT_*.csv",
    delimiter=";",
    encoding="latin-1",
    skip_lines=3,
    trim_trailing_delimiters=True,
    fill_down=("Datum",),
    layout="wide",
    columns=ColumnMapping(timestamp="Datum", position="Position"),
    series=(
        SeriesColumn(column="tatsächlich [MW]", meter_id="tennet_wind_actual"),
        SeriesColumn(column="prognostiziert [MW]", meter_id="tennet_wind_forecast"),
    ),
    unit_pattern=r"\[(?P<unit>[A-Za-z]+)\]",
    timestamp_format="%Y-%m-%d",
    timestamp_timezone="Europe/Berlin",
    series_timezone="Europe/Berlin",
    interval_minutes=15,
)


def _tennet_lines(path: Path) -> list[tuple[str, int, list[str]]]:
    """(date, position, fields) per data line, the date filled down by hand."""
    out, day = [], ""
    for fields in _data_lines(path, "latin-1", skip=4):
        day = fields[0] or day
        out.append((day, int(fields[1]), fields))
    return out


def test_tennet_march_2006_positions_and_the_zero_filled_spring_forward_hour() -> None:
    path = _only("tso_wind", "TenneT_wind_2006-03-01")
    lines = _tennet_lines(path)
    read = Read(TENNET, path)

    assert read.header == [*CANONICAL_COLUMNS, "position", "column"]
    assert read.rows.num_rows == 2 * len(lines) == 5952
    assert read.rows["line_number"].to_pylist()[:4] == [5, 5, 6, 6]  # after 3 title lines and the header
    assert read.count("unit") == {"mw": 2 * len(lines)}
    assert set(read.rows["timestamp"].to_pylist()) == {d for d, _, _ in lines}  # Datum filled down
    positions = Counter(d for d, _, _ in lines)
    assert set(positions.values()) == {96}  # the short day too: wall-clock positions
    gap = [(d, p, f) for d, p, f in lines if d == "2006-03-26" and 9 <= p <= 12]
    assert [f[2:5] for _, _, f in gap] == [["0", "0", "0"]] * 4
    assert read.count("timestamp_status") == {"ok": 2 * (len(lines) - len(gap)), "dst_gap": 2 * len(gap)}
    by_position = {(r["raw_1"], int(r["raw_7"]), r["meter_id"]): r["interval_start_utc"] for r in read.records}
    assert by_position[("2006-03-26", 8, "tennet_wind_actual")] == utc(2006, 3, 26, 0, 45)
    assert by_position[("2006-03-26", 13, "tennet_wind_actual")] == utc(2006, 3, 26, 1, 0)
    assert by_position[("2006-03-27", 1, "tennet_wind_actual")] == utc(2006, 3, 26, 22, 0)
    assert by_position[("2006-03-01", 1, "tennet_wind_actual")] == utc(2006, 2, 28, 23, 0)
    assert len(read.keys()) == 2 * (len(lines) - len(gap))


def test_tennet_october_2006_runs_to_position_100_on_the_long_day() -> None:
    path = _only("tso_wind", "TenneT_wind_2006-10-01")
    lines = _tennet_lines(path)
    read = Read(TENNET, path)

    assert read.rows.num_rows == 2 * len(lines) == 5960
    assert max(p for d, p, _ in lines if d == "2006-10-29") == 100
    assert read.count("timestamp_status") == {"ok": 2 * len(lines)}
    long_day = sorted(
        r["interval_start_utc"] for r in read.records if r["raw_1"] == "2006-10-29" and r["meter_id"].endswith("actual")
    )
    assert long_day == [utc(2006, 10, 28, 22, 0) + timedelta(minutes=15 * i) for i in range(100)]
    assert {r["local_date"] for r in read.records if r["raw_1"] == "2006-10-29"} == {date(2006, 10, 29)}
    assert len(read.keys()) == 2 * len(lines)


TRANSNETBW = SourceConfig(
    name="transnetbw_wind",
    path="tso_wind/TransnetBW_*.csv",
    delimiter=";",
    decimal=",",
    trim_trailing_delimiters=True,
    layout="wide",
    columns=ColumnMapping(timestamp=("Datum von", "Uhrzeit von")),
    series=(
        SeriesColumn(column="Ist-Wert (MW)", meter_id="transnetbw_wind_actual"),
        SeriesColumn(column="Prognose (MW)", meter_id="transnetbw_wind_forecast"),
    ),
    unit_pattern=r"\((?P<unit>[A-Za-z]+)\)",
    timestamp_format="%d.%m.%Y %H:%M:%S",
    timestamp_timezone="Europe/Berlin",
    series_timezone="Europe/Berlin",
    interval_minutes=15,
    ambiguous_time="order",
)


def test_transnetbw_october_2015_fall_back_quirks() -> None:
    path = _only("tso_wind", "TransnetBW_wind_1[")
    lines = _data_lines(path, "ascii")
    read = Read(TRANSNETBW, path)

    assert read.rows.num_rows == 2 * len(lines) == 5960
    assert read.count("timestamp_status") == {"ok": 2 * len(lines)}
    assert read.count("value_status") == {"ok": 2 * len(lines)}
    forecast = [r["value"] for r in read.records if r["meter_id"].endswith("forecast")]
    assert forecast[0] == 366.0  # "366,00"
    actual = {r["line_number"]: r["interval_start_utc"] for r in read.records if r["meter_id"].endswith("actual")}
    # 02:00-02:30 twice (first CEST, then CET); the first 02:45 is labelled "02:45 until 02:00",
    # the second "03:45 until 03:00", so 03:45 appears twice and 01:45 UTC has no row.
    assert [actual[line] for line in range(2314, 2326)] == [
        utc(2015, 10, 25, 0, 0),
        utc(2015, 10, 25, 0, 15),
        utc(2015, 10, 25, 0, 30),
        utc(2015, 10, 25, 0, 45),
        utc(2015, 10, 25, 1, 0),
        utc(2015, 10, 25, 1, 15),
        utc(2015, 10, 25, 1, 30),
        utc(2015, 10, 25, 2, 45),
        utc(2015, 10, 25, 2, 0),
        utc(2015, 10, 25, 2, 15),
        utc(2015, 10, 25, 2, 30),
        utc(2015, 10, 25, 2, 45),
    ]
    stamps = Counter((f[0], f[1]) for f in lines)
    repeated_elsewhere = sum(n - 1 for (d, t), n in stamps.items() if n > 1 and not (d == "25.10.2015" and t < "03:"))
    assert repeated_elsewhere == 1
    assert len(read.keys()) == 2 * (len(lines) - repeated_elsewhere)


@pytest.mark.parametrize("name", ["TransnetBW_wind_8[", "TransnetBW_wind_8(mwindeinsp_ist_prognose_2015_03.csv)_KOR"])
def test_transnetbw_march_2015_original_and_corrected(name: str) -> None:
    path = _only("tso_wind", name)
    lines = _data_lines(path, "ascii")
    read = Read(TRANSNETBW, path)

    assert read.rows.num_rows == 2 * len(lines) == 2 * 2972
    assert not [f for f in lines if f[0] == "29.03.2015" and f[1].startswith("02:")]
    assert read.count("timestamp_status") == {"ok": 2 * len(lines)}
    empty = sum(1 for f in lines for v in f[4:6] if v == "")
    assert read.count("value_status") == {"ok": 2 * len(lines) - empty, "missing": empty}
    assert empty == 92
    # The original mislabels 03:45-04:45 on 29.03.2015 as 05:xx; the corrected re-issue does not.
    distinct = len({(f[0], f[1]) for f in lines})
    assert len(read.keys()) == 2 * distinct
    assert distinct == (2967 if name.endswith("[") else 2972)


# --- UCI household power consumption ---------------------------------------------------------------
# File: examples/data/uci_household/household_power_consumption.txt, the first 1 MiB of the
# UCI file, from LucasGigli/HVAC-Anomaly-detection @ af1abe3eb2b1b10d78b1df7fd4369be002292fa7,
# `household_power_consumption.txt` (CC BY 4.0, UCI). ';', '?' missing, d/m/yyyy, CRLF,
# naive French local time, last line cut mid-row; minute averages of kW.

UCI = SourceConfig(
    name="uci_household",
    path="uci_household/*.txt",
    delimiter=";",
    meter_id="{file_stem}",
    columns=ColumnMapping(meter_id=None, timestamp=("Date", "Time"), value="Global_active_power"),
    unit="kW",
    interval_minutes=1,
    timestamp_format="%d/%m/%Y %H:%M:%S",
    timestamp_timezone="Europe/Paris",
    series_timezone="Europe/Paris",
)


def test_uci_household_minutes() -> None:
    path = DATA / "uci_household" / "household_power_consumption.txt"
    lines = path.read_bytes().split(b"\r\n")
    complete = [line for line in lines[1:] if line.count(b";") == 8]
    cut = [line for line in lines[1:] if line and line.count(b";") != 8]
    read = Read(UCI, path)

    assert read.rows.num_rows == len(complete) == 15922
    assert len(cut) == 1 and read.malformed.num_rows == 1
    assert read.malformed["line_number"].to_pylist() == [len(lines)]  # the last, physical line
    assert read.malformed["detail"].to_pylist() == [cut[0].decode()]
    question = sum(1 for line in complete if line.split(b";")[2] == b"?")
    assert (
        read.count("value_status")
        == {"ok": len(complete) - question, "missing": question}
        == {
            "ok": 15920,
            "missing": 2,
        }
    )
    assert read.count("meter_id") == {"household_power_consumption": len(complete)}
    assert read.count("unit") == {"kw": len(complete)}
    assert read.count("interval_minutes") == {1: len(complete)}
    assert read.count("timestamp_status") == {"ok": len(complete)}
    assert read.records[0]["interval_start_utc"] == utc(2006, 12, 16, 16, 24)  # 17:24 CET
    assert len(read.keys()) == len(complete)


# --- AEMO ------------------------------------------------------------------------------------------
# Files: examples/data/aemo/ from ReLIFE-Project-EU/relife-data-structure @
# 82db14747fb9f9edb0de75210d72fd6a2ea190cb, `samples/aemo_price_demand/` (source AEMO,
# reuse with attribution). 5-minute regional demand, timestamps mark the interval END in
# fixed UTC+10 market time, slash dates.

AEMO = SourceConfig(
    name="aemo_demand",
    path="aemo/*.csv",
    columns=ColumnMapping(meter_id="REGION", timestamp="SETTLEMENTDATE", value="TOTALDEMAND"),
    unit="MW",
    interval_minutes=5,
    timestamp_format="%Y/%m/%d %H:%M:%S",
    timestamp_timezone="+10:00",
    timestamp_label="end",
    series_timezone="Australia/Brisbane",
)


@pytest.mark.parametrize(
    ("name", "region", "first"),
    [
        ("aemo_price_demand_202501_NSW", "NSW1", utc(2024, 12, 31, 14, 0)),
        ("aemo_price_demand_202501_QLD", "QLD1", utc(2024, 12, 31, 14, 0)),
        ("aemo_price_demand_202502_NSW", "NSW1", utc(2025, 1, 31, 14, 0)),
    ],
)
def test_aemo_interval_end_timestamps(name: str, region: str, first: datetime) -> None:
    path = DATA / "aemo" / f"{name}.csv"
    lines = [line for line in path.read_text().splitlines()[1:] if line]
    read = Read(AEMO, path)

    assert read.rows.num_rows == len(lines)
    assert read.count("meter_id") == {region: len(lines)}
    assert read.count("timestamp_status") == {"ok": len(lines)}
    assert read.count("value_status") == {"ok": len(lines)}
    starts = read.parsed["interval_start_utc"].to_pylist()
    # "…/01 00:05:00" ends the first interval: it starts 5 minutes earlier, 10 hours before UTC.
    assert starts[0] == first
    assert starts == [first + timedelta(minutes=5 * i) for i in range(len(lines))]
    assert read.records[0]["local_date"] == (first + timedelta(hours=10)).date()


# --- EIA-930 ---------------------------------------------------------------------------------------
# Files: examples/data/eia930/ from truggles/EIA_Cleaned_Hourly_Electricity_Demand_Data @
# b80145df5f92aba56c52ed45281831b93543fb3b,
# `data/release_2025_Jan_include_subregions/original_eia_files/` (CC BY 4.0).
# Naive UTC hours, MISSING / EMPTY markers, a 2,147,480,000 MW placeholder, negatives.

EIA = SourceConfig(
    name="eia930",
    path="eia930/*.csv",
    meter_id="{file_stem}",
    columns=ColumnMapping(meter_id=None, timestamp="date_time", value="demand (MW)"),
    unit="MW",
    interval_minutes=60,
    missing_values=("MISSING", "EMPTY", ""),
)


@pytest.mark.parametrize("name", ["PJM", "SEC", "TVA"])
def test_eia930_hourly_demand(name: str) -> None:
    path = DATA / "eia930" / f"{name}.csv"
    values = [line.split(",")[1] for line in path.read_text().splitlines()[1:] if line]
    read = Read(EIA, path)

    assert read.rows.num_rows == len(values) == 43848
    markers = sum(1 for v in values if v in ("MISSING", "EMPTY"))
    assert read.count("value_status") == {"ok": len(values) - markers, "missing": markers}
    assert markers == {"PJM": 116, "SEC": 239, "TVA": 48}[name]
    assert read.count("meter_id") == {name: len(values)}
    assert read.count("timestamp_status") == {"ok": len(values)}
    starts = read.parsed["interval_start_utc"].to_pylist()
    assert starts[0] == utc(2020, 1, 1) and starts[-1] == utc(2024, 12, 31, 23)
    parsed = [v for v in read.parsed["value"].to_pylist() if v is not None]
    assert sum(1 for v in parsed if v < 0) == sum(1 for v in values if v.startswith("-"))
    assert (2147480000.0 in parsed) == ("2147480000" in values) == (name == "PJM")


# --- Reader options on inline files ------------------------------------------------------------------


def _src(**changes: Any) -> SourceConfig:
    fields: dict[str, Any] = {"name": "t", "path": "x.csv", "unit": "kWh"}
    fields.update(changes)
    return SourceConfig(**fields)


def _read_text(tmp_path: Path, text: str | bytes, source: SourceConfig, name: str = "in.csv") -> Read:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return Read(source, path)


def _file_error(tmp_path: Path, data: bytes, source: SourceConfig, name: str = "bad.csv") -> InputFileError:
    path = tmp_path / name
    path.write_bytes(data)

    def read() -> None:  # as the pipeline does: the header first, then the file's error row
        header = read_header(str(path), data[:HEAD_BYTES], source)
        raw = raw_read_table(0, str(path), data, source, header)
        detail = raw.filter(pc.equal(raw["kind"], KIND_ERROR)).to_pylist()
        if detail:
            raise InputFileError(str(path), detail[0]["detail"], line=detail[0]["line_number"])

    with pytest.raises(InputFileError) as error:
        read()
    return error.value


def test_skip_lines_keeps_physical_line_numbers(tmp_path: Path) -> None:
    text = "Title\n\nmore title;x\nmeter_id,timestamp,value\nM1,2025-06-01T00:00Z,1\nM1,2025-06-01T00:30Z,2,9\n"
    read = _read_text(tmp_path, text, _src(skip_lines=3))
    assert read.header == ["meter_id", "timestamp", "value"]
    assert read.rows["line_number"].to_pylist() == [5]
    assert read.malformed["line_number"].to_pylist() == [6]
    error = _file_error(tmp_path, b"Title\nmeter_id,stamp,value\nM1,x,1\n", _src(skip_lines=1))
    assert error.line == 2 and "missing required column(s) timestamp" in error.message
    error = _file_error(tmp_path, b"Title\nmeter_id,timestamp,value\n", _src(skip_lines=1))
    assert error.line == 2 and "header but no data rows" in error.message


def test_trailing_delimiters_are_trimmed_from_header_and_rows(tmp_path: Path) -> None:
    text = "meter_id;timestamp;value;\nM1;2025-06-01T00:00Z;1;;\nM1;2025-06-01T00:30Z;2;\nM1;2025-06-01T01:00Z;;\n"
    source = _src(delimiter=";", trim_trailing_delimiters=True)
    read = _read_text(tmp_path, text, source)
    assert read.header == ["meter_id", "timestamp", "value"]
    # The last row's value is an empty field, not a missing column.
    assert [(r["value"], r["value_status"]) for r in read.records] == [(1.0, "ok"), (2.0, "ok"), (None, "missing")]
    assert read.malformed.num_rows == 0
    untrimmed = _read_text(tmp_path, text, _src(delimiter=";"), name="raw.csv")
    assert untrimmed.header == ["meter_id", "timestamp", "value", ""]
    assert untrimmed.malformed["line_number"].to_pylist() == [2]


def test_without_a_quote_char_quotes_are_ordinary_characters(tmp_path: Path) -> None:
    text = 'meter_id,timestamp,value\n"M1,2025-06-01T00:00Z,1\n"M2",2025-06-01T00:00Z,2\n'
    read = _read_text(tmp_path, text, _src(quote_char=None))
    assert read.parsed["meter_id"].to_pylist() == ['"M1', '"M2"']
    assert read.malformed.num_rows == 0


def test_fill_down_repeats_the_last_value_in_file_order(tmp_path: Path) -> None:
    text = (
        "meter_id,timestamp,value\nM1,2025-06-01T00:00Z,1\n,2025-06-01T00:30Z,2\n"
        "M2,2025-06-01T00:00Z,3\n ,2025-06-01T00:30Z,4\n"
    )
    read = _read_text(tmp_path, text, _src(fill_down=("meter_id",)))
    assert read.parsed["meter_id"].to_pylist() == ["M1", "M1", "M2", "M2"]
    # Bronze (the raw columns) holds the filled value; each file starts afresh.
    assert read.parsed["raw_0"].to_pylist() == ["M1", "M1", "M2", "M2"]
    fresh = _read_text(
        tmp_path, "meter_id,timestamp,value\n,2025-06-01T00:00Z,1\n", _src(fill_down=("meter_id",)), "b.csv"
    )
    assert fresh.parsed["meter_id"].to_pylist() == [""]
    error = _file_error(tmp_path, b"meter_id,timestamp,value\nM1,x,1\n", _src(fill_down=("Datum",)))
    assert "missing required column(s) Datum" in error.message


def test_occurrence_tells_a_repeated_wall_time_apart_per_series(tmp_path: Path) -> None:
    text = (
        "meter_id,timestamp,value\n"
        "M1,2025-10-26 01:30,1\nM2,2025-10-26 01:30,5\nM1,2025-10-26 01:30,2\n"
        "M1,2025-10-26 03:00,3\nM1,2025-10-26 01:30,4\n"
    )
    london = {"timestamp_timezone": "Europe/London"}
    read = _read_text(tmp_path, text, _src(ambiguous_time="order", **london))
    assert read.rows["occurrence"].to_pylist() == [0, 0, 1, 0, 2]
    assert read.parsed["interval_start_utc"].to_pylist() == [
        utc(2025, 10, 26, 0, 30),
        utc(2025, 10, 26, 0, 30),
        utc(2025, 10, 26, 1, 30),
        utc(2025, 10, 26, 3, 0),
        utc(2025, 10, 26, 1, 30),
    ]
    rejected = _read_text(tmp_path, text, _src(**london), name="b.csv")
    assert rejected.rows["occurrence"].to_pylist() == [0] * 5
    assert rejected.count("timestamp_status") == {"ambiguous": 4, "ok": 1}


def test_read_lineage_carries_occurrence() -> None:
    assert read_schema(["a"]).names == [
        "a",
        "file_index",
        "source_file",
        "line_number",
        "row_order",
        "kind",
        "detail",
        "occurrence",
    ]


def test_latin1_and_bom_headers(tmp_path: Path) -> None:
    latin = "Zähler;timestamp;value\nM1;2025-06-01T00:00Z;1\n".encode("latin-1")
    source = _src(delimiter=";", encoding="latin-1", columns={"meter_id": "Zähler"})
    assert _read_text(tmp_path, latin, source).parsed["meter_id"].to_pylist() == ["M1"]
    bom = "\ufeffmeter_id,timestamp,value\nM1,2025-06-01T00:00Z,1\n".encode()
    read = _read_text(tmp_path, bom, _src(), name="bom.csv")
    assert read.header[0] == "meter_id" and read.parsed["meter_id"].to_pylist() == ["M1"]


@pytest.mark.parametrize(
    ("data", "message", "line"),
    [
        (b"", "is empty", None),
        (b"\x1f\x8b\x08\x00", "is gzip-compressed but cannot be unpacked", 1),
        (b"meter_id;timestamp;value\nM1;x;1\n", "wrong delimiter", 1),
        (b"meter_id,timestamp,value\nM1,2025-06-01T00:00Z,1\nZ\xe4hler,x,1\n", "not valid UTF-8", 3),
        (b"meter_id,timestamp,value\n", "header but no data rows", 1),
    ],
)
def test_file_level_checks_are_kept(tmp_path: Path, data: bytes, message: str, line: int | None) -> None:
    error = _file_error(tmp_path, data, _src())
    assert message in error.message and error.line == line


def test_resolve_inputs_per_format(tmp_path: Path) -> None:
    for name in ("a.csv", "b.txt", "c.xml", "d.nem12", "e.json"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in resolve_inputs(str(tmp_path))] == ["a.csv", "b.txt"]
    assert [p.name for p in resolve_inputs(str(tmp_path), "nem12")] == ["a.csv", "b.txt", "d.nem12"]
    assert [p.name for p in resolve_inputs(str(tmp_path), "greenbutton")] == ["c.xml"]
    assert [p.name for p in resolve_inputs(str(tmp_path / "*.json"))] == ["e.json"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputFileError, match=r"no \*\.xml or \*\.xml\.gz or \*\.zip file"):
        resolve_inputs(str(empty), "greenbutton")


# --- Wide layout -----------------------------------------------------------------------------------


def test_wide_files_melt_line_major_with_series_attributes(tmp_path: Path) -> None:
    source = _src(
        unit=None,
        layout="wide",
        columns={"timestamp": ("day", "time"), "quality": "q", "interval_minutes": "len"},
        unit_pattern=r"_(?P<unit>k?Wh)$",
        series=(
            SeriesColumn(column="site_kWh", meter_id="{file_stem}-{column}"),
            SeriesColumn(column="pv_Wh", direction="export"),
            SeriesColumn(column="grid", unit="MWh", meter_id="G"),
        ),
    )
    text = (
        "day,time,site_kWh,pv_Wh,grid,q,len,other\n2025-06-01,00:00,1,2,3,Estimated,30,x\n2025-06-01,00:30,4,,6,,,y\n"
    )
    read = _read_text(tmp_path, text, source, name="meter7.csv")
    assert read.header == [*CANONICAL_COLUMNS, "column"]
    assert read.rows.select([*CANONICAL_COLUMNS, "column", "line_number"]).to_pylist() == [
        {"meter_id": "meter7-site_kWh", "timestamp": "2025-06-01 00:00", "value": "1", "unit": "kWh",
         "direction": "import", "quality": "Estimated", "interval_minutes": "30",
         "column": "site_kWh", "line_number": 2},
        {"meter_id": "pv_Wh", "timestamp": "2025-06-01 00:00", "value": "2", "unit": "Wh",
         "direction": "export", "quality": "Estimated", "interval_minutes": "30",
         "column": "pv_Wh", "line_number": 2},
        {"meter_id": "G", "timestamp": "2025-06-01 00:00", "value": "3", "unit": "MWh",
         "direction": "import", "quality": "Estimated", "interval_minutes": "30",
         "column": "grid", "line_number": 2},
        {"meter_id": "meter7-site_kWh", "timestamp": "2025-06-01 00:30", "value": "4", "unit": "kWh",
         "direction": "import", "quality": "", "interval_minutes": "",
         "column": "site_kWh", "line_number": 3},
        {"meter_id": "pv_Wh", "timestamp": "2025-06-01 00:30", "value": "", "unit": "Wh",
         "direction": "export", "quality": "", "interval_minutes": "",
         "column": "pv_Wh", "line_number": 3},
        {"meter_id": "G", "timestamp": "2025-06-01 00:30", "value": "6", "unit": "MWh",
         "direction": "import", "quality": "", "interval_minutes": "",
         "column": "grid", "line_number": 3},
    ]  # fmt: skip
    assert read.count("quality") == {"estimated": 3, "actual": 3}
    assert read.parsed["unit"].to_pylist() == ["kwh", "wh", "mwh"] * 2
    assert read.count("value_status") == {"ok": 5, "missing": 1}


def test_wide_files_must_have_the_named_columns(tmp_path: Path) -> None:
    source = _src(
        layout="wide",
        skip_lines=1,
        columns={"timestamp": "ts", "quality": "q"},
        series=(SeriesColumn(column="a"), SeriesColumn(column="b")),
    )
    error = _file_error(tmp_path, b"title\nts,a,c\n2025-06-01T00:00Z,1,2\n", source)
    assert error.line == 2 and "missing required column(s) q, b" in error.message


# --- Non-delimited formats: dispatch and sanity checks --------------------------------------------


def _canonical_raw(path: str) -> RawFile:
    table = pa.table(
        {
            **{c: pa.array([v], pa.string()) for c, v in zip(
                CANONICAL_COLUMNS, ["N1", "2025-06-01T00:00:00", "0.5", "kWh", "import", "", "30"], strict=True
            )},
            "line_number": pa.array([3], pa.int64()),
        }
    )  # fmt: skip
    return RawFile(path=Path(path), header=list(CANONICAL_COLUMNS), table=table)


@pytest.mark.parametrize(
    ("fmt", "module", "function", "head", "zone", "start"),
    [
        ("nem12", "nem12", "read_nem12", b"200,N1,E1,E1,E1,,M1,KWH,30,\n300,20250601\n", "+10:00",
         utc(2025, 5, 31, 14)),
        ("greenbutton", "greenbutton", "read_greenbutton", b'<?xml version="1.0"?>\n<atom:feed xmlns:atom="x">', None,
         utc(2025, 6, 1)),
    ],
)  # fmt: skip
def test_other_formats_dispatch_to_their_readers(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
    module: str,
    function: str,
    head: bytes,
    zone: str | None,
    start: datetime,
) -> None:
    calls: list[str] = []

    def fake(path: str, data: bytes, source: SourceConfig) -> RawFile:
        calls.append(path)
        return _canonical_raw(path)

    monkeypatch.setattr(readers, function, fake)
    zones = {"timestamp_timezone": zone} if zone else {}
    source = SourceConfig(name="t", format=fmt, path="x", **zones)  # type: ignore[arg-type]
    read = _read_text(tmp_path, head, source, name="in.dat")
    assert calls == [str(tmp_path / "in.dat")]
    assert read.header == list(CANONICAL_COLUMNS)
    record = read.records[0]
    assert (record["meter_id"], record["interval_start_utc"], record["value"], record["quality"]) == (
        "N1",
        start,
        0.5,
        "actual",
    )


@pytest.mark.parametrize(
    ("fmt", "head", "message"),
    [
        ("nem12", b"meter_id,timestamp\n", "is not a NEM12 file (rule: format)"),
        ("greenbutton", b"<html><body>no feed</body></html>", "(rule: format)"),
    ],
)
def test_other_formats_are_sanity_checked_from_the_head(fmt: str, head: bytes, message: str) -> None:
    source = SourceConfig(name="t", format=fmt, path="x")  # type: ignore[arg-type]
    with pytest.raises(InputFileError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        read_header("f", head, source)
    assert error.value.line == 1
    good = b"\n100,NEM12,2025\n" if fmt == "nem12" else b"<?xml?><feed xmlns='x'>"
    assert read_header("f", good, source) == list(CANONICAL_COLUMNS)


# --- Register reads --------------------------------------------------------------------------------


def test_register_reads_reach_parsing_as_received(tmp_path: Path) -> None:
    """Differencing is a pipeline stage (app.domain.registers), in time order across the batch."""
    text = "meter_id,timestamp,value\nM1,2025-06-01T00:30Z,101.25\nM1,2025-06-01T00:00Z,100.5\n"
    read = _read_text(tmp_path, text, _src(value_kind="register"))
    assert read.rows["value"].to_pylist() == ["101.25", "100.5"]
    assert [(r["value"], r["value_status"]) for r in read.records] == [(101.25, "ok"), (100.5, "ok")]


# --- Parsing rules ---------------------------------------------------------------------------------


def _raw(columns: dict[str, list[str]], source_file: str = "dir/in.csv") -> pa.Table:
    n = len(next(iter(columns.values())))
    data: dict[str, Any] = {name: pa.array(values, pa.string()) for name, values in columns.items()}
    data["source_file"] = pa.array([source_file] * n, pa.string())
    data["line_number"] = pa.array(range(2, n + 2), pa.int64())
    return pa.table(data)


def _ts(values: list[str], **changes: Any) -> list[tuple[datetime | None, str]]:
    instants, status = parse_timestamps(pa.chunked_array([values], pa.string()), _src(**changes))
    return list(zip(instants.to_pylist(), status.to_pylist(), strict=True))


def test_parsed_schema_columns_in_order() -> None:
    assert parsed_schema(["a", "b"]).names == [
        "meter_id",
        "direction",
        "interval_start_utc",
        "interval_minutes",
        "local_date",
        "local_seconds",
        "timestamp_status",
        "value",
        "value_status",
        "unit",
        "quality",
        "source_file",
        "line_number",
        "row_order",
        "occurrence",
        "raw_0",
        "raw_1",
    ]
    assert parsed_schema([]).field("interval_minutes").type == pa.int32()
    assert parsed_schema([]).field("occurrence").type == pa.int32()


def test_excel_escaped_fields_are_unwrapped() -> None:
    raw = _raw(
        {"meter_id": ['="541448"', ' ="007" '], "timestamp": ['="2025-06-01T00:00Z"'] * 2, "value": ['="1"', "2"]}
    )
    table = parsed_readings(raw, _src())
    assert table["meter_id"].to_pylist() == ["541448", "007"]
    assert table["value"].to_pylist() == [1.0, 2.0]
    assert table["timestamp_status"].to_pylist() == ["ok", "ok"]
    assert table["raw_0"].to_pylist() == ['="541448"', ' ="007" ']  # the raw record is kept as received


def test_fixed_meter_id_with_the_file_stem() -> None:
    raw = _raw({"timestamp": ["2025-06-01T00:00Z"], "value": ["1"]}, source_file="/data/in/PJM.csv")
    source = _src(meter_id="eia_{file_stem}", columns={"meter_id": None})
    assert parsed_readings(raw, source)["meter_id"].to_pylist() == ["eia_PJM"]


def test_several_timestamp_columns_are_joined_with_a_space() -> None:
    raw = _raw({"meter_id": ["M1"], "d": ["01/06/2025"], "t": [" 10:15:00 "], "value": ["1"]})
    source = _src(columns={"timestamp": ("d", "t")}, timestamp_format="%d/%m/%Y %H:%M:%S")
    assert parsed_readings(raw, source)["interval_start_utc"].to_pylist() == [utc(2025, 6, 1, 10, 15)]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0,173", (0.173, "ok")),
        ("1.234,5", (1234.5, "ok")),
        ("1 234,5", (1234.5, "ok")),
        ("-2,0", (-2.0, "ok")),
        ("7", (7.0, "ok")),
        ("", (None, "missing")),
        ("-", (None, "missing")),
        ("1,2,3", (None, "unparseable")),
    ],
)
def test_decimal_comma_values(raw: str, expected: tuple[float | None, str]) -> None:
    values, status = parse_values(pa.chunked_array([[raw]], pa.string()), _src(decimal=","))
    assert (values.to_pylist()[0], status.to_pylist()[0]) == expected


def test_direction_values_map_exactly_then_ignoring_case() -> None:
    raw = _raw({"meter_id": ["M"] * 5, "timestamp": ["2025-06-01T00:00Z"] * 5, "value": ["1"] * 5,
                "reg": ["Offtake Day", " injection night ", "OFFTAKE", "Solar", ""]})  # fmt: skip
    source = _src(
        columns={"direction": "reg"},
        direction_values={"Offtake Day": "import", "Injection Night": "export", "offtake": "import"},
    )
    assert parsed_readings(raw, source)["direction"].to_pylist() == ["import", "export", "import", "solar", ""]
    plain = parsed_readings(raw, _src(columns={"direction": "reg"}))["direction"].to_pylist()
    assert plain == ["offtake day", "injection night", "offtake", "solar", ""]
    assert parsed_readings(raw, _src(direction="export"))["direction"].to_pylist() == ["export"] * 5


def test_quality_values_map_and_default_to_actual() -> None:
    raw = _raw({"meter_id": ["M"] * 5, "timestamp": ["2025-06-01T00:00Z"] * 5, "value": ["1"] * 5,
                "q": ["Read", "GESCHAT", "", "Odd", " Estimated "]})  # fmt: skip
    mapped = _src(columns={"quality": "q"}, quality_values={"Read": "actual", "Geschat": "estimated"})
    assert parsed_readings(raw, mapped)["quality"].to_pylist() == ["actual", "estimated", "actual", "odd", "estimated"]
    plain = parsed_readings(raw, _src(columns={"quality": "q"}))["quality"].to_pylist()
    assert plain == ["read", "geschat", "actual", "odd", "estimated"]
    assert parsed_readings(raw, _src())["quality"].to_pylist() == ["actual"] * 5


def test_interval_minutes_per_row_and_end_labels() -> None:
    raw = _raw(
        {
            "meter_id": ["M"] * 6,
            "timestamp": ["2025-06-01T01:00Z"] * 6,
            "value": ["1"] * 6,
            "len": ["15", "", "60", "7", "0", "x"],
        }
    )
    table = parsed_readings(raw, _src(columns={"interval_minutes": "len"}, timestamp_label="end"))
    assert table["interval_minutes"].to_pylist() == [15, 30, 60, None, None, None]
    assert table["interval_start_utc"].to_pylist() == [
        utc(2025, 6, 1, 0, 45),
        utc(2025, 6, 1, 0, 30),
        utc(2025, 6, 1, 0, 0),
        utc(2025, 6, 1, 0, 30),  # an invalid interval falls back to the source's for the shift
        utc(2025, 6, 1, 0, 30),
        utc(2025, 6, 1, 0, 30),
    ]
    assert parsed_readings(raw, _src())["interval_minutes"].to_pylist() == [30] * 6


@pytest.mark.parametrize(
    ("raw", "changes", "expected"),
    [
        ("2025-06-01t12:00:00z", {}, (utc(2025, 6, 1, 12), "ok")),
        ("2025-06-01t12:00:00+02:00", {}, (utc(2025, 6, 1, 10), "ok")),
        ("2025-06-01T24:00:00Z", {}, (utc(2025, 6, 2), "ok")),
        ("2025-06-01 24:00", {}, (utc(2025, 6, 2), "ok")),
        ("2025-12-31T24:00:00.000+01:00", {}, (utc(2025, 12, 31, 23), "ok")),
        ("2025-06-01T24:00", {"timestamp_label": "end", "interval_minutes": 60}, (utc(2025, 6, 1, 23), "ok")),
        ("31/12/2025 24:00", {"timestamp_format": "%d/%m/%Y %H:%M"}, (utc(2026, 1, 1), "ok")),
        ("2025-03-30 24:00", {"timestamp_timezone": "Europe/London"}, (utc(2025, 3, 30, 23), "ok")),
        ("2025-06-01T24:15:00Z", {}, (None, "unparseable")),
        ("2025-06-01T24:00:01Z", {}, (None, "unparseable")),
        ("2025-02-30T24:00:00Z", {}, (None, "unparseable")),
        ("2025-06-01T10:00:00+24:00", {}, (None, "unparseable")),
        # a time whose minutes are 24 is not hour 24
        ("16/12/2006 17:24:00", {"timestamp_format": "%d/%m/%Y %H:%M:%S"}, (utc(2006, 12, 16, 17, 24), "ok")),
        ("2006-12-16 17:24", {}, (utc(2006, 12, 16, 17, 24), "ok")),
    ],
)
def test_lower_case_iso_and_hour_ending_24(raw: str, changes: dict[str, Any], expected: tuple[Any, str]) -> None:
    assert _ts([raw], **changes) == [expected]


def test_ambiguous_order_uses_the_occurrence() -> None:
    instants, status = parse_timestamps(
        pa.chunked_array([["2025-10-26 01:30", "2025-10-26 01:30", "2025-10-26 01:30", "2025-06-01 01:30"]]),
        _src(timestamp_timezone="Europe/London", ambiguous_time="order"),
        occurrence=pa.chunked_array([pa.array([0, 1, 2, 1], pa.int32())]),
    )
    assert instants.to_pylist() == [
        utc(2025, 10, 26, 0, 30),
        utc(2025, 10, 26, 1, 30),
        utc(2025, 10, 26, 1, 30),
        utc(2025, 6, 1, 0, 30),
    ]
    assert status.to_pylist() == ["ok"] * 4
    gap, gap_status = parse_timestamps(
        pa.chunked_array([["2025-03-30 01:30"]]), _src(timestamp_timezone="Europe/London", ambiguous_time="order")
    )
    assert (gap.to_pylist(), gap_status.to_pylist()) == ([None], ["dst_gap"])


@pytest.mark.parametrize(
    ("day", "position", "expected"),
    [
        ("2025-06-01", "1", (utc(2025, 5, 31, 22), "ok")),
        ("2025-06-01", "96", (utc(2025, 6, 1, 21, 45), "ok")),
        ("2025-06-01", "97", (None, "unparseable")),
        ("2025-06-01", "0", (None, "unparseable")),
        ("2025-06-01", "x", (None, "unparseable")),
        ("2025-06-31", "1", (None, "unparseable")),
        # 23-hour day: wall-clock positions, the missing hour (02:00-02:45) zero-filled
        ("2025-03-30", "8", (utc(2025, 3, 30, 0, 45), "ok")),
        ("2025-03-30", "9", (None, "dst_gap")),
        ("2025-03-30", "12", (None, "dst_gap")),
        ("2025-03-30", "13", (utc(2025, 3, 30, 1), "ok")),
        ("2025-03-30", "96", (utc(2025, 3, 30, 21, 45), "ok")),
        ("2025-03-30", "97", (None, "unparseable")),
        # 25-hour day: elapsed time, up to 100
        ("2025-10-26", "9", (utc(2025, 10, 26, 0), "ok")),
        ("2025-10-26", "13", (utc(2025, 10, 26, 1), "ok")),
        ("2025-10-26", "100", (utc(2025, 10, 26, 22, 45), "ok")),
        ("2025-10-26", "101", (None, "unparseable")),
    ],
)
def test_positions_within_the_local_day(day: str, position: str, expected: tuple[Any, str]) -> None:
    source = _src(
        layout="wide",
        series=(SeriesColumn(column="v"),),
        columns={"timestamp": "day", "position": "pos"},
        timestamp_format="%Y-%m-%d",
        timestamp_timezone="Europe/Berlin",
        interval_minutes=15,
    )
    raw = _raw({"meter_id": ["v"], "timestamp": [day], "value": ["1"], "unit": ["kWh"], "direction": ["import"],
                "quality": [""], "interval_minutes": [""], "position": [position]})  # fmt: skip
    table = parsed_readings(raw, source)
    assert (table["interval_start_utc"][0].as_py(), table["timestamp_status"][0].as_py()) == expected


def test_positions_in_a_fixed_offset_zone_and_hourly() -> None:
    source = _src(columns={"timestamp": "d", "position": "p"}, timestamp_timezone="+10:00", interval_minutes=60)
    raw = _raw({"meter_id": ["M"] * 3, "d": ["2025-06-01"] * 3, "p": ["1", "24", "25"], "value": ["1"] * 3})
    table = parsed_readings(raw, source)
    assert table["interval_start_utc"].to_pylist() == [utc(2025, 5, 31, 14), utc(2025, 6, 1, 13), None]


def test_parsing_does_not_depend_on_batches() -> None:
    path = _only("fluvius", "Consumption_history_electricity")
    data = path.read_bytes()
    header = read_header(str(path), data[:HEAD_BYTES], FLUVIUS_EN)
    raw = raw_read_table(3, str(path), data, FLUVIUS_EN, header)
    whole = parsed_readings(raw, FLUVIUS_EN, header).cast(parsed_schema(header))
    pieces = [raw.slice(0, 1361), raw.slice(1361, 5), raw.slice(1366, 2000), raw.slice(3366)]
    split = pa.concat_tables(parsed_readings(p, FLUVIUS_EN, header).cast(parsed_schema(header)) for p in pieces)
    assert split.equals(whole)


def test_an_empty_value_with_a_no_consumption_status_reads_as_zero(tmp_path: Path) -> None:
    text = (
        "meter_id;timestamp;value;status\n"
        "M1;2025-06-01T00:00Z;;No consumption\n"  # nothing flowed: 0
        "M1;2025-06-01T00:15Z;;Read\n"  # a read without a value: still missing
        "M1;2025-06-01T00:30Z;0,5;No consumption\n"  # a value is kept as given
        "M1;2025-06-01T00:45Z;n/a;No consumption\n"  # any missing marker counts as empty
    )
    source = _src(
        delimiter=";",
        decimal=",",
        columns=ColumnMapping(quality="status"),
        quality_values={"Read": "actual", "No consumption": "actual"},
        zero_when_quality=("No consumption",),
    )
    read = _read_text(tmp_path, text, source)
    assert read.parsed["value"].to_pylist() == [0.0, None, 0.5, 0.0]
    assert read.parsed["value_status"].to_pylist() == ["ok", "missing", "ok", "ok"]
    assert read.parsed["quality"].to_pylist() == ["actual"] * 4
    without = _read_text(tmp_path, text, source.model_copy(update={"zero_when_quality": ()}))
    assert without.parsed["value_status"].to_pylist() == ["missing", "missing", "ok", "missing"]
    with pytest.raises(ValueError, match="zero_when_quality needs a quality column"):
        _src(zero_when_quality=("No consumption",))
