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


def _decode_check(path: Path, data: bytes, encoding: str) -> None:
    if data[:2] == b"\x1f\x8b":
        raise InputFileError(str(path), "is gzip-compressed; decompress it first", line=1)
    if encoding not in ("utf-8", "utf-8-sig"):
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputFileError(
            str(path),
            f"byte 0x{data[error.start]:02x} is not valid UTF-8 (rule: encoding); "
            'declare the file\'s encoding (e.g. encoding = "latin-1") in the source config',
            line=line,
        ) from None


def _header(path: Path, data: bytes, source: SourceConfig) -> list[str]:
    text = data.split(b"\n", 1)[0].decode(source.encoding, errors="replace").lstrip("\ufeff").rstrip("\r")
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
            str(path),
            f"missing required column(s) {', '.join(missing)}; header has {header}{hint}",
            line=1,
        )
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise InputFileError(str(path), f"header repeats column(s) {', '.join(duplicated)}", line=1)
    return header


def read_raw_csv(path: Path, source: SourceConfig) -> RawFile:
    """Read one delimited file as strings, with its physical line numbers.

    File-level problems raise InputFileError naming the file and line; rows whose field
    count does not match the header are returned as `malformed` for quarantine.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputFileError(str(path), f"cannot be read: {error.strerror}") from None
    if not data.strip():
        raise InputFileError(str(path), "is empty (no header, no rows)")
    _decode_check(path, data, source.encoding)
    header = _header(path, data, source)
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
        raise InputFileError(str(path), "has a header but no data rows", line=1)
    return RawFile(path=path, header=header, table=table, malformed=malformed)
