"""Pipeline metrics in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from app.domain.batches import BatchRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUSES = ("running", "succeeded", "failed", "skipped")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(batches: Iterable[BatchRecord]) -> str:
    """Runs by status, records processed and quarantined, last successful run time per source."""
    by_status: Counter[str] = Counter()
    processed = quarantined = 0
    last_success: dict[str, float] = {}
    for batch in batches:
        by_status[batch.status] += 1
        processed += batch.record_count
        if batch.reconciliation is not None:
            quarantined += batch.reconciliation.rows_quarantined
        if batch.status == "succeeded" and batch.finished_at is not None:
            at = batch.finished_at.timestamp()
            last_success[batch.source] = max(at, last_success.get(batch.source, at))
    lines = [
        "# HELP energy_platform_runs_total Batch runs recorded in the metadata store, by status.",
        "# TYPE energy_platform_runs_total counter",
        *(f'energy_platform_runs_total{{status="{s}"}} {by_status.get(s, 0)}' for s in STATUSES),
        "# HELP energy_platform_records_processed_total Rows read by recorded batch runs.",
        "# TYPE energy_platform_records_processed_total counter",
        f"energy_platform_records_processed_total {processed}",
        "# HELP energy_platform_records_quarantined_total Rows moved to quarantine by recorded batch runs.",
        "# TYPE energy_platform_records_quarantined_total counter",
        f"energy_platform_records_quarantined_total {quarantined}",
        "# HELP energy_platform_last_success_timestamp_seconds Finish time of the last successful run, per source.",
        "# TYPE energy_platform_last_success_timestamp_seconds gauge",
        *(
            f'energy_platform_last_success_timestamp_seconds{{source="{_label(src)}"}} {at:.3f}'
            for src, at in sorted(last_success.items())
        ),
    ]
    return "\n".join(lines) + "\n"
