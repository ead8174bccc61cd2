"""Use cases that write the lake: a batch run and a quarantine replay, each under the lake's lock,
after recovering what a killed run left behind."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from app.application.audit import audited
from app.application.pipeline import BatchPipeline, BatchResult, Progress
from app.application.ports import LakeLock, Platform
from app.application.recovery import recover_interrupted
from app.domain.audit import QUARANTINE_REPLAY, RUN_BATCH, Actor
from app.domain.batches import checked_batch_id
from app.domain.errors import ConfigurationError


def pipeline_under_lock(platform: Platform, lock: LakeLock, progress: Progress | None) -> BatchPipeline:
    """With the lock held: recover interrupted batches, then a pipeline that names its batch in the lock."""
    recover_interrupted(platform.store, platform.metadata, lake=platform.lake, stale=lock.stale, progress=progress)
    return BatchPipeline(
        store=platform.store,
        metadata=platform.metadata,
        reader=platform.reader,
        execution_mode=platform.execution_mode,
        logger=structlog.get_logger(),
        progress=progress,
        lake=platform.lake,
        on_batch=lock.hold_batch,
    )


def compact_small_files(platform: Platform, result: BatchResult, details: dict[str, Any] | None = None) -> None:
    """After a succeeded batch, with the lock still held: compact each table it wrote whose small
    data files number more than `platform.compact_threshold` (0: never), recording each one's
    data files before and after in the result, the log and `details` (the batch's audit). The
    batch is committed already: a compaction that fails is logged, and the next batch tries again."""
    threshold = platform.compact_threshold
    if threshold <= 0 or result.status != "succeeded":
        return
    log = structlog.get_logger().bind(batch_id=result.batch_id)
    for table in result.tables:
        try:
            if platform.store.exists(table) and platform.store.small_files(table) > threshold:
                result.compacted[table] = platform.store.compact(table)
        except Exception as error:  # any engine's error: the batch stands
            log.warning("compaction_failed", table=table, error=f"{type(error).__name__}: {error}")
    if result.compacted:
        log.info("tables_compacted", files=result.compacted, threshold=threshold)
        if details is not None:
            details["compacted"] = result.compacted


def run_batch(
    platform: Platform,
    *,
    source_name: str = "meter_readings",
    input_path: str | None = None,
    config_file: Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
    now: datetime | None = None,
    batch_id: str | None = None,
    wait_seconds: float = 0.0,
    actor: Actor | None = None,
) -> BatchResult:
    """Run one batch of `source_name` over `input_path` (default: the source's declared path),
    holding the lake's lock (waiting up to `wait_seconds` for it). Recorded in the audit trail
    as `actor`'s `run-batch`."""
    details = {"input": input_path, "config": config_file, "force": force}
    with audited(platform.metadata, actor, RUN_BATCH, target=source_name, details=details) as audit:
        if batch_id is not None:
            checked_batch_id(batch_id)
        source = platform.source(source_name, config_file)
        if source.format == "kafka":
            raise ConfigurationError(
                f"source {source_name!r} reads the Kafka topic {source.topic}: run it with "
                f"`energy-platform stream --source {source_name}` (--available-now to take what is there and stop)"
            )
        paths = platform.reader.resolve_inputs(input_path or source.path, source.format)
        with platform.lock(f"run-batch --source {source_name}", wait_seconds=wait_seconds) as lock:
            pipeline = pipeline_under_lock(platform, lock, progress)
            result = pipeline.run(source, paths, force=force, now=now, batch_id=batch_id)
            compact_small_files(platform, result, audit.details)
            return audit.batch(result)


def replay_quarantine(
    platform: Platform,
    *,
    batch_id: str,
    source_name: str | None = None,
    config_file: Path | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
    wait_seconds: float = 0.0,
    actor: Actor | None = None,
) -> BatchResult:
    """Re-run batch `batch_id`'s quarantined rows through its source's current config and rules.
    Recorded in the audit trail as `actor`'s `quarantine replay` of that batch."""
    details = {"source": source_name, "config": config_file}
    with audited(platform.metadata, actor, QUARANTINE_REPLAY, target=batch_id, details=details) as audit:
        original = platform.metadata.get_batch(checked_batch_id(batch_id))
        if original is None:
            raise ConfigurationError(f"there is no batch {batch_id!r}; `energy-platform quarantine list` shows them")
        source = platform.source(source_name or original.source, config_file)
        audit.details["source"] = source.name
        with platform.lock(f"quarantine replay --batch-id {batch_id}", wait_seconds=wait_seconds) as lock:
            result = pipeline_under_lock(platform, lock, progress).replay(source, original, now=now)
            compact_small_files(platform, result, audit.details)
            return audit.batch(result)
