"""Ports: what the application needs from the table storage, the metadata store and the lake's
lock. The adapters in `app.infrastructure` implement them; only `app.wiring` picks which."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import narwhals as nw
import pyarrow as pa

from app.domain.batches import BatchRecord, BatchStatus, InputFile, LayerMetrics, MetricTotals, Reconciliation
from app.domain.schemas import TableSpec
from app.domain.sources import SourceConfig

#: Row filter: (column, operator, value) conditions joined by AND; operator is "in", ">=", "<=" or "<".
RowFilter = Sequence[tuple[str, str, Any]]


@dataclass(frozen=True)
class UpsertCounts:
    """Rows an upsert inserted, changed, and found already equal."""

    inserted: int
    updated: int
    unchanged: int


#: A function over one Arrow batch of rows, returning rows of a declared schema.
ArrowBatchFunction = Callable[[pa.Table], pa.Table]


@dataclass(frozen=True)
class Page:
    """One page of rows, the total the filter matched, and the table version they were read from."""

    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int
    version: int | None = None


class TableReads(Protocol):
    """The read side of the lake: pages of rows, each from one committed table version; never
    takes the lake's lock, never writes."""

    def page(self, spec: TableSpec, *, where: RowFilter, order: Sequence[str], limit: int, offset: int) -> Page:
        """Rows of `spec` matching `where` (conditions joined by AND), sorted by `order`."""
        ...

    def version(self, spec: TableSpec) -> int | None:
        """The table's newest committed version; None when there is no table."""
        ...


class FrameEngine(Protocol):
    """What an engine does with frames: turning Arrow data into a frame and back, reading input
    files, running an Arrow function over a frame's batches or groups, and caching a frame that
    is used more than once."""

    engine: str

    def frame(self, data: pa.Table) -> nw.LazyFrame[Any]: ...

    def to_arrow(self, frame: nw.LazyFrame[Any]) -> pa.Table: ...

    def collect(self, frame: nw.LazyFrame[Any]) -> pa.Table:
        """A small result (counts, keys, bounds) as an Arrow table on the driver."""
        ...

    def count_rows(self, frame: nw.LazyFrame[Any]) -> int: ...

    def read_files(self, paths: list[str], source: SourceConfig, header: list[str]) -> nw.LazyFrame[Any]:
        """The files' rows as strings under `header`, with the lineage of `schemas.READ_LINEAGE`."""
        ...

    def map_arrow(self, frame: nw.LazyFrame[Any], function: ArrowBatchFunction, schema: pa.Schema) -> nw.LazyFrame[Any]:
        """`function` over the frame's rows in Arrow batches; the result has `schema`."""
        ...

    def map_groups(
        self, frame: nw.LazyFrame[Any], keys: Sequence[str], function: ArrowBatchFunction, schema: pa.Schema
    ) -> nw.LazyFrame[Any]:
        """`function` over the frame's rows, each call seeing every row of the `keys` groups it gets
        (one group per call on Spark, all rows at once locally); the result has `schema`."""
        ...

    def cache(self, frame: nw.LazyFrame[Any]) -> nw.LazyFrame[Any]: ...

    def release(self) -> None:
        """Drop what `cache` kept."""
        ...


class LakeTables(Protocol):
    """What the lake does with Delta tables: read them (as frames of the engine), append, merge
    and replace in single commits tagged with a batch, and roll a batch's commits back."""

    def location(self, table: str) -> str: ...

    def exists(self, table: str) -> bool: ...

    def read(self, spec: TableSpec, *, where: RowFilter | None = None) -> nw.LazyFrame[Any]: ...

    def count(self, table: str) -> int: ...

    def append(
        self,
        spec: TableSpec,
        frame: nw.LazyFrame[Any],
        *,
        batch_id: str,
        sequence: int | None = None,
        positions: Mapping[str, int] | None = None,
    ) -> int:
        """Append the frame's rows in one commit tagged with `batch_id`. With `sequence`, the
        commit carries it as the platform's Delta transaction version, and a table that already
        holds a commit of that sequence is left as it is (a retried commit is a no-op). With
        `positions` (a stream's source positions: application id -> offset), the same commit
        records them as Delta transaction identifiers too, even when it adds no row; a rollback
        of the batch sets them back."""
        ...

    def position(self, table: str, app_id: str) -> int | None:
        """The position a table's log holds for a stream's application id (None: none, or no table)."""
        ...

    def upsert(
        self,
        spec: TableSpec,
        frame: nw.LazyFrame[Any],
        *,
        compare: Sequence[str],
        batch_id: str,
        local_days: tuple[date, date] | None = None,
        rank: str | None = None,
        sequence: int | None = None,
        replace_equal_rank: bool = True,
    ) -> UpsertCounts:
        """Insert new keys, update changed rows; `local_days` bounds the target rows a match may
        be found in (by `local_date`, inclusive), so the merge reads only those partitions.
        With `rank`, a row replaces a stored one only if its `rank` column is equal or higher
        (only higher without `replace_equal_rank`).
        `sequence` as for `append`."""
        ...

    def replace(
        self, spec: TableSpec, frame: nw.LazyFrame[Any], *, batch_of: str, batch_id: str, sequence: int | None = None
    ) -> int:
        """Replace the rows whose `batch_id` column is `batch_of` with the frame's rows (which
        must all have that `batch_id`) in one commit; `sequence` as for `append`."""
        ...

    def tables(self) -> list[str]:
        """Names of the lake's Delta tables."""
        ...

    def rollback(self, batch_id: str) -> dict[str, int | None]:
        """Undo the commits tagged with `batch_id` in every table, each table in one commit,
        back to the version before the batch's first (a table the batch created is removed).
        Returns each table changed with the version it went back to (None: removed). Doing it
        again changes nothing."""
        ...

    def head(self, table: str, *, limit: int) -> pa.Table: ...

    def compact(self, table: str) -> tuple[int, int]:
        """Rewrite a table's small files into fewer large ones, in one commit that changes no row,
        and checkpoint its log; returns its data files before and after."""
        ...


class TableStore(FrameEngine, LakeTables, Protocol):
    """The table store of one execution mode: an engine's frames over the lake's Delta tables."""


class MetadataStore(Protocol):
    """Where batches, their files and metrics are recorded (SQLite, PostgreSQL)."""

    def migrate(self) -> None: ...

    def ping(self) -> float: ...

    def start_batch(self, record: BatchRecord) -> int:
        """Record the batch as running; returns its sequence number."""
        ...

    def finish_batch(
        self,
        *,
        batch_id: str,
        status: BatchStatus,
        finished_at: datetime,
        record_count: int,
        reconciliation: Reconciliation | None,
        layers: list[LayerMetrics],
        rule_counts: dict[str, int],
        error: str | None = None,
        files: list[InputFile] | None = None,
    ) -> None: ...

    def successful_checksums(self, checksums: list[str]) -> dict[str, str]: ...

    def list_batches(
        self, *, limit: int = 20, source: str | None = None, kind: str | None = None
    ) -> list[BatchRecord]: ...

    def running_batches(self, *, lake: str) -> list[BatchRecord]: ...

    def fail_running(self, *, batch_id: str, finished_at: datetime, error: str) -> bool: ...

    def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    def metric_totals(self) -> MetricTotals:
        """Totals over every recorded batch, aggregated by the database (for /metrics)."""
        ...


class ParsedFile(Protocol):
    """One file's raw rows as a reader parsed them."""

    table: pa.Table


class FileReader(Protocol):
    """Input files -> raw rows: what `app.infrastructure.readers` does (that module is the adapter)."""

    def resolve_inputs(self, pattern: str, source_format: str = "csv") -> list[Path]:
        """A file, a folder or a glob -> the files to read, sorted."""
        ...

    def sha256_of(self, path: Path) -> str: ...

    def read_head(self, path: Path) -> bytes:
        """The first bytes of a file's content, enough for its header."""
        ...

    def read_header(self, path: str, head: bytes, source: SourceConfig) -> list[str]:
        """The batch header a file contributes, checked against the source."""
        ...

    def raw_read_table(
        self, file_index: int, path: str, data: bytes, source: SourceConfig, header: list[str]
    ) -> pa.Table:
        """One file as raw-read rows under the batch header (`schemas.read_schema`)."""
        ...

    def parse_raw_bytes(self, path: str, data: bytes, source: SourceConfig) -> ParsedFile:
        """One file's rows under its own header."""
        ...


@dataclass(frozen=True)
class Message:
    """One message of a topic: its partition and offset, key and value as delivered."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class TopicReader(Protocol):
    """One topic of a message broker, read from the positions the caller keeps (the lake's
    transaction identifiers), never from the broker's own committed offsets."""

    @property
    def topic(self) -> str: ...

    def partitions(self) -> list[int]:
        """The topic's partition numbers."""
        ...

    def seek(self, positions: dict[int, int]) -> None:
        """Read each partition from the offset after its position (-1 or absent: from the start)."""
        ...

    def poll(self, *, max_messages: int, timeout_seconds: float) -> list[Message]:
        """Up to `max_messages` committed messages (aborted transactions never arrive), waiting
        at most `timeout_seconds` for the first; [] when there are none."""
        ...

    def commit(self, positions: dict[int, int]) -> None:
        """Record positions as the consumer group's offsets, for lag monitoring only."""
        ...

    def lag(self) -> dict[int, int]:
        """Messages per partition between the positions read and the partition's end."""
        ...

    def close(self) -> None: ...


class Holder(Protocol):
    """Who held the lake's lock last, as its lock file says."""

    @property
    def batch_id(self) -> str | None: ...

    @property
    def pid(self) -> int: ...

    @property
    def host(self) -> str: ...


class LakeLock(Protocol):
    """The lake's lock: one writer at a time; it names the batch it holds the lake for."""

    @property
    def stale(self) -> Holder | None:
        """The previous holder, if it ended without releasing the lock."""
        ...

    def hold_batch(self, batch_id: str) -> None: ...

    def __enter__(self) -> LakeLock: ...

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None: ...


class Platform(Protocol):
    """The adapters the settings chose, as the application's use cases see them."""

    @property
    def store(self) -> TableStore: ...

    @property
    def metadata(self) -> MetadataStore: ...

    @property
    def reader(self) -> FileReader: ...

    @property
    def execution_mode(self) -> str: ...

    @property
    def lake(self) -> str:
        """The data directory, as batches record it."""
        ...

    def source(self, name: str, config_file: Path | None = None) -> SourceConfig:
        """A declared source, or ConfigurationError naming the declared ones."""
        ...

    def lock(self, command: str, *, wait_seconds: float = 0.0) -> LakeLock: ...

    def topic(self, source: SourceConfig) -> TopicReader:
        """A reader of a Kafka source's topic; the caller closes it."""
        ...
