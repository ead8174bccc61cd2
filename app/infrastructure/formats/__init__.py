"""Readers of non-delimited file formats (NEM12, Green Button) into canonical rows.

Each reader turns one file's bytes into the string columns of
`app.domain.sources.CANONICAL_COLUMNS` plus `line_number`, so parsing and validation
treat every format like a long CSV. `app.infrastructure.readers` dispatches to them; they
never import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from app.domain.sources import CANONICAL_COLUMNS

#: Schema of a format reader's table: the canonical columns as strings, then the line number.
CANONICAL_SCHEMA = pa.schema([*((name, pa.string()) for name in CANONICAL_COLUMNS), ("line_number", pa.int64())])


class CanonicalRows:
    """Collects canonical rows and packs them into Arrow every `chunk_rows` rows.

    Python lists of strings cost ~60 bytes a field; packing them into Arrow chunks as we
    go keeps a large file's rows compact instead of holding millions of str objects.
    """

    def __init__(self, chunk_rows: int = 1 << 16) -> None:
        self._chunk_rows = chunk_rows
        self._columns: list[list[str]] = [[] for _ in CANONICAL_COLUMNS]
        self._lines: list[int] = []
        self._batches: list[pa.RecordBatch] = []

    def append(
        self,
        meter_id: str,
        timestamp: str,
        value: str,
        unit: str,
        direction: str,
        quality: str,
        interval_minutes: str,
        line_number: int,
    ) -> None:
        meters, stamps, values, units, directions, qualities, minutes = self._columns
        meters.append(meter_id)
        stamps.append(timestamp)
        values.append(value)
        units.append(unit)
        directions.append(direction)
        qualities.append(quality)
        minutes.append(interval_minutes)
        self._lines.append(line_number)
        if len(self._lines) >= self._chunk_rows:
            self._pack()

    def _pack(self) -> None:
        if not self._lines:
            return
        arrays = [pa.array(column, pa.string()) for column in self._columns]
        arrays.append(pa.array(self._lines, pa.int64()))
        self._batches.append(pa.RecordBatch.from_arrays(arrays, schema=CANONICAL_SCHEMA))
        self._columns = [[] for _ in CANONICAL_COLUMNS]
        self._lines = []

    def __len__(self) -> int:
        return sum(batch.num_rows for batch in self._batches) + len(self._lines)

    def table(self) -> pa.Table:
        """All rows so far as one table (string columns even when there are no rows)."""
        self._pack()
        return pa.Table.from_batches(self._batches, schema=CANONICAL_SCHEMA)


@dataclass
class RawFile:
    """One file as received: its raw rows and the lines that did not fit the header."""

    path: Path
    header: list[str]
    table: pa.Table
    malformed: list[tuple[int, str]] = field(default_factory=list)
    #: Physical line of the header row (delimited text); None when there is none (Parquet).
    header_line: int | None = None
