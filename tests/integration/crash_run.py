"""`energy-platform ...`, killed with SIGKILL at a named point of the run.

    python -m tests.integration.crash_run POINT run-batch --input ...

The point is reached by wrapping one function of the platform; when the run gets there, the
process sends itself SIGKILL, so nothing (no `finally`, no atexit, no flush) runs after it.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from app.application import row_sources, stages
from app.infrastructure.repositories import duckdb_repository, metadata, pandas_repository
from app.infrastructure.repositories.duckdb_repository import DuckDBDeltaStore
from app.infrastructure.repositories.pandas_repository import PandasDeltaStore


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _wrap(owner: Any, name: str, *, before: bool, when: Callable[..., bool] = lambda *_a, **_k: True) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before and when(*args, **kwargs):
            _die()
        result = original(*args, **kwargs)
        if not before and when(*args, **kwargs):
            _die()
        return result

    setattr(owner, name, wrapper)


def _table(name: str) -> Callable[..., bool]:
    """True for a store call whose spec (second argument) is table `name`."""
    return lambda _store, spec, *_a, **_k: spec.name == name


def _stream_dies_midway(table: str) -> None:
    """The Delta writer of `table` gets some batches, then the process dies: files half-written, no commit."""
    original = DuckDBDeltaStore._stream

    def stream(self: DuckDBDeltaStore, spec: Any, frame: Any, counter: list[int]) -> pa.RecordBatchReader:
        reader = original(self, spec, frame, counter)
        if spec.name != table:
            return reader

        def batches() -> Iterator[pa.RecordBatch]:
            for index, batch in enumerate(reader):
                if index == 1:
                    _die()
                yield batch
            _die()

        return pa.RecordBatchReader.from_batches(reader.schema, batches())

    DuckDBDeltaStore._stream = stream  # type: ignore[method-assign]


def _second_restore_dies() -> None:
    """A recovery that dies after rolling back one table."""
    from deltalake import DeltaTable

    original = DeltaTable.restore
    calls = [0]

    def restore(self: DeltaTable, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            _die()
        return original(self, *args, **kwargs)

    DeltaTable.restore = restore  # type: ignore[method-assign]


POINTS: dict[str, Callable[[], None]] = {
    "after metadata start": lambda: _wrap(metadata.SqlMetadataStore, "start_batch", before=False),
    "reading files": lambda: _wrap(row_sources.FileRows, "read", before=True),
    "parsing": lambda: _wrap(stages, "parse_rows", before=True),
    "vee": lambda: _wrap(stages, "_apply_vee", before=True),
    "writing bronze": lambda: _stream_dies_midway("bronze_meter_readings"),
    "after bronze commit": lambda: _wrap(
        PandasDeltaStore, "append", before=False, when=_table("bronze_meter_readings")
    ),
    "after quarantine commit": lambda: _wrap(
        PandasDeltaStore, "append", before=False, when=_table("quarantine_readings")
    ),
    "writing silver": lambda: _stream_dies_midway("silver_readings"),
    "after silver commit": lambda: _wrap(PandasDeltaStore, "upsert", before=False, when=_table("silver_readings")),
    "after gold daily commit": lambda: _wrap(
        PandasDeltaStore, "upsert", before=False, when=_table("gold_daily_meter_energy")
    ),
    "writing gold hourly": lambda: _stream_dies_midway("gold_hourly_portfolio_load"),
    "after gold hourly commit": lambda: _wrap(
        PandasDeltaStore, "upsert", before=False, when=_table("gold_hourly_portfolio_load")
    ),
    "inside metadata finish": lambda: _wrap(metadata.SqlMetadataStore, "_replace_children", before=True),
    "after metadata finish": lambda: _wrap(metadata.SqlMetadataStore, "finish_batch", before=False),
    "during recovery": _second_restore_dies,
}

# The modules whose functions are wrapped are imported above; keep linters from calling them unused.
_ = (duckdb_repository, pandas_repository)


def main() -> None:
    point, *args = sys.argv[1:]
    POINTS[point]()
    from app.cli import app

    app(args=args, prog_name="energy-platform")


if __name__ == "__main__":
    main()
