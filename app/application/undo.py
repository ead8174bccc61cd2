"""Taking a batch back out of the lake (`batches undo`), and restoring one table to a past
version (`tables restore`).

An undo is a batch of its own, of kind `undo`, holding the lake's lock like a run. Every table
the undone batch wrote goes back to a state without it, each in commits tagged with the undo's
id: its bronze rows are deleted; its quarantine rows are deleted (a replay's: the replayed
batch's quarantine goes back to what it was before the replay); in silver, the rows of the
meters and days it wrote go back to what they were in the version before its first commit
(time travel: the keys it inserted are deleted, those it updated get their old row back); gold
is recomputed from that silver for those meters and days, and for the hours they cover (the
hourly portfolio load sums every meter). An undo that fails, or whose process dies, is rolled
back like any batch, so the lake is either as it was or without the batch.

A later batch may depend on the undone one: a batch that wrote the same meters read the undone
batch's rows as context (VEE) or replaced them; a replay rewrote its quarantine. Such batches
are undone first (newest first) with `cascade`, else the undo is refused naming them. Batches of
other meters stay: their silver rows never depended on the undone batch's, and the gold hours
they share are recomputed.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import narwhals as nw
import pyarrow as pa
import pyarrow.compute as pc
import structlog

from app.application.audit import audited
from app.application.lake_ops import existing_tables, version_as_of
from app.application.ports import DELETE_COLUMN, ChangeCounts, Platform, TableStore, TableVersion
from app.application.recovery import recover_interrupted
from app.domain.audit import TABLES_RESTORE, UNDO, Actor
from app.domain.batches import BatchRecord, checked_batch_id
from app.domain.errors import ConfigurationError, TableStoreError
from app.domain.schemas import (
    GOLD_DAILY_METER_ENERGY,
    GOLD_HOURLY_PORTFOLIO_LOAD,
    NARWHALS_TYPES,
    QUARANTINE_READINGS,
    SILVER_READINGS,
    TableSpec,
    bronze_table_name,
)
from app.domain.transforms import gold_daily_meter_energy, gold_hourly_portfolio_load, local_day_minutes

#: The kind of batch record an undo is.
UNDO_KIND = "undo"
#: Silver columns the daily gold table is computed from (as a batch computes it).
_GOLD_DAILY_INPUT = (
    "meter_id",
    "direction",
    "local_date",
    "timezone",
    "energy_kwh",
    "interval_minutes",
    "quality_flag",
)
#: Change types of the change data feed whose rows carry what a commit wrote or replaced.
_FEED_CHANGES = ("insert", "update_preimage", "update_postimage", "delete")
#: Meters named in a message before "and N more".
_NAMED = 5
#: The rule a stream's read older than its watermark (less the source's allowed lateness) fails.
LATE_RULE = "late_beyond_horizon"


# -- what batches wrote, and which depend on which ----------------------------------------------


@dataclass(frozen=True)
class Footprint:
    """What one batch wrote that a later batch can build on."""

    batch_id: str
    #: The meters whose silver rows it inserted or updated.
    meters: frozenset[str] = frozenset()
    #: The batch whose quarantine rows it wrote: itself, or the batch a replay re-ran.
    quarantine_of: str | None = None
    source: str | None = None
    #: A stream micro-batch's reads judged late against its stream's watermark (flagged or quarantined).
    late_reads: int = 0


def few(items: Collection[str]) -> str:
    """Up to `_NAMED` items, sorted, then how many more."""
    ordered = sorted(items)
    shown = ", ".join(ordered[:_NAMED])
    return shown + (f" and {len(ordered) - _NAMED} more" if len(ordered) > _NAMED else "")


def dependents(
    target: Footprint, later: Sequence[Footprint], moved_watermark: Callable[[str], bool] | None = None
) -> dict[str, str]:
    """The batches of `later` (oldest first) that depend on `target`, directly or through one
    another, each with why: it wrote a meter the target (or a batch depending on it) wrote
    before; it rewrote the same batch's quarantine; or it is a stream micro-batch of the same
    source that judged reads late against a watermark that batch moved (`moved_watermark`: whether
    a batch's reads were the latest of its source's when it ran). Oldest first."""
    chosen = [target]
    reasons: dict[str, str] = {}
    for batch in later:
        for earlier in chosen:
            shared = batch.meters & earlier.meters
            if shared:
                reasons[batch.batch_id] = f"wrote meter(s) {few(shared)}, which batch {earlier.batch_id} wrote before"
            elif batch.quarantine_of is not None and batch.quarantine_of == earlier.quarantine_of:
                reasons[batch.batch_id] = (
                    f"rewrote the quarantine of batch {batch.quarantine_of} after {earlier.batch_id}"
                )
            elif (
                batch.late_reads
                and batch.source == earlier.source
                and moved_watermark is not None
                and moved_watermark(earlier.batch_id)
            ):
                reasons[batch.batch_id] = (
                    f"judged {batch.late_reads:,} read(s) {LATE_RULE} against a stream watermark batch "
                    f"{earlier.batch_id} moved"
                )
            if batch.batch_id in reasons:
                chosen.append(batch)
                break
    return reasons


@dataclass(frozen=True)
class SilverWrites:
    """The meters and local days of the silver rows a batch's commits inserted, updated or
    replaced (their rows before and after)."""

    meters: frozenset[str]
    first_day: date
    last_day: date
    #: The latest interval start among the rows its own commits wrote (None: it wrote none).
    last_interval: datetime | None = None


def silver_writes(feed: pa.Table, commit_batches: Mapping[int, str]) -> dict[str, SilverWrites]:
    """From silver's change data feed (`meter_id`, `local_date`, `interval_start_utc`,
    `batch_id`, `_change_type`, `_commit_version`) and the batch each version's commit is tagged
    with: per batch, the meters and days of the rows its commits changed (before and after), and
    of every row that names it as its writer (an undo that put a row back names the row's
    writer); and the latest interval its commits wrote."""
    if feed.num_rows == 0:
        return {}
    feed = feed.filter(pc.is_in(feed["_change_type"], pa.array(_FEED_CHANGES)))
    committer = pa.array([commit_batches.get(v) for v in feed["_commit_version"].to_pylist()], pa.string())
    written = pc.is_in(feed["_change_type"], pa.array(["insert", "update_postimage"]))
    rows = pa.concat_tables(
        [
            pa.table({"batch": committer, "meter_id": feed["meter_id"], "local_date": feed["local_date"]}),
            pa.table(
                {"batch": feed["batch_id"], "meter_id": feed["meter_id"], "local_date": feed["local_date"]}
            ).filter(written),
        ]
    )
    rows = rows.filter(pc.is_valid(rows["batch"]))
    grouped = rows.group_by(["batch", "meter_id"]).aggregate([("local_date", "min"), ("local_date", "max")])
    found: dict[str, tuple[set[str], date, date]] = {}
    for row in grouped.to_pylist():
        meters, first, last = found.get(row["batch"], (set(), row["local_date_min"], row["local_date_max"]))
        meters.add(row["meter_id"])
        found[row["batch"]] = (meters, min(first, row["local_date_min"]), max(last, row["local_date_max"]))
    own = feed.filter(pc.and_(written, pc.equal(committer, feed["batch_id"])))
    latest = own.group_by("batch_id").aggregate([("interval_start_utc", "max")]).to_pylist()
    last = {row["batch_id"]: row["interval_start_utc_max"] for row in latest}
    return {
        batch: SilverWrites(frozenset(m), first_day, last_day, last.get(batch))
        for batch, (m, first_day, last_day) in found.items()
    }


# -- undo ----------------------------------------------------------------------------------------


@dataclass
class UndoPlan:
    """The batches an undo takes out, newest first (the one asked for last), and why each
    other one has to go too."""

    target: BatchRecord
    batches: list[BatchRecord]
    reasons: dict[str, str]
    writes: dict[str, SilverWrites] = field(default_factory=dict)

    @property
    def cascaded(self) -> list[BatchRecord]:
        return [b for b in self.batches if b.batch_id != self.target.batch_id]


@dataclass
class UndoResult:
    """What an undo did: its own batch id, the batches it undid (newest first), the rows it
    changed per table, and the files that can be ingested again."""

    undo_id: str
    undone: list[str]
    tables: dict[str, ChangeCounts]
    files: list[str]


def undo_batch(
    platform: Platform,
    batch_id: str,
    *,
    cascade: bool = False,
    announce: Callable[[UndoPlan], None] | None = None,
    progress: Callable[[str, str], None] | None = None,
    now: datetime | None = None,
    wait_seconds: float = 0.0,
    actor: Actor | None = None,
) -> UndoResult:
    """Take batch `batch_id` out of every table it wrote, as a new batch of kind `undo`, under
    the lake's lock. Later batches that depend on it are undone first with `cascade` (named to
    `announce` before anything changes), else the undo is refused naming them. The undone
    batches are recorded as undone by it, so their files can be ingested again. Recorded in the
    audit trail as `actor`'s `batches undo`."""
    details: dict[str, Any] = {"cascade": cascade}
    with audited(platform.metadata, actor, UNDO, target=batch_id, details=details) as audit:
        checked_batch_id(batch_id)
        with platform.lock(f"batches undo {batch_id}", wait_seconds=wait_seconds) as lock:
            store, metadata = platform.store, platform.metadata
            recover_interrupted(store, metadata, lake=platform.lake, stale=lock.stale, progress=progress)
            plan = plan_undo(platform, batch_id)
            if plan.cascaded and not cascade:
                raise ConfigurationError(
                    f"batch {batch_id} cannot be undone alone: later batches depend on it: "
                    + "; ".join(f"{b.batch_id} ({plan.reasons[b.batch_id]})" for b in reversed(plan.cascaded))
                    + ". Undo them first, or add --cascade to undo them too (newest first)"
                )
            audit.details["undone"] = [b.batch_id for b in plan.batches]
            if announce is not None:
                announce(plan)
            started = now or datetime.now(UTC)
            undo_id = f"undo_{started:%Y%m%d_%H%M%S}_{uuid.uuid4().hex[:6]}"
            audit.details["undo_batch_id"] = undo_id
            lock.hold_batch(undo_id)
            metadata.start_batch(
                BatchRecord(
                    batch_id=undo_id,
                    source=plan.target.source,
                    execution_mode=platform.execution_mode,
                    status="running",
                    started_at=started,
                    ingestion_time=started,
                    kind=UNDO_KIND,
                    lake=platform.lake,
                )
            )
            try:
                tables = _undo_all(platform, plan, undo_id, progress)
            except BaseException as error:
                _failed(platform, undo_id, error)
                raise
            finally:
                store.release()
            metadata.finish_undo(
                batch_id=undo_id, undone=[b.batch_id for b in plan.batches], finished_at=datetime.now(UTC)
            )
            audit.details["tables"] = {t: vars(c) for t, c in tables.items()}
    undone = [b.batch_id for b in plan.batches]
    structlog.get_logger().info("batches_undone", undo_batch_id=undo_id, undone=undone, tables=list(tables))
    return UndoResult(undo_id, undone, tables, files=[f.path for b in plan.batches for f in b.files])


def _failed(platform: Platform, undo_id: str, error: BaseException) -> None:
    """Roll back what a failed undo committed and record it failed; if the rollback fails too,
    it stays recorded as running, and the next writer's recovery rolls it back."""
    log = structlog.get_logger().bind(batch_id=undo_id)
    message = f"{type(error).__name__}: {error}"
    try:
        undone = platform.store.rollback(undo_id)
    except Exception as failure:  # the undo's own error is the one raised
        log.error("rollback_failed", error=f"{type(failure).__name__}: {failure}")
        return
    if undone:
        message += f" (its commits to {', '.join(sorted(undone))} were rolled back)"
    platform.metadata.finish_batch(
        batch_id=undo_id,
        status="failed",
        finished_at=datetime.now(UTC),
        record_count=0,
        reconciliation=None,
        layers=[],
        rule_counts={},
        error=message,
    )
    log.error("undo_failed", error=message)


def plan_undo(platform: Platform, batch_id: str) -> UndoPlan:
    """Which batches undoing `batch_id` takes out, and why; an error naming the reason for a
    batch that cannot be undone. Reads only."""
    store, metadata = platform.store, platform.metadata
    target = metadata.get_batch(batch_id)
    if target is None:
        raise ConfigurationError(f"there is no batch {batch_id!r}; `energy-platform batches list` shows them")
    _check_undoable(target, platform.lake)
    assert target.sequence is not None
    later = [b for b in metadata.batches_after(target.sequence, lake=platform.lake) if _live(b)]
    writes = _silver_writes(store, [target, *later])

    def footprint(batch: BatchRecord) -> Footprint:
        quarantine_of = batch.replay_of if batch.kind == "replay" and batch.replay_of else batch.batch_id
        found = writes.get(batch.batch_id)
        late = batch.rule_counts.get(LATE_RULE, 0) if batch.kind == "stream" else 0
        return Footprint(batch.batch_id, found.meters if found else frozenset(), quarantine_of, batch.source, late)

    records = {b.batch_id: b for b in [target, *later]}
    moved: dict[str, bool] = {}

    def moved_watermark(batch_id: str) -> bool:
        if batch_id not in moved:
            moved[batch_id] = _moved_watermark(store, records[batch_id], writes.get(batch_id))
        return moved[batch_id]

    reasons = dependents(footprint(target), [footprint(b) for b in later], moved_watermark)
    cascaded = [b for b in later if b.batch_id in reasons]
    return UndoPlan(target=target, batches=[*reversed(cascaded), target], reasons=reasons, writes=writes)


def _moved_watermark(store: TableStore, batch: BatchRecord, writes: SilverWrites | None) -> bool:
    """Whether the batch's silver rows were the latest of its source's when it ran: then a
    stream's watermark (the latest interval its source has in silver) was its."""
    if writes is None or writes.last_interval is None:
        return False
    before = min(_versions(store, SILVER_READINGS.name, batch.batch_id)) - 1
    if before < 0:
        return True
    where = [("interval_start_utc", ">=", writes.last_interval), ("source", "in", [batch.source])]
    return store.count_rows(store.read_version(SILVER_READINGS, before, where=where).head(1)) == 0


def _live(batch: BatchRecord) -> bool:
    """A batch whose rows are in the lake: succeeded, not undone, and not itself an undo."""
    return batch.status == "succeeded" and batch.undone_by is None and batch.kind != UNDO_KIND


def _check_undoable(batch: BatchRecord, lake: str) -> None:
    name = batch.batch_id
    if batch.kind == UNDO_KIND:
        raise ConfigurationError(f"batch {name} is an undo; an undo cannot be undone (run the undone batches again)")
    if batch.undone_by is not None:
        raise ConfigurationError(f"batch {name} was undone already, by batch {batch.undone_by}")
    if batch.status != "succeeded":
        why = {
            "failed": "its commits were rolled back when it failed",
            "skipped": "it wrote nothing",
            "running": "it is still running",
        }.get(batch.status, "")
        raise ConfigurationError(
            f"batch {name} is {batch.status}, so there is nothing to undo" + (f": {why}" if why else "")
        )
    if batch.lake is not None and batch.lake != lake:
        raise ConfigurationError(f"batch {name} wrote to the data directory {batch.lake}, not to this one ({lake})")
    if batch.sequence is None:
        raise ConfigurationError(
            f"batch {name} was recorded without a sequence number (an older version); it cannot be undone"
        )


def _silver_writes(store: TableStore, batches: Sequence[BatchRecord]) -> dict[str, SilverWrites]:
    """`silver_writes` of `batches`, from silver's change data feed since the first of their commits."""
    if not store.exists(SILVER_READINGS.name):
        return {}
    ids = {b.batch_id for b in batches}
    history = store.history(SILVER_READINGS.name)
    ours = [v.version for v in history if v.batch_id in ids]
    if not ours:
        return {}
    try:
        feed = store.changes(SILVER_READINGS.name, since_version=min(ours))
    except TableStoreError as error:
        raise ConfigurationError(
            f"batch {batches[0].batch_id} cannot be undone: what it and the later batches wrote to silver is read from "
            f"its change data feed, which is not there: {error}"
        ) from None
    if feed.num_rows == 0:
        return {}
    feed = feed.select(["meter_id", "local_date", "interval_start_utc", "batch_id", "_change_type", "_commit_version"])
    found = silver_writes(feed, {v.version: v.batch_id for v in history if v.batch_id})
    return {batch: writes for batch, writes in found.items() if batch in ids}


def _undo_all(
    platform: Platform, plan: UndoPlan, undo_id: str, progress: Callable[[str, str], None] | None
) -> dict[str, ChangeCounts]:
    """Undo each batch of the plan, newest first; the rows changed per table, summed."""

    def undone(batch_ids: Collection[str]) -> set[str]:
        return {b for undid in platform.metadata.undone_batches(list(batch_ids)).values() for b in undid}

    totals: dict[str, ChangeCounts] = {}
    for batch in plan.batches:
        changed = _undo_one(platform.store, batch, plan.writes.get(batch.batch_id), undo_id, undone)
        for table, counts in changed.items():
            before = totals.get(table, ChangeCounts(0, 0, 0))
            totals[table] = ChangeCounts(
                before.inserted + counts.inserted, before.updated + counts.updated, before.deleted + counts.deleted
            )
        if progress is not None:
            described = "; ".join(f"{t} {_counts(c)}" for t, c in changed.items()) or "nothing to change"
            progress("undo", f"batch {batch.batch_id}: {described}")
    return totals


def _counts(counts: ChangeCounts) -> str:
    return f"{counts.deleted:,} deleted, {counts.inserted:,} inserted, {counts.updated:,} updated"


def _versions(store: TableStore, table: str, batch_id: str) -> list[int]:
    """The versions of `table` whose commits are tagged with `batch_id`."""
    if not store.exists(table):
        return []
    return [v.version for v in store.history(table) if v.batch_id == batch_id]


def _undo_one(
    store: TableStore,
    batch: BatchRecord,
    writes: SilverWrites | None,
    undo_id: str,
    undone: Callable[[Collection[str]], set[str]],
) -> dict[str, ChangeCounts]:
    """Take one batch out: bronze, quarantine, then silver and the gold computed from it."""
    changed: dict[str, ChangeCounts] = {}
    bronze = bronze_table_name(batch.source)
    deleted = store.delete_batch_rows(bronze, batch_of=batch.batch_id, batch_id=undo_id)
    if deleted:
        changed[bronze] = ChangeCounts(0, 0, deleted)
    quarantine = _undo_quarantine(store, batch, undo_id)
    if quarantine is not None:
        changed[QUARANTINE_READINGS.name] = quarantine
    if writes is not None and _versions(store, SILVER_READINGS.name, batch.batch_id):
        changed.update(_undo_silver_and_gold(store, batch, writes, undo_id, undone))
    return {table: counts for table, counts in changed.items() if counts != ChangeCounts(0, 0, 0)}


def _undo_quarantine(store: TableStore, batch: BatchRecord, undo_id: str) -> ChangeCounts | None:
    """A batch's own quarantine rows are deleted; a replay's (kept under the batch it replayed)
    go back to what they were before the replay's commit."""
    table = QUARANTINE_READINGS.name
    if batch.kind != "replay" or not batch.replay_of:
        deleted = store.delete_batch_rows(table, batch_of=batch.batch_id, batch_id=undo_id)
        return ChangeCounts(0, 0, deleted)
    versions = _versions(store, table, batch.batch_id)
    if not versions:
        return None
    owner = [("batch_id", "in", [batch.replay_of])]
    before = min(versions) - 1
    previous = (
        store.read_version(QUARANTINE_READINGS, before, where=owner)
        if before >= 0
        else store.frame(QUARANTINE_READINGS.schema.empty_table())
    )
    replaced = store.count_rows(store.read(QUARANTINE_READINGS, where=owner))
    written = store.replace(QUARANTINE_READINGS, previous, batch_of=batch.replay_of, batch_id=undo_id)
    return ChangeCounts(inserted=written, updated=0, deleted=replaced)


def _undo_silver_and_gold(
    store: TableStore,
    batch: BatchRecord,
    writes: SilverWrites,
    undo_id: str,
    undone: Callable[[Collection[str]], set[str]],
) -> dict[str, ChangeCounts]:
    """Silver's rows of the batch's meters and days (a day more on each side, as its merge
    looked) as they were before its first commit; then gold recomputed from them.

    Batches never delete silver rows, so a key the version before the batch had and silver has
    no more was deleted by something else since (`retention apply`, `meters forget`): it is not
    brought back. Likewise gold keeps the days and hours that had silver rows before the batch
    and have none now (retention can keep gold longer than silver), but for the rows of batches
    undone since (`undone`: which of the batches named are): those went by an undo, which
    recomputed their gold."""
    keys = list(SILVER_READINGS.keys)
    days = (writes.first_day - timedelta(days=1), writes.last_day + timedelta(days=1))
    scope = [("meter_id", "in", sorted(writes.meters)), ("local_date", ">=", days[0]), ("local_date", "<=", days[1])]
    before = min(_versions(store, SILVER_READINGS.name, batch.batch_id)) - 1

    def earlier(where: list[tuple[str, str, Any]]) -> nw.LazyFrame[Any]:
        """Silver's rows matching `where` in the version before the batch."""
        if before < 0:
            return store.frame(SILVER_READINGS.schema.empty_table())
        return store.read_version(SILVER_READINGS, before, where=where)

    previous = store.cache(earlier(scope))
    current = store.cache(store.read(SILVER_READINGS, where=scope))
    hours = _hours(store, [previous, current])
    wanted = previous.join(current.select(*keys), on=keys, how="semi")
    changed = {
        SILVER_READINGS.name: store.merge_changes(
            SILVER_READINGS, changes(SILVER_READINGS, wanted, current), batch_id=undo_id, local_days=days
        )
    }

    if store.exists(GOLD_DAILY_METER_ENERGY.name):
        silver = store.cache(store.read(SILVER_READINGS, where=scope).select(*_GOLD_DAILY_INPUT))
        zones = store.collect(silver.select("local_date", "timezone").unique()).to_pylist()
        calendar = local_day_minutes((z["local_date"], z["timezone"]) for z in zones)
        daily = gold_daily_meter_energy(silver, store.frame(calendar))
        stored = store.read(GOLD_DAILY_METER_ENERGY, where=scope)
        supported = previous.select(*GOLD_DAILY_METER_ENERGY.keys).unique()
        changed[GOLD_DAILY_METER_ENERGY.name] = store.merge_changes(
            GOLD_DAILY_METER_ENERGY,
            changes(GOLD_DAILY_METER_ENERGY, daily, stored, keep=supported),
            batch_id=undo_id,
            local_days=days,
        )

    if hours is not None and store.exists(GOLD_HOURLY_PORTFOLIO_LOAD.name):
        first, last = hours
        # An hour's rows lie within a day of the batch's local days, whatever their zone.
        in_hours = [
            ("interval_start_utc", ">=", first),
            ("interval_start_utc", "<", last + timedelta(hours=1)),
            ("local_date", ">=", days[0] - timedelta(days=1)),
            ("local_date", "<=", days[1] + timedelta(days=1)),
        ]
        hourly = gold_hourly_portfolio_load(store.read(SILVER_READINGS, where=in_hours))
        then = store.cache(earlier(in_hours))
        writers = store.collect(then.select("batch_id").unique())["batch_id"].to_pylist()
        gone = undone(writers)
        if gone:
            then = then.filter(~nw.col("batch_id").is_in(sorted(gone)))
        supported = gold_hourly_portfolio_load(then).select(*GOLD_HOURLY_PORTFOLIO_LOAD.keys)
        stored = store.read(GOLD_HOURLY_PORTFOLIO_LOAD, where=[("hour_utc", ">=", first), ("hour_utc", "<=", last)])
        changed[GOLD_HOURLY_PORTFOLIO_LOAD.name] = store.merge_changes(
            GOLD_HOURLY_PORTFOLIO_LOAD,
            changes(GOLD_HOURLY_PORTFOLIO_LOAD, hourly, stored, keep=supported),
            batch_id=undo_id,
        )
    return changed


def _hours(store: TableStore, frames: Sequence[nw.LazyFrame[Any]]) -> tuple[datetime, datetime] | None:
    """The first and last UTC hour the frames' silver rows start in; None if they have none."""
    bounds = [
        store.collect(
            frame.select(
                nw.col("interval_start_utc").min().alias("first"), nw.col("interval_start_utc").max().alias("last")
            )
        ).to_pylist()[0]
        for frame in frames
    ]
    firsts = [b["first"] for b in bounds if b["first"] is not None]
    lasts = [b["last"] for b in bounds if b["last"] is not None]
    if not firsts:
        return None

    def hour(at: datetime) -> datetime:
        return at.replace(minute=0, second=0, microsecond=0)

    return hour(min(firsts)), hour(max(lasts))


def _typed(spec: TableSpec, frame: nw.LazyFrame[Any]) -> nw.LazyFrame[Any]:
    return frame.select(
        nw.col(name).cast(NARWHALS_TYPES[spec.schema.field(name).type]).alias(name) for name in spec.schema.names
    )


def changes(
    spec: TableSpec, wanted: nw.LazyFrame[Any], stored: nw.LazyFrame[Any], *, keep: nw.LazyFrame[Any] | None = None
) -> nw.LazyFrame[Any]:
    """The rows that make the `stored` rows of a scope the `wanted` ones, for
    `LakeTables.merge_changes`: every wanted row, and a deletion for each stored key not wanted
    (but for the keys `keep` has: those stay as they are)."""
    keys = list(spec.keys)
    kept = _typed(spec, wanted)
    gone = _typed(spec, stored).join(kept.select(*keys), on=keys, how="anti")
    if keep is not None:
        gone = gone.join(keep.select(*keys), on=keys, how="anti")
    with warnings.catch_warnings():  # pandas warns about concatenating all-null columns; their types are declared
        warnings.filterwarnings("ignore", "The behavior of DataFrame concatenation", FutureWarning)
        return nw.concat(
            [
                kept.with_columns(nw.lit(value=False).alias(DELETE_COLUMN)),
                gone.with_columns(nw.lit(value=True).alias(DELETE_COLUMN)),
            ]
        )


# -- tables restore ------------------------------------------------------------------------------


def batches_in_effect(history: Sequence[TableVersion]) -> dict[int, frozenset[str]]:
    """Per version of a table's `history`: the batches whose commits its rows hold then. A
    commit adds its batch; a RESTORE (a rollback, a `tables restore`) takes the table back to
    what its target version held. Versions before the oldest one the log still has held none
    that can be known."""
    held: dict[int, frozenset[str]] = {}
    current: frozenset[str] = frozenset()
    for version in sorted(history, key=lambda v: v.version):
        if version.operation == "RESTORE":
            current = held.get(version.restored_to, frozenset()) if version.restored_to is not None else current
        elif version.batch_id:
            current = current | {version.batch_id}
        held[version.version] = current
    return held


@dataclass(frozen=True)
class Disagreement:
    """A batch whose rows a restore would take out of a table (or bring back), while other
    tables keep them (or do not have them)."""

    batch_id: str
    #: True: the restore takes the batch's rows out; False: it brings them back.
    removed: bool
    tables: tuple[str, ...]

    def describe(self) -> str:
        tables = ", ".join(self.tables)
        if self.removed:
            return f"batch {self.batch_id} (its rows stay in {tables})"
        return f"batch {self.batch_id} (its rows would come back, while they are missing from {tables})"


def restore_disagreements(
    table: str,
    version: int,
    histories: Mapping[str, Sequence[TableVersion]],
    undos: Mapping[str, Sequence[str]] | None = None,
) -> list[Disagreement]:
    """The batches that restoring `table` to `version` would leave in one layer and not in
    another. A batch's rows are in a table that holds its commits and not those of the undo that
    undid it (`undos`: undo batch -> the batches it undid). The restore takes a batch's rows out
    of `table` (or brings them back) when that changes; it disagrees with the other tables the
    batch wrote where they then differ."""
    undone_by = {batch: undo for undo, batches in (undos or {}).items() for batch in batches}
    held = {name: batches_in_effect(history) for name, history in histories.items() if history}

    def rows_in(batch: str, holding: frozenset[str]) -> bool:
        return batch in holding and undone_by.get(batch) not in holding

    now = held[table][max(held[table])]
    then = held[table].get(version, frozenset())
    changed = now ^ then
    subjects = {b for b in changed if b not in (undos or {})} | {b for b, u in undone_by.items() if u in changed}
    found = []
    for batch in sorted(subjects):
        kept = rows_in(batch, then)
        if kept == rows_in(batch, now):
            continue
        others = tuple(
            sorted(
                other
                for other, versions in held.items()
                if other != table
                and any(v.batch_id == batch for v in histories[other])
                and rows_in(batch, versions[max(versions)]) != kept
            )
        )
        if others:
            found.append(Disagreement(batch, removed=not kept, tables=others))
    return found


@dataclass
class RestoreResult:
    table: str
    version: int
    #: The table's version before the restore, and the restore's commit tag.
    from_version: int
    restore_id: str
    disagreements: list[Disagreement]


def restore_table(
    platform: Platform,
    name: str,
    *,
    version: int,
    force: bool = False,
    now: datetime | None = None,
    wait_seconds: float = 0.0,
    actor: Actor | None = None,
) -> RestoreResult:
    """Restore one table to its version `version` (Delta RESTORE, one commit), under the lake's
    lock. Refused, naming them, when batches it takes out (or brings back) stay in (or are
    missing from) other tables, unless `force`. Recorded in the audit trail as `actor`'s
    `tables restore`."""
    details: dict[str, Any] = {"version": version, "force": force}
    with audited(platform.metadata, actor, TABLES_RESTORE, target=name, details=details) as audit:
        [table] = existing_tables(platform, name)
        with platform.lock(f"tables restore {table} --version {version}", wait_seconds=wait_seconds) as lock:
            store = platform.store
            recover_interrupted(store, platform.metadata, lake=platform.lake, stale=lock.stale)
            [table] = existing_tables(platform, table)  # a recovery can remove a table a crashed batch created
            histories = {t: store.history(t) for t in store.tables()}
            history = histories[table]
            version_as_of(table, [(v.version, v.timestamp) for v in history], version)
            current = max(v.version for v in history)
            if version == current:
                raise ConfigurationError(f"table {table} is at version {version} already; nothing to restore")
            held = batches_in_effect(history)
            changed = held[current] ^ held.get(version, frozenset())
            found = restore_disagreements(table, version, histories, platform.metadata.undone_batches(sorted(changed)))
            audit.details["disagreements"] = {d.batch_id: list(d.tables) for d in found}
            if found and not force:
                raise ConfigurationError(
                    f"restoring {table} to version {version} would leave the layers disagreeing: "
                    + "; ".join(d.describe() for d in found)
                    + ". Undo a batch in every table with `energy-platform batches undo BATCH_ID`, "
                    "or add --force to restore this table alone"
                )
            started = now or datetime.now(UTC)
            restore_id = f"restore_{started:%Y%m%d_%H%M%S}_{uuid.uuid4().hex[:6]}"
            lock.hold_batch(restore_id)
            store.restore(table, version, batch_id=restore_id)
            audit.details.update(restore_id=restore_id, from_version=current)
    structlog.get_logger().warning(
        "table_restored", table=table, version=version, from_version=current, forced=bool(found)
    )
    return RestoreResult(table, version, current, restore_id, found)
