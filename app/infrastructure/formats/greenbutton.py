"""Green Button (NAESB ESPI) XML -> canonical rows, one per IntervalReading.

A Green Button file is an Atom feed whose entries each carry one ESPI resource and
link to the others by href:

- a MeterReading entry (`self` .../UsagePoint/<u>/MeterReading/<m>) links `related`
  to its ReadingType (.../ReadingType/<r>);
- a ReadingType entry gives `uom`, `powerOfTenMultiplier`, `intervalLength` (seconds),
  `flowDirection` and optionally `defaultQuality`;
- an IntervalBlock entry links `up` to .../UsagePoint/<u>/MeterReading/<m>/IntervalBlock
  and holds IntervalReadings (`timePeriod/start` in epoch seconds UTC,
  `timePeriod/duration` in seconds, `value`, optional `ReadingQuality/quality`).

Feed order is not fixed (in the NGMA gas sample the ReadingType comes after the
blocks), so the reader works in two passes: the XML is streamed once with
`lxml.etree.iterparse`, clearing each IntervalReading and entry as soon as it has
been read, so memory holds one entry's links and never the tree; the readings
are kept meanwhile as raw text in compact Arrow batches. Once the feed has been read
and every link is known, each block is resolved to its MeterReading and ReadingType
and its readings become canonical rows.

Conventions of the rows produced:

- `meter_id` is the UsagePoint id: the path segment after `UsagePoint/` in the
  block's MeterReading href (e.g. `1` for .../RetailCustomer/5/UsagePoint/1/...).
  ESPI scopes that id to its data custodian's feed, so a batch mixing several
  custodians' feeds should give them separate sources.
- `timestamp` is the reading's start in UTC, `YYYY-MM-DDTHH:MM:SSZ`, with the
  fraction of a second kept when the epoch start has one.
- `value` is the reading's value times 10**powerOfTenMultiplier, computed in
  Decimal and written as a plain decimal (value text unchanged when the multiplier
  is 0, or when the value is not a number, so the parser reports it).
- `unit` is the symbol of the ESPI UnitSymbolKind `uom` (72 -> Wh, 38 -> W, 169 ->
  therm, ...); an unlisted code is written as the number, which fails `unit_unknown`.
  A ReadingType without `uom` gives the source's declared `unit`, else "".
- `direction`: flowDirection 1 (forward, delivered to the customer) -> import, 19
  (reverse) -> export, absent -> the source's declared `direction`. Any other code is
  written as its ESPI FlowDirectionKind name (0 none, 4 net, 20 total, 21 totalByPhase,
  2 lagging, 15 quadrant1, ...; a code not in that list as `flowDirection N`), which fails
  `direction_unknown` unless the source's `direction_values` maps it (e.g.
  `{ "net" = "import" }` with `bidirectional = true` for a net meter).
- `interval_minutes` is the reading's duration (else the ReadingType's
  intervalLength) in minutes; a duration that is not whole minutes is written as
  decimal minutes (it fails downstream rather than being rounded); none -> "".
- `quality` maps ESPI QualityOfReading: 0 valid, 14 raw, 17 validated, 18 verified,
  19 revenue-quality -> actual; 7 manually edited, 11 derived -> substituted; 8 and 9
  (estimated by reference day / interpolation), 12 projected, 15 weather-normalized
  -> estimated. Absent -> the ReadingType's defaultQuality, else actual (ESPI: a
  reading is valid unless stated). Other codes are written as the number, failing
  `quality_unknown`; of several qualities on one reading the worst is kept.
- `line_number` is the source line of the `<IntervalReading>` start tag.

An IntervalReading without a start or a value, or with a start that is not epoch
seconds, is returned in `malformed` with its XML. Not well-formed XML, a root that is
not an Atom feed, a block whose MeterReading or ReadingType is not in the feed, and a
feed without readings raise InputFileError naming the line and the rule.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
from lxml import etree  # type: ignore[import-untyped]

from app.domain.errors import InputFileError
from app.domain.sources import CANONICAL_COLUMNS, QUALITY_RANK, SourceConfig
from app.infrastructure.formats import CanonicalRows, RawFile

#: ESPI UnitSymbolKind code -> unit symbol, for the energy, power and metering quantities.
UNIT_SYMBOLS = {
    "72": "Wh",
    "38": "W",
    "73": "VArh",
    "63": "VAr",
    "71": "VAh",
    "61": "VA",
    "169": "therm",
    "132": "BTU",
    "133": "BTU/h",
    "31": "J",
    "42": "m3",
    "119": "ft3",
    "120": "ft3(compensated)",
    "125": "m3/h",
    "166": "m3(uncompensated)",
    "167": "m3(compensated)",
    "134": "L",
    "128": "USGal",
    "5": "A",
    "29": "V",
    "33": "Hz",
    "0": "none",
}
#: ESPI flowDirection code -> direction.
DIRECTIONS = {"1": "import", "19": "export"}
#: The other ESPI FlowDirectionKind codes (IEC 61968-9) -> their names, written as the row's
#: direction so that it fails `direction_unknown` readably, or is mapped by `direction_values`.
FLOW_DIRECTION_NAMES = {
    "0": "none",
    "2": "lagging",
    "3": "leading",
    "4": "net",
    "5": "q1plusQ2",
    "7": "q1plusQ3",
    "8": "q1plusQ4",
    "9": "q1minusQ4",
    "10": "q2plusQ3",
    "11": "q2plusQ4",
    "12": "q2minusQ3",
    "13": "q3plusQ4",
    "14": "q3minusQ2",
    "15": "quadrant1",
    "16": "quadrant2",
    "17": "quadrant3",
    "18": "quadrant4",
    "20": "total",
    "21": "totalByPhase",
}


def flow_direction(code: str, declared: str) -> str:
    """ESPI flowDirection -> the row's direction: import, export, a FlowDirectionKind name, or
    `flowDirection N` for a code that list does not have; absent -> the source's `declared` one."""
    if not code:
        return declared
    return DIRECTIONS.get(code) or FLOW_DIRECTION_NAMES.get(code) or f"flowDirection {code}"


#: ESPI QualityOfReading code -> canonical quality.
QUALITIES = {
    **dict.fromkeys(("0", "14", "17", "18", "19"), "actual"),
    **dict.fromkeys(("7", "11"), "substituted"),
    **dict.fromkeys(("8", "9", "12", "15"), "estimated"),
}

_EPOCH = datetime(1970, 1, 1)
_EPOCH_SECONDS = re.compile(r"^[+-]?[0-9]+(?:\.[0-9]*)?$")
# The parser's number syntax: only such values are scaled, anything else goes on as written.
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_USAGE_POINT = re.compile(r"(?:^|/)UsagePoint/([^/]+)")
_READING_TYPE_ID = re.compile(r"(?:^|/)ReadingType/([^/]+)$")
_BLOCK_COLLECTION = "/IntervalBlock"
#: Readings kept as Python objects before they are packed into Arrow.
_CHUNK_ROWS = 1 << 14

#: Raw readings kept between the passes: entry ordinal, then the texts as read.
_PENDING_SCHEMA = pa.schema(
    [
        ("entry", pa.int64()),
        ("timestamp", pa.string()),
        ("duration", pa.string()),
        ("value", pa.string()),
        ("quality", pa.string()),
        ("line_number", pa.int64()),
    ]
)


def _local(tag: object) -> str:
    """Element name without its namespace ('' for comments and other non-elements)."""
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _text(element: Any) -> str:
    return (element.text or "").strip()


def _href(text: str | None) -> str:
    return (text or "").strip().rstrip("/")


@lru_cache(maxsize=1 << 12)
def _date_text(day: int) -> str | None:
    """Days since 1970-01-01 -> `YYYY-MM-DD` (cached: a file spans few days, many readings)."""
    try:
        return (_EPOCH + timedelta(days=day)).date().isoformat()
    except OverflowError:
        return None


@lru_cache(maxsize=1 << 12)
def _clock_text(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"T{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def _utc_text(start: str) -> str | None:
    """Epoch seconds -> `YYYY-MM-DDTHH:MM:SS[.f]Z`; None when `start` is not epoch seconds."""
    fraction = ""
    if start.isascii() and start.isdigit():
        whole = int(start)
    elif _EPOCH_SECONDS.match(start):
        exact = Decimal(start)
        whole = int(exact.to_integral_value(rounding=ROUND_FLOOR))
        fraction = format(exact - whole, "f")[2:].rstrip("0")
    else:
        return None
    day, seconds = divmod(whole, 86_400)
    date = _date_text(day)
    if date is None:
        return None
    return f"{date}{_clock_text(seconds)}.{fraction}Z" if fraction else f"{date}{_clock_text(seconds)}Z"


def _scaled(value: str, multiplier: int) -> str:
    """`value` x 10**multiplier, exactly, as a plain decimal."""
    if multiplier == 0 or not _NUMBER.match(value):
        return value
    return format(Decimal(value).scaleb(multiplier), "f")


@lru_cache(maxsize=256)
def _minutes(seconds: str) -> str:
    if not seconds:
        return ""
    if seconds.isascii() and seconds.isdigit():
        whole, rest = divmod(int(seconds), 60)
        if not rest:
            return str(whole)
    if not _NUMBER.match(seconds):
        return seconds
    minutes = Decimal(seconds) / 60
    return format(minutes.normalize(), "f")


@lru_cache(maxsize=256)
def _quality(codes: str) -> str:
    """Comma-joined QualityOfReading codes -> one quality: the worst, or an unknown code."""
    worst = "actual"
    for code in codes.split(","):
        quality = QUALITIES.get(code)
        if quality is None:
            return code
        if QUALITY_RANK[quality] < QUALITY_RANK[worst]:
            worst = quality
    return worst


@dataclass(frozen=True)
class _ReadingType:
    unit: str
    multiplier: int
    interval_seconds: str
    direction: str
    default_quality: str


@dataclass(frozen=True)
class _Series:
    """What every reading of one IntervalBlock entry shares."""

    meter_id: str
    reading_type: _ReadingType


class _Feed:
    """Pass one: the links and ReadingTypes of the feed, and its readings as raw text."""

    def __init__(self, path: str, source: SourceConfig) -> None:
        self.path = path
        self.source = source
        self.entries = 0  # entries read so far = ordinal of the entry being read
        self.readings_in_entry = 0
        self.reading_types: dict[str, _ReadingType] = {}
        self.reading_types_by_id: dict[str, _ReadingType] = {}
        self.meter_readings: dict[str, str | None] = {}  # MeterReading href -> its ReadingType href
        self.blocks: dict[int, tuple[int, str]] = {}  # entry ordinal -> (line, MeterReading href)
        self.malformed: list[tuple[int, str]] = []
        self.readings = 0
        self._columns: list[list[Any]] = [[] for _ in _PENDING_SCHEMA]
        self.batches: list[pa.RecordBatch] = []

    def reading(self, element: Any) -> None:
        """Keep one IntervalReading's texts (it is cleared right after), or quarantine it."""
        start = duration = value = ""
        qualities: list[str] = []
        for child in element:
            name = _local(child.tag)
            if name == "timePeriod":
                for part in child:
                    part_name = _local(part.tag)
                    if part_name == "start":
                        start = (part.text or "").strip()
                    elif part_name == "duration":
                        duration = (part.text or "").strip()
            elif name == "value":
                value = (child.text or "").strip()
            elif name == "ReadingQuality":
                qualities += [code for q in child if _local(q.tag) == "quality" and (code := _text(q))]
        self.readings += 1
        line = element.sourceline or self.readings
        timestamp = _utc_text(start)
        if timestamp is None or not value:
            self.malformed.append((line, etree.tostring(element, encoding="unicode", with_tail=False)))
            return
        self.readings_in_entry += 1
        entries, stamps, durations, values, quality, lines = self._columns
        entries.append(self.entries)
        stamps.append(timestamp)
        durations.append(duration)
        values.append(value)
        quality.append(",".join(qualities) if qualities else "")
        lines.append(line)
        if len(lines) >= _CHUNK_ROWS:
            self.pack()

    def pack(self) -> None:
        if self._columns[0]:
            arrays = [pa.array(c, f.type) for c, f in zip(self._columns, _PENDING_SCHEMA, strict=True)]
            self.batches.append(pa.RecordBatch.from_arrays(arrays, schema=_PENDING_SCHEMA))
            self._columns = [[] for _ in _PENDING_SCHEMA]

    def entry(self, element: Any) -> None:
        links: dict[str, list[str]] = {}
        resource = ""
        content: Any = None
        for child in element:
            name = _local(child.tag)
            if name == "link":
                links.setdefault(child.get("rel", ""), []).append(_href(child.get("href")))
            elif name == "content":
                content = next((c for c in child if _local(c.tag)), None)
                resource = _local(content.tag) if content is not None else ""
        self_href = (links.get("self") or [""])[0]
        if resource == "ReadingType" and self_href:
            self._reading_type(self_href, content, element.sourceline)
        elif resource == "MeterReading" and self_href:
            related = [h for h in links.get("related", []) if _READING_TYPE_ID.search(h)]
            self.meter_readings[self_href] = related[0] if related else None
        if self.readings_in_entry:
            self._block(links, self_href, element.sourceline)
        self.entries += 1
        self.readings_in_entry = 0

    def _block(self, links: dict[str, list[str]], self_href: str, line: int) -> None:
        collection = (links.get("up") or [self_href.rpartition("/")[0]])[0]
        if not collection.endswith(_BLOCK_COLLECTION):
            raise InputFileError(
                self.path,
                f"IntervalBlock entry links up to {collection or 'nothing'!r}, not to a "
                ".../MeterReading/<id>/IntervalBlock collection (rule: greenbutton_links)",
                line=line,
            )
        self.blocks[self.entries] = (line, collection[: -len(_BLOCK_COLLECTION)])

    def _reading_type(self, href: str, element: Any, line: int) -> None:
        fields = {_local(child.tag): _text(child) for child in element}
        multiplier = fields.get("powerOfTenMultiplier") or "0"
        try:
            power = int(multiplier)
        except ValueError:
            raise InputFileError(
                self.path,
                f"ReadingType {href}: powerOfTenMultiplier {multiplier!r} is not an integer "
                "(rule: greenbutton_reading_type)",
                line=line,
            ) from None
        uom = fields.get("uom", "")
        flow = fields.get("flowDirection", "")
        reading_type = _ReadingType(
            unit=UNIT_SYMBOLS.get(uom, uom) if uom else (self.source.unit or ""),
            multiplier=power,
            interval_seconds=fields.get("intervalLength", ""),
            direction=flow_direction(flow, self.source.direction),
            default_quality=fields.get("defaultQuality", ""),
        )
        self.reading_types[href] = reading_type
        found = _READING_TYPE_ID.search(href)
        if found:
            self.reading_types_by_id[found.group(1)] = reading_type

    def series(self, entry: int, first_line: int) -> _Series:
        """The meter and ReadingType of the block entry `entry` (pass two)."""
        if entry not in self.blocks:
            raise InputFileError(
                self.path,
                "IntervalReading is not inside an IntervalBlock entry (rule: greenbutton_links)",
                line=first_line,
            )
        line, meter_reading = self.blocks[entry]
        usage_point = _USAGE_POINT.search(meter_reading)
        if usage_point is None:
            raise InputFileError(
                self.path,
                f"IntervalBlock's MeterReading {meter_reading!r} names no UsagePoint (rule: greenbutton_links)",
                line=line,
            )
        if meter_reading not in self.meter_readings:
            raise InputFileError(
                self.path,
                f"IntervalBlock's MeterReading {meter_reading} is not in this feed, so its ReadingType "
                "(unit, multiplier, direction) is unknown (rule: greenbutton_reading_type)",
                line=line,
            )
        href = self.meter_readings[meter_reading]
        reading_type = self.reading_types.get(href or "")
        if reading_type is None and href:
            found = _READING_TYPE_ID.search(href)
            reading_type = self.reading_types_by_id.get(found.group(1)) if found else None
        if reading_type is None:
            missing = f"links to ReadingType {href}, which is not in this feed" if href else "links to no ReadingType"
            raise InputFileError(
                self.path,
                f"MeterReading {meter_reading} {missing}, so its readings' unit, multiplier and direction are "
                "unknown (rule: greenbutton_reading_type)",
                line=line,
            )
        return _Series(usage_point.group(1), reading_type)


def _stream(path: str, data: bytes, feed: _Feed) -> None:
    """Pass one over the XML, freeing each reading and entry once read."""
    events = etree.iterparse(
        io.BytesIO(data),
        events=("end",),
        tag=("{*}IntervalReading", "{*}entry"),  # any namespace or none: ESPI files differ
        remove_comments=True,
        remove_pis=True,
        no_network=True,
        load_dtd=False,
        resolve_entities=False,  # no external entities (XXE): a file is data, never a fetch
    )
    try:
        for _, element in events:
            if _local(element.tag) == "entry":
                feed.entry(element)
            else:
                feed.reading(element)
            element.clear(keep_tail=True)
            parent = element.getparent()
            while parent is not None and element.getprevious() is not None:
                del parent[0]
    except etree.XMLSyntaxError as error:
        line = error.position[0] if error.position else None
        raise InputFileError(path, f"is not well-formed XML: {error.msg} (rule: xml_well_formed)", line=line) from None
    root = events.root
    if root is None or _local(root.tag) not in ("feed", "entry"):
        found = _local(root.tag) if root is not None else "nothing"
        raise InputFileError(
            path,
            f"root element is <{found}>, not an Atom <feed> (rule: greenbutton_feed)",
            line=root.sourceline if root is not None else 1,
        )
    feed.pack()


def read_greenbutton(path: str, data: bytes, source: SourceConfig) -> RawFile:
    """One Green Button XML file's bytes -> canonical rows (see the module docstring)."""
    if not data.strip():
        raise InputFileError(path, "is empty (no XML)")
    if data[:2] == b"\x1f\x8b":
        raise InputFileError(path, "is gzip-compressed; decompress it first", line=1)
    feed = _Feed(path, source)
    _stream(path, data, feed)
    if feed.readings == 0:
        raise InputFileError(path, "has no IntervalReading (rule: greenbutton_no_readings)")

    rows = CanonicalRows(_CHUNK_ROWS)
    series: dict[int, _Series] = {}
    while feed.batches:
        batch = feed.batches.pop(0)  # each raw batch is let go once it has become rows
        entries, stamps, durations, values, qualities, lines = (column.to_pylist() for column in batch.columns)
        for entry, stamp, duration, value, codes, line in zip(
            entries, stamps, durations, values, qualities, lines, strict=True
        ):
            known = series.get(entry)
            if known is None:
                known = series[entry] = feed.series(entry, line)
            reading_type = known.reading_type
            quality_codes = codes or reading_type.default_quality
            rows.append(
                known.meter_id,
                stamp,
                _scaled(value, reading_type.multiplier),
                reading_type.unit,
                reading_type.direction,
                _quality(quality_codes) if quality_codes else "actual",
                _minutes(duration or reading_type.interval_seconds),
                line,
            )
    return RawFile(path=Path(path), header=list(CANONICAL_COLUMNS), table=rows.table(), malformed=feed.malformed)
