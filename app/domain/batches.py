"""Batches: their ids, and the records that describe a run (per-layer metrics, reconciliation, files)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from app.domain.errors import ConfigurationError

Layer = Literal["bronze", "silver", "gold"]
BatchStatus = Literal["running", "succeeded", "failed", "skipped"]
#: What a stream records of itself: running until it stops (SIGTERM, the end of an
#: `--available-now` run) or fails (a micro-batch it could not store, any other error).
StreamState = Literal["running", "stopped", "failed"]
#: How a stream shows: its recorded state, or `stale` for one recorded as running whose heartbeat
#: stopped (its process was killed without a chance to say so).
ShownStreamState = Literal["running", "stopped", "failed", "stale"]

#: A running stream shows as stale once its heartbeat is older than this many triggers...
STALE_TRIGGERS = 3
#: ...and at least this many seconds.
STALE_MIN_SECONDS = 60.0

#: Batch ids as the platform makes them and accepts them: they go into paths and predicates.
BATCH_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"


def batch_checksum(file_digests: Iterable[str]) -> str:
    """A batch's checksum: SHA-256 over its files' SHA-256 digests, sorted, one per line, so the
    same set of files gives the same value in any order."""
    return hashlib.sha256("\n".join(sorted(file_digests)).encode("ascii")).hexdigest()


def replay_checksum(batch_of: str, rows: int) -> str:
    """A replay's checksum: what it re-ran (batch `batch_of`'s `rows` quarantined rows)."""
    return hashlib.sha256(f"replay:{batch_of}:{rows}".encode()).hexdigest()


def checked_batch_id(batch_id: str) -> str:
    """`batch_id` if it has the form of a batch id, else ConfigurationError."""
    if not isinstance(batch_id, str) or not re.fullmatch(BATCH_ID_PATTERN, batch_id):
        raise ConfigurationError(
            f"invalid batch id {batch_id!r}: up to 128 letters, digits and _ . : - , starting with a letter or digit"
        )
    return batch_id


@dataclass(frozen=True)
class InputFile:
    """One input file of a batch, identified by the SHA-256 of its bytes."""

    path: str
    sha256: str
    size_bytes: int
    record_count: int = 0


@dataclass(frozen=True)
class LayerMetrics:
    """What one layer of a batch read, wrote and rejected."""

    layer: Layer
    records_in: int
    records_out: int
    quarantined: int
    duration_seconds: float


@dataclass(frozen=True)
class Reconciliation:
    """Proof that every row read is accounted for: read = accepted + quarantined + duplicates.

    Silver receives the accepted rows plus the intervals estimation filled, so the merge's
    counts add up to accepted + estimated. A register read whose span covers several intervals
    is booked on each of them: `rows_spread` rows more are accepted than were read.
    """

    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    duplicates_replaced: int
    silver_inserted: int = 0
    silver_updated: int = 0
    silver_unchanged: int = 0
    rows_estimated: int = 0
    rows_spread: int = 0

    @property
    def balanced(self) -> bool:
        accounted = self.rows_accepted + self.rows_quarantined + self.duplicates_replaced
        written = self.silver_inserted + self.silver_updated + self.silver_unchanged
        return self.rows_read + self.rows_spread == accounted and written == self.rows_accepted + self.rows_estimated


@dataclass
class BatchRecord:
    """A batch as the metadata store keeps it."""

    batch_id: str
    source: str
    execution_mode: str
    status: BatchStatus
    started_at: datetime
    ingestion_time: datetime
    files: list[InputFile] = field(default_factory=list)
    finished_at: datetime | None = None
    record_count: int = 0
    checksum: str | None = None
    error: str | None = None
    reconciliation: Reconciliation | None = None
    layers: list[LayerMetrics] = field(default_factory=list)
    rule_counts: dict[str, int] = field(default_factory=dict)
    #: Order of the batch's commits: the Delta transaction version its table writes carry
    sequence: int | None = None
    #: "ingest" for files read, "replay" for quarantined rows re-run (then `replay_of` names the batch),
    #: "stream" for a stream's micro-batch, "undo" for `batches undo` (see `undone_by`)
    kind: str = "ingest"
    replay_of: str | None = None
    #: Where the batch's tables live (the data directory)
    lake: str | None = None
    #: A topic micro-batch's source positions: partition (as text, as JSON keys it) -> the last
    #: offset it took; {} for other batches (a folder micro-batch's files are its `files`)
    positions: dict[str, int] = field(default_factory=dict)
    #: The undo batch (kind "undo") that took this batch's rows out of the lake, if one did: its
    #: files count as ingested no more
    undone_by: str | None = None


@dataclass
class StreamRecord:
    """One run of a stream, as the metadata store keeps it: its state, where it runs, a heartbeat
    (written after every micro-batch and every idle trigger) and its last micro-batch's figures."""

    #: The run's id (a new one each time a stream starts)
    run_id: str
    source: str
    state: StreamState
    host: str
    pid: int
    #: Seconds between triggers: how often a healthy stream writes its heartbeat at the least
    trigger_seconds: float
    started_at: datetime
    heartbeat_at: datetime
    #: The data directory it writes
    lake: str | None = None
    #: When it stopped or failed
    stopped_at: datetime | None = None
    last_batch_id: str | None = None
    #: Micro-batches it ran (failed ones too), and the readings its succeeded ones read
    micro_batches: int = 0
    readings: int = 0
    #: Of the last micro-batch: its duration, readings read per second of it, and the seconds from
    #: its oldest event (a message's timestamp, a file's modification time) to its silver commit
    last_duration_seconds: float | None = None
    last_readings_per_second: float | None = None
    last_latency_seconds: float | None = None
    #: A topic's consumer lag as last measured: partition (as text) -> messages; {} for a folder
    lag: dict[str, int] = field(default_factory=dict)
    #: Why it failed
    error: str | None = None

    @property
    def stale_after_seconds(self) -> float:
        """Heartbeat age past which a running stream shows as stale: max(3 x trigger, 60 s)."""
        return max(STALE_TRIGGERS * self.trigger_seconds, STALE_MIN_SECONDS)

    def heartbeat_age_seconds(self, now: datetime) -> float:
        return (now - self.heartbeat_at).total_seconds()

    def shown_state(self, now: datetime) -> ShownStreamState:
        """The recorded state, except `stale` for a running stream whose heartbeat is too old."""
        if self.state == "running" and self.heartbeat_age_seconds(now) > self.stale_after_seconds:
            return "stale"
        return self.state

    @property
    def total_lag(self) -> int | None:
        """Messages behind over every partition; None when no lag was measured."""
        return sum(self.lag.values()) if self.lag else None


@dataclass(frozen=True)
class MetricTotals:
    """Totals over every batch the metadata store holds, as the database aggregates them (for
    /metrics). Finished batches only ever add to them, so each can be exposed as a counter."""

    #: Finished batches (succeeded, failed, skipped) per (source, kind, status)
    runs: dict[tuple[str, str, BatchStatus], int] = field(default_factory=dict)
    #: Batches recorded as running now (a gauge: it goes down as they finish)
    running: int = 0
    #: Per source, sums over its succeeded batches: rows read, quarantined, and estimated
    records_processed: dict[str, int] = field(default_factory=dict)
    records_quarantined: dict[str, int] = field(default_factory=dict)
    rows_estimated: dict[str, int] = field(default_factory=dict)
    #: Per source, seconds from start to finish summed over its succeeded batches, and how many
    duration_seconds: dict[str, float] = field(default_factory=dict)
    duration_count: dict[str, int] = field(default_factory=dict)
    #: Per source, when its last succeeded batch finished
    last_success: dict[str, datetime] = field(default_factory=dict)
    #: Per source, when its last failed batch finished
    last_failure: dict[str, datetime] = field(default_factory=dict)
    #: Per source, rows quarantined / rows read of its last succeeded batch that read any rows
    last_quarantine_ratio: dict[str, float] = field(default_factory=dict)
    #: Per (source, layer), sums over the layer metrics of succeeded batches: rows in, rows out,
    #: seconds, and how many batches recorded the layer
    layer_records_in: dict[tuple[str, Layer], int] = field(default_factory=dict)
    layer_records_out: dict[tuple[str, Layer], int] = field(default_factory=dict)
    layer_duration_seconds: dict[tuple[str, Layer], float] = field(default_factory=dict)
    layer_count: dict[tuple[str, Layer], int] = field(default_factory=dict)

    @property
    def sources(self) -> list[str]:
        """Every source with a batch recorded, sorted."""
        return sorted({source for source, _, _ in self.runs} | set(self.records_processed))
