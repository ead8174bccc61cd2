"""Reading input files into raw Arrow tables: every field a string, every row its line number.

Everything that depends on a file's row order happens here, per whole file, so that
parsing can type rows independently of how they are split into batches:

- `fill_down` columns repeat the last non-empty value above;
- the wide layout is melted into canonical rows (one per line and series);
- register (cumulative) reads become interval differences;
- with `ambiguous_time = "order"`, each row's `occurrence` counts the earlier rows of the
  file with the same series and timestamp, so a repeated fall-back wall time can be told
  apart (0: the earlier instant, 1 or more: the later).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from app.domain.errors import InputFileError
from app.domain.parsing import REGISTER_RESET, REGISTER_START, VALUE_OK, parse_values
from app.domain.sources import CANONICAL_COLUMNS, ColumnMapping, SourceConfig

_GLOB_CHARS = re.compile(r"[*?\[]")
_OTHER_DELIMITERS = (",", ";", "\t", "|")
_XML_FEED = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(?:feed|entry)[\s>/]")
#: A line ends at CRLF, LF or a bare CR (old Mac files), as Arrow's CSV reader splits lines.
_LINE_END = re.compile(rb"\r\n|\n|\r")

#: File name patterns a folder is searched for, per source format.
FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "csv": ("*.csv", "*.txt"),
    "nem12": ("*.csv", "*.nem12", "*.txt"),
    "greenbutton": ("*.xml",),
}


@dataclass
class RawFile:
    """One file as received: its raw rows and the lines that did not fit the header."""

    path: Path
    header: list[str]
    table: pa.Table
    malformed: list[tuple[int, str]] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return self.table.num_rows + len(self.malformed)


def resolve_inputs(pattern: str, source_format: str = "csv") -> list[Path]:
    """A file, a folder (its files with the format's extensions) or a glob -> the files to read, sorted."""
    if _GLOB_CHARS.search(pattern) and not Path(pattern).is_file():  # "[" is common in real file names
        matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not matches:
            raise InputFileError(pattern, "no file matches this glob")
        return matches
    path = Path(pattern)
    if path.is_dir():
        patterns = FORMAT_EXTENSIONS.get(source_format, FORMAT_EXTENSIONS["csv"])
        files = sorted({p for ext in patterns for p in path.glob(ext) if p.is_file()})
        if not files:
            raise InputFileError(pattern, f"this folder holds no {' or '.join(patterns)} file")
        return files
    if not path.exists():
        raise InputFileError(pattern, "no such file or folder")
    return [path]


def sha256_of(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


#: Bytes read from the top of a file to find its header.
HEAD_BYTES = 1 << 16
#: Bytes Arrow's CSV reader takes at a time: the longest line (or quoted record) a file may have.
BLOCK_BYTES = 1 << 24
#: Longest text of a header quoted in an error message.
_QUOTED_CHARS = 300

#: Columns every raw-read row carries besides the file's own columns.
READ_LINEAGE = pa.schema(
    [
        ("file_index", pa.int32()),
        ("source_file", pa.string()),
        ("line_number", pa.int64()),
        ("row_order", pa.int64()),
        ("kind", pa.string()),
        ("detail", pa.string()),
        ("occurrence", pa.int32()),
        # Register sources: the interval energy the reader derived (the read itself stays
        # in its column, as received); null otherwise.
        ("register_delta", pa.string()),
    ]
)
KIND_ROW, KIND_MALFORMED, KIND_ERROR = "row", "malformed", "error"


def row_order(file_index: int, line_number: int | np.ndarray) -> int | np.ndarray:
    """Batch-wide read order: files in the order given, lines in file order."""
    return (file_index << 32) + line_number


def _empty_check(path: str, data: bytes) -> None:
    if not data.strip():
        raise InputFileError(path, "is empty (no header, no rows)")
    if data[:2] == b"\x1f\x8b":
        raise InputFileError(path, "is gzip-compressed; decompress it first", line=1)
    if data[:4] == b"PK\x03\x04":
        raise InputFileError(
            path, "is a ZIP archive (an Excel .xlsx workbook is one); extract the file or export it as CSV", line=1
        )


def _line_of(data: bytes, offset: int) -> int:
    """The 1-based physical line holding byte `offset` (CRLF, LF and bare CR end lines)."""
    ends = data.count(b"\n", 0, offset) + data.count(b"\r", 0, offset) - data.count(b"\r\n", 0, offset)
    return ends + 1


def _decode_check(path: str, data: bytes, encoding: str) -> None:
    if encoding not in ("utf-8", "utf-8-sig"):
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = _line_of(data, error.start)
        raise InputFileError(
            path,
            f"byte 0x{data[error.start]:02x} is not valid UTF-8 (rule: encoding); "
            'declare the file\'s encoding (e.g. encoding = "latin-1") in the source config',
            line=line,
        ) from None


# --- Headers ----------------------------------------------------------------------------------


def canonical_header(source: SourceConfig) -> list[str]:
    """The batch header of sources read as canonical rows (wide layout, NEM12, Green Button)."""
    position = ["position"] if source.format == "csv" and source.columns.position else []
    return list(CANONICAL_COLUMNS) + position


def _header_line(path: str, head: bytes, source: SourceConfig) -> tuple[str, int]:
    """(text of the header row, its physical line number), after `skip_lines` preamble lines."""
    lines = _LINE_END.split(head, source.skip_lines + 1)
    if len(lines) <= source.skip_lines:
        raise InputFileError(
            path,
            f"has {len(lines)} line(s) but the source expects {source.skip_lines} preamble line(s) "
            "before the header (rule: skip_lines)",
            line=len(lines),
        )
    line = source.skip_lines + 1
    if len(lines) == line and len(head) >= HEAD_BYTES:
        raise InputFileError(
            path,
            f"no header row: the line is longer than {HEAD_BYTES:,} bytes (rule: line too long); "
            "is this a delimited text file?",
            line=line,
        )
    text = lines[source.skip_lines].decode(source.encoding, errors="replace").lstrip("\ufeff")
    return text, line


def _split_line(text: str, source: SourceConfig) -> list[str]:
    if source.quote_char is None:
        return next(csv.reader([text], delimiter=source.delimiter, quoting=csv.QUOTE_NONE))
    return next(csv.reader([text], delimiter=source.delimiter, quotechar=source.quote_char))


def _wanted_columns(source: SourceConfig) -> list[str]:
    """File columns the source names: they must be in the file's header."""
    cols = source.columns
    if source.layout == "wide":
        named = [*cols.timestamp_columns(), cols.position, cols.quality, cols.interval_minutes]
        named += [s.column for s in source.series]
    else:
        named = list(cols.required())
    named += list(source.fill_down)
    return list(dict.fromkeys(c for c in named if c))


def _shorten(text: str, limit: int = _QUOTED_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _not_text(path: str, head: bytes, line: int) -> None:
    """UTF-16 text or binary data where delimited text is expected: say so, not which columns are missing."""
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise InputFileError(
            path,
            f"is UTF-16 text (byte order mark 0x{head[0]:02x} 0x{head[1]:02x}) (rule: encoding); "
            "save it as UTF-8, or as the encoding the source config declares",
            line=line,
        )
    nul = head.find(b"\x00")
    if nul >= 0:
        raise InputFileError(
            path,
            f"is not delimited text: it holds binary data (a NUL byte on line {_line_of(head, nul)}) "
            "(rule: binary file); is this the right file?",
            line=line,
        )


def _header_hint(text: str, header: list[str], missing: list[str], head: bytes, line: int, source: SourceConfig) -> str:
    """Why the header may lack columns: another delimiter, case or blanks, or a preamble above it."""
    if len(header) <= 1:
        found = [d for d in _OTHER_DELIMITERS if d != source.delimiter and d in text]
        if found:
            return (
                f"; the header looks {found[0]!r}-separated but the source expects "
                f"{source.delimiter!r} (rule: wrong delimiter)"
            )
    near = [f"{h!r} for {c!r}" for c in missing for h in header if h != c and h.strip().lower() == c.lower()]
    if near:
        return f"; column names differ in case or blanks: {', '.join(near)}"
    wanted = set(_wanted_columns(source))
    lines = _LINE_END.split(head, 50)[line:-1]  # whole lines below the header within the head
    for number, raw in enumerate(lines, start=line + 1):
        fields = _split_line(raw.decode(source.encoding, errors="replace"), source) if raw else []
        if wanted <= set(fields):
            return f"; the header looks to be on line {number}: set skip_lines = {number - 1} (rule: skip_lines)"
    return ""


def _file_header(path: str, head: bytes, source: SourceConfig) -> tuple[list[str], int]:
    """A delimited file's own header and its line, checked against the columns the source names."""
    _empty_check(path, head)
    text, line = _header_line(path, head, source)
    header = _split_line(text, source) if text else []
    if source.trim_trailing_delimiters:
        while header and header[-1] == "":
            header.pop()
    missing = [c for c in _wanted_columns(source) if c not in header]
    if missing:
        _not_text(path, head, line)
        hint = _header_hint(text, header, missing, head, line, source)
        raise InputFileError(
            path,
            f"missing required column(s) {', '.join(missing)}; header has {_shorten(repr(header))}{hint}",
            line=line,
        )
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise InputFileError(path, f"header repeats column(s) {', '.join(duplicated)}", line=line)
    return header, line


def _format_check(path: str, head: bytes, source: SourceConfig) -> None:
    """A cheap look at the first bytes: is this the declared non-delimited format at all?"""
    _empty_check(path, head)
    if source.format == "nem12":
        text = head.decode(source.encoding, errors="replace").lstrip("\ufeff")
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if not first.startswith(("100,", "200,")):
            raise InputFileError(
                path, "is not a NEM12 file (rule: format): its first record is not a 100 or 200 record", line=1
            )
    elif source.format == "greenbutton" and not _XML_FEED.search(head):
        raise InputFileError(
            path, "is not a Green Button (ESPI) XML file (rule: format): no Atom <feed> or <entry>", line=1
        )


def read_header(path: str, head: bytes, source: SourceConfig) -> list[str]:
    """The batch header contributed by a file, from its first bytes, checked against the source.

    Delimited long files: the file's own header. Wide files and non-delimited formats:
    the canonical columns the reader turns them into.
    """
    if source.format != "csv":
        _format_check(path, head, source)
        return canonical_header(source)
    header, _ = _file_header(path, head, source)
    return canonical_header(source) if source.layout == "wide" else header


def read_head(path: Path) -> bytes:
    """The first bytes of a file, enough for its header."""
    try:
        with path.open("rb") as handle:
            return handle.read(HEAD_BYTES)
    except OSError as error:
        raise InputFileError(str(path), f"cannot be read: {error.strerror}") from None


# --- Delimited text ---------------------------------------------------------------------------


def _body_offset(data: bytes, header_line: int) -> int:
    """Byte offset just past the header row (`header_line` is 1-based)."""
    offset = 0
    for _ in range(header_line):
        end = _LINE_END.search(data, offset)
        if end is None:
            return len(data)
        offset = end.end()
    return offset


def _trim_trailing(body: bytes, source: SourceConfig, width: int) -> bytes:
    """Drop empty fields at the end of each line, down to the header's width.

    A row whose last real field is empty keeps it, so it is not mistaken for a short row.
    """
    delimiter = source.delimiter.encode(source.encoding)
    quote = source.quote_char.encode(source.encoding) if source.quote_char else None
    lines = body.split(b"\n")
    for i, line in enumerate(lines):
        core = line[:-1] if line.endswith(b"\r") else line
        if not core.endswith(delimiter):
            continue
        if quote is not None and quote in core:
            text = core.decode("latin-1")  # byte-faithful; the delimiter and quote are ASCII here
            fields = len(_split_line(text, source))
        else:
            fields = core.count(delimiter) + 1
        cut = 0
        step = len(delimiter)
        while fields - cut > width and core[: len(core) - cut * step].endswith(delimiter):
            cut += 1
        if cut:
            lines[i] = core[: len(core) - cut * step] + line[len(core) :]
    return b"\n".join(lines)


def _csv_dialect(source: SourceConfig) -> dict[str, Any]:
    if source.quote_char is None:
        return {"delimiter": source.delimiter, "quoting": csv.QUOTE_NONE}
    return {"delimiter": source.delimiter, "quotechar": source.quote_char}


def _record_starts(body: bytes, source: SourceConfig) -> tuple[list[int], tuple[int, int] | None]:
    """The line (1-based, within `body`) on which each record starts, as a CSV parser splits records.

    CRLF, LF and bare CR end lines; a line break inside quotes does not end a record. Also
    returns the (first, last) line of the last record when it opens a quote that is never
    closed: such a record swallows every line after it.
    """
    text = body.decode(source.encoding, errors="replace")
    physical: list[str] = []

    def lines() -> Iterator[str]:
        for line in io.StringIO(text, newline=""):
            physical.append(line)
            yield line

    dialect = _csv_dialect(source)
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))  # a record may be as long as the file
    try:
        reader = csv.reader(lines(), **dialect)
        starts: list[int] = []
        last = 0
        record: list[str] = []  # the lines of the last record
        for _ in reader:
            starts.append(last + 1)
            last = reader.line_num
            record = physical[:]
            physical.clear()
        open_quote = None
        if starts and source.quote_char is not None and last > starts[-1]:
            tail = io.StringIO("".join(record), newline="")
            try:
                for _ in csv.reader(tail, strict=True, **dialect):
                    pass
            except csv.Error as error:
                if "unexpected end of data" in str(error):
                    open_quote = (starts[-1], last)
    finally:
        csv.field_size_limit(limit)
    return starts, open_quote


def _unterminated(path: str, open_quote: tuple[int, int], header_line: int) -> InputFileError:
    first, last = (header_line + n for n in open_quote)
    return InputFileError(
        path,
        f"a quoted field opens on this line and is never closed, so lines {first}-{last} would be read "
        "as one field (rule: unterminated quote)",
        line=first,
    )


def _overlong_line(body: bytes) -> tuple[int, int] | None:
    """(line within `body`, its length in bytes) of the first line longer than BLOCK_BYTES."""
    start, number = 0, 1
    for match in _LINE_END.finditer(body):
        if match.start() - start > BLOCK_BYTES:
            return number, match.start() - start
        start, number = match.end(), number + 1
    return (number, len(body) - start) if len(body) - start > BLOCK_BYTES else None


def _too_long(path: str, body: bytes, source: SourceConfig, header_line: int) -> InputFileError:
    """The error for a record longer than Arrow reads at a time, naming its line."""
    overlong = _overlong_line(body)
    if overlong is not None:
        number, size = overlong
        return InputFileError(
            path,
            f"the line is {size:,} bytes long, more than the {BLOCK_BYTES:,} a line may have (rule: line too long)",
            line=header_line + number,
        )
    starts, open_quote = _record_starts(body, source)
    if open_quote is not None:
        return _unterminated(path, open_quote, header_line)
    ends = [*starts[1:], body.count(b"\n") + 2]
    widest = max(range(len(starts)), key=lambda i: ends[i] - starts[i]) if starts else 0
    return InputFileError(
        path,
        f"a quoted record is longer than the {BLOCK_BYTES:,} bytes a line may have (rule: line too long)",
        line=header_line + (starts[widest] if starts else 1),
    )


def _physical_lines(
    path: str, body: bytes, source: SourceConfig, header_line: int, rows: int, invalid: list[tuple[int, str]]
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Physical line numbers of the parsed rows, and the malformed records with theirs.

    Arrow numbers records (`invalid` holds its record numbers within `body`), not lines. While
    every record is one LF- or CRLF-ended line the two agree; a quoted line break or bare CR line
    ends make them differ, and the records are then located with Python's csv module.
    """
    first = header_line + 1
    body_lines = body.count(b"\n") + (0 if not body or body.endswith(b"\n") else 1)
    bad = np.array(sorted(header_line + n for n, _ in invalid if n > 0), dtype=np.int64)
    lines = np.setdiff1d(np.arange(first, first + body_lines, dtype=np.int64), bad, assume_unique=True)
    if len(lines) == rows:
        return lines, [(header_line + n if n > 0 else -1, text) for n, text in invalid]
    starts, open_quote = _record_starts(body, source)
    if open_quote is not None:
        raise _unterminated(path, open_quote, header_line)
    numbers = [n for n, _ in invalid]
    if len(starts) == rows + len(invalid) and all(0 < n <= len(starts) for n in numbers):
        line_of = np.asarray(starts, dtype=np.int64) + header_line
        is_bad = np.zeros(len(starts), dtype=bool)
        is_bad[np.asarray(numbers, dtype=np.int64) - 1] = True
        return line_of[~is_bad], [(int(line_of[n - 1]), text) for n, text in invalid]
    # Arrow and Python's csv split records differently: number the rows in order.
    return np.arange(first, first + rows, dtype=np.int64), [(header_line + n if n > 0 else -1, t) for n, t in invalid]


def _read_delimited(path: str, data: bytes, source: SourceConfig) -> RawFile:
    """One delimited file's bytes as strings under its own header, with physical line numbers."""
    _empty_check(path, data)
    header, header_line = _file_header(path, data[:HEAD_BYTES], source)
    _decode_check(path, data, source.encoding)
    body = data[_body_offset(data, header_line) :]
    if source.trim_trailing_delimiters:
        body = _trim_trailing(body, source, len(header))
    invalid: list[tuple[int, str]] = []  # (record number within the body, text)

    def on_invalid(row: pcsv.InvalidRow) -> str:
        invalid.append((row.number if row.number and row.number > 0 else -1, row.text))
        return "skip"

    if body.strip():
        try:
            table = pcsv.read_csv(
                pa.BufferReader(body),
                read_options=pcsv.ReadOptions(
                    use_threads=False, encoding=source.encoding, column_names=header, block_size=BLOCK_BYTES
                ),
                parse_options=pcsv.ParseOptions(
                    delimiter=source.delimiter,
                    quote_char=source.quote_char if source.quote_char is not None else False,
                    invalid_row_handler=on_invalid,
                    ignore_empty_lines=False,
                ),
                convert_options=pcsv.ConvertOptions(
                    column_types={c: pa.string() for c in header},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except (pa.ArrowInvalid, UnicodeDecodeError) as error:
            if "straddl" in str(error):  # a record longer than a block
                raise _too_long(path, body, source, header_line) from None
            raise InputFileError(path, f"cannot be read as delimited text: {error}", line=header_line) from None
    else:
        table = pa.schema([pa.field(c, pa.string()) for c in header]).empty_table()
    lines, malformed = _physical_lines(path, body, source, header_line, table.num_rows, invalid)
    table = table.append_column("line_number", pa.array(lines, pa.int64()))
    blank = np.ones(table.num_rows, dtype=bool)
    for name in header:
        blank &= np.asarray(pc.equal(table[name], "").to_numpy(zero_copy_only=False), dtype=bool)
    if blank.any():  # blank lines are not rows
        table = table.filter(pa.array(~blank))
    if table.num_rows == 0 and not malformed:
        raise InputFileError(path, "has a header but no data rows", line=header_line)
    return RawFile(path=Path(path), header=header, table=table, malformed=malformed)


def _fill_down(table: pa.Table, columns: tuple[str, ...]) -> pa.Table:
    """Empty cells of `columns` repeat the last non-empty value above (in file order)."""
    for name in columns:
        column = table[name].combine_chunks()
        blank = pc.equal(pc.utf8_trim_whitespace(column), "")
        filled = pc.fill_null(pc.fill_null_forward(pc.if_else(blank, pa.scalar(None, pa.string()), column)), "")
        table = table.set_column(table.column_names.index(name), name, filled)
    return table


def _strip(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.utf8_trim_whitespace(pc.fill_null(column, ""))


def _melt_wide(raw: RawFile, source: SourceConfig) -> RawFile:
    """A wide file's rows -> canonical rows, one per (line, series), line-major in file order."""
    table, cols, series = raw.table, source.columns, source.series
    n, s = table.num_rows, len(series)
    per_line = pa.array(np.repeat(np.arange(n, dtype=np.int64), s))
    stamps = [_strip(table[c]) for c in cols.timestamp_columns()]
    timestamp = stamps[0] if len(stamps) == 1 else pc.binary_join_element_wise(*stamps, " ")
    values = pa.chunked_array([chunk for spec in series for chunk in table[spec.column].chunks], pa.string())
    series_major = (np.arange(n, dtype=np.int64)[:, None] + np.arange(s, dtype=np.int64)[None, :] * n).ravel()
    stem = raw.path.stem
    pattern = re.compile(source.unit_pattern) if source.unit_pattern else None
    meter_ids: list[str] = []
    units: list[str] = []
    directions: list[str] = []
    for spec in series:
        template = spec.meter_id if spec.meter_id is not None else spec.column
        meter_ids.append(template.replace("{file_stem}", stem).replace("{column}", spec.column))
        match = pattern.search(spec.column) if pattern else None
        units.append(spec.unit or (match.group("unit") if match else None) or source.unit or "")
        directions.append(spec.direction or source.direction)

    def constant(per_series: list[str]) -> pa.Array:
        return pa.array(np.tile(np.array(per_series, dtype=object), n), pa.string())

    def optional(name: str | None) -> pa.ChunkedArray | pa.Array:
        if name is None:
            return pa.repeat(pa.scalar("", pa.string()), n * s)
        return pc.take(table[name], per_line)

    columns: dict[str, pa.ChunkedArray | pa.Array] = {
        "meter_id": constant(meter_ids),
        "timestamp": pc.take(timestamp, per_line),
        "value": pc.take(values, pa.array(series_major)),
        "unit": constant(units),
        "direction": constant(directions),
        "quality": optional(cols.quality),
        "interval_minutes": optional(cols.interval_minutes),
    }
    if cols.position:
        columns["position"] = pc.take(table[cols.position], per_line)
    columns["line_number"] = pc.take(table["line_number"], per_line)
    return RawFile(path=raw.path, header=canonical_header(source), table=pa.table(columns), malformed=raw.malformed)


# --- Per-file order: registers, occurrences ---------------------------------------------------


def _series_columns(mapping: ColumnMapping) -> list[str]:
    """Columns that tell a file's series apart (meter, direction, unit)."""
    return [c for c in (mapping.meter_id, mapping.direction, mapping.unit) if c]


def _group_codes(table: pa.Table, columns: list[str]) -> np.ndarray:
    """Per row, a small integer equal for rows with equal (stripped) values in `columns`."""
    if not columns or table.num_rows == 0:
        return np.zeros(table.num_rows, dtype=np.int64)
    parts = [_strip(table[c]) for c in columns]
    key = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "\x1f")
    encoded = pc.dictionary_encode(key).combine_chunks()
    return np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def occurrences(table: pa.Table, mapping: ColumnMapping) -> np.ndarray:
    """Per row, how many earlier rows of the file have the same series, timestamp and position."""
    key = _series_columns(mapping) + list(mapping.timestamp_columns())
    if mapping.position:
        key.append(mapping.position)
    codes = _group_codes(table, list(dict.fromkeys(key)))
    n = len(codes)
    order = np.argsort(codes, kind="stable")
    ranked = codes[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]]) if n else np.array([], dtype=np.int64)
    sizes = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, sizes)
    result = np.empty(n, dtype=np.int32)
    result[order] = rank
    return result


def _decimal_text(number: Decimal, source: SourceConfig) -> str:
    text = format(number, "f")
    return text.replace(".", ",") if source.decimal == "," else text


def register_differences(table: pa.Table, source: SourceConfig, mapping: ColumnMapping) -> pa.Array:
    """Cumulative register reads -> interval energy, per series in file order.

    Each good read becomes its difference to the series' previous good read, written in
    the source's decimal convention; the first read of a series is `REGISTER_START`, a
    read below the previous one (meter reset or rollover) `REGISTER_RESET`. A missing or
    unparseable read keeps its text, and the next read is taken against the last good one.
    """
    values, status = parse_values(table[mapping.value], source)
    good = np.asarray(pc.equal(status, VALUE_OK).to_numpy(zero_copy_only=False), dtype=bool)
    numbers = values.to_pylist()
    texts = table[mapping.value].to_pylist()
    codes = _group_codes(table, _series_columns(mapping))
    last: dict[int, Decimal] = {}
    out: list[str | None] = []
    for i, text in enumerate(texts):
        if not good[i]:
            out.append(text)
            continue
        reading = Decimal(repr(numbers[i]))
        previous = last.get(int(codes[i]))
        if previous is None:
            out.append(REGISTER_START)
        elif reading < previous:
            out.append(REGISTER_RESET)
        else:
            out.append(_decimal_text(reading - previous, source))
        last[int(codes[i])] = reading
    return pa.array(out, pa.string())


# --- Files ------------------------------------------------------------------------------------


def _read_format(path: str, data: bytes, source: SourceConfig) -> RawFile:
    """A non-delimited file -> canonical rows, by the format's reader."""
    _format_check(path, data[:HEAD_BYTES], source)
    if source.format == "nem12":
        from app.infrastructure.formats.nem12 import read_nem12

        return read_nem12(path, data, source)
    from app.infrastructure.formats.greenbutton import read_greenbutton

    return read_greenbutton(path, data, source)


def parse_raw_bytes(path: str, data: bytes, source: SourceConfig) -> RawFile:
    """One file's bytes as string rows with physical line numbers, in file order.

    Delimited long files keep their own columns; wide files and other formats become
    canonical rows. The table ends with `line_number` and `occurrence`. File-level
    problems raise InputFileError naming the file and line; rows whose field count does
    not match the header are returned as `malformed` for quarantine.
    """
    if source.format != "csv":
        raw = _read_format(path, data, source)
    else:
        raw = _read_delimited(path, data, source)
        if source.fill_down:
            raw.table = _fill_down(raw.table, source.fill_down)
        if source.layout == "wide":
            raw = _melt_wide(raw, source)
    mapping = source.reading_columns()
    if source.value_kind == "register":
        delta = register_differences(raw.table, source, mapping)
    else:
        delta = pa.nulls(raw.table.num_rows, pa.string())
    if source.ambiguous_time == "order":
        occurrence = pa.array(occurrences(raw.table, mapping), pa.int32())
    else:
        occurrence = pa.repeat(pa.scalar(0, pa.int32()), raw.table.num_rows)
    raw.table = raw.table.append_column("occurrence", occurrence).append_column("register_delta", delta)
    return raw


def read_schema(header: list[str]) -> pa.Schema:
    """Schema of a raw read: the batch's file columns as strings, then READ_LINEAGE."""
    return pa.schema([pa.field(c, pa.string()) for c in header] + list(READ_LINEAGE))


def raw_read_table(file_index: int, path: str, data: bytes, source: SourceConfig, header: list[str]) -> pa.Table:
    """One file as raw-read rows under the batch header: its rows, its malformed lines, or its error.

    The same function reads files in local mode and on Spark executors, so both modes see
    identical rows, line numbers, read order and file errors.
    """
    schema = read_schema(header)
    try:
        raw = parse_raw_bytes(path, data, source)
    except InputFileError as error:
        return pa.Table.from_pylist(
            [
                {
                    "file_index": file_index,
                    "source_file": path,
                    "line_number": error.line,
                    "row_order": row_order(file_index, error.line or 0),
                    "kind": KIND_ERROR,
                    "detail": error.message,
                    "occurrence": 0,
                    "register_delta": None,
                    **dict.fromkeys(header, ""),
                }
            ],
            schema=schema,
        )
    n = raw.table.num_rows
    lines = raw.table["line_number"].to_numpy()
    columns = {c: raw.table[c] if c in raw.header else pa.repeat("", n).cast(pa.string()) for c in header}
    rows = pa.table(
        {
            **columns,
            "file_index": pa.repeat(pa.scalar(file_index, pa.int32()), n),
            "source_file": pa.repeat(path, n).cast(pa.string()),
            "line_number": raw.table["line_number"],
            "row_order": pa.array(row_order(file_index, lines), pa.int64()),
            "kind": pa.repeat(KIND_ROW, n).cast(pa.string()),
            "detail": pa.nulls(n, pa.string()),
            "occurrence": raw.table["occurrence"],
            "register_delta": raw.table["register_delta"],
        },
        schema=schema,
    )
    if not raw.malformed:
        return rows
    bad = pa.Table.from_pylist(
        [
            {
                "file_index": file_index,
                "source_file": path,
                "line_number": line,
                "row_order": row_order(file_index, line),
                "kind": KIND_MALFORMED,
                "detail": text,
                "occurrence": 0,
                "register_delta": None,
                **dict.fromkeys(header, ""),
            }
            for line, text in raw.malformed
        ],
        schema=schema,
    )
    return pa.concat_tables([rows, bad])
