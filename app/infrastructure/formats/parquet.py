"""Parquet files -> rows of text under the file's column names, as a delimited file gives them.

The pipeline types text, so every field becomes a string the parser reads with the
source's settings:

- timestamps with a time zone: ISO 8601 in that zone with its offset
  (`2025-06-01T12:00:00+02:00`), naive timestamps ISO 8601 without one (the source's
  `timestamp_timezone` then applies); a fraction of a second only when there is one;
- dates `YYYY-MM-DD`, times `HH:MM:SS[.f]`;
- numbers as their shortest round-trip text (`0.1`, `2`, `1e+16` for the extreme ones),
  with a decimal point; decimals exactly;
- booleans `true` / `false`; nested values (lists, structs, maps) as JSON; binary values
  as their UTF-8 text, or `0x` and hex digits when they are not UTF-8;
- nulls as "" (a missing value, like an empty CSV field).

For Parquet a row's "line" is its row number: `line_number` is the 0-based row index
+ 1, so quarantine and bronze name rows as the file's row 1, 2, ...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.domain.errors import InputFileError
from app.infrastructure.formats import RawFile

_EMPTY = pa.scalar("", pa.string())


def _strip_zero_fraction(text: pa.ChunkedArray) -> pa.ChunkedArray:
    """`10:00:00.000000` -> `10:00:00`, `10:00:00.500000+02:00` -> `10:00:00.5+02:00`."""
    text = pc.replace_substring_regex(text, pattern=r"\.0+([+-]\d\d:?\d\d)?$", replacement=r"\1")
    return pc.replace_substring_regex(text, pattern=r"(\.\d*[1-9])0+([+-]\d\d:?\d\d)?$", replacement=r"\1\2")


def _timestamp_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    zone = column.type.tz
    text = pc.strftime(column, format="%Y-%m-%dT%H:%M:%S%z" if zone else "%Y-%m-%dT%H:%M:%S")
    if zone:
        text = pc.replace_substring_regex(text, pattern=r"([+-]\d\d)(\d\d)$", replacement=r"\1:\2")
    return _strip_zero_fraction(text)


def _json_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    values = [None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in column.to_pylist()]
    return pa.chunked_array([pa.array(values, pa.string())], pa.string())


def _binary_text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + value.hex()


def text_column(path: str, name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    """One typed Parquet column -> strings as described in the module docstring."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        return text_column(path, name, column.cast(kind.value_type))
    if pa.types.is_timestamp(kind):
        text = _timestamp_text(column)
    elif pa.types.is_time(kind):
        text = _strip_zero_fraction(pc.cast(column, pa.string()))
    elif pa.types.is_null(kind):
        text = pa.chunked_array([pa.repeat(_EMPTY, len(column))], pa.string())
    elif pa.types.is_nested(kind):
        text = _json_text(column)
    else:
        try:
            text = pc.cast(column, pa.string())
        except pa.ArrowNotImplementedError:
            text = _json_text(column)
        except pa.ArrowInvalid as error:  # binary that is not UTF-8
            if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)):
                raise InputFileError(
                    path, f"column {name!r} of type {kind} cannot be read as text: {error} (rule: parquet_type)"
                ) from None
            text = pa.chunked_array([pa.array([_binary_text(v) for v in column.to_pylist()], pa.string())])
    return pc.fill_null(text, _EMPTY)


def read_parquet(path: str, data: bytes, header: list[str]) -> RawFile:
    """One Parquet file's bytes -> a RawFile of text columns under `header`, the names the source
    reads its columns by."""
    try:
        table = pq.read_table(pa.BufferReader(data), use_threads=False)
    except (pa.ArrowException, OSError) as error:
        raise InputFileError(path, f"is not a readable Parquet file (rule: format): {error}") from None
    if table.num_rows == 0:
        raise InputFileError(path, "has a schema but no rows")
    columns: dict[str, Any] = {name: text_column(path, name, table.column(i)) for i, name in enumerate(header)}
    columns["line_number"] = pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64))
    return RawFile(path=Path(path), header=header, table=pa.table(columns), header_line=None)
