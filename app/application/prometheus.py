"""Pipeline metrics for Prometheus, from totals the metadata database aggregates (never from batch rows).

Each scrape asks the metadata store for its `MetricTotals` once (a few GROUP BY queries, however
many batches there are) and renders them with prometheus_client on a registry of its own:

- `energy_platform_runs_total{source,kind,status}`: finished batches (succeeded, failed, skipped);
- `energy_platform_batches_running`: batches recorded as running now (a gauge);
- `energy_platform_records_processed_total{source}`, `energy_platform_records_quarantined_total{source}`,
  `energy_platform_rows_estimated_total{source}`: rows read, quarantined and estimated by succeeded batches;
- `energy_platform_batch_duration_seconds_sum{source}` and `_count{source}`: start-to-finish time of
  succeeded batches (a summary without quantiles: a pair of counters);
- `energy_platform_last_success_timestamp_seconds{source}`: when the source's last succeeded batch finished.

Every counter only grows as batches finish: running batches are counted by the gauge alone.

Streams (run in other processes) are read from the records they keep in the metadata store, the
latest run of each source's stream; there are no stream families until a stream has run:

- `energy_platform_stream_up{source}`: 1 while the stream runs and its heartbeat is fresh, else 0;
- `energy_platform_stream_state{source,state}`: 1 for its state (running, stale, stopped, failed), 0 for the others;
- `energy_platform_stream_heartbeat_timestamp_seconds{source}`: its last heartbeat;
- `energy_platform_stream_consumer_lag_messages{source,partition}`: a topic's consumer lag, as last measured;
- `energy_platform_stream_last_micro_batch_duration_seconds{source}`,
  `energy_platform_stream_last_readings_per_second{source}`,
  `energy_platform_stream_last_event_to_silver_latency_seconds{source}`: of its last micro-batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import get_args

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from app.application.ports import MetadataStore
from app.domain.batches import BatchStatus, ShownStreamState, StreamRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: The statuses a batch can end with; each (source, kind) gets a series of each, 0 until one ends so.
FINISHED_STATUSES: tuple[BatchStatus, ...] = tuple(s for s in get_args(BatchStatus) if s != "running")
#: The states a stream shows; each stream gets a series of each, 1 for its own.
STREAM_STATES: tuple[ShownStreamState, ...] = get_args(ShownStreamState)


class MetadataCollector(Collector):
    """Metric families of one `metric_totals()` call on the metadata store."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._metadata = metadata

    def describe(self) -> list[Metric]:
        # Registering must not query the database; the families are known only when collected.
        return []

    def collect(self) -> Iterator[Metric]:
        totals = self._metadata.metric_totals()
        sources = totals.sources

        runs = CounterMetricFamily(
            "energy_platform_runs_total",
            "Batch runs that ended, by source, kind (ingest or replay) and status.",
            labels=["source", "kind", "status"],
        )
        for source, kind in sorted({(source, kind) for source, kind, _ in totals.runs}):
            for status in FINISHED_STATUSES:
                runs.add_metric([source, kind, status], totals.runs.get((source, kind, status), 0))
        yield runs

        yield GaugeMetricFamily(
            "energy_platform_batches_running",
            "Batches recorded as running now.",
            value=totals.running,
        )

        for name, documentation, values in (
            (
                "energy_platform_records_processed_total",
                "Rows read by succeeded batches, by source.",
                totals.records_processed,
            ),
            (
                "energy_platform_records_quarantined_total",
                "Rows moved to quarantine by succeeded batches, by source.",
                totals.records_quarantined,
            ),
            (
                "energy_platform_rows_estimated_total",
                "Missing intervals estimated by succeeded batches, by source.",
                totals.rows_estimated,
            ),
        ):
            counter = CounterMetricFamily(name, documentation, labels=["source"])
            for source in sources:
                counter.add_metric([source], values.get(source, 0))
            yield counter

        duration = SummaryMetricFamily(
            "energy_platform_batch_duration_seconds",
            "Seconds from start to finish of succeeded batches, by source.",
            labels=["source"],
        )
        for source in sources:
            duration.add_metric(
                [source],
                count_value=totals.duration_count.get(source, 0),
                sum_value=totals.duration_seconds.get(source, 0.0),
            )
        yield duration

        last_success = GaugeMetricFamily(
            "energy_platform_last_success_timestamp_seconds",
            "Finish time of the last succeeded batch, by source (Unix seconds).",
            labels=["source"],
        )
        for source, finished_at in sorted(totals.last_success.items()):
            last_success.add_metric([source], finished_at.timestamp())
        yield last_success

        streams = self._metadata.streams()
        if streams:
            yield from stream_metrics(streams, datetime.now(UTC))


def stream_metrics(streams: list[StreamRecord], now: datetime) -> Iterator[Metric]:
    """The stream families, from the latest run of each source's stream as of `now`."""
    up = GaugeMetricFamily(
        "energy_platform_stream_up",
        "1 while the source's stream runs and its heartbeat is fresh, else 0.",
        labels=["source"],
    )
    state = GaugeMetricFamily(
        "energy_platform_stream_state",
        "The state of the source's latest stream run: 1 for its state (running, stale, stopped, failed).",
        labels=["source", "state"],
    )
    heartbeat = GaugeMetricFamily(
        "energy_platform_stream_heartbeat_timestamp_seconds",
        "The last heartbeat of the source's stream (Unix seconds).",
        labels=["source"],
    )
    lag = GaugeMetricFamily(
        "energy_platform_stream_consumer_lag_messages",
        "Messages of a topic's partition not yet taken by the source's stream, as last measured.",
        labels=["source", "partition"],
    )
    lasts = [
        (
            GaugeMetricFamily(
                "energy_platform_stream_last_micro_batch_duration_seconds",
                "Seconds the last micro-batch of the source's stream took.",
                labels=["source"],
            ),
            "last_duration_seconds",
        ),
        (
            GaugeMetricFamily(
                "energy_platform_stream_last_readings_per_second",
                "Readings per second of the last succeeded micro-batch of the source's stream.",
                labels=["source"],
            ),
            "last_readings_per_second",
        ),
        (
            GaugeMetricFamily(
                "energy_platform_stream_last_event_to_silver_latency_seconds",
                "Seconds from the oldest event of the last succeeded micro-batch (a message's timestamp, "
                "a file's modification time) to its rows in silver.",
                labels=["source"],
            ),
            "last_latency_seconds",
        ),
    ]
    for record in streams:
        shown = record.shown_state(now)
        up.add_metric([record.source], 1.0 if shown == "running" else 0.0)
        for name in STREAM_STATES:
            state.add_metric([record.source, name], 1.0 if shown == name else 0.0)
        heartbeat.add_metric([record.source], record.heartbeat_at.timestamp())
        for partition, behind in sorted(record.lag.items(), key=lambda item: int(item[0])):
            lag.add_metric([record.source, partition], behind)
        for family, attribute in lasts:
            value = getattr(record, attribute)
            if value is not None:
                family.add_metric([record.source], value)
    yield from (up, state, heartbeat, lag)
    yield from (family for family, _ in lasts)


def render(metadata: MetadataStore) -> bytes:
    """The metrics in Prometheus' text format (`CONTENT_TYPE`), from one round of totals."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetadataCollector(metadata))
    return generate_latest(registry)
