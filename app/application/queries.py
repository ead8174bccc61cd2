"""Read-side queries for the HTTP service: quarantined rows and gold tables, filtered and paged."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import narwhals as nw
import pyarrow as pa

from app.application.ports import MetadataStore, RowFilter, TableStore
from app.domain.schemas import GOLD_DAILY_METER_ENERGY, GOLD_HOURLY_PORTFOLIO_LOAD, QUARANTINE_READINGS, TableSpec


@dataclass(frozen=True)
class Page:
    """One page of rows and the total the filter matched."""

    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


def _page(store: TableStore, spec: TableSpec, where: RowFilter, order: list[str], limit: int, offset: int) -> Page:
    table: pa.Table = store.to_arrow(store.read(spec, where=where))
    table = table.sort_by([(c, "ascending") for c in order])
    return Page(items=table.slice(offset, limit).to_pylist(), total=table.num_rows, limit=limit, offset=offset)


def quarantined_rows(store: TableStore, *, batch_id: str, limit: int, offset: int) -> Page:
    where = [("batch_id", "in", [batch_id])]
    return _page(store, QUARANTINE_READINGS, where, ["source_file", "line_number"], limit, offset)


def meter_daily(store: TableStore, *, meter_id: str, start: date, end: date, limit: int, offset: int) -> Page:
    where = [("meter_id", "in", [meter_id]), ("local_date", ">=", start), ("local_date", "<=", end)]
    return _page(store, GOLD_DAILY_METER_ENERGY, where, ["local_date", "direction"], limit, offset)


def meter_known(store: TableStore, meter_id: str) -> bool:
    rows = store.read(GOLD_DAILY_METER_ENERGY, where=[("meter_id", "in", [meter_id])])
    return store.count_rows(rows) > 0


def portfolio_hourly(store: TableStore, *, start: datetime, end: datetime, limit: int, offset: int) -> Page:
    where = [("hour_utc", ">=", start), ("hour_utc", "<", end)]
    return _page(store, GOLD_HOURLY_PORTFOLIO_LOAD, where, ["hour_utc", "direction"], limit, offset)


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
