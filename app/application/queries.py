"""Read-side queries for the HTTP service: quarantined rows and gold tables, filtered and paged."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import narwhals as nw

from app.application.ports import MetadataStore, Page, TableReads, TableStore
from app.domain.schemas import GOLD_DAILY_METER_ENERGY, GOLD_HOURLY_PORTFOLIO_LOAD, QUARANTINE_READINGS

_DAILY_ORDER = ["local_date", "direction"]


def quarantined_rows(reads: TableReads, *, batch_id: str, limit: int, offset: int) -> Page:
    where = [("batch_id", "in", [batch_id])]
    return reads.page(
        QUARANTINE_READINGS, where=where, order=["source_file", "line_number"], limit=limit, offset=offset
    )


def meter_daily(
    reads: TableReads,
    *,
    meter_id: str,
    start: date,
    end: date,
    limit: int,
    offset: int,
    as_of: int | datetime | None = None,
) -> Page | None:
    """A meter's daily rows of local days start..end (of gold's version `as_of` if given); None
    if the meter has no gold row at all."""
    where = [("meter_id", "in", [meter_id]), ("local_date", ">=", start), ("local_date", "<=", end)]
    page = reads.page(GOLD_DAILY_METER_ENERGY, where=where, order=_DAILY_ORDER, limit=limit, offset=offset, as_of=as_of)
    if page.total == 0:
        known = reads.page(GOLD_DAILY_METER_ENERGY, where=where[:1], order=_DAILY_ORDER, limit=1, offset=0, as_of=as_of)
        if known.total == 0:
            return None
    return page


def portfolio_hourly(
    reads: TableReads, *, start: datetime, end: datetime, limit: int, offset: int, as_of: int | datetime | None = None
) -> Page:
    where = [("hour_utc", ">=", start), ("hour_utc", "<", end)]
    return reads.page(
        GOLD_HOURLY_PORTFOLIO_LOAD,
        where=where,
        order=["hour_utc", "direction"],
        limit=limit,
        offset=offset,
        as_of=as_of,
    )


@dataclass(frozen=True)
class QuarantineTotal:
    """Rows one batch quarantined under one rule, and the replays of that batch."""

    batch_id: str
    source: str
    rule: str
    rows: int
    replays: list[str]


def quarantine_totals(store: TableStore, metadata: MetadataStore) -> list[QuarantineTotal]:
    """Quarantined rows per batch and rule, oldest batch first."""
    counts = store.collect(
        store.read(QUARANTINE_READINGS).group_by("batch_id", "source", "rule").agg(nw.len().alias("rows"))
    ).sort_by([("batch_id", "ascending"), ("rule", "ascending")])
    replays: dict[str, list[str]] = {}
    for replay in reversed(metadata.list_batches(limit=10_000, kind="replay")):  # oldest first
        replays.setdefault(replay.replay_of or "", []).append(f"{replay.batch_id} ({replay.status})")
    return [
        QuarantineTotal(r["batch_id"], r["source"], r["rule"], int(r["rows"]), replays.get(r["batch_id"], []))
        for r in counts.to_pylist()
    ]
