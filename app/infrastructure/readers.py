"""Reading input files into raw Arrow tables: every field a string, every row its line number.

Everything that depends on a file's row order happens here, per whole file, so that
parsing can type rows independently of how they are split into batches:

- gzip files and single-member ZIP archives are unpacked (the stored bytes stay what is
  checksummed);
- header names are replaced by the source's `header`, or made unique (`Usage`, `Usage.1`);
- `fill_down` columns repeat the last non-empty value above;
- the wide layout is melted into canonical rows (one per line and series), and the
  time-of-day layout into one canonical row per (line, interval column);
- with `ambiguous_time = "order"`, each row's `occurrence` counts the earlier rows of the
  file with the same series and timestamp, so a repeated fall-back wall time can be told
  apart (0: the earlier instant, 1 or more: the later).
"""

from __future__ import annotations

import csv
import glob
import gzip
import hashlib
import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from app.domain.errors import InputFileError
from app.domain.parsing import (
    TS_OK,
    TS_UNPARSEABLE,
    parse_positions,
)
from app.domain.schemas import KIND_ERROR, KIND_MALFORMED, KIND_ROW, read_schema
from app.domain.sources import CANONICAL_COLUMNS, ColumnMapping, SourceConfig
from app.infrastructure.formats import RawFile
from app.infrastructure.formats.greenbutton import read_greenbutton
from app.infrastructure.formats.nem12 import read_nem12
from app.infrastructure.formats.parquet import read_parquet

_GLOB_CHARS = re.compile(r"[*?\[]")
_OTHER_DELIMITERS = (",", ";", "\t", "|")
_XML_FEED = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(?:feed|entry)[\s>/]")
#: A line ends at CRLF, LF or a bare CR (old Mac files), as Arrow's CSV reader splits lines.
_LINE_END = re.compile(rb"\r\n|\n|\r")

#: File name patterns a folder is searched for, per source format: the plain files, the
#: same gzip-compressed, and ZIP archives (each holding one such file).
FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "csv": ("*.csv", "*.txt", "*.csv.gz", "*.txt.gz", "*.zip"),
    "nem12": ("*.csv", "*.nem12", "*.txt", "*.csv.gz", "*.nem12.gz", "*.txt.gz", "*.zip"),
    "greenbutton": ("*.xml", "*.xml.gz", "*.zip"),
    "parquet": ("*.parquet", "*.zip"),
}
#: Formats read as a table of named columns, in the long, wide or time-of-day layout.
TABULAR_FORMATS = ("csv", "parquet")
#: Canonical column naming the file column a wide or time-of-day reading came from (lineage).
COLUMN = "column"
#: Canonical column of the interval number within the local day.
POSITION = "position"


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


def row_order(file_index: int, ordinal: int | np.ndarray) -> int | np.ndarray:
    """Batch-wide read order: files in the order given, then `ordinal` within the file.

    Data rows take their 1-based ordinal among the file's rows in reading order, so two
    readings of one line (a wide line, a one-line XML feed) still differ and the later one
    wins ties like a later line does. Malformed lines and file errors, which are never
    joined with data rows, take their line number.
    """
    return (file_index << 32) + ordinal


# --- Compressed inputs --------------------------------------------------------------------------

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive's directory
_PARQUET_MAGIC = b"PAR1"
#: Longest Parquet footer (schema and row-group metadata) read_head takes.
_MAX_PARQUET_FOOTER = 1 << 26
#: Archives inside archives unpacked at most (a ZIP member that is a .csv.gz).
_MAX_NESTING = 2
#: Other containers seen in the wild, by their first bytes: what to say about them.
_UNSUPPORTED = (
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "is an Excel 97-2003 workbook (.xls) or another OLE2 document; export the sheet as CSV",
    ),
    (b"\xfd7zXZ\x00", "is xz-compressed; only gzip and ZIP are read: decompress it first"),
    (b"\x28\xb5\x2f\xfd", "is zstd-compressed; only gzip and ZIP are read: decompress it first"),
    (b"7z\xbc\xaf\x27\x1c", "is a 7-Zip archive; only gzip and ZIP are read: extract the file first"),
)
_BZIP2 = re.compile(rb"^BZh[1-9]1AY&SY")
_ARCHIVE_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile, RuntimeError, NotImplementedError, ValueError)


def _members(path: str, archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    """The one file a ZIP archive must hold (folders and macOS `__MACOSX/` metadata aside)."""
    names = [info.filename for info in archive.infolist() if not info.is_dir()]
    if "xl/workbook.xml" in names or ("[Content_Types].xml" in names and any(n.startswith("xl/") for n in names)):
        raise InputFileError(
            path,
            "is a ZIP archive holding an Excel workbook (.xlsx: XML members such as xl/workbook.xml), "
            "not a data file; export the sheet as CSV (rule: archive)",
            line=1,
        )
    if "mimetype" in names and any(n == "content.xml" for n in names):
        raise InputFileError(
            path,
            "is a ZIP archive holding an OpenDocument file (.ods), not a data file; export the sheet as CSV "
            "(rule: archive)",
            line=1,
        )
    files = [i for i in archive.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
    if len(files) != 1:
        listed = _shorten(", ".join(names)) if names else "none"
        raise InputFileError(
            path,
            f"is a ZIP archive with {len(files)} member file(s) ({listed}); it must hold exactly one file "
            "(rule: archive)",
            line=1,
        )
    return files[0]


def _archive_error(path: str, kind: str, error: BaseException) -> InputFileError:
    return InputFileError(path, f"is {kind} but cannot be unpacked: {error} (rule: archive)", line=1)


def _named_check(path: str, data: bytes) -> None:
    """A `.gz` or `.zip` name on bytes that are not that: say so rather than read them as text."""
    name = path.lower()
    if name.endswith(".gz") and data[:2] != _GZIP_MAGIC:
        raise InputFileError(
            path, "is named .gz but is not gzip-compressed (no gzip magic bytes 1f 8b) (rule: archive)", line=1
        )
    if name.endswith(".zip") and data[:4] not in _ZIP_MAGICS:
        raise InputFileError(path, "is named .zip but is not a ZIP archive (rule: archive)", line=1)


def unpack(path: str, data: bytes, *, head: bool = False) -> tuple[bytes, str]:
    """A file's bytes as stored -> (its content, where the content came from, "" for a plain file).

    gzip data (a `.gz` file, or any file starting with the gzip magic) is decompressed; a ZIP
    archive must hold exactly one file, which is read. With `head`, `data` is only the start
    of the file (or of its content, as `read_head` unpacks it): gzip is decompressed as far as
    it goes, up to HEAD_BYTES.
    """
    if not head:
        _named_check(path, data)
    where: list[str] = []
    for _ in range(_MAX_NESTING):
        if data[:2] == _GZIP_MAGIC:
            try:
                if head and len(data) >= HEAD_BYTES:  # the start of a longer file: as far as it goes
                    data = zlib.decompressobj(wbits=31).decompress(data, HEAD_BYTES)
                else:
                    data = gzip.decompress(data)
            except _ARCHIVE_ERRORS as error:
                raise _archive_error(path, "gzip-compressed", error) from None
            where.append("the gzip-decompressed file")
        elif data[:4] in _ZIP_MAGICS:
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    member = _members(path, archive)
                    data = archive.read(member)
            except _ARCHIVE_ERRORS as error:
                raise _archive_error(path, "a ZIP archive", error) from None
            where.append(f"ZIP member {member.filename!r}")
        else:
            break
    return data, " > ".join(where)


def _in_archive(error: InputFileError, where: str) -> InputFileError:
    """`error` about an unpacked file's content, saying which content its line counts in."""
    return InputFileError(error.path, f"{error.message} (in {where})", line=error.line)


def _empty_check(path: str, data: bytes) -> None:
    if not data.strip():
        raise InputFileError(path, "is empty (no header, no rows)")
    if data[:2] == _GZIP_MAGIC:
        raise InputFileError(path, f"is gzip-compressed more than {_MAX_NESTING} times over (rule: archive)", line=1)
    if data[:4] in _ZIP_MAGICS:
        raise InputFileError(path, f"is a ZIP archive nested more than {_MAX_NESTING} deep (rule: archive)", line=1)
    for magic, message in _UNSUPPORTED:
        if data.startswith(magic):
            raise InputFileError(path, f"{message} (rule: archive)", line=1)
    if _BZIP2.match(data):
        raise InputFileError(
            path, "is bzip2-compressed; only gzip and ZIP are read: decompress it first (rule: archive)", line=1
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


def _melted(source: SourceConfig) -> bool:
    """Whether the source's tables are melted into canonical rows (wide and time-of-day layouts)."""
    return source.format in TABULAR_FORMATS and source.layout in ("wide", "time_of_day")


def canonical_header(source: SourceConfig) -> list[str]:
    """The batch header of sources read as canonical rows (wide and time-of-day layouts, NEM12, Green Button).

    The wide and time-of-day layouts add `position` (when the reading's interval is numbered
    within its day) and `column`, the file column each value was read from.
    """
    if not _melted(source):
        return list(CANONICAL_COLUMNS)
    position = [POSITION] if source.layout == "time_of_day" or source.columns.position else []
    return [*CANONICAL_COLUMNS, *position, COLUMN]


def wide_meter_column(source: SourceConfig) -> str | None:
    """The wide layout's meter column: `columns.meter_id` only when the config sets it.

    (ColumnMapping defaults `meter_id` to "meter_id", which the wide layout never used: its
    series name their meters.)
    """
    columns = source.columns
    return columns.meter_id if "meter_id" in columns.model_fields_set else None


def _time_of_day_meter_column(source: SourceConfig) -> str | None:
    """The time-of-day layout's meter column, unless the source names a fixed meter id."""
    return None if source.meter_id is not None else source.columns.meter_id


def unique_names(names: list[str]) -> list[str]:
    """Repeated names made unique as pandas does: the second `Usage` is `Usage.1`, the third `Usage.2`.

    The first occurrence keeps the bare name; a suffixed name never takes one the header has.
    """
    taken = set(names)
    counts: dict[str, int] = {}
    unique: list[str] = []
    for name in names:
        if name not in counts:
            counts[name] = 0
            unique.append(name)
            continue
        count = counts[name]
        candidate = name
        while candidate in taken:
            count += 1
            candidate = f"{name}.{count}"
        counts[name] = count
        taken.add(candidate)
        unique.append(candidate)
    return unique


def _named_header(path: str, names: list[str], line: int | None, source: SourceConfig) -> list[str]:
    """A file's column names as the source reads them: its `header`, else the file's, made unique."""
    if not source.header:
        return unique_names(names)
    if len(names) != len(source.header):
        where = "header row" if line is not None else "schema"
        raise InputFileError(
            path,
            f"the file's {where} has {len(names)} column(s) but the source's `header` names {len(source.header)} "
            f"(rule: header); the file's: {_shorten(repr(names))}",
            line=line,
        )
    return unique_names(list(source.header))


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
        named = [wide_meter_column(source), *cols.timestamp_columns(), cols.position, cols.quality]
        named += [cols.interval_minutes, *(s.column for s in source.series)]
    elif source.layout == "time_of_day":
        named = [_time_of_day_meter_column(source), *cols.timestamp_columns(), cols.unit, cols.direction, cols.quality]
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
    """A delimited file's header (see `_named_header`) and its line, checked against the columns the source names."""
    _empty_check(path, head)
    text, line = _header_line(path, head, source)
    fields = _split_line(text, source) if text else []
    if source.trim_trailing_delimiters:
        while fields and fields[-1] == "":
            fields.pop()
    if source.header and len(fields) != len(source.header):
        _not_text(path, head, line)
    header = _named_header(path, fields, line, source)
    missing = [c for c in _wanted_columns(source) if c not in header]
    if missing:
        _not_text(path, head, line)
        hint = _header_hint(text, header, missing, head, line, source)
        raise InputFileError(
            path,
            f"missing required column(s) {', '.join(missing)}; header has {_shorten(repr(header))}{hint}",
            line=line,
        )
    if source.layout == "time_of_day":
        _interval_columns(path, header, line, source)
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


def _interval_columns(path: str, header: list[str], line: int | None, source: SourceConfig) -> list[str]:
    """The time-of-day layout's interval columns: those matching `interval_columns`, in header order.

    Their number must be a day's count of intervals, up to the count of a 25-hour day.
    """
    pattern = re.compile(source.interval_columns)
    cols = source.columns
    named = {_time_of_day_meter_column(source), *cols.timestamp_columns(), cols.unit, cols.direction, cols.quality}
    found = [c for c in header if c not in named and pattern.search(c)]
    minutes = source.interval_minutes
    day, longest = 1440 // minutes, (1440 + 60) // minutes if minutes <= 60 else 1440 // minutes
    if not day <= len(found) <= longest:
        listed = f": {_shorten(', '.join(found))}" if found else ""
        raise InputFileError(
            path,
            f"{len(found)} column(s) match interval_columns {source.interval_columns!r}{listed}; a day of "
            f"{minutes}-minute intervals has {day}, a 25-hour day {longest} (rule: interval_columns)",
            line=line,
        )
    return found


def _parquet_schema(path: str, data: bytes) -> pa.Schema:
    """The schema of a Parquet file (or of the footer `read_head` frames as one)."""
    _empty_check(path, data)
    if data[:4] != _PARQUET_MAGIC or data[-4:] != _PARQUET_MAGIC:
        raise InputFileError(
            path, "is not a Parquet file (rule: format): it does not start and end with the magic PAR1", line=1
        )
    try:
        return pq.read_schema(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as error:
        raise InputFileError(path, f"is not a readable Parquet file (rule: format): {error}") from None


def parquet_header(path: str, head: bytes, source: SourceConfig) -> list[str]:
    """A Parquet file's column names as the source reads them, checked against the columns it names."""
    header = _named_header(path, _parquet_schema(path, head).names, None, source)
    missing = [c for c in _wanted_columns(source) if c not in header]
    if missing:
        raise InputFileError(
            path, f"missing required column(s) {', '.join(missing)}; its columns are {_shorten(repr(header))}"
        )
    if source.layout == "time_of_day":
        _interval_columns(path, header, None, source)
    return header


def read_header(path: str, head: bytes, source: SourceConfig) -> list[str]:
    """The batch header contributed by a file, from the head `read_head` gives, checked against the source.

    Delimited and Parquet files in the long layout: the file's own header (see `_named_header`).
    The wide and time-of-day layouts and non-delimited formats: the canonical columns the
    reader turns them into. A gzip or ZIP head is unpacked as far as it goes.
    """
    head, where = unpack(path, head, head=True)
    try:
        if source.format == "parquet":
            header = parquet_header(path, head, source)
        elif source.format == "csv":
            header, _ = _file_header(path, head, source)
        else:
            _format_check(path, head, source)
            return canonical_header(source)
    except InputFileError as error:
        raise _in_archive(error, where) if where else error from None
    return canonical_header(source) if _melted(source) else header


def _unpacking_stream(path: str, stream: IO[bytes], head: bytes, stack: ExitStack) -> tuple[IO[bytes], str] | None:
    """A stream of the content of `stream` when it is gzip or a one-file ZIP archive, else None."""
    if head[:2] == _GZIP_MAGIC:
        stream.seek(0)
        unpacked = stack.enter_context(gzip.GzipFile(fileobj=stream, mode="rb"))
        return cast(IO[bytes], unpacked), "gzip-compressed"
    if head[:4] in _ZIP_MAGICS:
        try:
            stream.seek(0)
            archive = stack.enter_context(zipfile.ZipFile(stream))
            return stack.enter_context(archive.open(_members(path, archive))), "a ZIP archive"
        except _ARCHIVE_ERRORS as error:
            raise _archive_error(path, "a ZIP archive", error) from None
    return None


def _parquet_footer(path: str, stream: IO[bytes], head: bytes) -> bytes:
    """A Parquet file's footer framed as a Parquet file (`head` if the file does not end like one)."""
    stream.seek(-8, io.SEEK_END)
    tail = stream.read(8)
    if len(tail) < 8 or tail[4:] != _PARQUET_MAGIC:
        return head
    length = int.from_bytes(tail[:4], "little")
    if length > _MAX_PARQUET_FOOTER:
        raise InputFileError(
            path,
            f"its Parquet footer (the schema) is {length:,} bytes, more than the {_MAX_PARQUET_FOOTER:,} read "
            "(rule: format)",
        )
    stream.seek(-8 - length, io.SEEK_END)
    return _PARQUET_MAGIC + stream.read(length) + tail


def read_head(path: Path) -> bytes:
    """The first bytes of a file's content, enough for its header; bounded, whatever the file's size.

    A gzip file or a one-file ZIP archive is unpacked as far as its first HEAD_BYTES. For a
    Parquet file the head is its footer (the schema) framed as a Parquet file: its magic, the
    footer, the footer's length and the magic again, which `read_header` reads the schema from.
    """
    name = str(path)
    kind = ""
    try:
        with ExitStack() as stack:
            stream: IO[bytes] = stack.enter_context(path.open("rb"))
            head = stream.read(HEAD_BYTES)
            _named_check(name, head)
            for _ in range(_MAX_NESTING):
                inner = _unpacking_stream(name, stream, head, stack)
                if inner is None:
                    break
                stream, kind = inner
                head = stream.read(HEAD_BYTES)
            if head[:4] == _PARQUET_MAGIC:
                return _parquet_footer(name, stream, head)
            return head
    except _ARCHIVE_ERRORS as error:
        if kind:
            raise _archive_error(name, kind, error) from None
        if isinstance(error, OSError):
            raise InputFileError(name, f"cannot be read: {error.strerror or error}") from None
        raise


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
    return RawFile(path=Path(path), header=header, table=table, malformed=malformed, header_line=header_line)


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
    """A wide file's rows -> canonical rows, one per (line, series), line-major in file order.

    Each row's meter is its series' `meter_id` (default the column name) or, when the source
    sets `columns.meter_id`, that column's value on its line. `column` names the series' column.
    """
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

    meter_column = wide_meter_column(source)
    columns: dict[str, pa.ChunkedArray | pa.Array] = {
        "meter_id": optional(meter_column) if meter_column else constant(meter_ids),
        "timestamp": pc.take(timestamp, per_line),
        "value": pc.take(values, pa.array(series_major)),
        "unit": constant(units),
        "direction": constant(directions),
        "quality": optional(cols.quality),
        "interval_minutes": optional(cols.interval_minutes),
    }
    if cols.position:
        columns[POSITION] = pc.take(table[cols.position], per_line)
    columns[COLUMN] = constant([spec.column for spec in series])
    columns["line_number"] = pc.take(table["line_number"], per_line)
    return RawFile(
        path=raw.path,
        header=canonical_header(source),
        table=pa.table(columns),
        malformed=raw.malformed,
        header_line=raw.header_line,
    )


def _not_a_reading(text: pa.ChunkedArray | pa.Array, source: SourceConfig) -> pa.ChunkedArray | pa.Array:
    """Cells that hold no reading: blank, or one of the source's missing-value markers."""
    stripped = pc.utf8_trim_whitespace(pc.fill_null(text, ""))
    markers = pa.array(sorted({"", *source.missing_values}), pa.string())
    return pc.is_in(stripped, value_set=markers)


def _long_days(path: str, days: pa.ChunkedArray, lines: pa.ChunkedArray, count: int, source: SourceConfig) -> None:
    """A day with more intervals than the file has interval columns (a 25-hour day in a 96-column file)."""
    beyond = pa.chunked_array([pa.repeat(pa.scalar(str(count + 1)), len(days))], pa.string())
    _, status = parse_positions(days, beyond, source)
    longer = np.flatnonzero(np.asarray(pc.equal(status, TS_OK).to_numpy(zero_copy_only=False), dtype=bool))
    if len(longer):
        first = int(longer[0])
        raise InputFileError(
            path,
            f"the local day {days[first].as_py()!r} has more than {count} intervals of {source.interval_minutes} "
            f"minutes (a 25-hour day) but the file has {count} interval columns (rule: interval_columns)",
            line=lines[first].as_py(),
        )


def _melt_time_of_day(raw: RawFile, source: SourceConfig) -> RawFile:
    """One row per day, one column per interval -> canonical rows, one per (line, interval column).

    The interval columns (see `_interval_columns`) are numbered 1, 2, ... in header order:
    `position` is that number and `timestamp` the line's date, which parsing turns into the
    interval's UTC start (`parse_positions`: elapsed time, so a fall-back day runs to 100
    quarter-hours; wall-clock on a spring-forward day, the missing hour's positions being
    placeholders). A cell that holds no reading (blank or a missing-value marker) at a
    position the day does not have (beyond its count, or in its missing hour) is not a
    row; every other cell is, blank or not, so a missing reading is reported downstream.
    """
    table, cols = raw.table, source.columns
    path = str(raw.path)
    intervals = _interval_columns(path, raw.header, raw.header_line, source)
    n, k = table.num_rows, len(intervals)
    stamps = [_strip(table[c]) for c in cols.timestamp_columns()]
    days = stamps[0] if len(stamps) == 1 else pc.binary_join_element_wise(*stamps, " ")
    days = pa.chunked_array([days]) if isinstance(days, pa.Array) else days
    _long_days(path, days, table["line_number"], k, source)
    per_line = pa.array(np.repeat(np.arange(n, dtype=np.int64), k))
    cell_major = (np.arange(n, dtype=np.int64)[:, None] + np.arange(k, dtype=np.int64)[None, :] * n).ravel()
    values = pc.take(pa.chunked_array([c for name in intervals for c in table[name].chunks], pa.string()), cell_major)
    positions = pa.array(np.tile(np.arange(1, k + 1).astype(str).astype(object), n), pa.string())

    def per_line_text(name: str | None, fixed: str) -> pa.ChunkedArray | pa.Array:
        if name is None:
            return pa.repeat(pa.scalar(fixed, pa.string()), n * k)
        return pc.take(table[name], per_line)

    meter_column = _time_of_day_meter_column(source)
    fixed_meter = (source.meter_id or "").replace("{file_stem}", raw.path.stem)
    columns: dict[str, pa.ChunkedArray | pa.Array] = {
        "meter_id": per_line_text(meter_column, fixed_meter),
        "timestamp": pc.take(days, per_line),
        "value": values,
        "unit": per_line_text(cols.unit, source.unit or ""),
        "direction": per_line_text(cols.direction, source.direction),
        "quality": per_line_text(cols.quality, ""),
        "interval_minutes": pa.repeat(pa.scalar("", pa.string()), n * k),
        POSITION: positions,
        COLUMN: pa.array(np.tile(np.array(intervals, dtype=object), n), pa.string()),
        "line_number": pc.take(table["line_number"], per_line),
    }
    melted = pa.table(columns)
    # Which positions each day has: a date that does not parse keeps all its cells (they fail downstream).
    _, status = parse_positions(melted["timestamp"], melted[POSITION], source)
    _, first = parse_positions(days, pa.chunked_array([pa.repeat(pa.scalar("1"), n)], pa.string()), source)
    dated = pc.take(pc.not_equal(first, TS_UNPARSEABLE), per_line)
    absent = pc.and_(dated, pc.not_equal(status, TS_OK))
    drop = pc.and_(absent, _not_a_reading(values, source))
    melted = melted.filter(pc.invert(drop))
    return RawFile(
        path=raw.path,
        header=canonical_header(source),
        table=melted,
        malformed=raw.malformed,
        header_line=raw.header_line,
    )


# --- Per-file order: occurrences ---------------------------------------------------


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


# --- Files ------------------------------------------------------------------------------------


def _read_format(path: str, data: bytes, source: SourceConfig) -> RawFile:
    """A non-delimited file -> canonical rows, by the format's reader."""
    _format_check(path, data[:HEAD_BYTES], source)
    if source.format == "nem12":
        return read_nem12(path, data, source)
    return read_greenbutton(path, data, source)


def _parse_content(path: str, data: bytes, source: SourceConfig) -> RawFile:
    if source.format not in TABULAR_FORMATS:
        return _read_format(path, data, source)
    if source.format == "parquet":
        raw = read_parquet(path, data, parquet_header(path, data, source))
    else:
        raw = _read_delimited(path, data, source)
    if source.fill_down:
        raw.table = _fill_down(raw.table, source.fill_down)
    if source.layout == "wide":
        raw = _melt_wide(raw, source)
    elif source.layout == "time_of_day":
        raw = _melt_time_of_day(raw, source)
    return raw


def parse_raw_bytes(path: str, data: bytes, source: SourceConfig) -> RawFile:
    """One file's bytes (as stored: gzip and ZIP are unpacked here) as string rows with line numbers, in file order.

    Delimited and Parquet long files keep their own columns; the wide and time-of-day
    layouts and other formats become canonical rows. The table ends with `line_number`,
    `occurrence`. File-level problems raise InputFileError naming the
    file, line and rule (for an unpacked file, the lines are its content's); rows whose
    field count does not match the header are returned as `malformed` for quarantine.
    """
    content, where = unpack(path, data)
    try:
        raw = _parse_content(path, content, source)
    except InputFileError as error:
        raise _in_archive(error, where) if where else error from None
    mapping = source.reading_columns()
    if source.ambiguous_time == "order":
        occurrence = pa.array(occurrences(raw.table, mapping), pa.int32())
    else:
        occurrence = pa.repeat(pa.scalar(0, pa.int32()), raw.table.num_rows)
    raw.table = raw.table.append_column("occurrence", occurrence)
    return raw


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
                    **dict.fromkeys(header, ""),
                }
            ],
            schema=schema,
        )
    n = raw.table.num_rows
    ordinals = np.arange(1, n + 1, dtype=np.int64)  # reading order: two readings of one line differ
    columns = {c: raw.table[c] if c in raw.header else pa.repeat("", n).cast(pa.string()) for c in header}
    rows = pa.table(
        {
            **columns,
            "file_index": pa.repeat(pa.scalar(file_index, pa.int32()), n),
            "source_file": pa.repeat(path, n).cast(pa.string()),
            "line_number": raw.table["line_number"],
            "row_order": pa.array(row_order(file_index, ordinals), pa.int64()),
            "kind": pa.repeat(KIND_ROW, n).cast(pa.string()),
            "detail": pa.nulls(n, pa.string()),
            "occurrence": raw.table["occurrence"],
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
                **dict.fromkeys(header, ""),
            }
            for line, text in raw.malformed
        ],
        schema=schema,
    )
    return pa.concat_tables([rows, bad])
