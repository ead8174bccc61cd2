"""The read side of the lake for the HTTP service and the CLI: pages of rows from Delta tables, safe
under concurrency, each answer from one committed table version.

Writers never block readers and readers never take the lake's lock: a Delta commit is one new
file in the table's `_delta_log`, and a reader reads one committed version, whole. Each table's
newest snapshot is kept in memory (an Arrow table, immutable, so any number of threads read it
at once) while it has at most `cache_rows` rows, sorted so that a page is a slice: by the
table's lookup column (a meter, a batch), then by the page order. Whether a newer version was
committed is one `stat` of the log folder per request; a new version is loaded by one thread
while the others go on answering from the previous one. A table larger than `cache_rows` is
scanned per request, at the version just looked up, with its files pruned by statistics.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from app.application.lake_ops import version_as_of
from app.application.ports import Page, RowFilter
from app.domain.errors import ConfigurationError
from app.domain.schemas import GOLD_DAILY_METER_ENERGY, QUARANTINE_READINGS, SILVER_READINGS, TableSpec
from app.infrastructure.repositories.base import COMPARISONS, change_feed, with_partition_bounds

#: The column most reads of a table look one value up by; its snapshot is grouped by it.
LOOKUP_COLUMNS = {GOLD_DAILY_METER_ENERGY.name: "meter_id", QUARANTINE_READINGS.name: "batch_id"}
_COMMIT = re.compile(r"^(\d{20})\.json$")


@dataclass(frozen=True)
class _Snapshot:
    """One committed version of a table, sorted for paging; `spans` maps a lookup value to its rows."""

    version: int
    order: tuple[str, ...]
    rows: pa.Table | None  # None: the table is larger than the cache holds; scan `dataset`
    dataset: ds.Dataset | None = None
    spans: dict[Any, tuple[int, int]] = field(default_factory=dict)
    #: The first order column as integers (days, microseconds), sorted within each span: range
    #: conditions on it are binary searches, not scans.
    first: np.ndarray | None = None


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    log_mtime_ns: int = -1
    version: int | None = None
    snapshot: _Snapshot | None = None


class LakeReader:
    """Pages of rows from the lake's Delta tables under `root/<layer>/<table>`."""

    def __init__(self, root: Path, *, cache_rows: int = 2_000_000) -> None:
        self.root = root
        self.cache_rows = cache_rows
        self._entries: dict[str, _Entry] = {}
        self._guard = threading.Lock()
        #: (silver version, sources asked for, their newest interval ends): `newest_interval_ends`' last answer
        self._interval_ends: tuple[int, frozenset[str], dict[str, datetime]] | None = None

    def _path(self, spec: TableSpec) -> Path:
        return self.root / spec.layer / spec.name

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            with self._guard:
                entry = self._entries.setdefault(name, _Entry())
        return entry

    def version(self, spec: TableSpec) -> int | None:
        """The table's newest committed version (None: no table); one `stat` when nothing changed."""
        log = self._path(spec) / "_delta_log"
        entry = self._entry(spec.name)
        try:
            mtime = log.stat().st_mtime_ns
        except FileNotFoundError:
            entry.log_mtime_ns, entry.version = -1, None
            return None
        if mtime != entry.log_mtime_ns:
            versions = [int(m.group(1)) for name in os.listdir(log) if (m := _COMMIT.match(name))]
            entry.version = max(versions) if versions else None
            entry.log_mtime_ns = mtime
        return entry.version

    def cached(self, spec: TableSpec) -> bool:
        """Whether a page of `spec` is answered from memory now (its newest version is loaded, or
        there is no table): the service then answers on its event loop, without a thread."""
        version = self.version(spec)
        snapshot = self._entry(spec.name).snapshot
        return version is None or (snapshot is not None and snapshot.version == version and snapshot.rows is not None)

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
        """Rows of `spec` matching `where` (conditions joined by AND), sorted by `order`, from one version."""
        version = self.version(spec)
        if version is None:
            return Page(items=[], total=0, limit=limit, offset=offset, version=None)
        if as_of is not None:  # a past version: read from its files, never cached
            past = self._past(spec, version, as_of)
            try:
                dataset = DeltaTable(str(self._path(spec)), version=past).to_pyarrow_dataset()
                rows = _scanned(_Snapshot(version=past, order=tuple(order), rows=None, dataset=dataset), spec, where)
            except (OSError, DeltaError) as error:
                raise ConfigurationError(f"version {past} of {spec.name} can no longer be read: {error}") from None
            rows = rows.sort_by([(c, "ascending") for c in order])
            return Page(rows.slice(offset, limit).to_pylist(), rows.num_rows, limit, offset, version=past)
        snapshot = self._snapshot(spec, version, tuple(order))
        if snapshot.rows is not None:  # the loaded version: the newest, or the one before while it loads
            rows, version = self._cached(snapshot, spec, where), snapshot.version
        else:
            rows = _scanned(snapshot, spec, where).sort_by([(c, "ascending") for c in order])
            version = snapshot.version
        return Page(
            items=rows.slice(offset, limit).to_pylist(),
            total=rows.num_rows,
            limit=limit,
            offset=offset,
            version=version,
        )

    def changes(self, spec: TableSpec, *, since_version: int) -> pa.Table:
        if self.version(spec) is None:
            raise ConfigurationError(f"there is no table {spec.name} yet")
        return change_feed(DeltaTable(str(self._path(spec))), spec.name, since_version)

    def newest_interval_ends(self, sources: Iterable[str]) -> dict[str, datetime]:
        """Per source of `sources` with rows in silver, the end (start + length) of its newest interval,
        at silver's newest version. Worked out once per version (by the module's `newest_interval_ends`,
        from the Delta log's file statistics), so asking again before the next commit costs one `stat`."""
        version = self.version(SILVER_READINGS)
        if version is None:
            return {}
        wanted = frozenset(sources)
        known = self._interval_ends
        if known is not None and known[0] == version and known[1] == wanted:
            return dict(known[2])
        ends = newest_interval_ends(DeltaTable(str(self._path(SILVER_READINGS)), version=version), wanted)
        self._interval_ends = (version, wanted, ends)
        return dict(ends)

    def _past(self, spec: TableSpec, latest: int, as_of: int | datetime) -> int:
        """The version `as_of` names; a number needs no read of the log."""
        if isinstance(as_of, int):
            return version_as_of(spec.name, [(v, datetime.min.replace(tzinfo=UTC)) for v in range(latest + 1)], as_of)
        history = DeltaTable(str(self._path(spec))).history()
        versions = [(int(e["version"]), datetime.fromtimestamp(e["timestamp"] / 1000, UTC)) for e in history]
        return version_as_of(spec.name, versions, as_of)

    # Snapshots ----------------------------------------------------------------------------

    def _snapshot(self, spec: TableSpec, version: int, order: tuple[str, ...]) -> _Snapshot:
        entry = self._entry(spec.name)
        current = entry.snapshot
        if current is not None and current.version == version and current.order == order:
            return current
        if current is not None and current.order == order and not entry.lock.acquire(blocking=False):
            return current  # another thread loads the new version; the previous one is still committed
        if current is None or current.order != order:
            entry.lock.acquire()
        try:
            current = entry.snapshot
            if current is None or current.version != version or current.order != order:
                current = self._load(spec, version, order)
                entry.snapshot = current
            return current
        finally:
            entry.lock.release()

    def _load(self, spec: TableSpec, version: int, order: tuple[str, ...]) -> _Snapshot:
        table = DeltaTable(str(self._path(spec)), version=version)
        size = sum(int(n) for n in table.get_add_actions(flatten=True).column("num_records").to_pylist() if n)
        if size > self.cache_rows:  # the version's files, opened once, scanned per read
            return _Snapshot(version=version, order=order, rows=None, dataset=table.to_pyarrow_dataset())
        lookup = LOOKUP_COLUMNS.get(spec.name)
        keys = [lookup] if lookup else []
        rows = _typed(table.to_pyarrow_table(), spec).sort_by([(c, "ascending") for c in [*keys, *order]])
        spans: dict[Any, tuple[int, int]] = {}
        if lookup and rows.num_rows:
            values = rows.column(lookup).combine_chunks()
            changed = pc.not_equal(values.slice(1), values.slice(0, len(values) - 1)).to_numpy(zero_copy_only=False)
            starts = np.concatenate(([0], np.flatnonzero(changed) + 1))
            ends = np.append(starts[1:], len(values))
            firsts = values.take(pa.array(starts)).to_pylist()
            spans = {value: (int(s), int(e)) for value, s, e in zip(firsts, starts, ends, strict=True)}
        rows = rows.combine_chunks()
        return _Snapshot(version=version, order=order, rows=rows, spans=spans, first=_integers(rows.column(order[0])))

    @staticmethod
    def _cached(snapshot: _Snapshot, spec: TableSpec, where: RowFilter) -> pa.Table:
        rows = snapshot.rows
        assert rows is not None
        lookup = LOOKUP_COLUMNS.get(spec.name)
        start, end = 0, rows.num_rows
        rest = []
        for condition in where:
            column, op, value = condition
            if column == lookup and op == "in" and len(value) == 1:
                start, end = snapshot.spans.get(next(iter(value)), (0, 0))
            else:
                rest.append(condition)
        ranges = [c for c in rest if c[0] == snapshot.order[0] and c[1] in _SIDES and snapshot.first is not None]
        if ranges and len(ranges) == len([c for c in rest if c[0] == snapshot.order[0]]):
            assert snapshot.first is not None
            keys = snapshot.first[start:end]
            low, high = 0, len(keys)
            for column, op, value in ranges:
                bound = _integer(value, rows.schema.field(column).type)
                if op == ">=":
                    low = max(low, int(np.searchsorted(keys, bound, side="left")))
                elif op == ">":
                    low = max(low, int(np.searchsorted(keys, bound, side="right")))
                elif op == "<=":
                    high = min(high, int(np.searchsorted(keys, bound, side="right")))
                else:
                    high = min(high, int(np.searchsorted(keys, bound, side="left")))
            start, end = start + low, start + max(low, high)
            rest = [c for c in rest if c not in ranges]
        rows = rows.slice(start, end - start)
        if rest and rows.num_rows:
            rows = rows.filter(_arrow_filter(rest))
        return rows


def _scanned(snapshot: _Snapshot, spec: TableSpec, where: RowFilter) -> pa.Table:
    """The rows of a version too large to cache that match `where`, its files pruned by partition."""
    assert snapshot.dataset is not None
    conditions = with_partition_bounds(spec, where)
    return _typed(snapshot.dataset.to_table(filter=_arrow_filter(conditions) if conditions else None), spec)


_SIDES = (">=", ">", "<=", "<")


def _integers(column: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """A date or time column as int64 (days, or the timestamp's unit); None for other types or nulls."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        return None
    if pa.types.is_date32(array.type):
        return np.asarray(array.view(pa.int32()).to_numpy(), dtype=np.int64)
    if pa.types.is_timestamp(array.type):
        return np.asarray(array.view(pa.int64()).to_numpy())
    return None


def _integer(value: Any, type_: pa.DataType) -> int:
    """`value` (a date, an aware datetime) as the integer `_integers` gives for a column of `type_`."""
    scalar = pa.array([value], type_)
    return int(scalar.view(pa.int32() if pa.types.is_date32(type_) else pa.int64())[0].as_py())


def _arrow_filter(where: RowFilter) -> pc.Expression:
    expression: pc.Expression | None = None
    for column, op, value in where:
        field_ = pc.field(column)
        term = field_.isin(list(value)) if op == "in" else COMPARISONS[op](field_, pa.scalar(value))
        expression = term if expression is None else expression & term
    assert expression is not None
    return expression


def _typed(rows: pa.Table, spec: TableSpec) -> pa.Table:
    """Rows with the table's declared columns and types (a column added since a file was written is null)."""
    columns = [
        rows.column(f.name).cast(f.type) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type)
        for f in spec.schema
    ]
    return pa.Table.from_arrays(columns, schema=spec.schema)


# Newest intervals ------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROS_PER_MINUTE = 60_000_000
#: Delta keeps timestamp statistics to the millisecond, truncated.
_STATISTICS_SLACK_MICROS = 1_000


@dataclass(frozen=True)
class _FileBounds:
    """What a data file's statistics say of its rows: the least and greatest source (a string
    statistic may be a prefix), and no interval ending after `latest_end` (microseconds)."""

    least_source: str
    greatest_source: str
    latest_end: int

    def may_hold(self, source: str) -> bool:
        return self.least_source <= source and source[: len(self.greatest_source)] <= self.greatest_source


def newest_interval_ends(table: DeltaTable, sources: frozenset[str]) -> dict[str, datetime]:
    """Per source of `sources`, the latest end (start + length) of an interval in `table` (silver).

    Not a scan of the table: its data files are taken latest first by the bound their statistics in
    the Delta log give (greatest start plus greatest length), and one is read (three columns, rows
    of the sources still wanted) only when it may hold a source whose latest end found so far is
    earlier than that bound. Usually that is the files of the newest month; a source with no rows
    in silver has every file its statistics do not rule out read. Files without statistics are read.
    """
    if not sources:
        return {}
    bounds = _file_bounds(table)
    unbounded = _FileBounds("", "", 2**63 - 1)
    fragments = sorted(
        table.to_pyarrow_dataset().get_fragments(),
        key=lambda fragment: bounds.get(fragment.path, unbounded).latest_end,
        reverse=True,
    )
    ends: dict[str, int] = {}
    for fragment in fragments:
        bound = bounds.get(fragment.path)
        wanted = sorted(
            source
            for source in sources
            if bound is None or (bound.may_hold(source) and ends.get(source, -(2**63)) < bound.latest_end)
        )
        if not wanted:
            continue
        read = fragment.to_table(columns=["source", "interval_start_utc", "interval_minutes"])
        start = pc.cast(read.column("interval_start_utc"), pa.int64())
        length = pc.multiply(pc.cast(read.column("interval_minutes"), pa.int64()), _MICROS_PER_MINUTE)
        # Plain strings: a file may hold the column as string_view, which not every kernel takes.
        rows = pa.table({"source": pc.cast(read.column("source"), pa.string()), "end": pc.add(start, length)})
        rows = rows.filter(pc.is_in(rows.column("source"), value_set=pa.array(wanted, pa.string())))
        if not rows.num_rows:
            continue
        latest = rows.group_by("source").aggregate([("end", "max")])
        for source, end in zip(latest.column("source").to_pylist(), latest.column("end_max").to_pylist(), strict=True):
            ends[source] = max(ends.get(source, end), end)
    return {source: _EPOCH + timedelta(microseconds=end) for source, end in sorted(ends.items())}


def _file_bounds(table: DeltaTable) -> dict[str, _FileBounds]:
    """The bounds of each data file whose statistics have them, by its path in the table."""
    columns = ["min.source", "max.source", "max.interval_start_utc", "max.interval_minutes"]
    actions = pa.table(table.get_add_actions(flatten=True))
    if not set(columns) <= set(actions.column_names):
        return {}
    bounds: dict[str, _FileBounds] = {}
    for row in actions.select(["path", *columns]).to_pylist():
        least, greatest, start, minutes = (row[column] for column in columns)
        if least is None or greatest is None or start is None or minutes is None:
            continue
        latest_start = (start - _EPOCH) // timedelta(microseconds=1) + _STATISTICS_SLACK_MICROS
        bounds[row["path"]] = _FileBounds(least, greatest, latest_start + int(minutes) * _MICROS_PER_MINUTE)
    return bounds
