"""Operating the lake's tables: their history, a past version, compaction and vacuum.

The writing operations hold the lake's lock, like a batch run, so they never interleave with
a batch's commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import structlog

from app.application.audit import audited
from app.application.ports import Platform, TableVersion
from app.domain.audit import TABLES_OPTIMIZE, TABLES_VACUUM, Actor
from app.domain.errors import ConfigurationError
from app.domain.parsing import option_instant

#: Delta Lake's default retention of removed files (`delta.deletedFileRetentionDuration`, 7 days):
#: a shorter vacuum can delete files a running reader or an older version still needs.
SAFE_RETENTION_HOURS = 168.0


def parse_as_of(text: str) -> int | datetime:
    """`--as-of`: a version number, or an ISO 8601 instant (with an offset; a date alone is its
    midnight UTC)."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    return option_instant(text, "--as-of", expected="neither a version number nor an ISO 8601 time")


def version_as_of(table: str, versions: Sequence[tuple[int, datetime]], as_of: int | datetime) -> int:
    """The version of `table` (whose commits are `versions`: number and time) that `as_of`
    names: the number itself, or the latest committed at or before the instant; an error naming
    what the table has otherwise."""
    known = sorted(v for v, _ in versions)
    if isinstance(as_of, int):
        if as_of not in known:
            raise ConfigurationError(f"table {table} has no version {as_of}; it has versions {known[0]} to {known[-1]}")
        return as_of
    before = [v for v, at in versions if at <= as_of]
    if not before:
        first = min(versions)[1]
        raise ConfigurationError(
            f"table {table} did not exist yet at {as_of.isoformat()}: its first version was written at "
            f"{first.isoformat()}"
        )
    return max(before)


def existing_tables(platform: Platform, name: str | None) -> list[str]:
    """The named table (an error naming it if it does not exist), or every table of the lake."""
    store = platform.store
    if name is None:
        return store.tables()
    if not store.exists(name):
        raise ConfigurationError(
            f"there is no table {name!r} at {store.location(name)}; the lake has: {', '.join(store.tables()) or 'none'}"
        )
    return [name]


def checked_as_of(platform: Platform, table: str, as_of: int | datetime) -> int:
    """`version_as_of` over the table's history."""
    return version_as_of(table, [(v.version, v.timestamp) for v in platform.store.history(table)], as_of)


def table_history(platform: Platform, name: str, *, limit: int | None = None) -> list[TableVersion]:
    [table] = existing_tables(platform, name)
    return platform.store.history(table, limit=limit)


def optimize_tables(
    platform: Platform,
    *,
    name: str | None = None,
    zorder: Sequence[str] = (),
    wait_seconds: float = 0.0,
    actor: Actor | None = None,
) -> dict[str, tuple[int, int]]:
    """Compact (or Z-order) and checkpoint one table or all, under the lake's lock; each table's
    data files before and after. Recorded in the audit trail as `actor`'s `tables optimize`."""
    files: dict[str, tuple[int, int]] = {}
    details = {"zorder": list(zorder), "files": files}
    with audited(platform.metadata, actor, TABLES_OPTIMIZE, target=name, details=details):
        tables = existing_tables(platform, name)
        with platform.lock("tables optimize", wait_seconds=wait_seconds):
            for table in tables:
                files[table] = platform.store.optimize(table, zorder=zorder)
    structlog.get_logger().info("tables_optimized", files=files, zorder=list(zorder))
    return files


def vacuum_tables(
    platform: Platform,
    *,
    name: str | None = None,
    retain_hours: float = SAFE_RETENTION_HOURS,
    force: bool = False,
    wait_seconds: float = 0.0,
    actor: Actor | None = None,
) -> dict[str, int]:
    """Delete the files older versions of one table or all still hold, under the lake's lock;
    the files deleted per table. A retention shorter than Delta's default is refused unless
    `force`: it breaks time travel and undo past it, and a reader that started earlier.
    Recorded in the audit trail as `actor`'s `tables vacuum` (refused, for such a retention)."""
    deleted: dict[str, int] = {}
    details = {"retain_hours": retain_hours, "force": force, "deleted": deleted}
    with audited(platform.metadata, actor, TABLES_VACUUM, target=name, details=details):
        if retain_hours < 0:
            raise ConfigurationError("--retain-hours must be 0 or more")
        if retain_hours < SAFE_RETENTION_HOURS and not force:
            raise ConfigurationError(
                f"--retain-hours {retain_hours:g} is shorter than Delta's safe default of "
                f"{SAFE_RETENTION_HOURS:g} hours: versions older than that could no longer be read back or undone, "
                "and a reader that started before the vacuum could fail; add --force if that is what you want"
            )
        tables = existing_tables(platform, name)
        with platform.lock("tables vacuum", wait_seconds=wait_seconds):
            for table in tables:
                deleted[table] = platform.store.vacuum(table, retain_hours=retain_hours)
    structlog.get_logger().info("tables_vacuumed", deleted=deleted, retain_hours=retain_hours)
    return deleted


#: Delta's change types -> what `tables changes` calls them (an update's before-image is left out).
_CHANGES = {"insert": "insert", "update_postimage": "update", "delete": "delete"}


def table_changes(platform: Platform, name: str, *, since_version: int) -> pa.Table:
    """The rows versions `since_version` and later of a silver or gold table inserted, updated
    (the row after) and deleted, oldest first: `change`, `version` and `committed_at`, then the
    table's columns."""
    if since_version < 0:
        raise ConfigurationError("--since-version must be 0 or more")
    [table] = existing_tables(platform, name)
    return change_rows(platform.store.changes(table, since_version=since_version))


def change_rows(feed: pa.Table) -> pa.Table:
    """A change data feed as `table_changes` returns it."""
    if feed.num_rows == 0:
        return pa.table({"change": pa.array([], pa.string()), "version": pa.array([], pa.int64())})
    feed = feed.filter(pc.is_in(feed["_change_type"], pa.array(list(_CHANGES))))
    change = pc.replace_substring_regex(feed["_change_type"], "^update_postimage$", "update")
    columns = [c for c in feed.column_names if not c.startswith("_")]
    changes = pa.table(
        {
            "change": change,
            "version": feed["_commit_version"].cast(pa.int64()),
            "committed_at": feed["_commit_timestamp"].cast(pa.timestamp("ms", "UTC")),
            **{c: feed[c] for c in columns},
        }
    )
    return changes.sort_by([("version", "ascending")])
