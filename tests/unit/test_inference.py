"""Drafting a source config from a file (`sources infer`): what each key is read from, on tiny files
written here, and on the real public files of ../shared/data (the same as examples/data, whose
README gives their provenance) against the hand-written configs of examples/sources.toml."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.application.inference import InferredSource, infer_source, source_name, toml_value
from app.domain.errors import InputFileError
from app.domain.sources import SourceConfig
from app.infrastructure import readers
from app.infrastructure.readers import resolve_inputs
from app.infrastructure.source_config import load_sources

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" if (REPO.parent / "shared" / "data").is_dir() else REPO / "examples" / "data"
EXAMPLES = REPO / "examples"


def _file(tmp_path: Path, lines: list[str], *, name: str = "x.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def _keys(inferred: InferredSource) -> dict[str, Any]:
    return inferred.table()


def _comment(inferred: InferredSource, key: str) -> str:
    return next(g.comment for g in inferred.guesses if g.key == key)


def _loaded(inferred: InferredSource, tmp_path: Path) -> SourceConfig:
    config = tmp_path / "drafted.toml"
    config.write_text(inferred.toml(), encoding="utf-8")
    return load_sources(config)[inferred.name]


def _long_rows(
    start: datetime, meters: list[str], count: int, minutes: int, stamp: str = "%Y-%m-%dT%H:%M:%SZ"
) -> list[str]:
    rows = []
    for i in range(count):
        at = start + timedelta(minutes=minutes * i)
        rows += [f"{meter},{at.strftime(stamp)},{0.2 + i % 5 / 10:.3f}" for meter in meters]
    return rows


# --- dialect --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "text", "encoding", "expected"),
    [
        (b"", "Zähler", "utf-8", "utf-8"),
        (b"\xef\xbb\xbf", "Zähler", "utf-8", "utf-8-sig"),
        (b"", "Zähler", "latin-1", "latin-1"),
        (b"", "Zähler \u20ac", "cp1252", "cp1252"),
    ],
)
def test_encoding(tmp_path: Path, prefix: bytes, text: str, encoding: str, expected: str) -> None:
    rows = [f"{row},{text}" for row in _long_rows(datetime(2025, 6, 1, tzinfo=UTC), ["M1"], 8, 30)]
    body = "\n".join(["meter_id,timestamp,value,note", *rows]) + "\n"
    path = tmp_path / "x.csv"
    path.write_bytes(prefix + body.encode(encoding))

    inferred = infer_source(readers, path)

    assert _keys(inferred)["encoding"] == expected
    assert _loaded(inferred, tmp_path).encoding == expected


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_delimiter_is_counted_and_a_decimal_comma_seen(tmp_path: Path, delimiter: str) -> None:
    decimal = "," if delimiter != "," else "."
    rows = [
        delimiter.join(["M1", f"2025-06-01 {h:02d}:{m:02d}", f"0{decimal}{h * 60 + m + 100}"])
        for h in range(6)
        for m in (0, 30)
    ]
    path = _file(tmp_path, [delimiter.join(["meter_id", "timestamp", "value"]), *rows])

    keys = _keys(infer_source(readers, path))

    assert keys["delimiter"] == delimiter
    assert keys.get("decimal", ".") == decimal


def test_title_lines_above_the_header_are_skipped_and_trailing_delimiters_trimmed(tmp_path: Path) -> None:
    rows = [f"{'2025-06-01' if p == 1 else ''};{p};{p * 10};{p * 11};;" for p in range(1, 97)]
    header = "Datum;Position;Prognose [MW];Ist [MW];"
    path = _file(tmp_path, ["Windeinspeisung;;;", "Juni 2025;;;", ";;;", header, *rows], encoding="latin-1")

    inferred = infer_source(readers, path)
    keys = _keys(inferred)

    assert keys["skip_lines"] == 3 and keys["trim_trailing_delimiters"] is True
    assert keys["layout"] == "wide" and keys["columns"] == {"timestamp": "Datum", "position": "Position"}
    assert keys["fill_down"] == ["Datum"] and keys["interval_minutes"] == 15
    assert keys["unit_pattern"] == r"\[(?P<unit>[^\]]+)\]"
    assert [s["column"] for s in keys["series"]] == ["Prognose [MW]", "Ist [MW]"]
    assert _loaded(inferred, tmp_path).skip_lines == 3


def test_a_file_without_a_header_row_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, _long_rows(datetime(2025, 6, 1, tzinfo=UTC), ["M1"], 10, 30))
    with pytest.raises(InputFileError, match="no header row"):
        infer_source(readers, path)


# --- timestamps -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stamp", "expected", "ambiguous"),
    [
        ("%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M", False),  # days up to 20: day-first
        ("%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M", False),  # the same days, month first
        ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S", False),
        ("%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M:%S", False),
    ],
)
def test_timestamp_format_parses_every_sampled_value(
    tmp_path: Path, stamp: str, expected: str, ambiguous: bool
) -> None:
    rows = _long_rows(datetime(2025, 3, 10, tzinfo=UTC), ["M1"], 24 * 11, 60, stamp)
    inferred = infer_source(readers, _file(tmp_path, ["meter_id,timestamp,value", *rows]))

    assert _keys(inferred)["timestamp_format"] == expected
    assert ("check this" in _comment(inferred, "timestamp_format")) is ambiguous
    assert _keys(inferred)["interval_minutes"] == 60


def test_day_first_is_a_marked_guess_when_no_day_is_above_12(tmp_path: Path) -> None:
    rows = _long_rows(datetime(2025, 3, 1, tzinfo=UTC), ["M1"], 48 * 5, 30, "%d/%m/%Y %H:%M")
    inferred = infer_source(readers, _file(tmp_path, ["meter_id,timestamp,value", *rows]))

    assert _keys(inferred)["timestamp_format"] == "%d/%m/%Y %H:%M"
    assert "check this" in _comment(inferred, "timestamp_format") and "day-first" in _comment(
        inferred, "timestamp_format"
    )


def test_date_and_time_columns_are_joined(tmp_path: Path) -> None:
    rows = []
    for i in range(96 * 2):
        at = datetime(2025, 1, 14) + timedelta(minutes=15 * i)
        rows.append(f"{at:%d-%m-%Y};{at:%H:%M:%S};EAN1;0,{i % 9 + 1}")
    inferred = infer_source(readers, _file(tmp_path, ["Datum;Tijd;EAN;Volume", *rows]))
    keys = _keys(inferred)

    assert keys["columns"]["timestamp"] == ["Datum", "Tijd"] and keys["timestamp_format"] == "%d-%m-%Y %H:%M:%S"
    assert keys["columns"]["meter_id"] == "EAN" and keys["columns"]["value"] == "Volume"
    assert keys["interval_minutes"] == 15 and keys["decimal"] == ","


def test_offsets_give_the_instants_and_naive_times_get_a_zone_to_check(tmp_path: Path) -> None:
    aware = infer_source(
        readers,
        _file(tmp_path, ["meter_id,timestamp,value", *_long_rows(datetime(2025, 6, 1, tzinfo=UTC), ["M1"], 8, 30)]),
    )
    assert _keys(aware)["timestamp_format"] == "iso8601" and "timestamp_timezone" not in _keys(aware)
    assert "offsets" in _comment(aware, "timestamp_format")

    naive_rows = _long_rows(datetime(2025, 6, 1), ["M1"], 8, 30, "%Y-%m-%d %H:%M:%S")
    naive = infer_source(readers, _file(tmp_path, ["meter_id,timestamp,value", *naive_rows], name="naive.csv"))
    assert _keys(naive)["timestamp_timezone"] == "UTC"
    assert "check this" in _comment(naive, "timestamp_timezone") and "no offsets" in _comment(
        naive, "timestamp_timezone"
    )
    assert "check this" in _comment(naive, "series_timezone")


def test_a_repeated_fall_back_hour_is_read_in_order(tmp_path: Path) -> None:
    walls = [datetime(2025, 10, 26, 0) + timedelta(minutes=15 * i) for i in range(16)]
    walls += [w for w in walls if w.hour == 2]  # Central European clocks go 03:00 -> 02:00
    walls.sort()
    rows = [f"M1,{w:%Y-%m-%d %H:%M},0.1" for w in walls]
    inferred = infer_source(readers, _file(tmp_path, ["meter_id,timestamp,value", *rows]))

    assert _keys(inferred)["ambiguous_time"] == "order"
    assert "2025-10-26 02:00 appears twice" in _comment(inferred, "ambiguous_time")
    assert "Europe/Berlin" in _comment(inferred, "ambiguous_time")


def test_interval_end_labels_are_guessed_from_00_05_to_midnight(tmp_path: Path) -> None:
    stamps = [datetime(2025, 1, 1, 0, 5) + timedelta(minutes=5 * i) for i in range(288)]
    rows = [f"NSW1,{t:%Y/%m/%d %H:%M:%S},7251.07,138.03" for t in stamps]
    inferred = infer_source(readers, _file(tmp_path, ["REGION,SETTLEMENTDATE,TOTALDEMAND,RRP", *rows]))
    keys = _keys(inferred)

    assert keys["timestamp_label"] == "end" and keys["interval_minutes"] == 5
    assert keys["columns"] == {"meter_id": "REGION", "timestamp": "SETTLEMENTDATE", "value": "TOTALDEMAND"}
    assert "RRP" in _comment(inferred, "columns")  # said, not read


@pytest.mark.parametrize(("minutes", "count"), [(15, 200), (1440, 40)])
def test_interval_is_the_most_common_spacing_per_series(tmp_path: Path, minutes: int, count: int) -> None:
    rows = _long_rows(datetime(2025, 6, 1, tzinfo=UTC), ["M1", "M2", "M3"], count, minutes)
    del rows[10:14]  # a gap does not change the most common spacing
    inferred = infer_source(readers, _file(tmp_path, ["meter_id,timestamp,value", *rows]))

    assert _keys(inferred)["interval_minutes"] == minutes


def test_a_daily_file_of_dates(tmp_path: Path) -> None:
    days = [datetime(2025, 6, 1) + timedelta(days=i) for i in range(30)]
    rows = [f"{d:%Y-%m-%d},MTR1,{5 + i % 3}" for i, d in enumerate(days)]
    inferred = infer_source(readers, _file(tmp_path, ["date,meter,kwh", *rows]))
    keys = _keys(inferred)

    assert keys["interval_minutes"] == 1440 and keys["timestamp_format"] == "%Y-%m-%d"
    assert keys["columns"] == {"meter_id": "meter", "timestamp": "date", "value": "kwh"} and keys["unit"] == "kWh"


# --- values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "units", "unit_pattern", "unit"),
    [
        (["load [MW]", "wind [MW]"], [None, None], r"\[(?P<unit>[^\]]+)\]", None),
        (["demand (kW)"], [None], r"\((?P<unit>[^)]+)\)", None),
        (["Energy kWh", "Solar Wh"], ["kWh", "Wh"], None, None),
        (["import", "export"], [None, None], None, "kWh"),  # no unit in the file: the default, to check
    ],
)
def test_wide_units_from_column_names(
    tmp_path: Path, columns: list[str], units: list[str | None], unit_pattern: str | None, unit: str | None
) -> None:
    rows = [
        ",".join([(datetime(2025, 6, 1) + timedelta(hours=i)).isoformat(), *(str(1 + i % 4) for _ in columns)])
        for i in range(48)
    ]
    inferred = infer_source(readers, _file(tmp_path, [",".join(["time", *columns]), *rows]))
    keys = _keys(inferred)

    assert keys["layout"] == "wide" and [s["column"] for s in keys["series"]] == columns
    assert [s.get("unit") for s in keys["series"]] == units
    assert keys.get("unit_pattern") == unit_pattern and keys.get("unit") == unit
    if unit:
        assert "check this" in _comment(inferred, "unit")
    assert [s.get("direction") == "export" for s in keys["series"]] == [c == "export" for c in columns]
    _loaded(inferred, tmp_path)


def test_a_single_wide_series_is_named_after_the_file_and_markers_become_missing(tmp_path: Path) -> None:
    rows = [f"2020-01-01 {h:02d}:00:00,{'MISSING' if h == 5 else 90000 + h}" for h in range(24)]
    inferred = infer_source(readers, _file(tmp_path, ["date_time,demand (MW)", *rows], name="PJM.csv"))
    keys = _keys(inferred)

    assert keys["series"] == [{"column": "demand (MW)", "meter_id": "{file_stem}"}]
    assert "MISSING" in keys["missing_values"] and "" in keys["missing_values"]
    assert keys["max_demand_kw"] >= 10 * 90_023 * 1000  # a grid: far above the one-meter default


def test_long_layout_maps_units_directions_and_qualities(tmp_path: Path) -> None:
    header = "From (date);From (time);EAN code;Register;Volume;Unit;Validation status"
    rows = []
    for i in range(96):
        at = datetime(2023, 10, 22) + timedelta(minutes=15 * i)
        for register in ("Offtake Day", "Injection Day"):
            volume, status = (
                ("", "No consumption") if i % 10 == 0 else (f"0,{i % 7 + 1}", "Read" if i % 3 else "Estimated")
            )
            rows.append(f'{at:%d/%m/%Y};{at:%H:%M:%S};="5414";{register};{volume};kWh;{status}')
    inferred = infer_source(readers, _file(tmp_path, [header, *rows]))
    keys = _keys(inferred)

    assert keys["columns"] == {
        "meter_id": "EAN code",
        "timestamp": ["From (date)", "From (time)"],
        "value": "Volume",
        "unit": "Unit",
        "direction": "Register",
        "quality": "Validation status",
    }
    assert keys["direction_values"] == {"Injection Day": "export", "Offtake Day": "import"}
    # "Estimated" needs no mapping: the parser reads quality names in any case.
    assert keys["quality_values"] == {"No consumption": "actual", "Read": "actual"}
    assert keys["zero_when_quality"] == ["No consumption"]
    assert keys["interval_minutes"] == 15 and keys["decimal"] == ","


# --- formats, names, TOML -------------------------------------------------------------------------


def test_green_button_and_nem12_are_recognised(tmp_path: Path) -> None:
    feed = _keys(
        infer_source(
            readers, DATA / "greenbutton" / "Coastal_Multi_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_5.xml"
        )
    )
    assert feed["format"] == "greenbutton" and feed["interval_minutes"] == 60
    assert feed["series_timezone"] == "America/Los_Angeles"  # LocalTimeParameters tzOffset -28800
    nem12 = _keys(infer_source(readers, DATA / "nem12" / "power-redacted.csv"))
    assert nem12["format"] == "nem12" and nem12["interval_minutes"] == 5 and nem12["timestamp_timezone"] == "+10:00"


def test_source_names_are_valid() -> None:
    assert source_name(Path("Consumption history 2024.csv")) == "consumption_history_2024"
    assert source_name(Path("2024-export.csv")) == "source_2024_export"
    assert re.match(r"^[a-z][a-z0-9_]*$", source_name(Path("ÄÖ.csv")))


@pytest.mark.parametrize(
    "text", ['say "hi"', "back\\slash", r"\((?P<unit>[^)]+)\)", "it's", "tab\there", "del\x7f", "ü€"]
)
def test_toml_strings_round_trip(text: str) -> None:
    document = tomllib.loads(f"value = {toml_value(text)}\ntable = {toml_value({'a b': text, 'c': [1, 2.5, True]})}\n")
    assert document == {"value": text, "table": {"a b": text, "c": [1, 2.5, True]}}


def test_every_key_is_commented_and_the_path_points_at_the_file(tmp_path: Path) -> None:
    rows = _long_rows(datetime(2025, 6, 1), ["M1"], 48, 30, "%Y-%m-%d %H:%M")
    path = _file(tmp_path, ["meter_id,timestamp,value", *rows])
    inferred = infer_source(readers, path, name="acme")

    lines = inferred.toml().splitlines()
    assert "[sources.acme]" in lines
    for number, line in enumerate(lines):
        if re.match(r"^[a-z_]+ = ", line):
            assert "  # " in line or lines[number - 1].startswith("# "), line
    source = _loaded(inferred, tmp_path)
    assert resolve_inputs(source.path) == [path.resolve()]


# --- the real files against the hand-written configs -----------------------------------------------

#: Keys whose answer a file states unambiguously, compared with examples/sources.toml.
COMPARED = ("format", "delimiter", "decimal", "encoding", "skip_lines", "interval_minutes")
#: Where a hand-written value is not what the file alone says.
NOT_IN_THE_FILE = {
    # Integers only: "." and "," read them alike (for the corrected TransnetBW file, the source's
    # decimal comma is for its other files).
    "TransnetBW_wind_8(mwindeinsp_ist_prognose_2015_03.csv)_KORRIGIERT.csv": {"decimal"},
    "TenneT_wind_2006-03-01_2006-04-01[Export_Maerz-2006.csv].csv": {"decimal"},
    "TenneT_wind_2006-10-01_2006-11-01[Export_Oktober-2006.csv].csv": {"decimal"},
    # Monthly gas readings: no reading length divides a day; the interval is a default either way.
    "ngma_gas_provider_2024-07-16.xml": {"interval_minutes"},
}


def _hand_written() -> list[tuple[str, Path]]:
    sources = load_sources(EXAMPLES / "sources.toml")
    pairs = []
    for name, source in sources.items():
        if name == "meter_readings":
            continue
        for path in resolve_inputs(source.path, source.format):
            pairs.append((name, path.relative_to(EXAMPLES / "data")))
    return pairs


@pytest.mark.slow
@pytest.mark.parametrize(("name", "relative"), _hand_written(), ids=lambda v: str(v)[:40])
def test_unambiguous_keys_agree_with_the_hand_written_configs(tmp_path: Path, name: str, relative: Path) -> None:
    hand = load_sources(EXAMPLES / "sources.toml")[name]
    drafted = _loaded(infer_source(readers, DATA / relative), tmp_path)

    for key in COMPARED:
        if key not in NOT_IN_THE_FILE.get(relative.name, set()):
            assert getattr(drafted, key) == getattr(hand, key), f"{relative}: {key}"
    assert drafted.layout == hand.layout or hand.format != "csv"
