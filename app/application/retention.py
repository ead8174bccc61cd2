"""Retention: rows older than a layer's retention are deleted, what went is recorded, then the
tables are vacuumed with Delta's safe retention.

Bronze and the quarantine are judged by when their rows came in (`ingested_at`, and for the
quarantine its `quarantined_at`: the start of the batch that rejected them); silver and gold by
the time they describe (a reading's local day, an hour of the portfolio load). A layer without
a retention keeps its rows for ever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from app.application.audit import audited
from app.application.lake_ops import SAFE_RETENTION_HOURS
from app.application.ports import Platform, RowFilter
from app.application.recovery import recover_interrupted
from app.domain.audit import RETENTION_APPLY, Actor
from app.domain.errors import ConfigurationError
from app.domain.schemas import (
    GOLD_DAILY_METER_ENERGY,
    GOLD_HOURLY_PORTFOLIO_LOAD,
    QUARANTINE_READINGS,
    SILVER_READINGS,
    bronze_table_name,
)

#: The prefix of every bronze table's name (`bronze_<source>`).
BRONZE_PREFIX = bronze_table_name("")


@dataclass(frozen=True)
class RetentionPolicy:
    """Days each layer keeps its rows (None: for ever), as the RETENTION_*_DAYS settings say."""

    bronze_days: int | None = None
    quarantine_days: int | None = None
    silver_days: int | None = None
    gold_days: int | None = None

    def __post_init__(self) -> None:
        for layer, days in self.layers().items():
            if days < 1:
                raise ConfigurationError(f"RETENTION_{layer.upper()}_DAYS must be 1 or more, not {days}")

    def layers(self) -> dict[str, int]:
        """The layers with a retention, and their days."""
        days = {
            "bronze": self.bronze_days,
            "quarantine": self.quarantine_days,
            "silver": self.silver_days,
            "gold": self.gold_days,
        }
        return {layer: n for layer, n in days.items() if n is not None}


@dataclass
class RetentionResult:
    """What `apply_retention` did: each layer's cutoff (rows before it went), the rows deleted
    and the files vacuumed per table."""

    now: datetime
    cutoffs: dict[str, datetime] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    vacuumed: dict[str, int] = field(default_factory=dict)


def retention_plan(tables: list[str], policy: RetentionPolicy, now: datetime) -> dict[str, RowFilter]:
    """Each existing table a retention applies to, with the rows it deletes: those before the
    cutoff (`now` less the layer's days). Silver and daily gold go by whole local days (a day
    before the cutoff's UTC date), so the two keep the same days."""
    cutoffs = {layer: now - timedelta(days=days) for layer, days in policy.layers().items()}
    plan: dict[str, RowFilter] = {}
    for table in tables:
        if table.startswith(BRONZE_PREFIX) and "bronze" in cutoffs:
            plan[table] = [("ingested_at", "<", cutoffs["bronze"])]
        elif table == QUARANTINE_READINGS.name and "quarantine" in cutoffs:
            plan[table] = [("quarantined_at", "<", cutoffs["quarantine"])]
        elif table == SILVER_READINGS.name and "silver" in cutoffs:
            day = cutoffs["silver"].astimezone(UTC).date()
            # The month bound follows from the day's; it lets the delete skip later partitions.
            plan[table] = [("local_date", "<", day), ("local_month", "<=", day.replace(day=1))]
        elif table == GOLD_DAILY_METER_ENERGY.name and "gold" in cutoffs:
            plan[table] = [("local_date", "<", cutoffs["gold"].astimezone(UTC).date())]
        elif table == GOLD_HOURLY_PORTFOLIO_LOAD.name and "gold" in cutoffs:
            plan[table] = [("hour_utc", "<", cutoffs["gold"])]
    return plan


def apply_retention(
    platform: Platform,
    policy: RetentionPolicy,
    *,
    now: datetime | None = None,
    wait_seconds: float = 0.0,
    actor: Actor | None = None,
) -> RetentionResult:
    """Delete, under the lake's lock, the rows of each table older than its layer's retention
    (each table in one commit), then vacuum those tables with Delta's safe retention of
    `SAFE_RETENTION_HOURS`: the deleted rows' files leave the disk once no version of the last
    week reads them (a later `retention apply` or `tables vacuum` takes them then). Batches a
    killed run left running are rolled back first, as before a batch. `now` is the time the
    cutoffs count back from (default: the clock). Recorded in the audit trail as `actor`'s
    `retention apply`, with the rows deleted per table."""
    now = now or datetime.now(UTC)
    result = RetentionResult(now=now)
    details = {
        "retention_days": policy.layers(),
        "now": now,
        "cutoffs": result.cutoffs,
        "deleted": result.deleted,
        "vacuumed": result.vacuumed,
    }
    with audited(platform.metadata, actor, RETENTION_APPLY, details=details):
        if now.tzinfo is None:
            raise ConfigurationError("the time retention counts back from needs a UTC offset")
        layers = policy.layers()
        result.cutoffs.update({layer: now - timedelta(days=days) for layer, days in layers.items()})
        if not layers:
            return result
        with platform.lock("retention apply", wait_seconds=wait_seconds) as lock:
            store = platform.store
            recover_interrupted(store, platform.metadata, lake=platform.lake, stale=lock.stale)
            plan = retention_plan(store.tables(), policy, now)
            for table, where in plan.items():
                result.deleted[table] = store.delete(table, where)
            for table in plan:
                result.vacuumed[table] = store.vacuum(table, retain_hours=SAFE_RETENTION_HOURS)
    structlog.get_logger().info(
        "retention_applied", cutoffs=result.cutoffs, deleted=result.deleted, vacuumed=result.vacuumed
    )
    return result
