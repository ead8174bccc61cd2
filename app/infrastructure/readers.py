"""Reading input files into raw Arrow tables: every field a string, every row its line number."""

from __future__ import annotations

import csv
import glob
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from app.domain.errors import InputFileError
from app.domain.sources import SourceConfig

_GLOB_CHARS = re.compile(r"[*?\[]")
_OTHER_DELIMITERS = (",", ";", "\t", "|")


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


def resolve_inputs(pattern: str) -> list[Path]:
    """A file, a folder (its *.csv files) or a glob -> the files to read, sorted."""
    if _GLOB_CHARS.search(pattern):
        matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not matches:
            raise InputFileError(pattern, "no file matches this glob")
        return matches
    path = Path(pattern)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.csv") if p.is_file())
        if not files:
            raise InputFileError(pattern, "this folder holds no *.csv file")
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

#: Columns every raw-read row carries besides the file's own columns.
READ_LINEAGE = pa.schema(
    [
        ("file_index", pa.int32()),
        ("source_file", pa.string()),
        ("line_number", pa.int64()),
        ("row_order", pa.int64()),
        ("kind", pa.string()),
        ("detail", pa.string()),
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


def _decode_check(path: str, data: bytes, encoding: str) -> None:
    if encoding not in ("utf-8", "utf-8-sig"):
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputFileError(
            path,
            f"byte 0x{data[error.start]:02x} is not valid UTF-8 (rule: encoding); "
            'declare the file\'s encoding (e.g. encoding = "latin-1") in the source config',
            line=line,
        ) from None


def read_header(path: str, head: bytes, source: SourceConfig) -> list[str]:
    """The header of a file from its first bytes, checked against the source's columns."""
    _empty_check(path, head)
    text = head.split(b"\n", 1)[0].decode(source.encoding, errors="replace").lstrip("\ufeff").rstrip("\r")
    header = next(csv.reader([text], delimiter=source.delimiter))
    required = source.columns.required()
    missing = [c for c in required if c not in header]
    if missing:
        hint = ""
        if len(header) == 1:
            found = [d for d in _OTHER_DELIMITERS if d != source.delimiter and d in text]
            if found:
                hint = (
                    f"; the header looks {found[0]!r}-separated but the source expects "
                    f"{source.delimiter!r} (rule: wrong delimiter)"
                )
        raise InputFileError(
            path,
            f"missing required column(s) {', '.join(missing)}; header has {header}{hint}",
            line=1,
        )
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise InputFileError(path, f"header repeats column(s) {', '.join(duplicated)}", line=1)
    return header


def read_head(path: Path) -> bytes:
    """The first bytes of a file, enough for its header."""
    try:
        with path.open("rb") as handle:
            return handle.read(HEAD_BYTES)
    except OSError as error:
        raise InputFileError(str(path), f"cannot be read: {error.strerror}") from None


def parse_raw_bytes(path: str, data: bytes, source: SourceConfig) -> RawFile:
    """One delimited file's bytes as strings, with physical line numbers.

    File-level problems raise InputFileError naming the file and line; rows whose field
    count does not match the header are returned as `malformed` for quarantine.
    """
    _empty_check(path, data)
    header = read_header(path, data[:HEAD_BYTES], source)
    _decode_check(path, data, source.encoding)
    malformed: list[tuple[int, str]] = []

    def on_invalid(row: pcsv.InvalidRow) -> str:
        malformed.append((row.number or -1, row.text))
        return "skip"

    table = pcsv.read_csv(
        pa.BufferReader(data),
        read_options=pcsv.ReadOptions(
            use_threads=False,
            encoding=source.encoding,
            column_names=header,
            skip_rows=1,
            block_size=1 << 24,
        ),
        parse_options=pcsv.ParseOptions(
            delimiter=source.delimiter, invalid_row_handler=on_invalid, ignore_empty_lines=False
        ),
        convert_options=pcsv.ConvertOptions(
            column_types={c: pa.string() for c in header},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    # Line numbers: physical lines after the header, less those reported malformed
    # (the invalid-row handler reports physical line numbers).
    total_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    bad = np.array(sorted(n for n, _ in malformed if n > 0), dtype=np.int64)
    lines = np.setdiff1d(np.arange(2, total_lines + 1, dtype=np.int64), bad, assume_unique=True)
    if len(lines) != table.num_rows:  # quoted newlines or bare CR line ends: count rows instead
        lines = np.arange(2, table.num_rows + 2, dtype=np.int64)
    table = table.append_column("line_number", pa.array(lines, pa.int64()))
    blank = np.ones(table.num_rows, dtype=bool)
    for name in header:
        blank &= np.asarray(pa.compute.equal(table[name], "").to_numpy(zero_copy_only=False), dtype=bool)
    if blank.any():  # blank lines are not rows
        table = table.filter(pa.array(~blank))
    if table.num_rows == 0 and not malformed:
        raise InputFileError(path, "has a header but no data rows", line=1)
    return RawFile(path=Path(path), header=header, table=table, malformed=malformed)


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
                **dict.fromkeys(header, ""),
            }
            for line, text in raw.malformed
        ],
        schema=schema,
    )
    return pa.concat_tables([rows, bad])
