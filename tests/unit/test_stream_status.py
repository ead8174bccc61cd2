"""A stream's recorded state: its transitions (running -> stopped or failed), its heartbeat and last
micro-batch's figures, the stale rule, and the stream families of /metrics; against in-memory fakes."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.application import prometheus
from app.application.pipeline import BatchResult
from app.application.streaming import (
    HEARTBEAT_MIN_SECONDS,
    IN_BATCH_HEARTBEAT_SECONDS,
    LAG_RETRY_SECONDS,
    StreamMonitor,
    StreamStoppedError,
    monitored,
)
from app.domain.batches import MetricTotals, Reconciliation, StreamRecord
from app.domain.errors import MetadataStoreError, PlatformError

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _record(*, state: str = "running", trigger: float = 10.0, heartbeat_age: float = 0.0) -> StreamRecord:
    return StreamRecord(
        run_id="run-1",
        source="feed",
        state=state,  # type: ignore[arg-type]
        host="host-a",
        pid=42,
        trigger_seconds=trigger,
        started_at=T0 - timedelta(hours=1),
        heartbeat_at=T0 - timedelta(seconds=heartbeat_age),
    )


# --- the stale rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "age", "shown"),
    [
        (10.0, 0.0, "running"),
        (10.0, 59.0, "running"),
        (10.0, 60.0, "running"),  # max(3 x 10 s, 60 s) = 60 s: not older than that yet
        (10.0, 60.5, "stale"),
        (0.0, 61.0, "stale"),  # a trigger of 0 still gets the 60 s floor
        (30.0, 89.0, "running"),  # 3 x 30 s = 90 s
        (30.0, 91.0, "stale"),
        (120.0, 300.0, "running"),
        (120.0, 361.0, "stale"),
    ],
)
def test_a_running_stream_is_stale_once_its_heartbeat_is_older_than_three_triggers_or_a_minute(
    trigger: float, age: float, shown: str
) -> None:
    record = _record(trigger=trigger, heartbeat_age=age)
    assert record.stale_after_seconds == max(3 * trigger, 60.0)
    assert record.shown_state(T0) == shown


@pytest.mark.parametrize("state", ["stopped", "failed"])
def test_a_stream_that_ended_never_shows_as_stale(state: str) -> None:
    assert _record(state=state, heartbeat_age=86_400).shown_state(T0) == state


def test_total_lag_is_none_until_lag_is_measured() -> None:
    record = _record()
    assert record.total_lag is None
    record.lag = {"0": 3, "1": 4}
    assert record.total_lag == 7


# --- the monitor's writes ------------------------------------------------------------------------


@dataclass
class FakeMetadata:
    """Keeps a copy of every stream record written; refuses writes while `down`."""

    writes: list[StreamRecord] = field(default_factory=list)
    down: bool = False

    def record_stream(self, record: StreamRecord) -> None:
        if self.down:
            raise MetadataStoreError("the metadata database is down")
        self.writes.append(copy.deepcopy(record))


class Clocks:
    """A wall clock and a monotonic clock that move together, by hand."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds)

    def monotonic(self) -> float:
        return self.seconds


@dataclass
class FakeTopic:
    lags: list[dict[int, int] | Exception]
    asked: int = 0

    def lag(self) -> dict[int, int]:
        self.asked += 1
        answer = self.lags[min(self.asked, len(self.lags)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _monitor(metadata: FakeMetadata, clocks: Clocks, trigger: float = 10.0) -> StreamMonitor:
    return StreamMonitor(
        metadata,  # type: ignore[arg-type]
        "feed",
        trigger_seconds=trigger,
        lake="/lake",
        clock=clocks.wall,
        monotonic=clocks.monotonic,
    )


def _result(
    status: str = "succeeded", rows: int = 100, seconds: float = 2.0, batch_id: str | None = "b1"
) -> BatchResult:
    reconciliation = Reconciliation(rows, rows, 0, 0) if status != "skipped" else None
    return BatchResult(
        batch_id=batch_id, source="feed", status=status, reconciliation=reconciliation, duration_seconds=seconds
    )


def test_a_stream_is_recorded_running_then_stopped() -> None:
    metadata, clocks = FakeMetadata(), Clocks()
    monitor = _monitor(metadata, clocks)
    with monitored(monitor):
        clocks.seconds = 5
    first, last = metadata.writes
    assert first.state == "running" and first.stopped_at is None and first.heartbeat_at == T0
    assert first.started_at == T0 and first.host and first.pid > 0 and first.lake == "/lake"
    assert last.state == "stopped" and last.error is None
    assert last.stopped_at == last.heartbeat_at == T0 + timedelta(seconds=5)
    assert last.run_id == first.run_id


def test_a_stream_stopped_error_records_failed_with_the_error_and_goes_on() -> None:
    metadata, clocks = FakeMetadata(), Clocks()
    with pytest.raises(StreamStoppedError), monitored(_monitor(metadata, clocks)):
        raise StreamStoppedError("micro-batch b9 of source 'feed' failed, so the stream stops")
    assert metadata.writes[-1].state == "failed"
    assert metadata.writes[-1].error == "micro-batch b9 of source 'feed' failed, so the stream stops"
    assert metadata.writes[-1].stopped_at is not None


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_any_other_end_by_an_error_records_failed_naming_its_type(error: BaseException) -> None:
    metadata = FakeMetadata()
    with pytest.raises(type(error)), monitored(_monitor(metadata, Clocks())):
        raise error
    assert metadata.writes[-1].state == "failed"
    assert metadata.writes[-1].error is not None and metadata.writes[-1].error.startswith(type(error).__name__)


def test_a_micro_batch_updates_counts_rate_and_latency_written_with_the_next_heartbeat() -> None:
    metadata, clocks = FakeMetadata(), Clocks()
    monitor = _monitor(metadata, clocks)
    monitor.start()
    clocks.seconds = 40
    monitor.took(_result(rows=100, seconds=2.0), oldest_event=T0 + timedelta(seconds=10))
    assert len(metadata.writes) == 1  # kept until the heartbeat after the commit
    monitor.beat()
    record = metadata.writes[-1]
    assert (record.micro_batches, record.readings, record.last_batch_id) == (1, 100, "b1")
    assert record.last_duration_seconds == 2.0 and record.last_readings_per_second == 50.0
    assert record.last_latency_seconds == 30.0  # now (40 s) minus the oldest event (10 s)
    assert record.heartbeat_at == T0 + timedelta(seconds=40)

    monitor.took(_result(status="failed", rows=7, seconds=1.0, batch_id="b2"))
    monitor.beat()
    record = metadata.writes[-1]
    assert (record.micro_batches, record.readings, record.last_batch_id) == (2, 100, "b2")  # failed: no readings
    assert record.last_readings_per_second is None and record.last_latency_seconds is None

    monitor.took(_result(status="skipped", batch_id=None))  # nothing new: no micro-batch ran
    monitor.took(_result(rows=10, seconds=0.0, batch_id="b3"))  # no event time, no duration
    monitor.beat()
    record = metadata.writes[-1]
    assert (record.micro_batches, record.readings) == (3, 110)
    assert record.last_readings_per_second is None and record.last_latency_seconds is None


def test_a_latency_is_never_negative() -> None:
    metadata, clocks = FakeMetadata(), Clocks()
    monitor = _monitor(metadata, clocks)
    monitor.took(_result(), oldest_event=T0 + timedelta(seconds=5))  # a producer's clock ahead of ours
    assert monitor.record.last_latency_seconds == 0.0


def test_idle_heartbeats_are_written_at_most_every_heartbeat_min_seconds() -> None:
    metadata, clocks = FakeMetadata(), Clocks()
    monitor = _monitor(metadata, clocks, trigger=0.0)
    monitor.start()
    for step in range(1, 31):  # a trigger of 0: idle triggers every 0.1 s for 3 s
        clocks.seconds = step / 10
        monitor.idle()
    beats = [w.heartbeat_at for w in metadata.writes[1:]]
    assert len(beats) == 3
    gaps = [(b - a).total_seconds() for a, b in zip([T0, *beats], beats, strict=False)]
    assert all(gap >= HEARTBEAT_MIN_SECONDS for gap in gaps)
    monitor.beat()  # after a micro-batch: always
    assert len(metadata.writes) == 5


def test_a_long_micro_batch_beats_between_its_layers_and_still_reports_progress() -> None:
    metadata, clocks = FakeMetadata(), Clocks()
    monitor = _monitor(metadata, clocks)
    monitor.start()
    shown: list[tuple[str, str]] = []
    progress = monitor.progress(lambda layer, message: shown.append((layer, message)))
    for seconds, layer in ((3, "bronze"), (IN_BATCH_HEARTBEAT_SECONDS + 1, "silver"), (12, "gold")):
        clocks.seconds = seconds
        progress(layer, "done")
    assert [layer for layer, _ in shown] == ["bronze", "silver", "gold"]
    assert [w.heartbeat_at for w in metadata.writes] == [T0, T0 + timedelta(seconds=IN_BATCH_HEARTBEAT_SECONDS + 1)]
    monitor.progress(None)("gold", "no progress callback")  # beats, prints nothing


def test_lag_is_measured_per_partition_and_a_failed_request_is_not_repeated_at_once() -> None:
    metadata, clocks = FakeMetadata(), Clocks()
    monitor = _monitor(metadata, clocks)
    topic = FakeTopic([{1: 5, 0: 2}, PlatformError("no Kafka broker answered"), {0: 0, 1: 1}])
    monitor.beat(topic=topic)  # type: ignore[arg-type]
    assert metadata.writes[-1].lag == {"0": 2, "1": 5} and metadata.writes[-1].total_lag == 7

    clocks.seconds = 10
    monitor.beat(topic=topic)  # type: ignore[arg-type]
    assert topic.asked == 2 and metadata.writes[-1].lag == {"0": 2, "1": 5}  # the last known lag is kept
    clocks.seconds = 10 + LAG_RETRY_SECONDS / 2
    monitor.beat(topic=topic)  # type: ignore[arg-type]
    assert topic.asked == 2  # not asked again so soon: a broker out of reach takes its whole timeout
    clocks.seconds = 11 + LAG_RETRY_SECONDS
    monitor.beat(topic=topic)  # type: ignore[arg-type]
    assert topic.asked == 3 and metadata.writes[-1].lag == {"0": 0, "1": 1}
    assert len(metadata.writes) == 4  # every beat wrote its heartbeat, lag or not


def test_a_metadata_store_that_refuses_a_write_does_not_stop_the_stream() -> None:
    metadata, clocks = FakeMetadata(down=True), Clocks()
    monitor = _monitor(metadata, clocks)
    with monitored(monitor):
        monitor.took(_result())
        monitor.beat()
        metadata.down = False
        clocks.seconds = 2
        monitor.idle()
    assert [w.state for w in metadata.writes] == ["running", "stopped"]
    assert metadata.writes[0].micro_batches == 1


# --- /metrics' stream families -------------------------------------------------------------------


@dataclass
class StoreWithStreams:
    records: list[StreamRecord]

    def metric_totals(self) -> MetricTotals:
        return MetricTotals()

    def streams(self) -> list[StreamRecord]:
        return self.records


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for s in family.samples
    }


def test_no_stream_families_until_a_stream_has_run() -> None:
    body = prometheus.render(StoreWithStreams([]))  # type: ignore[arg-type]
    assert b"energy_platform_stream" not in body


def test_stream_families_show_up_state_lag_and_the_last_micro_batch() -> None:
    now = datetime.now(UTC)
    running = _record()
    running.source, running.heartbeat_at = "feed", now
    running.lag = {"10": 4, "2": 0}
    running.last_duration_seconds, running.last_readings_per_second, running.last_latency_seconds = 1.5, 200.0, 3.25
    stale = _record()
    stale.source, stale.heartbeat_at = "files", now - timedelta(minutes=5)
    failed = _record(state="failed")
    failed.source = "broken"

    samples = _samples(prometheus.render(StoreWithStreams([failed, stale, running])))  # type: ignore[arg-type]

    up = {labels[0][1]: v for (name, labels), v in samples.items() if name == "energy_platform_stream_up"}
    assert up == {"feed": 1.0, "files": 0.0, "broken": 0.0}
    states = {
        dict(labels)["source"]: dict(labels)["state"]
        for (name, labels), v in samples.items()
        if name == "energy_platform_stream_state" and v == 1.0
    }
    assert states == {"feed": "running", "files": "stale", "broken": "failed"}
    assert sum(1 for name, _ in samples if name == "energy_platform_stream_state") == 3 * 4
    lag = {
        dict(labels)["partition"]: v
        for (name, labels), v in samples.items()
        if name == "energy_platform_stream_consumer_lag_messages"
    }
    assert lag == {"2": 0.0, "10": 4.0}
    feed = (("source", "feed"),)
    assert samples[("energy_platform_stream_last_micro_batch_duration_seconds", feed)] == 1.5
    assert samples[("energy_platform_stream_last_readings_per_second", feed)] == 200.0
    assert samples[("energy_platform_stream_last_event_to_silver_latency_seconds", feed)] == 3.25
    assert samples[("energy_platform_stream_heartbeat_timestamp_seconds", feed)] == pytest.approx(now.timestamp())
    # A stream without a micro-batch yet has no last-micro-batch series.
    assert ("energy_platform_stream_last_readings_per_second", (("source", "files"),)) not in samples
