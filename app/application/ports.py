"""Ports: what the application needs from the table storage, the metadata store and the lake's
lock. The adapters in `app.infrastructure` implement them; only `app.wiring` picks which."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Protocol

import narwhals as nw
import pyarrow as pa

from app.domain.audit import AuditRecord
from app.domain.batches import (
    BatchRecord,
    BatchStatus,
    InputFile,
    LayerMetrics,
    MetricTotals,
    Reconciliation,
    StreamRecord,
)
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


#: The column of a `LakeTables.merge_changes` frame that marks a row whose key is to be deleted.
DELETE_COLUMN = "_delete"


@dataclass(frozen=True)
class ChangeCounts:
    """Rows a `LakeTables.merge_changes` inserted, updated and deleted."""

    inserted: int
    updated: int
    deleted: int


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

    def page(
        self,
        spec: TableSpec,
        *,
        where: RowFilter,
        order: Sequence[str],
        limit: int,
        offset: int,
        as_of: int | datetime | None = None,
    ) -> Page:
        """Rows of `spec` matching `where` (conditions joined by AND), sorted by `order`; of the
        table's version `as_of` (a number, or the latest committed at or before an instant) if
        given, else of its newest. A version the table does not have is a ConfigurationError."""
        ...

    def changes(self, spec: TableSpec, *, since_version: int) -> pa.Table:
        """`LakeTables.changes`, read-only."""
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

    def highest(self, frame: nw.LazyFrame[Any], keys: Sequence[str], column: str, n: int) -> nw.LazyFrame[Any]:
        """`transforms.highest_rows`: the rows of each `keys` group with its `n` largest values of
        `column`; an engine may have a faster way to them."""
        ...

    def cache(self, frame: nw.LazyFrame[Any]) -> nw.LazyFrame[Any]: ...

    def release(self) -> None:
        """Drop what `cache` kept."""
        ...


@dataclass(frozen=True)
class TableVersion:
    """One commit of a table, as `tables history` lists it."""

    version: int
    timestamp: datetime
    operation: str
    #: The batch the commit belongs to (or the batch a rollback undid, as "rollback of ..."), if any.
    batch_id: str | None
    rows_added: int
    rows_updated: int
    rows_removed: int
    #: A RESTORE commit's target: the version it took the table back to.
    restored_to: int | None = None


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

    def head(self, table: str, *, limit: int, as_of: int | datetime | None = None) -> pa.Table:
        """The first `limit` rows of a table, of its version `as_of` (a version number, or the
        latest version committed at or before an instant) if given."""
        ...

    def history(self, table: str, *, limit: int | None = None) -> list[TableVersion]:
        """The table's commits, newest first."""
        ...

    def changes(self, table: str, *, since_version: int) -> pa.Table:
        """The rows the versions from `since_version` on inserted, updated and deleted (Delta's
        change data feed: the table's columns and `_change_type`, `_commit_version`,
        `_commit_timestamp`); an error for a table that does not record them."""
        ...

    def optimize(self, table: str, *, zorder: Sequence[str] = ()) -> tuple[int, int]:
        """`compact`, or with `zorder` columns a Z-order rewrite that clusters rows by them;
        returns the data files before and after."""
        ...

    def compact(self, table: str) -> tuple[int, int]:
        """Rewrite a table's small files into fewer large ones, in one commit that changes no row,
        and checkpoint its log; returns its data files before and after."""
        ...

    def small_files(self, table: str) -> int:
        """The data files of the table's current version that `compact` could merge (small ones,
        two or more in a partition)."""
        ...

    def delete(self, table: str, where: RowFilter) -> int:
        """Delete the rows matching `where` (conditions joined by AND) in one untagged commit
        (none when no row matches); returns the rows deleted (0: no such table)."""
        ...

    def delete_keys(self, table: str, keys: pa.Table) -> int:
        """Delete the rows equal to a row of `keys` on its columns, in one untagged commit;
        returns the rows deleted (0: no such table)."""
        ...

    def purge(self, table: str) -> int:
        """Remove every trace of what the table's current version no longer holds: the data and
        change data files no current file is, the deleted rows of files read through deletion
        vectors, and the log before a new checkpoint (so no commit's statistics or predicates
        name a deleted value). The table's history before it ends: no time travel, no restore,
        no change feed across it. Returns the files deleted."""
        ...

    def residue(self, text: str) -> list[str]:
        """Paths (relative to the lake's root) of the files under the root that still hold
        `text`, other than the data files current table versions read whole: table logs,
        change data, unreferenced files, stream checkpoints, anything else kept there."""
        ...

    def vacuum(self, table: str, *, retain_hours: float) -> int:
        """Delete the data files no version younger than `retain_hours` reads (those compaction
        and merges replaced); returns how many were deleted. Versions older than that can no
        longer be restored or read back."""
        ...

    def read_version(self, spec: TableSpec, version: int, *, where: RowFilter | None = None) -> nw.LazyFrame[Any]:
        """`read` of the table's past version `version` (time travel); an error for a version
        the table does not have, or whose files a vacuum deleted."""
        ...

    def delete_batch_rows(self, table: str, *, batch_of: str, batch_id: str) -> int:
        """Delete the rows whose `batch_id` column is `batch_of` in one commit tagged with
        `batch_id` (none when there is no such row); returns the rows deleted."""
        ...

    def merge_changes(
        self,
        spec: TableSpec,
        frame: nw.LazyFrame[Any],
        *,
        batch_id: str,
        local_days: tuple[date, date] | None = None,
    ) -> ChangeCounts:
        """Apply rows keyed by `spec.keys` in one commit tagged with `batch_id`: a row whose
        `DELETE_COLUMN` is true deletes its key; any other inserts its key, or updates the stored
        row where any value column (lineage too) differs. `local_days` as for `upsert`."""
        ...

    def restore(self, table: str, version: int, *, batch_id: str) -> None:
        """Delta RESTORE of the table to its version `version`, in one commit tagged with
        `batch_id`; a stream's source positions go back to their values at that version."""
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

    def record_stream(self, record: StreamRecord) -> None:
        """Write a stream run's state (by `run_id`: inserted the first time, replaced after)."""
        ...

    def get_stream(self, run_id: str) -> StreamRecord | None: ...

    def streams(self) -> list[StreamRecord]:
        """The latest run of each source's stream, by source (for /health and /metrics)."""
        ...

    def record_audit(self, record: AuditRecord) -> int:
        """Append one action to the audit trail; returns its id."""
        ...

    def pseudonymise(self, text_found: str, replacement: str) -> int:
        """Replace a value (a forgotten meter's id) in every free-text field the store keeps."""
        ...

    def list_audit(
        self, limit: int, *, action: str | None = None, actor: str | None = None, since: datetime | None = None
    ) -> list[AuditRecord]:
        """Recorded actions, newest first: of `action` and `actor` if given, at or after `since`."""
        ...

    def batches_after(self, sequence: int, *, lake: str) -> list[BatchRecord]:
        """The batches of `lake` whose sequence number is above `sequence`, oldest first."""
        ...

    def undone_batches(self, batch_ids: Sequence[str]) -> dict[str, list[str]]:
        """The undo batches among `batch_ids` and those that undid one of them: each with every
        batch it undid, oldest first."""
        ...

    def finish_undo(self, *, batch_id: str, undone: list[str], finished_at: datetime) -> None:
        """Record undo batch `batch_id` as succeeded and the batches `undone` as undone by it, in
        one transaction (their files count as ingested no more)."""
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


class Message(NamedTuple):
    """One message of a topic: its partition and offset, key and value as delivered, and its
    timestamp (the producer's create time or the broker's log-append time, in milliseconds since
    the epoch; None if it has none). A named tuple: a stream makes one per message, and a tuple
    is made in a fraction of a frozen dataclass's time."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None

    @property
    def timestamp(self) -> datetime | None:
        return None if self.timestamp_ms is None else datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)


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

    @property
    def compact_threshold(self) -> int:
        """COMPACT_SMALL_FILES_THRESHOLD: a batch compacts each table it wrote whose small files
        number more than this (0: never)."""
        ...

    def source(self, name: str, config_file: Path | None = None) -> SourceConfig:
        """A declared source, or ConfigurationError naming the declared ones."""
        ...

    def lock(self, command: str, *, wait_seconds: float = 0.0) -> LakeLock: ...

    def spark_stream(
        self,
        source: SourceConfig,
        step: Callable[..., Any],
        *,
        input_path: str | None,
        trigger_seconds: float,
        available_now: bool,
        max_files: int,
        max_messages: int,
        stop: threading.Event,
    ) -> list[str]:
        """Databricks mode: `source` as a Spark Structured Streaming query whose micro-batches go
        through `step` (a stream's `micro_batch`); the files of failed micro-batches."""
        ...

    def topic(self, source: SourceConfig) -> TopicReader:
        """A reader of a Kafka source's topic; the caller closes it."""
        ...
