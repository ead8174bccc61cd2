"""Erasure of one meter's data (a data subject's right to erasure): its rows leave every layer
and the quarantine, the portfolio load is recomputed without it, and the history of every table
that holds meter ids is purged, so that no file under the lake still holds the meter id.

Meter ids are personal data: what is recorded (the audit trail, the log, the lock file, error
messages) names the meter by the SHA-256 of its id, never by the id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import narwhals as nw
import pyarrow as pa
import pyarrow.compute as pc
import structlog

from app.application.audit import audited
from app.application.ports import Platform, TableStore
from app.application.recovery import recover_interrupted
from app.application.retention import BRONZE_PREFIX
from app.domain.audit import METERS_FORGET, Actor
from app.domain.errors import ConfigurationError, PlatformError
from app.domain.schemas import (
    BRONZE_LINEAGE,
    GOLD_DAILY_METER_ENERGY,
    GOLD_HOURLY_PORTFOLIO_LOAD,
    QUARANTINE_READINGS,
    SILVER_READINGS,
    bronze_spec,
)
from app.domain.transforms import HOURLY_MAX_MINUTES, gold_hourly_portfolio_load

#: The columns that name the line a row was read from, in bronze, silver and the quarantine.
LINEAGE = ("source", "batch_id", "source_file", "line_number")
_LINEAGE_SCHEMA = pa.schema(
    [("source", pa.string()), ("batch_id", pa.string()), ("source_file", pa.string()), ("line_number", pa.int64())]
)
#: Separators a malformed line (quarantined as `{"line": ...}`) is split on to find the meter id.
_FIELD_SEPARATORS = re.compile(r"[,;\t|]")


class ErasureError(PlatformError):
    """A meter's data could not be erased entirely; the message says what is left."""


def meter_digest(meter_id: str) -> str:
    """How records name a meter: `sha256:` and the hex SHA-256 of its id (a pseudonym, not an
    anonymisation: a short or sequential id can be found again by hashing candidates)."""
    return "sha256:" + hashlib.sha256(meter_id.encode("utf-8")).hexdigest()


@dataclass
class Erasure:
    """What `forget_meter` did: rows deleted per table, the portfolio hours recomputed and
    removed, and the files each purged table lost."""

    meter: str
    deleted: dict[str, int] = field(default_factory=dict)
    portfolio: dict[str, int] = field(default_factory=dict)
    purged: dict[str, int] = field(default_factory=dict)
    #: Rows of the metadata store whose text named the meter, now naming its digest
    metadata_rows: int = 0


def forget_meter(
    platform: Platform, meter_id: str, *, wait_seconds: float = 0.0, actor: Actor | None = None
) -> Erasure:
    """Erase meter `meter_id` from the lake, under its lock (refused while another run holds it,
    unless `wait_seconds`): its bronze rows (those whose file columns hold the id, and those its
    silver and quarantined rows were read from), its quarantined rows, its silver and daily gold
    rows; the hourly portfolio rows it counted in are recomputed without it (removed where it
    was the only meter). Then every table that holds meter ids (bronze, quarantine, silver,
    daily gold) is purged: no older version, change data file or log entry is left, so time
    travel and undo of those tables end here. Finally the lake is checked: if any of its rows
    or files still holds the id, ErasureError says where (naming the meter by its digest).

    Recorded in the audit trail as `actor`'s `meters forget` of the id's digest."""
    meter_id = meter_id.strip() if isinstance(meter_id, str) else meter_id
    if not isinstance(meter_id, str) or not meter_id:
        raise ConfigurationError("give the id of the meter to forget")
    digest = meter_digest(meter_id)
    erasure = Erasure(meter=digest)
    details = {"deleted": erasure.deleted, "portfolio": erasure.portfolio, "purged": erasure.purged}
    with (
        audited(platform.metadata, actor, METERS_FORGET, target=digest, details=details),
        _masked(meter_id, digest),
        platform.lock("meters forget", wait_seconds=wait_seconds) as lock,
    ):
        store = platform.store
        recover_interrupted(store, platform.metadata, lake=platform.lake, stale=lock.stale)
        _erase(store, meter_id, digest, erasure)
        for table in _meter_tables(store):
            erasure.purged[table] = store.purge(table)
        # Errors and file names the metadata store kept may quote the id (a database file kept in
        # the data directory, the default, is checked with the lake's files).
        erasure.metadata_rows = platform.metadata.pseudonymise(meter_id, digest)
        _check_erased(store, meter_id, digest)
    structlog.get_logger().info(
        "meter_forgotten", meter=digest, deleted=erasure.deleted, portfolio=erasure.portfolio, purged=erasure.purged
    )
    return erasure


@contextmanager
def _masked(meter_id: str, digest: str) -> Iterator[None]:
    """An error raised inside whose message holds the meter id (a failed delete quotes its
    predicate) goes on as an ErasureError naming the digest instead."""
    try:
        yield
    except Exception as error:
        text = str(error)
        if meter_id in text:
            raise ErasureError(text.replace(meter_id, f"<meter {digest}>")) from None
        raise


def _meter_tables(store: TableStore) -> list[str]:
    """The existing tables whose rows can hold a meter id (the hourly portfolio load cannot)."""
    named = (QUARANTINE_READINGS.name, SILVER_READINGS.name, GOLD_DAILY_METER_ENERGY.name)
    return [t for t in store.tables() if t.startswith(BRONZE_PREFIX) or t in named]


def _erase(store: TableStore, meter_id: str, digest: str, erasure: Erasure) -> None:
    """Find the meter's rows in every layer first (bronze by the lineage of its silver and
    quarantined rows too), then delete them, silver last but for gold."""
    silver = _silver_rows(store, meter_id)
    quarantined = _quarantined_lineage(store, meter_id)
    tables = [table for table in store.tables() if table.startswith(BRONZE_PREFIX)]
    bronze = {table: _bronze_lineage(store, table, meter_id) for table in tables}
    read_from = pa.concat_tables([silver["lineage"], quarantined, *bronze.values()])
    for table in bronze:
        source = table.removeprefix(BRONZE_PREFIX)
        keys = read_from.filter(pc.equal(read_from["source"], source))
        erasure.deleted[table] = store.delete_keys(table, keys)
    erasure.deleted[QUARANTINE_READINGS.name] = store.delete_keys(QUARANTINE_READINGS.name, read_from)
    for spec in (SILVER_READINGS, GOLD_DAILY_METER_ENERGY):
        erasure.deleted[spec.name] = store.delete(spec.name, [("meter_id", "in", [meter_id])])
    erasure.portfolio.update(_recompute_portfolio(store, silver["hours"], batch_id=f"forget_{digest[7:23]}"))


def _silver_rows(store: TableStore, meter_id: str) -> dict[str, Any]:
    """The meter's silver rows: the lines they were read from, and the (hour, direction) pairs of
    the portfolio load they counted in, with the range of days and times those span."""
    empty = {"lineage": _LINEAGE_SCHEMA.empty_table(), "hours": None}
    if not store.exists(SILVER_READINGS.name):
        return empty
    rows = store.read(SILVER_READINGS, where=[("meter_id", "in", [meter_id])])
    lineage = store.collect(rows.filter(~nw.col("source_file").is_null()).select(*LINEAGE).unique())
    hours = store.collect(
        rows.filter(nw.col("interval_minutes") <= HOURLY_MAX_MINUTES)
        .with_columns(hour_utc=nw.col("interval_start_utc").dt.truncate("1h"))
        .group_by("hour_utc", "direction")
        .agg(nw.col("local_date").min().alias("first_day"), nw.col("local_date").max().alias("last_day"))
    )
    return {"lineage": lineage.select(list(LINEAGE)).cast(_LINEAGE_SCHEMA), "hours": hours if hours.num_rows else None}


def _quarantined_lineage(store: TableStore, meter_id: str) -> pa.Table:
    """The lines of the quarantined rows whose record holds the meter id as one of its values
    (for a malformed line: one of its fields)."""
    if not store.exists(QUARANTINE_READINGS.name):
        return _LINEAGE_SCHEMA.empty_table()
    mentioning = store.collect(
        store.read(QUARANTINE_READINGS)
        .filter(nw.col("raw_record").str.contains(meter_id, literal=True))
        .select(*LINEAGE, "raw_record")
    )
    ours = [_record_of(record, meter_id) for record in mentioning["raw_record"].to_pylist()]
    return mentioning.filter(pa.array(ours, pa.bool_())).select(list(LINEAGE)).cast(_LINEAGE_SCHEMA)


def _record_of(record: str, meter_id: str) -> bool:
    """Whether a quarantined raw record (JSON by the file's header, or `{"line": ...}`) is the meter's."""
    try:
        values = json.loads(record)
    except ValueError:
        return True  # not as the platform writes it: erased rather than kept on a guess
    if not isinstance(values, dict):
        return True
    if set(values) == {"line"} and isinstance(values["line"], str):
        return any(part.strip().strip("\"'") == meter_id for part in _FIELD_SEPARATORS.split(values["line"]))
    return any(isinstance(value, str) and value.strip() == meter_id for value in values.values())


def _bronze_lineage(store: TableStore, table: str, meter_id: str) -> pa.Table:
    """The lines of a bronze table's rows one of whose file columns holds the meter id."""
    stored = store.head(table, limit=0).schema
    columns = [name for name in stored.names if name not in BRONZE_LINEAGE.names]
    if not columns:
        return _LINEAGE_SCHEMA.empty_table()
    spec = bronze_spec(table.removeprefix(BRONZE_PREFIX), columns)
    holds = nw.any_horizontal(*(nw.col(c).str.strip_chars() == meter_id for c in columns), ignore_nulls=True)
    found = store.collect(store.read(spec).filter(holds).select(*LINEAGE))
    return found.cast(_LINEAGE_SCHEMA)


def _recompute_portfolio(store: TableStore, hours: pa.Table | None, *, batch_id: str) -> dict[str, int]:
    """The hourly portfolio rows of `hours` recomputed from the silver left (one upsert), and
    removed where no meter is left in them."""
    spec = GOLD_HOURLY_PORTFOLIO_LOAD
    if hours is None or not store.exists(spec.name):
        return {"recomputed": 0, "removed": 0}
    first, last = pc.min(hours["hour_utc"]).as_py(), pc.max(hours["hour_utc"]).as_py()
    first_day, last_day = pc.min(hours["first_day"]).as_py(), pc.max(hours["last_day"]).as_py()
    left = store.read(
        SILVER_READINGS,
        where=[
            ("interval_start_utc", ">=", first),
            ("interval_start_utc", "<", last + timedelta(hours=1)),
            ("local_date", ">=", first_day - timedelta(days=1)),
            ("local_date", "<=", last_day + timedelta(days=1)),
        ],
    )
    touched = store.frame(hours.select(["hour_utc", "direction"]))
    recomputed = store.cache(gold_hourly_portfolio_load(left).join(touched, on=["hour_utc", "direction"], how="semi"))
    counts = store.upsert(spec, recomputed, compare=spec.value_columns, batch_id=batch_id)
    kept = store.collect(recomputed.select("hour_utc", "direction"))
    pairs = hours.select(["hour_utc", "direction"])
    kept_keys = {(row["hour_utc"], row["direction"]) for row in kept.to_pylist()}
    emptied = pairs.filter(
        pa.array([(row["hour_utc"], row["direction"]) not in kept_keys for row in pairs.to_pylist()], pa.bool_())
    )
    removed = store.delete_keys(spec.name, emptied)
    return {"recomputed": counts.inserted + counts.updated + counts.unchanged, "removed": removed}


def _check_erased(store: TableStore, meter_id: str, digest: str) -> None:
    """ErasureError naming what still holds the meter id: rows of a table's current version
    found as `forget_meter` finds them, or files under the lake (older versions, logs, change
    data, stream checkpoints, anything kept there)."""
    problems = []
    for spec in (SILVER_READINGS, GOLD_DAILY_METER_ENERGY):
        if store.exists(spec.name):
            left = store.count_rows(store.read(spec, where=[("meter_id", "in", [meter_id])]))
            if left:
                problems.append(f"{left:,} row(s) of {spec.name}")
    bronze = [t for t in store.tables() if t.startswith(BRONZE_PREFIX)]
    for table, rows in [(t, _bronze_lineage(store, t, meter_id)) for t in bronze] + [
        (QUARANTINE_READINGS.name, _quarantined_lineage(store, meter_id))
    ]:
        if rows.num_rows:
            problems.append(f"{rows.num_rows:,} row(s) of {table}")
    files = [path.replace(meter_id, f"<meter {digest}>") for path in store.residue(meter_id)]
    if files:
        shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
        problems.append(f"{len(files)} file(s) under the lake: {shown}")
    if problems:
        raise ErasureError(
            f"meter {digest} is not erased entirely: its id is still held by {'; '.join(problems)}. The rows "
            "forget found are deleted and the tables' history is purged; remove what is listed (an input file "
            "or a stream checkpoint kept under the data directory, say), then run forget again"
        )
