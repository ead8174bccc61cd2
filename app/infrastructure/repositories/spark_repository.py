"""Databricks-mode table storage: Delta tables written by Delta Lake on Spark, frames in PySpark.

Same table paths, schemas and partitioning as the local store, so either engine opens
the other's lake. Nothing here collects a table to the driver: files are read on the
executors (`binaryFile` + `mapInArrow`), Arrow functions run per batch on the executors,
and only counts, keys and bounds come back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import narwhals as nw
import pyarrow as pa

from app.application.ports import (
    DELETE_COLUMN,
    ArrowBatchFunction,
    ChangeCounts,
    RowFilter,
    TableVersion,
    UpsertCounts,
)
from app.domain.errors import NotAvailableError, TableStoreError
from app.domain.schemas import TABLES, TableSpec
from app.domain.sources import SourceConfig
from app.domain.transforms import highest_rows
from app.infrastructure.readers import raw_read_table, read_schema
from app.infrastructure.repositories.base import (
    CHANGE_FEED,
    COMPARISONS,
    TRANSACTION_RETENTION,
    TRANSACTION_RETENTION_VALUE,
    changed_condition,
    checked_columns,
    checked_table_name,
    commit_tags,
    lake_residue,
    lake_tables,
    local_days_condition,
    plan_rollback,
    prune_log,
    read_tags,
    remove_table,
    small_files,
    sql_string,
    table_configuration,
    table_version,
    transaction_app_id,
    with_partition_bounds,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType


def _spark_schema(schema: pa.Schema) -> StructType:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _file_key(path: str) -> str:
    """A path as Spark reports it (`file:/a/b.csv`, `dbfs:/Volumes/...`) -> `/a/b.csv`."""
    return urlparse(path).path if "://" in path or path.startswith(("file:", "dbfs:")) else path


def _read_file_batches(
    batches: Iterator[pa.RecordBatch],
    *,
    index: dict[str, int],
    paths: list[str],
    source: SourceConfig,
    header: list[str],
) -> Iterator[pa.RecordBatch]:
    """Executor side of `read_files`: one input file per row of `binaryFile`."""
    for batch in batches:
        files = zip(batch.column("path").to_pylist(), batch.column("content").to_pylist(), strict=True)
        for location, content in files:
            key = _file_key(location)
            i = index[key] if key in index else index[unquote(key)]
            yield from raw_read_table(i, paths[i], content, source, header).to_batches()


def _column(alias: str, name: str) -> str:
    """`alias.name` as Spark SQL text, the name backtick-quoted: the one way a column name
    (always from a table spec, never outside text) enters the merge conditions."""
    return f"{alias}.`{name.replace('`', '``')}`"


def _map_batches(
    batches: Iterator[pa.RecordBatch], *, function: ArrowBatchFunction, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """Executor side of `map_arrow`."""
    for batch in batches:
        if batch.num_rows:
            yield from function(pa.Table.from_batches([batch])).select(schema.names).cast(schema).to_batches()


def _map_group(table: pa.Table, *, function: ArrowBatchFunction, schema: pa.Schema) -> pa.Table:
    """Executor side of `map_groups`: one group's rows."""
    return function(table).select(schema.names).cast(schema)


#: What salts a stream's application id once a rollback has undone a micro-batch's commit of it.
_SALT = "~"


@dataclass(frozen=True)
class _Transaction:
    """The Delta transaction identifier one commit carries; `done`, when the table already holds
    it, is the commit that recorded it (Delta skips the write, which reports that commit's metrics)."""

    app_id: str
    version: int
    done: dict[str, Any] | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        return dict((self.done or {}).get("operationMetrics") or {})


def _commit_setting(table: Path, app_id: str) -> tuple[dict[str, Any] | None, bool]:
    """The commit information of the newest commit in `table`'s log that set a transaction
    identifier of `app_id`, and whether a later rollback (a restore tagged `rollback_of`) undid
    that commit. (None, False) when the log's commit files no longer hold it (expired)."""
    undone: set[str] = set()
    commits = [p for p in (table / "_delta_log").glob("*.json") if p.stem.isdigit()]
    for entry in sorted(commits, key=lambda p: int(p.stem), reverse=True):
        info: dict[str, Any] = {}
        sets = False
        for line in entry.read_text(encoding="utf-8").splitlines():
            if '"commitInfo"' in line or '"txn"' in line:
                action = json.loads(line)
                if "commitInfo" in action:
                    info = action["commitInfo"] or {}
                elif (action.get("txn") or {}).get("appId") == app_id:
                    sets = True
        tags = read_tags(info)
        if sets:
            return info, tags.get("batch_id") in undone
        if "rollback_of" in tags:
            undone.add(tags["rollback_of"])
    return None, False


class SparkDeltaStore:
    """Tables under `root/<layer>/<table>` (a local path or a cluster URI), written by Delta on Spark."""

    engine = "spark"

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        self.root = root.rstrip("/")
        self._cached: list[DataFrame] = []
        #: A stream micro-batch's (application id, version), while `stream_transaction` is open.
        self._stream: tuple[str, int] | None = None
        #: Tables seen recording their change data feed: checked once, not before every merge.
        self._recording: set[str] = set()
        #: Tables seen bounding their transaction identifiers: checked once, not before every write.
        self._bounded: set[str] = set()

    def location(self, table: str) -> str:
        spec = TABLES.get(checked_table_name(table))
        layer = spec.layer if spec else table.split("_", 1)[0]
        return f"{self.root}/{layer}/{table}"

    # Frames --------------------------------------------------------------------------------

    def frame(self, data: pa.Table) -> nw.LazyFrame[Any]:
        if data.num_rows == 0:
            return nw.from_native(self.spark.createDataFrame([], _spark_schema(data.schema)))
        return nw.from_native(self.spark.createDataFrame(data))

    def to_arrow(self, frame: nw.LazyFrame[Any]) -> pa.Table:
        native: DataFrame = frame.to_native()
        return native.toArrow()

    def collect(self, frame: nw.LazyFrame[Any]) -> pa.Table:
        return self.to_arrow(frame)

    def count_rows(self, frame: nw.LazyFrame[Any]) -> int:
        native: DataFrame = frame.to_native()
        return native.count()

    def read_files(self, paths: list[str], source: SourceConfig, header: list[str]) -> nw.LazyFrame[Any]:
        absolute = [str(Path(p).resolve()) for p in paths]
        index = {p: i for i, p in enumerate(absolute)}
        files = self.spark.read.format("binaryFile").load(absolute).select("path", "content")
        function = partial(_read_file_batches, index=index, paths=paths, source=source, header=header)
        return nw.from_native(files.mapInArrow(function, _spark_schema(read_schema(header))))

    def map_arrow(self, frame: nw.LazyFrame[Any], function: ArrowBatchFunction, schema: pa.Schema) -> nw.LazyFrame[Any]:
        native: DataFrame = frame.to_native()
        mapped = native.mapInArrow(partial(_map_batches, function=function, schema=schema), _spark_schema(schema))
        return nw.from_native(mapped)

    def map_groups(
        self, frame: nw.LazyFrame[Any], keys: Sequence[str], function: ArrowBatchFunction, schema: pa.Schema
    ) -> nw.LazyFrame[Any]:
        native: DataFrame = frame.to_native()

        # A plain annotated function: PySpark infers the UDF kind from the type hints
        # (a `partial` has none, which PySpark 4.2 fails on).
        def group(table: pa.Table) -> pa.Table:
            return _map_group(table, function=function, schema=schema)

        grouped = native.groupBy(*keys).applyInArrow(group, _spark_schema(schema))
        return nw.from_native(grouped)

    def highest(self, frame: nw.LazyFrame[Any], keys: Sequence[str], column: str, n: int) -> nw.LazyFrame[Any]:
        return highest_rows(frame, keys, column, n)

    def cache(self, frame: nw.LazyFrame[Any]) -> nw.LazyFrame[Any]:
        from pyspark import StorageLevel

        native: DataFrame = frame.to_native()
        persisted = native.persist(StorageLevel.MEMORY_AND_DISK)
        self._cached.append(persisted)
        return nw.from_native(persisted)

    def release(self) -> None:
        for frame in self._cached:
            frame.unpersist()
        self._cached.clear()

    # Tables --------------------------------------------------------------------------------

    def exists(self, table: str) -> bool:
        from delta.tables import DeltaTable

        return bool(DeltaTable.isDeltaTable(self.spark, self.location(table)))

    def compact(self, table: str) -> tuple[int, int]:
        """OPTIMIZE (bin-packing); Delta Lake on Spark checkpoints its log every 10 commits itself."""
        from delta.tables import DeltaTable

        self._load(table)  # a missing table is an error naming it

        def files() -> int:
            detail = DeltaTable.forPath(self.spark, self.location(table)).detail().collect()[0]
            return int(detail["numFiles"])

        before = files()
        DeltaTable.forPath(self.spark, self.location(table)).optimize().executeCompaction()
        return before, files()

    def _load(self, table: str) -> DataFrame:
        if not self.exists(table):
            raise TableStoreError(
                f"table {table} does not exist at {self.location(table)}; run `energy-platform run-batch` first"
            )
        return self.spark.read.format("delta").load(self.location(table))

    def read(self, spec: TableSpec, *, where: RowFilter | None = None) -> nw.LazyFrame[Any]:
        if not self.exists(spec.name):
            return self.frame(spec.schema.empty_table())
        return self._filtered(spec, self._load(spec.name), where)

    def _filtered(self, spec: TableSpec, data: DataFrame, where: RowFilter | None) -> nw.LazyFrame[Any]:
        """`data`'s rows matching `where`, with `spec`'s columns."""
        from pyspark.sql import functions as F

        for column, op, value in with_partition_bounds(spec, where):
            col = F.col(column)
            condition: Column
            if op == "in":
                condition = col.isin(list(value))
            elif op == ">=":
                condition = col >= F.lit(value)
            elif op == "<=":
                condition = col <= F.lit(value)
            elif op == "<":
                condition = col < F.lit(value)
            else:
                raise ValueError(f"unsupported filter operator {op!r}")
            data = data.where(condition)
        return nw.from_native(data.select(*spec.schema.names))

    def count(self, table: str) -> int:
        if not self.exists(table):
            return 0
        return self._load(table).count()

    def _conform(self, spec: TableSpec, frame: nw.LazyFrame[Any]) -> DataFrame:
        from pyspark.sql import functions as F

        native: DataFrame = frame.to_native()
        missing = [n for n in spec.schema.names if n not in native.columns]
        if missing:
            raise TableStoreError(f"{spec.name}: frame lacks column(s) {', '.join(missing)}")
        types = {f.name: f.dataType for f in _spark_schema(spec.schema).fields}
        return native.select(*(F.col(n).cast(types[n]).alias(n) for n in spec.schema.names))

    def _last_metrics(self, table: str) -> dict[str, str]:
        from delta.tables import DeltaTable

        row = DeltaTable.forPath(self.spark, self.location(table)).history(1).select("operationMetrics").first()
        return dict(row[0] or {}) if row else {}

    def _create(self, spec: TableSpec) -> None:
        """An empty table with the declared schema (NOT NULL columns included) and partitioning."""
        from delta.tables import DeltaTable

        builder = DeltaTable.createIfNotExists(self.spark).location(self.location(spec.name))
        builder = builder.addColumns(_spark_schema(spec.schema))
        if spec.partition_by:
            builder = builder.partitionedBy(*spec.partition_by)
        for name, value in table_configuration(spec, file_size=False).items():
            builder = builder.property(name, value)
        builder.execute()

    def _bound_transactions(self, table: str) -> None:
        """A table written before it bounded its transaction identifiers: from now on it does
        (call inside `_commit_metadata` of the batch, so that a rollback of it undoes this too)."""
        from delta.tables import DeltaTable

        if table in self._bounded:
            return
        properties = DeltaTable.forPath(self.spark, self.location(table)).detail().collect()[0]["properties"]
        if (properties or {}).get(TRANSACTION_RETENTION) != TRANSACTION_RETENTION_VALUE:
            self.spark.sql(
                f"ALTER TABLE delta.`{self.location(table)}` SET TBLPROPERTIES "
                f"('{TRANSACTION_RETENTION}' = '{TRANSACTION_RETENTION_VALUE}')"
            )
        self._bounded.add(table)

    def _record_changes(self, spec: TableSpec) -> None:
        """A table written before it recorded its changes: from now on it does."""
        from delta.tables import DeltaTable

        if spec.name in self._recording:
            return
        properties = DeltaTable.forPath(self.spark, self.location(spec.name)).detail().collect()[0]["properties"]
        if (properties or {}).get(CHANGE_FEED) != "true":
            self.spark.sql(f"ALTER TABLE delta.`{self.location(spec.name)}` SET TBLPROPERTIES ({CHANGE_FEED} = true)")
        self._recording.add(spec.name)

    def _create_or_append(
        self, spec: TableSpec, data: DataFrame, batch_id: str, sequence: int | None, *, replace: str | None = None
    ) -> int:
        if spec.partition_by:  # one file per partition value, not one per task and value
            data = data.repartition(*spec.partition_by)
        mode = "append" if replace is None else "overwrite"
        transaction = self._transaction(spec.name, batch_id, sequence)
        if transaction is not None and transaction.done is not None:
            return int(transaction.metrics.get("numOutputRows", 0))  # Delta would skip it: committed already
        writer = data.write.format("delta").mode(mode).option("userMetadata", batch_id)
        writer = writer.option("mergeSchema", "true") if replace is None else writer.option("replaceWhere", replace)
        if transaction is not None:
            # Delta skips a write whose (application, version) the table already holds.
            writer = writer.option("txnAppId", transaction.app_id).option("txnVersion", transaction.version)
        try:
            with self._commit_metadata(batch_id):  # the table's first commit is the batch's too
                if not self.exists(spec.name):
                    self._create(spec)
                else:
                    self._bound_transactions(spec.name)
            writer.save(self.location(spec.name))
        except Exception as error:
            raise TableStoreError(f"{spec.name}: {mode} failed: {error}") from error
        return int(self._last_metrics(spec.name).get("numOutputRows", 0))

    def append(
        self,
        spec: TableSpec,
        frame: nw.LazyFrame[Any],
        *,
        batch_id: str,
        sequence: int | None = None,
        positions: Mapping[str, int] | None = None,
    ) -> int:
        if positions:
            raise NotAvailableError("stream positions are recorded in local execution mode only in this version")
        return self._create_or_append(spec, self._conform(spec, frame), batch_id, sequence)

    def position(self, table: str, app_id: str) -> int | None:
        """Read from the table's log (with deltalake: the lake's root is a local or mounted path),
        so a Spark stream starts a topic where a local-mode stream left it."""
        return self._transaction_version(table, app_id)

    def _transaction_version(self, table: str, app_id: str) -> int | None:
        from deltalake import DeltaTable as LogReader
        from deltalake.exceptions import TableNotFoundError

        if not self.exists(table):
            return None
        try:
            return LogReader(self.location(table)).transaction_version(app_id)
        except TableNotFoundError:
            return None

    # Stream micro-batches ---------------------------------------------------------------------

    @contextmanager
    def stream_transaction(self, app_id: str, version: int) -> Iterator[None]:
        """Inside: every commit (append, replace, merge) carries Delta's transaction identifier
        (`app_id`, `version`): a stream query's id and its micro-batch's id, in place of the
        batch's own, so that a micro-batch Spark runs again after a restart writes nothing twice.

        Delta skips a write whose table already records `version` or later for `app_id`. A
        restore keeps the log's transaction identifiers, so after a rollback undid a micro-batch
        its identifier would still be recorded, and the micro-batch's next attempt would be
        skipped: such a dead identifier (the commit that set it was rolled back) is passed over
        by salting the id, `<app_id>~1`, `~2`, ... per table, the first one that is free or holds
        a live commit of this version. A live one means the micro-batch is committed: the write is
        skipped and reports the counts that commit recorded."""
        self._stream = (app_id, version)
        try:
            yield
        finally:
            self._stream = None

    def stream_committed(self, app_id: str, version: int, tables: Sequence[str]) -> list[str]:
        """The tables among `tables` that hold a live commit of micro-batch `version` of stream
        `app_id` (or a later one): when any does, that micro-batch is committed (a micro-batch's
        commits are all kept, or all rolled back)."""
        return [t for t in tables if self._stream_identifier(t, app_id, version).done is not None]

    def _stream_identifier(self, table: str, app_id: str, version: int) -> _Transaction:
        """The first of `app_id`, `app_id~1`, ... whose identifier in `table` is below `version`
        (free), or set by a commit no rollback undid (then `done` is that commit)."""
        salt = 0
        while True:
            candidate = app_id if salt == 0 else f"{app_id}{_SALT}{salt}"
            recorded = self._transaction_version(table, candidate)
            if recorded is None or recorded < version:
                return _Transaction(candidate, version)
            commit, undone = _commit_setting(Path(self.location(table)), candidate)
            if not undone:
                return _Transaction(candidate, version, done=commit or {})
            salt += 1

    def _transaction(self, table: str, batch_id: str, sequence: int | None) -> _Transaction | None:
        """The transaction identifier a commit of `batch_id` to `table` carries: the open stream
        micro-batch's, else the batch's own (with a sequence), else none."""
        if self._stream is not None:
            return self._stream_identifier(table, *self._stream)
        if sequence is None:
            return None
        return _Transaction(transaction_app_id(batch_id, sequence), sequence)

    def replace(
        self, spec: TableSpec, frame: nw.LazyFrame[Any], *, batch_of: str, batch_id: str, sequence: int | None = None
    ) -> int:
        condition = f"batch_id = {sql_string(batch_of)}"
        return self._create_or_append(spec, self._conform(spec, frame), batch_id, sequence, replace=condition)

    def tables(self) -> list[str]:
        return lake_tables(Path(self.root))

    def rollback(self, batch_id: str) -> dict[str, int | None]:
        from delta.tables import DeltaTable

        self._recording.clear()  # a restore can take a table back to before its feed was on
        self._bounded.clear()

        def history(table: str) -> list[dict[str, Any]]:
            rows = DeltaTable.forPath(self.spark, self.location(table)).history().select("version", "userMetadata")
            return [row.asDict() for row in rows.collect()]

        plans = plan_rollback(self.tables(), history, batch_id)
        for table, target in plans.items():
            if target is None:
                remove_table(Path(self.location(table)), batch_id)
            else:
                with self._commit_metadata(commit_tags(rollback_of=batch_id)["userMetadata"]):
                    DeltaTable.forPath(self.spark, self.location(table)).restoreToVersion(target)
        return plans

    @contextmanager
    def _commit_metadata(self, text: str, transaction: _Transaction | None = None) -> Iterator[None]:
        """Session settings that tag the next SQL or DeltaTable commit with `text` (a batch id, or
        a rollback's tag) and, with `transaction`, make it an idempotent write (Delta skips it
        when the table records that transaction version or a later one)."""
        settings = {"spark.databricks.delta.commitInfo.userMetadata": text}
        if transaction is not None:
            settings["spark.databricks.delta.write.txnAppId"] = transaction.app_id
            settings["spark.databricks.delta.write.txnVersion"] = str(transaction.version)
        for key, value in settings.items():
            self.spark.conf.set(key, value)
        try:
            yield
        finally:
            for key in settings:
                self.spark.conf.unset(key)

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
        from delta.tables import DeltaTable

        data = self._conform(spec, frame)
        if not self.exists(spec.name):
            inserted = self._create_or_append(spec, data, batch_id, sequence)
            return UpsertCounts(inserted=inserted, updated=0, unchanged=0)
        # Column names from the spec and ISO dates only: no value from outside is SQL text here.
        on = " AND ".join(f"{_column('t', k)} = {_column('s', k)}" for k in spec.keys)
        on += local_days_condition(local_days, spec)
        changed = changed_condition(spec, compare, lambda c: f"NOT ({_column('t', c)} <=> {_column('s', c)})")
        if rank is not None:
            wins = ">=" if replace_equal_rank else ">"
            changed = f"({changed}) AND {_column('s', rank)} {wins} {_column('t', rank)}"
        transaction = self._transaction(spec.name, batch_id, sequence)
        if transaction is not None and transaction.done is not None:  # Delta would skip it: committed already
            done = transaction.metrics
            inserted, updated = int(done.get("numTargetRowsInserted", 0)), int(done.get("numTargetRowsUpdated", 0))
            return UpsertCounts(inserted=inserted, updated=updated, unchanged=data.count() - inserted - updated)
        with self._commit_metadata(batch_id):  # tagged: a rollback of the batch undoes it too
            self._bound_transactions(spec.name)
            if spec.change_feed:
                self._record_changes(spec)
        try:
            with self._commit_metadata(batch_id, transaction):
                target = DeltaTable.forPath(self.spark, self.location(spec.name)).alias("t")
                (
                    target.merge(data.alias("s"), on)
                    .whenMatchedUpdateAll(condition=changed)
                    .whenNotMatchedInsertAll()
                    .execute()
                )
        except Exception as error:
            raise TableStoreError(f"{spec.name}: merge failed: {error}") from error
        metrics = self._last_metrics(spec.name)
        source_rows = int(metrics.get("numSourceRows", 0))
        inserted = int(metrics.get("numTargetRowsInserted", 0))
        updated = int(metrics.get("numTargetRowsUpdated", 0))
        return UpsertCounts(inserted=inserted, updated=updated, unchanged=source_rows - inserted - updated)

    def head(self, table: str, *, limit: int, as_of: int | datetime | None = None) -> pa.Table:
        if as_of is None:
            return self._load(table).limit(limit).toArrow()
        self._load(table)  # a missing table is an error naming it
        option = ("versionAsOf", str(as_of)) if isinstance(as_of, int) else ("timestampAsOf", as_of.isoformat())
        try:
            frame = self.spark.read.format("delta").option(*option).load(self.location(table))
            return frame.limit(limit).toArrow()
        except Exception as error:  # AnalysisException and the JVM's errors: no such version
            raise TableStoreError(f"table {table} has no version as of {as_of}: {error}") from None

    def changes(self, table: str, *, since_version: int) -> pa.Table:
        from delta.tables import DeltaTable

        self._load(table)
        target = DeltaTable.forPath(self.spark, self.location(table))
        properties = target.detail().collect()[0]["properties"] or {}
        if properties.get(CHANGE_FEED) != "true":
            raise TableStoreError(f"table {table} does not record its changes (Delta's change data feed)")
        latest = int(target.history(1).collect()[0]["version"])
        if since_version > latest:
            return pa.table({})
        try:
            reader = self.spark.read.format("delta").option("readChangeFeed", "true")
            return reader.option("startingVersion", since_version).load(self.location(table)).toArrow()
        except Exception as error:  # the JVM's errors: versions before the feed was on, or vacuumed
            raise TableStoreError(f"table {table}: no changes since version {since_version}: {error}") from None

    def history(self, table: str, *, limit: int | None = None) -> list[TableVersion]:
        from delta.tables import DeltaTable

        self._load(table)
        rows = DeltaTable.forPath(self.spark, self.location(table)).history(limit).collect()
        return [table_version(row.asDict(recursive=True)) for row in rows]

    def optimize(self, table: str, *, zorder: Sequence[str] = ()) -> tuple[int, int]:
        if not zorder:
            return self.compact(table)
        from delta.tables import DeltaTable

        checked_columns(table, self._load(table).columns, zorder)
        before = self._files(table)
        DeltaTable.forPath(self.spark, self.location(table)).optimize().executeZOrderBy(*zorder)
        return before, self._files(table)

    def _files(self, table: str) -> int:
        from delta.tables import DeltaTable

        return int(DeltaTable.forPath(self.spark, self.location(table)).detail().collect()[0]["numFiles"])

    def vacuum(self, table: str, *, retain_hours: float) -> int:
        self._load(table)
        # Delta refuses a retention shorter than its default unless this check is off; the
        # platform's own check (tables vacuum --force) has decided already.
        self.spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
        target = f"delta.`{self.location(table)}` RETAIN {retain_hours:g} HOURS"
        doomed = self.spark.sql(f"VACUUM {target} DRY RUN").count()
        self.spark.sql(f"VACUUM {target}").collect()
        return int(doomed)

    # Undo and restore ---------------------------------------------------------------------

    def read_version(self, spec: TableSpec, version: int, *, where: RowFilter | None = None) -> nw.LazyFrame[Any]:
        self._load(spec.name)  # a missing table is an error naming it
        try:
            data = self.spark.read.format("delta").option("versionAsOf", version).load(self.location(spec.name))
        except Exception as error:  # AnalysisException and the JVM's errors: no such version
            raise TableStoreError(f"table {spec.name} has no version {version} to read: {error}") from None
        return self._filtered(spec, data, where)

    def delete_batch_rows(self, table: str, *, batch_of: str, batch_id: str) -> int:
        from delta.tables import DeltaTable
        from pyspark.sql import functions as F

        if not self.exists(table):
            return 0
        condition = F.col("batch_id") == F.lit(batch_of)
        if self._load(table).where(condition).isEmpty():
            return 0
        try:
            with self._commit_metadata(batch_id):
                DeltaTable.forPath(self.spark, self.location(table)).delete(condition)
        except Exception as error:
            raise TableStoreError(f"{table}: deleting the rows of batch {batch_of} failed: {error}") from error
        return int(self._last_metrics(table).get("numDeletedRows", 0))

    def merge_changes(
        self,
        spec: TableSpec,
        frame: nw.LazyFrame[Any],
        *,
        batch_id: str,
        local_days: tuple[date, date] | None = None,
    ) -> ChangeCounts:
        from delta.tables import DeltaTable
        from pyspark.sql import functions as F

        native: DataFrame = frame.to_native()
        missing = [n for n in [*spec.schema.names, DELETE_COLUMN] if n not in native.columns]
        if missing:
            raise TableStoreError(f"{spec.name}: frame lacks column(s) {', '.join(missing)}")
        types = {f.name: f.dataType for f in _spark_schema(spec.schema).fields}
        data = native.select(
            *(F.col(n).cast(types[n]).alias(n) for n in spec.schema.names),
            F.col(DELETE_COLUMN).cast("boolean").alias(DELETE_COLUMN),
        )
        if data.isEmpty():
            return ChangeCounts(0, 0, 0)
        self._load(spec.name)  # a missing table is an error naming it
        # Column names from the spec and ISO dates only: no value from outside is SQL text here.
        on = " AND ".join(f"{_column('t', k)} = {_column('s', k)}" for k in spec.keys)
        on += local_days_condition(local_days, spec)
        changed = changed_condition(
            spec, spec.value_columns, lambda c: f"NOT ({_column('t', c)} <=> {_column('s', c)})"
        )
        flag = _column("s", DELETE_COLUMN)
        columns: dict[str, str | Column] = {c: _column("s", c) for c in spec.schema.names}
        try:
            with self._commit_metadata(batch_id):
                if spec.change_feed:
                    self._record_changes(spec)
                (
                    DeltaTable.forPath(self.spark, self.location(spec.name))
                    .alias("t")
                    .merge(data.alias("s"), on)
                    .whenMatchedDelete(condition=flag)
                    .whenMatchedUpdate(condition=f"NOT {flag} AND ({changed})", set=columns)
                    .whenNotMatchedInsert(condition=f"NOT {flag}", values=columns)
                    .execute()
                )
        except Exception as error:
            raise TableStoreError(f"{spec.name}: merge failed: {error}") from error
        metrics = self._last_metrics(spec.name)
        return ChangeCounts(
            inserted=int(metrics.get("numTargetRowsInserted", 0)),
            updated=int(metrics.get("numTargetRowsUpdated", 0)),
            deleted=int(metrics.get("numTargetRowsDeleted", 0)),
        )

    def restore(self, table: str, version: int, *, batch_id: str) -> None:
        from delta.tables import DeltaTable

        self._load(table)  # a missing table is an error naming it
        # The version may be from before its change feed was on, or before it bounded its transactions.
        self._recording.discard(table)
        self._bounded.discard(table)
        try:
            with self._commit_metadata(batch_id):
                DeltaTable.forPath(self.spark, self.location(table)).restoreToVersion(version)
        except Exception as error:
            raise TableStoreError(f"{table}: restoring version {version} failed: {error}") from error

    def small_files(self, table: str) -> int:
        from deltalake import DeltaTable as LogReader

        self._load(table)  # a missing table is an error naming it
        return small_files(LogReader(self.location(table)))

    def _version(self, table: str) -> int:
        from delta.tables import DeltaTable

        return int(DeltaTable.forPath(self.spark, self.location(table)).history(1).collect()[0]["version"])

    def delete(self, table: str, where: RowFilter) -> int:
        from delta.tables import DeltaTable
        from pyspark.sql import functions as F

        if not self.exists(table):
            return 0
        checked_columns(table, self._load(table).columns, [column for column, _, _ in where])
        condition = F.lit(True)
        for column, op, value in where:
            if op == "in":
                term = F.col(column).isin(list(value))
            elif op in COMPARISONS:
                term = COMPARISONS[op](F.col(column), F.lit(value))
            else:
                raise TableStoreError(f"unsupported filter operator {op!r}")
            condition = condition & term
        before = self._version(table)
        try:
            DeltaTable.forPath(self.spark, self.location(table)).delete(condition)
        except Exception as error:
            raise TableStoreError(f"{table}: delete failed: {error}") from error
        if self._version(table) == before:  # nothing matched: nothing committed
            return 0
        return int(self._last_metrics(table).get("numDeletedRows", 0))

    def delete_keys(self, table: str, keys: pa.Table) -> int:
        from delta.tables import DeltaTable
        from pyspark.sql import functions as F

        if not self.exists(table) or keys.num_rows == 0:
            return 0
        stored = self._load(table)
        checked_columns(table, stored.columns, keys.column_names)
        types = {f.name: f.dataType for f in stored.schema.fields}
        names = keys.column_names
        source = self.spark.createDataFrame(keys).select(*(F.col(n).cast(types[n]).alias(n) for n in names))
        on = " AND ".join(f"{_column('t', n)} = {_column('s', n)}" for n in names)
        before = self._version(table)
        try:
            target = DeltaTable.forPath(self.spark, self.location(table)).alias("t")
            target.merge(source.dropDuplicates().alias("s"), on).whenMatchedDelete().execute()
        except Exception as error:
            raise TableStoreError(f"{table}: delete failed: {error}") from error
        if self._version(table) == before:
            return 0
        return int(self._last_metrics(table).get("numTargetRowsDeleted", 0))

    def purge(self, table: str) -> int:
        """Deleted rows still in files behind deletion vectors rewritten out (REORG ... PURGE),
        a vacuum with no retention, a commit that only sets a property (so the newest commit
        names no deleted row), Delta's checkpoint of it, and the log before it deleted."""
        from delta.tables import DeltaTable

        self._load(table)
        location = self.location(table)
        properties = DeltaTable.forPath(self.spark, location).detail().collect()[0]["properties"] or {}
        try:
            if properties.get("delta.enableDeletionVectors") == "true":
                self.spark.sql(f"REORG TABLE delta.`{location}` APPLY (PURGE)").collect()
            deleted = self.vacuum(table, retain_hours=0)
            self.spark.sql(
                f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES "
                f"('{TRANSACTION_RETENTION}' = '{TRANSACTION_RETENTION_VALUE}')"
            )
            jvm: Any = self.spark._jvm  # Delta's checkpoint has no SQL or Python API
            jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
            jvm.org.apache.spark.sql.delta.DeltaLog.forTable(self.spark._jsparkSession, location).checkpoint()
        except Exception as error:
            raise TableStoreError(f"{table}: purging its history failed: {error}") from error
        log = Path(location) / "_delta_log"
        checkpoint = int(json.loads((log / "_last_checkpoint").read_text(encoding="utf-8"))["version"])
        pruned = prune_log(Path(location), checkpoint)
        jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()  # its cached snapshots name the files deleted
        return deleted + pruned

    def residue(self, text: str) -> list[str]:
        return lake_residue(Path(self.root), text)
