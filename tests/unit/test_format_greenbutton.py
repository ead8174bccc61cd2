"""Green Button (ESPI) reader: streamed Atom feeds to one canonical row per IntervalReading.

The real files are in `examples/data/greenbutton/`: a year of hourly electricity for a
multi-family building (the official Green Button sample), a nine-day hourly file and
an NGMA gas provider file, published in vladistan/greenbutton_objects @
0724a4731c2640972cddcf099ab24ab36c6c44e2, `tests/data/`, Apache-2.0 (see
examples/data/README.md); their values are illustrative rather than a real customer's.
Expected counts, values and timestamps are computed here from the files' text.
"""

from __future__ import annotations

import re
import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from app.domain.errors import InputFileError
from app.domain.sources import CANONICAL_COLUMNS, SourceConfig
from app.infrastructure.formats import greenbutton
from app.infrastructure.formats.greenbutton import read_greenbutton

DATA = Path(__file__).resolve().parents[2] / "examples" / "data" / "greenbutton"
COASTAL = "Coastal_Multi_Family_Jan_1_2011_to_Jan_1_2012_RetailCustomer_5.xml"
NINE_DAYS = "TestGBDataHourlyNineDaysBinnedDaily.xml"
GAS = "ngma_gas_provider_2024-07-16.xml"
SOURCE = SourceConfig(name="gb_test", path="x.xml", format="greenbutton")

_READING = re.compile(r"<(?:\w+:)?IntervalReading>(.*?)</(?:\w+:)?IntervalReading>", re.S)
_START = re.compile(r"<(?:\w+:)?timePeriod>.*?<(?:\w+:)?start>([^<]+)</", re.S)
_VALUE = re.compile(r"<(?:\w+:)?value>([^<]+)</")


def _utc(epoch: str) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- The real files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "meter", "unit", "minutes"),
    [(COASTAL, "1", "Wh", {"60"}), (NINE_DAYS, "2", "Wh", {"60"}), (GAS, "01", "", None)],
)
def test_real_file_one_row_per_interval_reading(name: str, meter: str, unit: str, minutes: set[str] | None) -> None:
    text = (DATA / name).read_text(encoding="utf-8")
    readings = _READING.findall(text)
    assert len(readings) == len(re.findall(r"<(?:\w+:)?IntervalReading>", text)) > 0
    raw = read_greenbutton(name, text.encode(), SOURCE)
    table = raw.table
    assert raw.malformed == []
    assert table.num_rows == len(readings)
    assert table.column_names == [*CANONICAL_COLUMNS, "line_number"]
    assert all(table.schema.field(c).type == pa.string() for c in CANONICAL_COLUMNS)
    assert set(table["meter_id"].to_pylist()) == {meter}
    assert set(table["direction"].to_pylist()) == {"import"}
    assert set(table["unit"].to_pylist()) == {unit}
    assert set(table["quality"].to_pylist()) == {"actual"}
    # Every multiplier in these files is 0 (or absent), so values are the file's text.
    assert set(re.findall(r"<(?:\w+:)?powerOfTenMultiplier>([^<]*)<", text)) <= {"0"}
    assert table["value"].to_pylist() == [_VALUE.search(r).group(1) for r in readings]  # type: ignore[union-attr]
    first_line = text[: text.index("IntervalReading>")].count("\n") + 1
    assert table["line_number"][0].as_py() == first_line
    if minutes is not None:
        assert set(table["interval_minutes"].to_pylist()) == minutes


@pytest.mark.parametrize("name", [COASTAL, NINE_DAYS])
def test_real_hourly_file_timestamps_from_epoch_starts(name: str) -> None:
    text = (DATA / name).read_text(encoding="utf-8")
    starts = [_START.search(r).group(1) for r in _READING.findall(text)]  # type: ignore[union-attr]
    table = read_greenbutton(name, text.encode(), SOURCE).table
    stamps = table["timestamp"].to_pylist()
    assert stamps[0] == _utc(starts[0])
    assert stamps == [_utc(s) for s in starts]


def test_real_file_first_timestamps() -> None:
    coastal = read_greenbutton(COASTAL, (DATA / COASTAL).read_bytes(), SOURCE).table
    assert coastal["timestamp"][0].as_py() == "2011-01-01T08:00:00Z"  # 1293868800
    nine = read_greenbutton(NINE_DAYS, (DATA / NINE_DAYS).read_bytes(), SOURCE).table
    assert nine["timestamp"][0].as_py() == "2014-01-01T05:00:00Z"  # 1388552400


def test_real_gas_file_reading_type_after_blocks_and_empty() -> None:
    """The NGMA file lists its (empty) ReadingType after the blocks and uses monthly readings."""
    text = (DATA / GAS).read_text(encoding="utf-8")
    assert text.index("<ns:ReadingType/>") > text.rindex("<ns:IntervalBlock>")
    assert "<ns:uom>" not in text
    table = read_greenbutton(GAS, text.encode(), SOURCE).table
    # Fractional epoch starts keep their fraction.
    assert table["timestamp"][0].as_py() == "2024-07-16T18:26:24.66136Z"
    durations = [re.search(r"<ns:duration>(\d+)<", r).group(1) for r in _READING.findall(text)]  # type: ignore[union-attr]
    assert table["interval_minutes"].to_pylist() == [str(int(d) // 60) for d in durations]


# --- Inline feeds ----------------------------------------------------------------------------

_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">\n'


def _reading_type(
    multiplier: str = "0", uom: str = "72", flow: str = "1", interval: str = "3600", href: str = "ReadingType/1"
) -> str:
    return (
        f'<entry><link rel="self" href="{href}"/>\n<content><ReadingType xmlns="http://naesb.org/espi">'
        f"<flowDirection>{flow}</flowDirection><intervalLength>{interval}</intervalLength>"
        f"<powerOfTenMultiplier>{multiplier}</powerOfTenMultiplier><uom>{uom}</uom></ReadingType></content></entry>\n"
    )


def _meter_reading(reading_type: str | None = "ReadingType/1", point: str = "7") -> str:
    related = f'<link rel="related" href="{reading_type}"/>' if reading_type else ""
    return (
        f'<entry><link rel="self" href="RetailCustomer/9/UsagePoint/{point}/MeterReading/1"/>{related}\n'
        '<content><MeterReading xmlns="http://naesb.org/espi"/></content></entry>\n'
    )


def _reading(start: int, value: str | None = "1000", duration: str | None = "3600", quality: str = "") -> str:
    period = f"<duration>{duration}</duration>" if duration is not None else ""
    value_xml = f"<value>{value}</value>" if value is not None else ""
    quality_xml = "".join(f"<ReadingQuality><quality>{q}</quality></ReadingQuality>" for q in quality.split(",") if q)
    return (
        f"<IntervalReading>{quality_xml}<timePeriod>{period}<start>{start}</start></timePeriod>"
        f"{value_xml}</IntervalReading>\n"
    )


def _block(readings: list[str], point: str = "7") -> str:
    return (
        f'<entry>\n<link rel="up" href="RetailCustomer/9/UsagePoint/{point}/MeterReading/1/IntervalBlock"/>\n'
        '<content><IntervalBlock xmlns="http://naesb.org/espi">\n' + "".join(readings) + "</IntervalBlock></content>"
        "</entry>\n"
    )


def _feed(*entries: str) -> bytes:
    return (_HEAD + "".join(entries) + "</feed>\n").encode()


def _line_of(data: bytes, needle: str, occurrence: int = 0) -> int:
    """1-based line of the `occurrence`-th `needle` in `data`."""
    at = -1
    for _ in range(occurrence + 1):
        at = data.index(needle.encode(), at + 1)
    return data.count(b"\n", 0, at) + 1


def _read(data: bytes) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    raw = read_greenbutton("inline.xml", data, SOURCE)
    return raw.table.to_pylist(), raw.malformed


def test_multiplier_scales_values_exactly() -> None:
    rows, _ = _read(_feed(_meter_reading(), _reading_type(multiplier="-3"), _block([_reading(0, "1000")])))
    assert rows[0]["value"] == "1.000"
    assert Decimal(rows[0]["value"]) == 1
    assert rows[0]["unit"] == "Wh"
    rows, _ = _read(_feed(_meter_reading(), _reading_type(multiplier="3"), _block([_reading(0, "273")])))
    assert rows[0]["value"] == "273000"


def test_reading_type_fields_map_to_unit_direction_and_minutes() -> None:
    data = _feed(_meter_reading(), _reading_type(uom="38", flow="19"), _block([_reading(3600)]))
    rows, _ = _read(data)
    assert rows == [
        {
            "meter_id": "7",
            "timestamp": "1970-01-01T01:00:00Z",
            "value": "1000",
            "unit": "W",
            "direction": "export",
            "quality": "actual",
            "interval_minutes": "60",
            "line_number": _line_of(data, "<IntervalReading>"),
        }
    ]
    rows, _ = _read(_feed(_meter_reading(), _reading_type(uom="999", flow="7"), _block([_reading(0)])))
    assert (rows[0]["unit"], rows[0]["direction"]) == ("999", "q1plusQ3")
    rows, _ = _read(_feed(_meter_reading(), _reading_type(uom="169"), _block([_reading(0)])))
    assert rows[0]["unit"] == "therm"


def test_duration_falls_back_to_interval_length() -> None:
    rows, _ = _read(_feed(_meter_reading(), _reading_type(interval="900"), _block([_reading(0, duration=None)])))
    assert rows[0]["interval_minutes"] == "15"


def test_quality_codes() -> None:
    codes = ["", "0", "8", "9", "7", "11", "12", "10", "0,9", "19,7"]
    readings = [_reading(i * 3600, quality=q) for i, q in enumerate(codes)]
    rows, _ = _read(_feed(_meter_reading(), _reading_type(), _block(readings)))
    assert [r["quality"] for r in rows] == [
        "actual",
        "actual",
        "estimated",
        "estimated",
        "substituted",
        "substituted",
        "estimated",
        "10",
        "estimated",
        "substituted",
    ]


def test_reading_type_after_the_blocks_and_prefixed_namespaces() -> None:
    data = (
        b'<a:feed xmlns:a="http://www.w3.org/2005/Atom" xmlns:e="http://naesb.org/espi">'
        b"<a:entry><a:content><e:IntervalBlock><e:IntervalReading><e:timePeriod><e:duration>3600</e:duration>"
        b"<e:start>7200</e:start></e:timePeriod><e:value>5</e:value></e:IntervalReading></e:IntervalBlock>"
        b'</a:content><a:link href="U/1/UsagePoint/42/MeterReading/3/IntervalBlock" rel="up"/></a:entry>'
        b'<a:entry><a:content><e:MeterReading/></a:content><a:link href="U/1/UsagePoint/42/MeterReading/3" rel="self"/>'
        b'<a:link href="ReadingType/5" rel="related"/></a:entry>'
        b"<a:entry><a:content><e:ReadingType><e:uom>72</e:uom><e:powerOfTenMultiplier>-1</e:powerOfTenMultiplier>"
        b'</e:ReadingType></a:content><a:link href="ReadingType/5" rel="self"/></a:entry></a:feed>'
    )
    rows, malformed = _read(data)
    assert malformed == []
    assert [(r["meter_id"], r["timestamp"], r["value"], r["unit"]) for r in rows] == [
        ("42", "1970-01-01T02:00:00Z", "0.5", "Wh")
    ]


def test_missing_reading_type_is_a_file_error_naming_the_rule() -> None:
    data = _feed(_meter_reading("ReadingType/9"), _reading_type(), _block([_reading(0)]))
    with pytest.raises(InputFileError) as caught:
        _read(data)
    assert "rule: greenbutton_reading_type" in caught.value.message
    assert "ReadingType/9" in caught.value.message
    assert caught.value.line == _line_of(data, "<entry>", 2)  # the IntervalBlock entry
    with pytest.raises(InputFileError, match=r"links to no ReadingType.*greenbutton_reading_type"):
        _read(_feed(_meter_reading(None), _reading_type(), _block([_reading(0)])))
    with pytest.raises(InputFileError, match=r"MeterReading .* is not in this feed.*greenbutton_reading_type"):
        _read(_feed(_reading_type(), _block([_reading(0)])))


def test_not_xml_is_a_file_error_with_its_line() -> None:
    with pytest.raises(InputFileError) as caught:
        read_greenbutton("bad.xml", b"meter_id,timestamp,value\nm1,2024-01-01,1\n", SOURCE)
    assert caught.value.line == 1
    assert "rule: xml_well_formed" in caught.value.message
    broken = _HEAD + "<entry>\n<content>\n</entry>\n</feed>\n"
    with pytest.raises(InputFileError) as caught:
        read_greenbutton("broken.xml", broken.encode(), SOURCE)
    assert caught.value.line == 5
    assert "rule: xml_well_formed" in caught.value.message


def test_other_xml_and_empty_feeds_are_file_errors() -> None:
    with pytest.raises(InputFileError, match=r"<html>.*rule: greenbutton_feed"):
        read_greenbutton("page.xml", b"<html><body>hi</body></html>", SOURCE)
    with pytest.raises(InputFileError, match=r"rule: greenbutton_no_readings"):
        _read(_feed(_meter_reading(), _reading_type()))
    with pytest.raises(InputFileError, match="empty"):
        read_greenbutton("empty.xml", b"  \n", SOURCE)


def test_reading_without_value_or_start_is_malformed() -> None:
    good, no_value, bad_start = _reading(0), _reading(3600, value=None), _reading(0).replace(">0<", ">soon<")
    data = _feed(_meter_reading(), _reading_type(), _block([good, no_value, bad_start]))
    rows, malformed = _read(data)
    lines = [_line_of(data, "<IntervalReading>", i) for i in range(3)]
    assert [r["line_number"] for r in rows] == lines[:1]
    assert [line for line, _ in malformed] == lines[1:]
    assert malformed[0][1].startswith("<IntervalReading")
    assert "<start>3600</start>" in malformed[0][1] and "<value>" not in malformed[0][1]
    assert "soon" in malformed[1][1]


def test_external_entities_are_not_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("4242")
    doctype = f'<!DOCTYPE feed [<!ENTITY leak SYSTEM "{secret.as_uri()}">]>\n'
    data = _feed(_meter_reading(), _reading_type(), _block([_reading(0, value="&leak;"), _reading(3600)]))
    data = data.replace(b"<feed ", doctype.encode() + b"<feed ", 1)
    rows, malformed = _read(data)
    assert [r["value"] for r in rows] == ["1000"]
    assert len(malformed) == 1
    assert "4242" not in malformed[0][1]


def test_streams_a_large_feed_without_holding_the_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """50,000 readings in one IntervalBlock: each is freed once read, so memory stays bounded.

    tracemalloc sees Python's allocations; libxml2's tree is checked directly by keeping
    the parser and counting what is left of the tree at the end.
    """
    count = 50_000
    body = "".join(
        f"<IntervalReading><timePeriod><duration>900</duration><start>{1_700_000_000 + 900 * i}</start>"
        f"</timePeriod><value>{i % 997}</value></IntervalReading>\n"
        for i in range(count)
    )
    data = _feed(_meter_reading(), _reading_type(interval="900"), _block([body]))
    parsers: list[Any] = []
    real_iterparse = greenbutton.etree.iterparse

    def keep(*args: Any, **kwargs: Any) -> Any:
        parsers.append(real_iterparse(*args, **kwargs))
        return parsers[-1]

    monkeypatch.setattr(greenbutton.etree, "iterparse", keep)
    tracemalloc.start()
    try:
        raw = read_greenbutton("big.xml", data, SOURCE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raw.table.num_rows == count
    assert raw.table["timestamp"][count - 1].as_py() == _utc(str(1_700_000_000 + 900 * (count - 1)))
    assert set(raw.table["interval_minutes"].to_pylist()) == {"15"}
    assert peak < 100 * 2**20, f"Python peak {peak / 2**20:.0f} MiB"
    left = sum(1 for _ in parsers[0].root.iter())
    assert left < 10, f"{left} elements of the tree were kept"
