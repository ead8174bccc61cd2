"""Local table storage: Delta tables on the filesystem (deltalake), frames in pandas."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar

import narwhals as nw
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, QueryBuilder, Transaction, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from app.application.ports import (
    DELETE_COLUMN,
    ArrowBatchFunction,
    ChangeCounts,
    RowFilter,
    TableVersion,
    UpsertCounts,
)
from app.domain.errors import InputFileError, TableStoreError
from app.domain.schemas import TABLES, TableSpec
from app.domain.sources import SourceConfig
from app.domain.transforms import highest_rows
from app.infrastructure.readers import raw_read_table, read_schema
from app.infrastructure.repositories.base import (
    APP_ID,
    COMPARISONS,
    TRANSACTION_RETENTION,
    TRANSACTION_RETENTION_VALUE,
    change_feed,
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
    sql_predicate,
    sql_string,
    table_configuration,
    table_version,
    transaction_app_id,
    with_partition_bounds,
)

_SQL_COMPARISONS = (">=", "<=", "<")


def _commit(batch_id: str, sequence: int | None = None, positions: Mapping[str, int] | None = None) -> CommitProperties:
    """Every commit names its batch; with `sequence`, it also records it as the platform's
    Delta transaction version, which a retried commit then finds; `positions` are a stream's
    source positions, recorded as transaction identifiers in the same commit. The batch's own
    identifier carries its commit time, so that a checkpoint drops it once it is older than the
    table's `TRANSACTION_RETENTION`; positions carry none and are kept."""
    transactions = [Transaction(app_id=app_id, version=offset) for app_id, offset in sorted((positions or {}).items())]
    if sequence is not None:
        batch = Transaction(
            app_id=transaction_app_id(batch_id, sequence), version=sequence, last_updated=int(time.time() * 1000)
        )
        transactions.insert(0, batch)
    return CommitProperties(custom_metadata=commit_tags(batch_id), app_transactions=transactions or None)


def _log_app_ids(path: Path, after: int) -> set[str]:
    """The application ids of the transaction identifiers a table's commits after version `after` set."""
    ids: set[str] = set()
    for entry in (path / "_delta_log").glob("*.json"):
        if not entry.stem.isdigit() or int(entry.stem) <= after:
            continue
        for line in entry.read_text(encoding="utf-8").splitlines():
            if '"txn"' in line:
                action = json.loads(line).get("txn")
                if action:
                    ids.add(action["appId"])
    return ids


class PandasDeltaStore:
    """Tables under `root/<layer>/<table>`; every write is one atomic Delta commit."""

    engine = "pandas"

    def __init__(self, root: Path) -> None:
        self.root = root
        #: Tables seen holding their properties (`table_configuration`): checked once, not before every write.
        self._configured: set[str] = set()

    def _path(self, table: str) -> Path:
        checked_table_name(table)
        spec = TABLES.get(table)
        layer = spec.layer if spec else table.split("_", 1)[0]
        return self.root / layer / table

    def location(self, table: str) -> str:
        return str(self._path(table))

    def frame(self, data: pa.Table) -> nw.LazyFrame[Any]:
        native = data.to_pandas(types_mapper=pd.ArrowDtype, self_destruct=False)
        return nw.from_native(native, eager_only=True).lazy()

    def to_arrow(self, frame: nw.LazyFrame[Any]) -> pa.Table:
        # From the native frame, so a filtered frame's pandas index does not become a column.
        return pa.Table.from_pandas(frame.collect().to_native(), preserve_index=False)

    def collect(self, frame: nw.LazyFrame[Any]) -> pa.Table:
        return self.to_arrow(frame)

    def count_rows(self, frame: nw.LazyFrame[Any]) -> int:
        return int(frame.collect().shape[0])

    def read_files(self, paths: list[str], source: SourceConfig, header: list[str]) -> nw.LazyFrame[Any]:
        tables = []
        for index, path in enumerate(paths):
            try:
                data = Path(path).read_bytes()
            except OSError as error:
                raise InputFileError(path, f"cannot be read: {error.strerror}") from None
            tables.append(raw_read_table(index, path, data, source, header))
        return self.frame(pa.concat_tables(tables) if tables else read_schema(header).empty_table())

    def map_arrow(self, frame: nw.LazyFrame[Any], function: ArrowBatchFunction, schema: pa.Schema) -> nw.LazyFrame[Any]:
        return self.frame(function(self.to_arrow(frame)).select(schema.names).cast(schema))

    def map_groups(
        self, frame: nw.LazyFrame[Any], keys: Sequence[str], function: ArrowBatchFunction, schema: pa.Schema
    ) -> nw.LazyFrame[Any]:
        return self.map_arrow(frame, function, schema)  # one call over all groups

    def highest(self, frame: nw.LazyFrame[Any], keys: Sequence[str], column: str, n: int) -> nw.LazyFrame[Any]:
        return highest_rows(frame, keys, column, n)

    def cache(self, frame: nw.LazyFrame[Any]) -> nw.LazyFrame[Any]:
        return frame  # pandas frames are already computed

    def release(self) -> None:
        return None

    def exists(self, table: str) -> bool:
        return DeltaTable.is_deltatable(str(self._path(table)))

    def _table(self, table: str) -> DeltaTable:
        try:
            return DeltaTable(str(self._path(table)))
        except TableNotFoundError:
            raise TableStoreError(
                f"table {table} does not exist at {self._path(table)}; run `energy-platform run-batch` first"
            ) from None

    def read(self, spec: TableSpec, *, where: RowFilter | None = None) -> nw.LazyFrame[Any]:
        if not self.exists(spec.name):
            return self.frame(spec.schema.empty_table())
        return self.frame(pa.Table.from_batches(list(self.scan(spec, where=where)), schema=spec.schema))

    def scan(
        self, spec: TableSpec, *, where: RowFilter | None = None, version: int | None = None
    ) -> Iterator[pa.RecordBatch]:
        """The rows of an existing table (of its `version`, if given) matching `where`, in
        batches typed as `spec` declares."""
        pushed: list[str] = []
        expression = None
        for column, op, value in with_partition_bounds(spec, where):
            if column not in spec.schema.names:
                raise ValueError(f"{spec.name} has no column {column!r}")
            # DataFusion's timestamps are nanoseconds (years 1677-2262): bounds outside that
            # range are applied after the scan instead.
            if op in _SQL_COMPARISONS and isinstance(value, date) and 1700 <= value.year <= 2200:
                # Typed date and timestamp bounds go into the scan, so Delta prunes partitions
                # and files; the literal is the value's ISO form, never caller text.
                literal = (
                    f"TIMESTAMP '{value.astimezone(UTC).replace(tzinfo=None).isoformat()}'"
                    if isinstance(value, datetime)
                    else f"DATE '{value.isoformat()}'"
                )
                pushed.append(f'"{column}" {op} {literal}')
                continue
            field = ds.field(column)
            term = field.isin(value) if op == "in" else COMPARISONS[op](field, value)
            expression = term if expression is None else expression & term
        condition = f" WHERE {' AND '.join(pushed)}" if pushed else ""
        query = QueryBuilder().register("t", self._at_version(spec.name, version))
        for batch in pa.RecordBatchReader.from_stream(query.execute(f"SELECT * FROM t{condition}")):
            typed = pa.Table.from_batches([batch]).select(spec.schema.names).cast(spec.schema)
            if expression is not None:
                typed = typed.filter(expression)
            yield from typed.to_batches()

    def count(self, table: str) -> int:
        if not self.exists(table):
            return 0
        actions = pa.table(self._table(table).get_add_actions(flatten=True))
        return int(pc.sum(actions.column("num_records")).as_py() or 0)

    def _conform(self, spec: TableSpec, frame: nw.LazyFrame[Any]) -> pa.Table:
        data = self.to_arrow(frame)
        missing = [n for n in spec.schema.names if n not in data.column_names]
        if missing:
            raise TableStoreError(f"{spec.name}: frame lacks column(s) {', '.join(missing)}")
        return data.select(spec.schema.names).cast(spec.schema)

    #: Keyword arguments every Delta write and every merge of this store passes.
    _write_options: ClassVar[dict[str, Any]] = {}
    _merge_options: ClassVar[dict[str, Any]] = {}

    def _source(self, spec: TableSpec, frame: nw.LazyFrame[Any]) -> tuple[Any, Callable[[], int]]:
        """What a Delta write reads for `frame` (Arrow data or a stream, in `spec.cluster_by`
        order), and its row count once read."""
        data = self._conform(spec, frame)
        if spec.cluster_by:
            data = data.sort_by([(c, "ascending") for c in spec.cluster_by])
        return data, lambda: data.num_rows

    def _committed(self, table: str, batch_id: str, sequence: int | None) -> bool:
        """Whether `table` already holds the commit of batch `batch_id` (number `sequence`)."""
        if sequence is None or not self.exists(table):
            return False
        return self._table(table).transaction_version(transaction_app_id(batch_id, sequence)) == sequence

    def _write(
        self,
        spec: TableSpec,
        frame: nw.LazyFrame[Any],
        *,
        batch_id: str,
        sequence: int | None,
        action: str,
        positions: Mapping[str, int] | None = None,
        **options: Any,
    ) -> int:
        """One Delta write of the frame's rows (`options` as `write_deltalake` takes them), as one
        commit of the batch; the rows written."""
        data, rows = self._source(spec, frame)
        options = {**self._write_options, **options}
        if spec.file_bytes is not None:
            options["target_file_size"] = spec.file_bytes
        if not self.exists(spec.name):
            options["configuration"] = table_configuration(spec)
        else:
            self._configure(spec, batch_id)
        try:
            write_deltalake(
                str(self._path(spec.name)),
                data,
                partition_by=list(spec.partition_by) or None,
                commit_properties=_commit(batch_id, sequence, positions),
                **options,
            )
        except DeltaError as error:
            raise TableStoreError(f"{spec.name}: {action} failed: {error}") from error
        return rows()

    def append(
        self,
        spec: TableSpec,
        frame: nw.LazyFrame[Any],
        *,
        batch_id: str,
        sequence: int | None = None,
        positions: Mapping[str, int] | None = None,
    ) -> int:
        if self._committed(spec.name, batch_id, sequence):
            return self._commit_metrics(spec.name, batch_id).get("num_added_rows", 0)
        if self.exists(spec.name) and not positions and self.count_rows(frame) == 0:
            return 0
        return self._write(
            spec,
            frame,
            batch_id=batch_id,
            sequence=sequence,
            action="append",
            positions=positions,
            mode="append",
            schema_mode="merge",
        )

    def position(self, table: str, app_id: str) -> int | None:
        if not self.exists(table):
            return None
        return self._table(table).transaction_version(app_id)

    def replace(
        self, spec: TableSpec, frame: nw.LazyFrame[Any], *, batch_of: str, batch_id: str, sequence: int | None = None
    ) -> int:
        if self._committed(spec.name, batch_id, sequence):
            return self._commit_metrics(spec.name, batch_id).get("num_added_rows", 0)
        if not self.exists(spec.name):
            return self.append(spec, frame, batch_id=batch_id, sequence=sequence)
        return self._write(
            spec,
            frame,
            batch_id=batch_id,
            sequence=sequence,
            action=f"replacing the rows of batch {batch_of}",
            mode="overwrite",
            predicate=f"batch_id = {sql_string(batch_of)}",
        )

    def _configure(self, spec: TableSpec, batch_id: str) -> None:
        """A table written before it held one of `table_configuration(spec)` (bounded
        transaction identifiers, its change feed, its file size): from now on it does, set in
        one commit of the batch, which a rollback of it undoes."""
        if spec.name in self._configured:
            return
        target = self._table(spec.name)
        stored = target.metadata().configuration
        missing = {k: v for k, v in table_configuration(spec).items() if stored.get(k) != v}
        if missing:
            target.alter.set_table_properties(missing, commit_properties=_commit(batch_id))
        self._configured.add(spec.name)

    def _commit_metrics(self, table: str, batch_id: str) -> dict[str, int]:
        """The operation metrics of `batch_id`'s commit to `table`."""
        for entry in self._table(table).history():
            if read_tags(entry).get("batch_id") == batch_id:
                return {k: int(v) for k, v in entry.get("operationMetrics", {}).items() if isinstance(v, int)}
        return {}

    def tables(self) -> list[str]:
        return lake_tables(self.root)

    def rollback(self, batch_id: str) -> dict[str, int | None]:
        self._configured.clear()  # a restore can take a table back to before it held its properties
        plans = plan_rollback(self.tables(), lambda table: self._table(table).history(), batch_id)
        for table, target in plans.items():
            if target is None:  # every commit of the table is the batch's: the table goes
                remove_table(self._path(table), batch_id)
            else:
                self._table(table).restore(target, commit_properties=self._rollback_commit(table, target, batch_id))
        return plans

    def _rollback_commit(self, table: str, target: int, batch_id: str) -> CommitProperties:
        """A restore keeps the log's transaction identifiers as they are, so the rollback commit
        sets the stream positions the undone commits recorded back to their values at `target`
        (-1: none); the platform's own batch identifiers stay, a retried batch is a new one."""
        path = self._path(table)
        restored = DeltaTable(str(path), version=target)
        positions = {
            app_id: v if (v := restored.transaction_version(app_id)) is not None else -1
            for app_id in _log_app_ids(path, target)
            if not app_id.startswith(f"{APP_ID}:")
        }
        transactions = [Transaction(app_id=a, version=v) for a, v in sorted(positions.items())]
        return CommitProperties(
            custom_metadata=commit_tags(rollback_of=batch_id), app_transactions=transactions or None
        )

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
        path = str(self._path(spec.name))
        if self._committed(spec.name, batch_id, sequence):
            done = self._commit_metrics(spec.name, batch_id)
            inserted = done.get("num_target_rows_inserted", done.get("num_added_rows", 0))
            updated = done.get("num_target_rows_updated", 0)
            return UpsertCounts(inserted, updated, self.count_rows(frame) - inserted - updated)
        if not self.exists(spec.name):
            written = self._write(spec, frame, batch_id=batch_id, sequence=sequence, action="create", mode="append")
            return UpsertCounts(inserted=written, updated=0, unchanged=0)
        if self.count_rows(frame) == 0:
            return UpsertCounts(0, 0, 0)
        self._configure(spec, batch_id)
        if local_days is not None and not self._any_stored(spec, frame, local_days):
            # Every row is new (a day or an interval not seen before, what a daily load or a
            # stream brings): an append, which writes the rows without a merge's scan of their
            # partitions, commits the same rows.
            written = self._write(spec, frame, batch_id=batch_id, sequence=sequence, action="insert", mode="append")
            return UpsertCounts(inserted=written, updated=0, unchanged=0)
        on = (
            " AND ".join(f"t.{k} = s.{k}" for k in spec.keys)
            + local_days_condition(local_days, spec)
            + self._time_key_bounds(spec, frame)
        )
        changed = changed_condition(spec, compare, lambda c: f"t.{c} IS DISTINCT FROM s.{c}")
        if rank is not None:
            changed = f"({changed}) AND s.{rank} {'>=' if replace_equal_rank else '>'} t.{rank}"
        data, rows = self._source(spec, frame)
        target = DeltaTable(path)
        try:
            metrics = (
                target.merge(
                    data,
                    predicate=on,
                    source_alias="s",
                    target_alias="t",
                    commit_properties=_commit(batch_id, sequence),
                    **self._merge_options,
                )
                .when_matched_update_all(predicate=changed)
                .when_not_matched_insert_all()
                .execute()
            )
        except DeltaError as error:
            raise TableStoreError(f"{spec.name}: merge failed: {error}") from error
        inserted = int(metrics.get("num_target_rows_inserted", 0))
        updated = int(metrics.get("num_target_rows_updated", 0))
        return UpsertCounts(inserted=inserted, updated=updated, unchanged=rows() - inserted - updated)

    def _time_key_bounds(self, spec: TableSpec, frame: nw.LazyFrame[Any]) -> str:
        """The merge condition that confines matches to target rows within the frame's range of
        each timestamp key (a row matching one of the frame's keys lies there), so the merge
        reads and rewrites only the data files whose statistics overlap it: a stream's
        micro-batch that replaces a few estimates rewrites the files of the last intervals, not
        every file of the day's month."""
        columns = [k for k in spec.keys if pa.types.is_timestamp(spec.schema.field(k).type)]
        if not columns:
            return ""
        bounds = self.collect(
            frame.select(
                *(nw.col(c).min().alias(f"{c}__min") for c in columns),
                *(nw.col(c).max().alias(f"{c}__max") for c in columns),
            )
        ).to_pylist()[0]
        condition = ""
        for column in columns:
            low, high = bounds[f"{column}__min"], bounds[f"{column}__max"]
            if low is None or high is None:
                continue
            # datetime objects formatted here, never user text
            condition += f" AND t.{column} >= '{_utc_text(low)}' AND t.{column} <= '{_utc_text(high)}'"
        return condition

    def _any_stored(self, spec: TableSpec, frame: nw.LazyFrame[Any], local_days: tuple[date, date]) -> bool:
        """Whether a row of `spec` within `local_days` has the key of one of the frame's rows
        (what a merge confined to those days would match)."""
        keys = list(spec.keys)
        stored = self.read(spec, where=[("local_date", ">=", local_days[0]), ("local_date", "<=", local_days[1])])
        return self.count_rows(frame.select(*keys).join(stored.select(*keys), on=keys, how="semi")) > 0

    def head(self, table: str, *, limit: int, as_of: int | datetime | None = None) -> pa.Table:
        dt = self._table(table)
        if as_of is not None:
            try:
                dt.load_as_version(as_of)
            except (DeltaError, ValueError, OSError) as error:
                raise TableStoreError(f"table {table} has no version as of {as_of}: {error}") from None
        return dt.to_pyarrow_dataset().head(limit)

    def changes(self, table: str, *, since_version: int) -> pa.Table:
        return change_feed(self._table(table), table, since_version)

    def history(self, table: str, *, limit: int | None = None) -> list[TableVersion]:
        return [table_version(entry) for entry in self._table(table).history(limit)]

    def optimize(self, table: str, *, zorder: Sequence[str] = ()) -> tuple[int, int]:
        if not zorder:
            return self.compact(table)
        dt = self._table(table)
        checked_columns(table, dt.schema().to_arrow().names, zorder)
        before = len(dt.file_uris())
        dt.optimize.z_order(list(zorder))
        optimized = self._table(table)
        optimized.create_checkpoint()
        return before, len(optimized.file_uris())

    def compact(self, table: str) -> tuple[int, int]:
        before = len(self._table(table).file_uris())
        self._table(table).optimize.compact()
        compacted = self._table(table)
        compacted.create_checkpoint()
        return before, len(compacted.file_uris())

    def vacuum(self, table: str, *, retain_hours: float) -> int:
        deleted = self._table(table).vacuum(
            retention_hours=math.ceil(retain_hours), enforce_retention_duration=False, dry_run=False
        )
        return len(deleted)

    # Undo and restore ---------------------------------------------------------------------

    def _at_version(self, table: str, version: int | None) -> DeltaTable:
        """The table, as of `version` if given (an error naming the table if it has no such version)."""
        dt = self._table(table)
        if version is not None:
            try:
                dt.load_as_version(version)
            except (DeltaError, ValueError, OSError) as error:
                raise TableStoreError(f"table {table} has no version {version} to read: {error}") from None
        return dt

    def read_version(self, spec: TableSpec, version: int, *, where: RowFilter | None = None) -> nw.LazyFrame[Any]:
        try:
            batches = list(self.scan(spec, where=where, version=version))
        except (DeltaError, pa.ArrowException, OSError) as error:  # a data file of that version is gone
            raise TableStoreError(
                f"table {spec.name}: version {version} cannot be read (a vacuum may have deleted its files): {error}"
            ) from None
        return self.frame(pa.Table.from_batches(batches, schema=spec.schema))

    def delete_batch_rows(self, table: str, *, batch_of: str, batch_id: str) -> int:
        if not self.exists(table):
            return 0
        try:
            predicate = f"batch_id = {sql_string(batch_of)}"
            metrics = self._table(table).delete(predicate, commit_properties=_commit(batch_id))
        except DeltaError as error:
            raise TableStoreError(f"{table}: deleting the rows of batch {batch_of} failed: {error}") from error
        return int(metrics.get("num_deleted_rows", 0))

    def merge_changes(
        self,
        spec: TableSpec,
        frame: nw.LazyFrame[Any],
        *,
        batch_id: str,
        local_days: tuple[date, date] | None = None,
    ) -> ChangeCounts:
        data = self.to_arrow(frame)
        if data.num_rows == 0:
            return ChangeCounts(0, 0, 0)
        schema = pa.schema([*spec.schema, pa.field(DELETE_COLUMN, pa.bool_(), nullable=False)])
        data = data.select(schema.names).cast(schema)
        if not self.exists(spec.name):
            raise TableStoreError(f"{spec.name}: there is no table to apply changes to")
        columns = {c: f"s.{c}" for c in spec.schema.names}
        on = (
            " AND ".join(f"t.{k} = s.{k}" for k in spec.keys)
            + local_days_condition(local_days, spec)
            + self._time_key_bounds(spec, frame)
        )
        changed = changed_condition(spec, spec.value_columns, lambda c: f"t.{c} IS DISTINCT FROM s.{c}")
        try:
            metrics = (
                self._table(spec.name)
                .merge(
                    data,
                    predicate=on,
                    source_alias="s",
                    target_alias="t",
                    commit_properties=_commit(batch_id),
                    **self._merge_options,
                )
                .when_matched_delete(predicate=f"s.{DELETE_COLUMN}")
                .when_matched_update(updates=columns, predicate=f"NOT s.{DELETE_COLUMN} AND ({changed})")
                .when_not_matched_insert(updates=columns, predicate=f"NOT s.{DELETE_COLUMN}")
                .execute()
            )
        except DeltaError as error:
            raise TableStoreError(f"{spec.name}: merge failed: {error}") from error
        return ChangeCounts(
            inserted=int(metrics.get("num_target_rows_inserted", 0)),
            updated=int(metrics.get("num_target_rows_updated", 0)),
            deleted=int(metrics.get("num_target_rows_deleted", 0)),
        )

    def restore(self, table: str, version: int, *, batch_id: str) -> None:
        path = self._path(table)
        self._at_version(table, version)  # a version the table does not have is an error naming it
        self._configured.discard(table)  # the version may be from before it held its properties
        restored = DeltaTable(str(path), version=version)
        # A restore keeps the log's transaction identifiers: a stream's positions are set back
        # to their values at `version` (-1: none), as a rollback does.
        positions = {
            app_id: v if (v := restored.transaction_version(app_id)) is not None else -1
            for app_id in _log_app_ids(path, version)
            if not app_id.startswith(f"{APP_ID}:")
        }
        transactions = [Transaction(app_id=a, version=v) for a, v in sorted(positions.items())]
        properties = CommitProperties(custom_metadata=commit_tags(batch_id), app_transactions=transactions or None)
        try:
            self._table(table).restore(version, commit_properties=properties)
        except DeltaError as error:
            raise TableStoreError(f"{table}: restoring version {version} failed: {error}") from error

    def small_files(self, table: str) -> int:
        return small_files(self._table(table))

    def delete(self, table: str, where: RowFilter) -> int:
        if not self.exists(table):
            return 0
        target = self._table(table)
        predicate = sql_predicate(table, target.schema().to_arrow().names, where)
        try:
            metrics = target.delete(predicate)
        except DeltaError as error:
            raise TableStoreError(f"{table}: delete failed: {error}") from error
        return int(metrics.get("num_deleted_rows") or 0)

    def delete_keys(self, table: str, keys: pa.Table) -> int:
        if not self.exists(table) or keys.num_rows == 0:
            return 0
        target = self._table(table)
        schema = pa.schema(target.schema().to_arrow())
        checked_columns(table, schema.names, keys.column_names)
        types = pa.schema([pa.field(name, schema.field(name).type) for name in keys.column_names])
        unique = keys.cast(types).group_by(keys.column_names).aggregate([])
        on = " AND ".join(f"t.{name} = s.{name}" for name in keys.column_names)
        try:
            metrics = (
                target.merge(unique, predicate=on, source_alias="s", target_alias="t", **self._merge_options)
                .when_matched_delete()
                .execute()
            )
        except DeltaError as error:
            raise TableStoreError(f"{table}: delete failed: {error}") from error
        return int(metrics.get("num_target_rows_deleted") or 0)

    def purge(self, table: str) -> int:
        """delta-rs's full vacuum, which also takes the change data files, then a commit that only
        sets a property (so the newest commit names no row of the ones deleted before), its
        checkpoint, and the log before it deleted."""
        target = self._table(table)
        try:
            removed = target.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False, full=True)
            self._table(table).alter.set_table_properties({TRANSACTION_RETENTION: TRANSACTION_RETENTION_VALUE})
            latest = self._table(table)
            latest.create_checkpoint()
        except DeltaError as error:
            raise TableStoreError(f"{table}: purging its history failed: {error}") from error
        return len(removed) + prune_log(self._path(table), latest.version())

    def residue(self, text: str) -> list[str]:
        return lake_residue(self.root, text)


def _utc_text(instant: datetime) -> str:
    """A UTC instant (naive: in UTC) as an RFC 3339 literal with microseconds."""
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
