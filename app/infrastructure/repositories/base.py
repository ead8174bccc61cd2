"""What the Delta table stores share: commit tags, rollback plans, merge conditions, table names and paths."""

from __future__ import annotations

import json
import operator
import re
import shutil
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from app.application.ports import RowFilter, TableVersion
from app.domain.errors import TableStoreError
from app.domain.schemas import TableSpec

#: The range operators of a RowFilter, as functions (on Arrow and narwhals expressions alike).
COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


#: Prefix of the Delta transaction application id under which a batch's commits record its
#: sequence number: `energy-platform:<batch id>:<sequence>`.
APP_ID = "energy-platform"


def transaction_app_id(batch_id: str, sequence: int) -> str:
    """The Delta transaction application id of one batch's commits: one per batch and sequence
    number, so that a table finds a retried commit of this batch, and never mistakes a commit of
    another batch (say, one recorded by another metadata store, whose numbers and even batch ids
    may repeat) for it."""
    return f"{APP_ID}:{batch_id}:{sequence}"


#: Table names: they become folder names under the lake root, so letters, digits and underscores only.
TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")


def checked_table_name(name: str) -> str:
    """`name` if it is a valid table name, else TableStoreError (no path or SQL metacharacters)."""
    if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
        raise TableStoreError(
            f"invalid table name {name!r}: use letters, digits and underscores, starting with a letter"
        )
    return name


def sql_identifier(name: str) -> str:
    """A column name as a quoted SQL identifier (DataFusion and DuckDB alike)."""
    return '"' + name.replace('"', '""') + '"'


def sql_string(value: str) -> str:
    """`value` as an SQL string literal, for the Delta predicates that only take SQL text."""
    return "'" + value.replace("'", "''") + "'"


#: How a rollback commit is tagged in a commit's user metadata: this, then the batch id.
ROLLBACK_TAG = "rollback_of:"


def commit_tags(batch_id: str | None = None, *, rollback_of: str | None = None) -> dict[str, str]:
    """A commit's tags, as custom commit metadata. `userMetadata` is what Spark reads back, and
    the other keys what the local stores read; `read_tags` understands both."""
    if rollback_of is not None:
        return {"rollback_of": rollback_of, "userMetadata": f"{ROLLBACK_TAG}{rollback_of}"}
    assert batch_id is not None
    return {"batch_id": batch_id, "userMetadata": batch_id}


def read_tags(entry: dict[str, Any]) -> dict[str, str]:
    """The batch (or rolled-back batch) of one history entry, from either engine's commit."""
    if entry.get("batch_id") or entry.get("rollback_of"):
        return {k: entry[k] for k in ("batch_id", "rollback_of") if entry.get(k)}
    user = entry.get("userMetadata")
    if not user:
        return {}
    if user.startswith(ROLLBACK_TAG):
        return {"rollback_of": user.removeprefix(ROLLBACK_TAG)}
    return {"batch_id": user}


def rollback_plan(table: str, history: Sequence[dict[str, Any]], batch_id: str) -> tuple[bool, int | None]:
    """From a table's commit history (any order; each entry with `version` and the commit's
    tags, see `read_tags`): whether `batch_id` has commits to undo, and the version to restore
    to (None: remove the table, which the batch created). Commits of batches rolled back since,
    and the rollbacks themselves, change nothing and do not stand in the way."""
    entries = [{"version": entry["version"], **read_tags(entry)} for entry in history]
    undone = {entry["rollback_of"] for entry in entries if "rollback_of" in entry}
    ours = [entry["version"] for entry in entries if entry.get("batch_id") == batch_id]
    if not ours or batch_id in undone:
        return False, None
    later = [
        entry
        for entry in entries
        if entry["version"] > min(ours)
        and entry.get("batch_id") != batch_id
        and "rollback_of" not in entry
        and entry.get("batch_id") not in undone
    ]
    if later:
        newest = max(later, key=lambda entry: entry["version"])
        raise TableStoreError(
            f"cannot roll back batch {batch_id} in {table}: version {newest['version']} was committed after it"
            f" by {newest.get('batch_id') or 'another writer'}"
        )
    first = min(ours)
    return True, None if first == 0 else first - 1


def plan_rollback(
    tables: Sequence[str], history: Callable[[str], Sequence[dict[str, Any]]], batch_id: str
) -> dict[str, int | None]:
    """`rollback_plan` for every table that has something to undo, all planned before any
    is changed, so a table that refuses stops the rollback before it starts."""
    plans: dict[str, int | None] = {}
    for table in tables:
        needed, target = rollback_plan(table, history(table), batch_id)
        if needed:
            plans[table] = target
    return plans


#: Marks the folder of a table that a rollback removes, until it is deleted.
_REMOVED = ".rolled-back-"


def lake_tables(root: Path) -> list[str]:
    """Names of the Delta tables under `root/<layer>/`; the remains of a table whose removal
    was interrupted are deleted on the way."""
    if not root.is_dir():
        return []
    names = []
    for log in root.glob("*/*/_delta_log"):
        table = log.parent
        if table.name.startswith(".") or table.parent.name.startswith("."):
            if _REMOVED in table.name:
                shutil.rmtree(table, ignore_errors=True)
            continue
        names.append(table.name)
    return sorted(names)


def remove_table(path: Path, batch_id: str) -> None:
    """Delete a table folder: renamed first (one atomic step), so an interrupted delete leaves
    a hidden folder that `lake_tables` skips and clears, never a half-deleted table."""
    doomed = path.with_name(f".{path.name}{_REMOVED}{batch_id}")
    path.rename(doomed)
    shutil.rmtree(doomed)


#: Relative difference below which two floats are the same value to a merge: sums depend on
#: the order rows are added in, which the storage layout may change between runs.
FLOAT_TOLERANCE = 1e-9


def changed_condition(spec: TableSpec, compare: Sequence[str], distinct: Callable[[str], str]) -> str:
    """The merge condition under which a matched row is updated: any compared column differs.

    `distinct(column)` is the engine's null-safe inequality of `t.column` and `s.column`;
    floats differ only beyond FLOAT_TOLERANCE (relative), or where one side is null.
    """
    terms = []
    for column in compare:
        if pa.types.is_floating(spec.schema.field(column).type):
            t, s = f"t.{column}", f"s.{column}"
            terms.append(
                f"(({t} IS NULL) <> ({s} IS NULL) OR abs({t} - {s}) > {FLOAT_TOLERANCE} * (abs({t}) + abs({s})))"
            )
        else:
            terms.append(f"({distinct(column)})")
    return " OR ".join(terms)


def month_start(day: date) -> date:
    return day.replace(day=1)


def local_days_condition(local_days: tuple[date, date] | None, spec: TableSpec) -> str:
    """The merge condition that confines matches to target rows of `local_days` (empty: none),
    with the months they fall in where the table is partitioned by `local_month`."""
    if local_days is None:
        return ""
    first, last = (day.isoformat() for day in local_days)  # date objects, never user text
    condition = f" AND t.local_date >= CAST('{first}' AS DATE) AND t.local_date <= CAST('{last}' AS DATE)"
    if "local_month" in spec.partition_by:
        months = (month_start(day).isoformat() for day in local_days)
        first_month, last_month = months
        condition += (
            f" AND t.local_month >= CAST('{first_month}' AS DATE) AND t.local_month <= CAST('{last_month}' AS DATE)"
        )
    return condition


def with_partition_bounds(spec: TableSpec, where: RowFilter | None) -> list[tuple[str, str, Any]]:
    """`where`, plus the `local_month` bounds its `local_date` bounds imply, so reads prune partitions."""
    conditions = list(where or ())
    if "local_month" in spec.partition_by:
        for column, op, value in where or ():
            if column == "local_date" and op in (">=", "<=") and isinstance(value, date):
                conditions.append(("local_month", op, month_start(value)))
    return conditions


#: Operation metrics that count rows, by what they count, in delta-rs's and Delta Lake on Spark's
#: names: the first group a commit has counts (a Spark MERGE's `numOutputRows` counts the rows it
#: rewrote, not those it added, so a merge's own counts come first).
_ROW_METRICS = {
    "added": (("num_target_rows_inserted", "numTargetRowsInserted"), ("num_added_rows", "numOutputRows")),
    "updated": (("num_target_rows_updated", "numTargetRowsUpdated", "numUpdatedRows"),),
    "removed": (("num_target_rows_deleted", "num_deleted_rows", "numTargetRowsDeleted", "numDeletedRows"),),
}


def table_version(entry: dict[str, Any]) -> TableVersion:
    """One history entry of either engine as a `TableVersion`."""
    metrics = entry.get("operationMetrics") or {}

    def rows(kind: str) -> int:
        for names in _ROW_METRICS[kind]:
            if any(name in metrics for name in names):
                return sum(int(metrics.get(name) or 0) for name in names)
        return 0

    tags = read_tags(entry)
    batch = tags.get("batch_id") or (f"rollback of {tags['rollback_of']}" if "rollback_of" in tags else None)
    restored = (entry.get("operationParameters") or {}).get("version") if entry.get("operation") == "RESTORE" else None
    stamp = entry.get("timestamp")
    at = stamp if isinstance(stamp, datetime) else datetime.fromtimestamp(int(stamp or 0) / 1000, UTC)
    return TableVersion(
        version=int(entry.get("version", -1)),
        timestamp=at if at.tzinfo else at.replace(tzinfo=UTC),
        operation=str(entry.get("operation", "")),
        batch_id=batch,
        rows_added=rows("added"),
        rows_updated=rows("updated"),
        rows_removed=rows("removed"),
        restored_to=int(restored) if restored is not None and str(restored).isdigit() else None,
    )


def checked_columns(table: str, columns: Sequence[str], wanted: Sequence[str]) -> None:
    """Refuse column names a table does not have, naming them and the ones it has."""
    unknown = [c for c in wanted if c not in columns]
    if unknown:
        raise TableStoreError(f"table {table} has no column {', '.join(unknown)}; its columns: {', '.join(columns)}")


#: The table property that makes Delta record a table's change data feed.
CHANGE_FEED = "delta.enableChangeDataFeed"


def change_feed(dt: DeltaTable, table: str, since_version: int) -> pa.Table:
    """A delta-rs table's change data feed from `since_version` on (empty past its newest version)."""
    if dt.metadata().configuration.get(CHANGE_FEED) != "true":
        raise TableStoreError(f"table {table} does not record its changes (Delta's change data feed)")
    if since_version > dt.version():
        return pa.table({})
    try:
        feed = pa.table(dt.load_cdf(starting_version=since_version).read_all())
    except DeltaError as error:
        raise TableStoreError(f"table {table}: no changes since version {since_version}: {error}") from None
    # delta-rs hands strings over as string views, which not every Arrow kernel takes yet.
    plain = [pa.field(f.name, pa.string()) if f.type == pa.string_view() else f for f in feed.schema]
    return feed.cast(pa.schema(plain))


#: The table property bounding the transaction identifiers a table's log keeps: a checkpoint
#: (delta-rs and Delta Lake on Spark alike) drops those whose `lastUpdated` is older. A batch's
#: own identifier (`transaction_app_id`) only has to outlive the batch's retries, so it carries
#: its commit time and goes after a week; a stream's positions carry none and are kept (Spark's
#: streams keep theirs in their checkpoint).
TRANSACTION_RETENTION = "delta.setTransactionRetentionDuration"
TRANSACTION_RETENTION_VALUE = "interval 7 days"

#: Data files below this size are small ones, which compaction merges (local mode writes files
#: of up to 32 MiB).
SMALL_FILE_BYTES = 32 * 1024 * 1024


#: The table property that sets the size of a table's data files (writes, merges, compaction).
TARGET_FILE_SIZE = "delta.targetFileSize"


def table_configuration(spec: TableSpec, *, file_size: bool = True) -> dict[str, str]:
    """Table properties a table of `spec` holds; `file_size=False` leaves out
    `delta.targetFileSize`, a Databricks property that open-source Delta on Spark refuses."""
    configuration = {TRANSACTION_RETENTION: TRANSACTION_RETENTION_VALUE}
    if spec.change_feed:
        configuration[CHANGE_FEED] = "true"
    if spec.file_bytes is not None and file_size:
        configuration[TARGET_FILE_SIZE] = str(spec.file_bytes)
    return configuration


def small_files(dt: DeltaTable) -> int:
    """The data files of a table's current version that compaction could merge: those under
    SMALL_FILE_BYTES (or under half the table's `delta.targetFileSize`, when it sets a smaller
    one), in partitions that hold two or more of them (compaction never merges across
    partitions, so one small file per partition stays)."""
    actions = pa.table(dt.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return 0
    target = dt.metadata().configuration.get(TARGET_FILE_SIZE)
    limit = min(SMALL_FILE_BYTES, int(target) // 2) if target else SMALL_FILE_BYTES
    small = actions.filter(pc.less(actions["size_bytes"], limit))
    partitions = [name for name in small.column_names if name.startswith("partition.")]
    if not partitions:
        return small.num_rows if small.num_rows > 1 else 0
    keys = small.select(partitions).cast(pa.schema([pa.field(p, pa.string()) for p in partitions]))
    groups = keys.append_column("n", pa.repeat(1, keys.num_rows)).group_by(partitions).aggregate([("n", "sum")])
    return int(sum(n for n in groups["n_sum"].to_pylist() if n > 1))


def sql_literal(value: Any) -> str:
    """A value as a DataFusion SQL literal: text quoted, instants as UTC timestamps (as the tables
    hold them), days as dates."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime):  # the tables' instants are UTC microseconds, which a plain literal is not
        instant = (value.astimezone(UTC) if value.tzinfo else value).replace(tzinfo=None).isoformat()
        return f"arrow_cast('{instant}Z', 'Timestamp(Microsecond, Some(\"UTC\"))')"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return sql_string(value)
    raise TableStoreError(f"cannot use a {type(value).__name__} in a row filter")


def sql_predicate(table: str, columns: Sequence[str], where: RowFilter) -> str:
    """A RowFilter as DataFusion SQL text (for delta-rs's delete): its conditions joined by AND,
    column names checked against `columns` and quoted, values as literals, never caller text."""
    checked_columns(table, columns, [column for column, _, _ in where])
    terms = []
    for column, op, value in where:
        name = sql_identifier(column)
        if op == "in":
            values = list(value)
            terms.append(f"{name} IN ({', '.join(sql_literal(v) for v in values)})" if values else "FALSE")
        elif op in COMPARISONS:
            terms.append(f"{name} {op} {sql_literal(value)}")
        else:
            raise TableStoreError(f"unsupported filter operator {op!r}")
    return " AND ".join(terms) or "TRUE"


#: A log entry of one version: its commit, checksum, checkpoint (parts), and Hadoop's checksum
#: files beside them (`.00000000000000000003.json.crc`); a log compaction names two versions.
_LOG_ENTRY = re.compile(r"^\.?(\d{20})\.(?:(\d{20})\.compacted\.json)?")


def prune_log(path: Path, checkpoint: int) -> int:
    """Delete a table's log entries of the versions before `checkpoint` (a version whose
    checkpoint the log holds, so the table reads the same), then the change data files no
    remaining commit names: afterwards the table has no history before `checkpoint`. Returns
    the files deleted."""
    log = path / "_delta_log"
    if not any(log.glob(f"{checkpoint:020d}.checkpoint*.parquet")):
        raise TableStoreError(f"{path.name}: version {checkpoint} has no checkpoint; its log is left as it is")
    deleted = 0
    for entry in list(log.iterdir()):
        found = _LOG_ENTRY.match(entry.name)
        if found and entry.is_file() and int(found.group(1)) < checkpoint:
            entry.unlink()
            deleted += 1
    named: set[str] = set()
    for commit in log.glob("*.json"):
        for line in commit.read_text(encoding="utf-8").splitlines():
            if '"cdc"' in line:
                action = json.loads(line).get("cdc")
                if action:
                    named.add(unquote(action["path"]))
    changes = path / "_change_data"
    if changes.is_dir():
        for file in sorted(changes.rglob("*")):
            if file.is_file() and file.relative_to(path).as_posix() not in named:
                file.unlink()
                deleted += 1
    return deleted


def _holds(path: Path, needle: bytes) -> bool:
    """Whether a file holds `needle`: in its bytes, or (a Parquet file, whose pages may be
    compressed) among its decoded values."""
    try:
        if needle in path.read_bytes():
            return True
    except OSError:
        return False
    if path.suffix != ".parquet":
        return False
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):
        return False
    text = needle.decode("utf-8")
    while any(pa.types.is_struct(field.type) for field in table.schema):
        table = table.flatten()
    for column in table.columns:
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
            if pc.any(pc.match_substring(column.cast(pa.string()), text, ignore_case=False)).as_py():
                return True
        elif pa.types.is_nested(kind) and text in str(column.to_pylist()):
            return True
    return False


def lake_residue(root: Path, needle: str) -> list[str]:
    """The files under the lake's `root` that hold `needle` (see `_holds`), relative to it: the
    tables' logs, change data and the data files no current version reads (or that a current
    version reads through a deletion vector, with rows it no longer shows), and every other
    file: stream checkpoints, a metadata database or landing folder kept there. The data files
    a table's current version reads whole are not read: its rows say what they hold."""
    wanted = needle.encode("utf-8")
    current: set[Path] = set()
    for log in root.glob("*/*/_delta_log"):
        table = log.parent
        if table.name.startswith(".") or table.parent.name.startswith("."):
            continue
        actions = pa.table(DeltaTable(str(table)).get_add_actions(flatten=True))
        # The columns delta-rs describes a file's deletion vector with (none without vectors).
        vectors = [c for c in actions.column_names if c.lower().replace("_", "").startswith("deletionvector")]
        masked = [any(actions[c][i].is_valid for c in vectors) for i in range(actions.num_rows)]
        for relative, has_vector in zip(actions["path"].to_pylist(), masked, strict=True):
            if not has_vector:
                current.add((table / unquote(relative)).resolve())
    found = []
    for file in sorted(root.rglob("*")):
        if not file.is_file() or file.resolve() in current:
            continue
        if _holds(file, wanted):
            found.append(file.relative_to(root).as_posix())
    return found
