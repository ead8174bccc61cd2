"""NEM12 reader: one canonical row per interval, 400 records resolving V quality.

The real file is `examples/data/nem12/power-redacted.csv`, an AEMO NEM12 meter data file
(5-minute import E1 and export B1 channels of one redacted NMI, 200/300/400 records,
no 100/900 records), published in patrickvorgers/Home-Assistant-Import-Energy-Data @
3d2ee1837114072293998836c14643c9fd8dffc9, `Datasources/NEM12/Sample files/power-redacted.csv`,
MIT licence (see examples/data/README.md). Expected counts are computed here from the
file's text, not from the reader.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from app.domain.errors import InputFileError
from app.domain.sources import CANONICAL_COLUMNS, SourceConfig
from app.infrastructure.formats.nem12 import read_nem12

REAL_FILE = Path(__file__).resolve().parents[2] / "examples" / "data" / "nem12" / "power-redacted.csv"
SOURCE = SourceConfig(name="nem12_test", path="x.csv", format="nem12", timestamp_timezone="+10:00")


def _read(text: str) -> tuple[pa.Table, list[tuple[int, str]]]:
    raw = read_nem12("inline.csv", text.encode(), SOURCE)
    return raw.table, raw.malformed


def _day(date: str, values: list[str], quality: str = "A") -> str:
    return f"300,{date},{','.join(values)},{quality},,,20231101000000,"


def _nmi(suffix: str = "E1", minutes: str = "30", uom: str = "KWH") -> str:
    return f"200,6123456789,E1B1,{suffix},{suffix},,METER1,{uom},{minutes},"


def _values(count: int, value: str = "1.5") -> list[str]:
    return [value] * count


# --- The real file ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> tuple[list[str], pa.Table, list[tuple[int, str]]]:
    data = REAL_FILE.read_bytes()
    raw = read_nem12(str(REAL_FILE), data, SOURCE)
    return data.decode("ascii").split("\n"), raw.table, raw.malformed


def test_real_file_has_one_row_per_interval_of_every_300_record(real: tuple) -> None:
    lines, table, malformed = real
    lengths = {int(line.split(",")[8]) for line in lines if line.startswith("200,")}
    assert lengths == {5}
    day_lines = [n for n, line in enumerate(lines, start=1) if line.startswith("300,")]
    assert len(day_lines) == 212
    assert table.num_rows == len(day_lines) * (1440 // 5) == 61_056
    assert malformed == []
    assert Counter(table["line_number"].to_pylist()) == dict.fromkeys(day_lines, 288)
    assert table.column_names == [*CANONICAL_COLUMNS, "line_number"]
    assert all(table.schema.field(name).type == pa.string() for name in CANONICAL_COLUMNS)


def test_real_file_meters_directions_unit_and_interval(real: tuple) -> None:
    lines, table, _ = real
    # Rows per channel from the text: each 300 record belongs to the 200 record above it.
    expected: Counter[str] = Counter()
    suffix = ""
    for line in lines:
        if line.startswith("200,"):
            suffix = line.split(",")[4]
        elif line.startswith("300,"):
            expected[f"(redacted)_{suffix}"] += 288
    assert Counter(table["meter_id"].to_pylist()) == expected
    assert set(expected) == {"(redacted)_E1", "(redacted)_B1"}
    pairs = set(zip(table["meter_id"].to_pylist(), table["direction"].to_pylist(), strict=True))
    assert pairs == {("(redacted)_E1", "import"), ("(redacted)_B1", "export")}
    assert set(table["unit"].to_pylist()) == {"kWh"}
    assert set(table["interval_minutes"].to_pylist()) == {"5"}


def test_real_file_timestamps_are_interval_starts(real: tuple) -> None:
    lines, table, _ = real
    first = table.slice(0, 288).to_pylist()
    assert lines[1].startswith("300,20231019,")
    assert first[0]["timestamp"] == "2023-10-19T00:00:00"
    assert first[0]["line_number"] == 2
    assert first[1]["timestamp"] == "2023-10-19T00:05:00"
    assert first[-1]["timestamp"] == "2023-10-19T23:55:00"
    # Values are the file's text, in order.
    assert [row["value"] for row in first] == lines[1].split(",")[2:290]


def test_real_file_400_records_set_the_quality_of_v_days(real: tuple) -> None:
    lines, table, _ = real
    # Lines 2 and 18 are V days for E1 and B1; lines 3-4 and 19-20 are their 400 records.
    for day_line in (2, 18):
        assert lines[day_line - 1].split(",")[290] == "V"
        assert lines[day_line].startswith("400,1,98,F19") and lines[day_line + 1].startswith("400,99,288,A")
        rows = table.filter(pa.compute.equal(table["line_number"], day_line))
        quality = rows["quality"].to_pylist()
        assert quality[:98] == ["substituted"] * 98
        assert quality[98:] == ["actual"] * 190
    other = table.filter(pa.compute.invert(pa.compute.is_in(table["line_number"], pa.array([2, 18]))))
    assert set(other["quality"].to_pylist()) == {"actual"}


# --- Inline files ----------------------------------------------------------------------------


def test_thirty_minute_interval_gives_48_rows() -> None:
    table, malformed = _read("\n".join([_nmi(minutes="30"), _day("20240101", _values(48), "E52")]))
    assert malformed == []
    assert table.num_rows == 48
    stamps = table["timestamp"].to_pylist()
    assert stamps[0] == "2024-01-01T00:00:00"
    assert stamps[1] == "2024-01-01T00:30:00"
    assert stamps[-1] == "2024-01-01T23:30:00"
    assert set(table["interval_minutes"].to_pylist()) == {"30"}
    assert set(table["quality"].to_pylist()) == {"estimated"}
    assert set(table["meter_id"].to_pylist()) == {"6123456789_E1"}


def test_wrong_value_count_is_malformed_with_its_line() -> None:
    short = _day("20240102", _values(47))
    long = _day("20240103", _values(49))
    text = "\n".join([_nmi(), _day("20240101", _values(48)), short, long, _day("20240104", _values(48))])
    table, malformed = _read(text)
    assert malformed == [(3, short), (4, long)]
    assert table.num_rows == 96
    assert sorted(set(table["line_number"].to_pylist())) == [2, 5]


def test_trailing_empty_fields_are_accepted_but_extra_data_is_not() -> None:
    trailing = _day("20240101", _values(48)) + ",,"
    extra = _day("20240102", _values(48)) + ",9.9"
    table, malformed = _read("\n".join([_nmi(), trailing, extra]))
    assert table.num_rows == 48
    assert malformed == [(3, extra)]


def test_impossible_date_is_malformed() -> None:
    bad = _day("20230230", _values(48))
    table, malformed = _read("\n".join([_nmi(), bad, _day("20230301", _values(48))]))
    assert malformed == [(2, bad)]
    assert table.num_rows == 48


def test_unknown_record_type_names_line_and_rule() -> None:
    text = "\n".join([_nmi(), _day("20240101", _values(48)), "250,1,2,3"])
    with pytest.raises(InputFileError) as caught:
        _read(text)
    assert caught.value.line == 3
    assert "record type 250 is not a NEM12 record (rule: nem12_record_type)" in caught.value.message
    assert "inline.csv, line 3" in str(caught.value)


def test_300_before_200_is_a_file_error() -> None:
    with pytest.raises(InputFileError) as caught:
        _read("\n".join([_day("20240101", _values(48)), _nmi()]))
    assert caught.value.line == 1
    assert "rule: nem12_record_order" in caught.value.message


def test_b_suffix_is_export_and_e_suffix_import() -> None:
    text = "\n".join([_nmi("E1"), _day("20240101", _values(48)), _nmi("B1"), _day("20240101", _values(48, "0.25"))])
    table, _ = _read(text)
    rows = {(r["meter_id"], r["direction"]) for r in table.to_pylist()}
    assert rows == {("6123456789_E1", "import"), ("6123456789_B1", "export")}
    export = table.filter(pa.compute.equal(table["direction"], "export"))
    assert set(export["value"].to_pylist()) == {"0.25"}
    assert set(export["line_number"].to_pylist()) == {4}


def test_v_quality_without_400_stays_v() -> None:
    table, malformed = _read("\n".join([_nmi(), _day("20240101", _values(48), "V")]))
    assert malformed == []
    assert set(table["quality"].to_pylist()) == {"V"}


def test_400_records_cover_part_of_a_v_day() -> None:
    text = "\n".join([_nmi(), _day("20240101", _values(48), "V"), "400,1,10,S53,,", "400,11,20,E52,,"])
    table, _ = _read(text)
    quality = table["quality"].to_pylist()
    assert quality == ["substituted"] * 10 + ["estimated"] * 10 + ["V"] * 28


def test_unreadable_400_is_malformed_and_leaves_v() -> None:
    text = "\n".join([_nmi(), _day("20240101", _values(48), "V"), "400,40,60,A,,", "400,1,48,A,,"])
    table, malformed = _read(text)
    assert malformed == [(3, "400,40,60,A,,")]
    assert set(table["quality"].to_pylist()) == {"actual"}  # the readable 400 still applies


def test_400_after_a_malformed_300_is_quarantined_too() -> None:
    bad = _day("20240101", _values(47), "V")
    table, malformed = _read("\n".join([_nmi(), bad, "400,1,48,A,,"]))
    assert malformed == [(2, bad), (3, "400,1,48,A,,")]
    assert table.num_rows == 0
    assert table.schema.field("timestamp").type == pa.string()


def test_units_are_mapped_case_insensitively_and_others_passed_on() -> None:
    def unit_of(uom: str) -> set[str]:
        table, _ = _read("\n".join([_nmi(uom=uom), _day("20240101", _values(48))]))
        return set(table["unit"].to_pylist())

    assert unit_of("kwh") == {"kWh"}
    assert unit_of("WH") == {"Wh"}
    assert unit_of("MWh") == {"MWh"}
    assert unit_of("KVARH") == {"KVARH"}


def test_quality_letters() -> None:
    text = "\n".join(
        [
            _nmi(),
            _day("20240101", _values(48), "S14"),
            _day("20240102", _values(48), "F19"),
            _day("20240103", _values(48), "N"),
        ]
    )
    table, _ = _read(text)
    by_line = {r["line_number"]: r["quality"] for r in table.to_pylist()}
    assert by_line == {2: "substituted", 3: "substituted", 4: "N"}


def test_header_500_and_900_records_and_crlf() -> None:
    text = "\r\n".join(
        ["100,NEM12,200401011200,MDA1,Ret1", _nmi(), _day("20240101", _values(48)), "500,O,S01009,20240102,", "900"]
    )
    table, malformed = _read(text + "\r\n")
    assert malformed == []
    assert table.num_rows == 48
    assert set(table["line_number"].to_pylist()) == {3}
    assert not any(v.endswith("\r") for v in table["value"].to_pylist())


def test_nem13_header_is_rejected() -> None:
    with pytest.raises(InputFileError, match=r"rule: nem12_header"):
        _read("\n".join(["100,NEM13,200401011200,MDA1,Ret1", _nmi(), _day("20240101", _values(48))]))


def test_record_after_900_is_rejected() -> None:
    with pytest.raises(InputFileError) as caught:
        _read("\n".join([_nmi(), _day("20240101", _values(48)), "900", _day("20240102", _values(48))]))
    assert caught.value.line == 4


def test_bad_interval_length_is_a_file_error() -> None:
    with pytest.raises(InputFileError, match=r"rule: nem12_nmi_details") as caught:
        _read("\n".join([_nmi(minutes="7"), _day("20240101", _values(48))]))
    assert caught.value.line == 1


def test_empty_and_no_data_files() -> None:
    with pytest.raises(InputFileError, match="empty"):
        read_nem12("empty.csv", b"\n  \n", SOURCE)
    with pytest.raises(InputFileError, match=r"rule: nem12_no_data"):
        _read(_nmi() + "\n900\n")


def test_csv_is_not_nem12() -> None:
    with pytest.raises(InputFileError) as caught:
        _read("meter_id,timestamp,value\nm1,2024-01-01T00:00:00,1\n")
    assert caught.value.line == 1
    assert "rule: nem12_record_type" in caught.value.message
