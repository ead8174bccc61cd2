"""Pipeline metrics for Prometheus, from totals the metadata database aggregates (never from batch rows).

Each scrape asks the metadata store for its `MetricTotals` once (a few GROUP BY queries, however
many batches there are) and renders them with prometheus_client on a registry of its own:

- `energy_platform_runs_total{source,kind,status}`: finished batches (succeeded, failed, skipped);
- `energy_platform_batches_running`: batches recorded as running now (a gauge);
- `energy_platform_records_processed_total{source}`, `energy_platform_records_quarantined_total{source}`,
  `energy_platform_rows_estimated_total{source}`: rows read, quarantined and estimated by succeeded batches;
- `energy_platform_batch_duration_seconds_sum{source}` and `_count{source}`: start-to-finish time of
  succeeded batches (a summary without quantiles: a pair of counters);
- `energy_platform_last_success_timestamp_seconds{source}`: when the source's last succeeded batch finished;
- `energy_platform_last_failure_timestamp_seconds{source}`: when the source's last failed batch finished;
- `energy_platform_last_batch_quarantine_ratio{source}`: rows quarantined / rows read of the source's
  last succeeded batch that read any rows (0 to 1);
- `energy_platform_layer_records_in_total{source,layer}`, `energy_platform_layer_records_out_total{source,layer}`:
  rows into and out of each layer (bronze, silver, gold) of succeeded batches;
- `energy_platform_layer_duration_seconds_sum{source,layer}` and `_count{source,layer}`: time in each
  layer of succeeded batches (a summary without quantiles).

Every counter only grows as batches finish: running batches are counted by the gauge alone.

Given the lake's side (`newest_intervals`, the service's lake reader), the freshness of silver:

- `energy_platform_silver_freshness_seconds{source}`: seconds from the end of the source's newest
  interval in silver to now (negative while that interval has not ended); no series for a source
  with no rows in silver. Worked out from the Delta log's file statistics once per silver version.

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

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import get_args

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from app.application.ports import MetadataStore
from app.domain.batches import BatchStatus, Layer, MetricTotals, ShownStreamState, StreamRecord

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: The statuses a batch can end with; each (source, kind) gets a series of each, 0 until one ends so.
FINISHED_STATUSES: tuple[BatchStatus, ...] = tuple(s for s in get_args(BatchStatus) if s != "running")
#: The states a stream shows; each stream gets a series of each, 1 for its own.
STREAM_STATES: tuple[ShownStreamState, ...] = get_args(ShownStreamState)
#: The layers in pipeline order, for the order of their series.
LAYERS: tuple[Layer, ...] = get_args(Layer)

#: Sources -> the end of each one's newest interval in silver (those with rows there).
NewestIntervals = Callable[[list[str]], Mapping[str, datetime]]


class MetadataCollector(Collector):
    """Metric families of one `metric_totals()` call on the metadata store, and of silver's newest
    interval per source when `newest_intervals` is given."""

    def __init__(
        self,
        metadata: MetadataStore,
        newest_intervals: NewestIntervals | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._metadata = metadata
        self._newest_intervals = newest_intervals
        self._now = now or (lambda: datetime.now(UTC))

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

        yield from batch_outcome_metrics(totals)
        yield from layer_metrics(totals)

        now = self._now()
        if self._newest_intervals is not None:
            yield from self._freshness(sources, now)

        streams = self._metadata.streams()
        if streams:
            yield from stream_metrics(streams, now)

    def _freshness(self, sources: list[str], now: datetime) -> Iterator[Metric]:
        assert self._newest_intervals is not None
        try:
            ends = self._newest_intervals(sources)
        except Exception as error:  # a scrape without freshness beats a failed scrape
            structlog.get_logger().warning("silver_freshness_unavailable", error=f"{type(error).__name__}: {error}")
            return
        freshness = GaugeMetricFamily(
            "energy_platform_silver_freshness_seconds",
            "Seconds from the end of the source's newest interval in silver to now.",
            labels=["source"],
        )
        for source, end in sorted(ends.items()):
            freshness.add_metric([source], (now - end).total_seconds())
        yield freshness


def batch_outcome_metrics(totals: MetricTotals) -> Iterator[Metric]:
    """Per source: when its last batch failed, and the quarantine share of its last succeeded one."""
    last_failure = GaugeMetricFamily(
        "energy_platform_last_failure_timestamp_seconds",
        "Finish time of the last failed batch, by source (Unix seconds).",
        labels=["source"],
    )
    for source, finished_at in sorted(totals.last_failure.items()):
        last_failure.add_metric([source], finished_at.timestamp())
    yield last_failure

    ratio = GaugeMetricFamily(
        "energy_platform_last_batch_quarantine_ratio",
        "Rows quarantined / rows read of the last succeeded batch that read rows, by source (0 to 1).",
        labels=["source"],
    )
    for source, share in sorted(totals.last_quarantine_ratio.items()):
        ratio.add_metric([source], share)
    yield ratio


def layer_metrics(totals: MetricTotals) -> Iterator[Metric]:
    """Per source and layer: rows in and out, and time spent, summed over succeeded batches."""
    keys = sorted(totals.layer_count, key=lambda key: (key[0], LAYERS.index(key[1])))
    for name, documentation, values in (
        (
            "energy_platform_layer_records_in",
            "Rows into a layer (bronze, silver, gold) of succeeded batches, by source and layer.",
            totals.layer_records_in,
        ),
        (
            "energy_platform_layer_records_out",
            "Rows out of a layer (bronze, silver, gold) of succeeded batches, by source and layer.",
            totals.layer_records_out,
        ),
    ):
        counter = CounterMetricFamily(name, documentation, labels=["source", "layer"])
        for key in keys:
            counter.add_metric(list(key), values.get(key, 0))
        yield counter
    duration = SummaryMetricFamily(
        "energy_platform_layer_duration_seconds",
        "Seconds succeeded batches spent in a layer, by source and layer.",
        labels=["source", "layer"],
    )
    for key in keys:
        duration.add_metric(
            list(key), count_value=totals.layer_count[key], sum_value=totals.layer_duration_seconds.get(key, 0.0)
        )
    yield duration


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


def render(
    metadata: MetadataStore,
    newest_intervals: NewestIntervals | None = None,
    now: Callable[[], datetime] | None = None,
) -> bytes:
    """The metrics in Prometheus' text format (`CONTENT_TYPE`), from one round of totals (and, with
    `newest_intervals`, silver's freshness as of `now`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetadataCollector(metadata, newest_intervals, now))
    return generate_latest(registry)
