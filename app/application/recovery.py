"""Recovery of batches whose process died: their commits are rolled back and they are marked failed.

A batch writes its tables one commit at a time (bronze, quarantine, silver, then gold). A run
killed between two of them leaves the batch "running" in the metadata store with some of its
commits made. The next write that takes the lake's lock (a run, a replay, or
`energy-platform recover`) finds such batches, restores each table to its version before the
batch, and records the batch as failed, so the batch can simply be run again. Reads never do.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from app.application.ports import Holder, MetadataStore, TableStore
from app.domain.batches import BatchRecord
from app.domain.errors import TableStoreError


def recover_interrupted(
    store: TableStore,
    metadata: MetadataStore,
    *,
    lake: str,
    stale: Holder | None = None,
    progress: Callable[[str, str], None] | None = None,
) -> list[BatchRecord]:
    """Roll back and fail every batch of `lake` still recorded as running. Call only while
    holding the lake's lock, so that none of them can still be at work. Returns them."""
    interrupted = metadata.running_batches(lake=lake)
    log = structlog.get_logger()
    for record in reversed(interrupted):  # newest first: its commits are the latest
        try:
            undone = store.rollback(record.batch_id)
        except Exception as failure:
            log.error("batch_recovery_failed", batch_id=record.batch_id, error=f"{type(failure).__name__}: {failure}")
            raise TableStoreError(
                f"batch {record.batch_id} was interrupted and its commits could not be rolled back: {failure}. "
                "It stays recorded as running, and the next run tries again; nothing else is written until then."
            ) from failure
        who = "its run"
        if stale is not None and stale.batch_id == record.batch_id:
            who = f"its run (process {stale.pid} on {stale.host})"
        restored = (
            "; rolled back " + ", ".join(f"{table} to {_version(v)}" for table, v in sorted(undone.items()))
            if undone
            else "; it had committed nothing"
        )
        error = f"interrupted: {who} ended before the batch finished{restored}. Run the batch again."
        metadata.fail_running(batch_id=record.batch_id, finished_at=datetime.now(UTC), error=error)
        log.warning("batch_recovered", batch_id=record.batch_id, rolled_back=undone)
        if progress is not None:
            progress("recover", f"batch {record.batch_id} was interrupted{restored}; marked failed")
    return interrupted


def _version(version: int | None) -> str:
    return "nothing (it created the table)" if version is None else f"version {version}"
