"""Streaming mode: a source read continuously, in micro-batches, through the same stages as a batch.

A folder source's landing folder is polled every trigger interval; each new file (by the
checksum manifest: a file a succeeded batch took is never taken again) is taken once, in
arrival order (modification time, then name), as a micro-batch of kind `stream`. Each
micro-batch holds the lake's lock while it writes, so batch runs and replays interleave with
it, and recovers a killed one's commits first, like a batch run.

A running stream records its state in the metadata store (`StreamMonitor`): running, a
heartbeat after every micro-batch and idle trigger with its last micro-batch's figures and a
topic's consumer lag, then stopped or failed; /health and /metrics read it from there.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import cast

import narwhals as nw
import structlog

from app.application.audit import StreamAudit
from app.application.lake_ops import SAFE_RETENTION_HOURS
from app.application.pipeline import BatchPipeline, BatchResult, Progress, new_batch_id
from app.application.ports import Message, MetadataStore, Platform, TopicReader
from app.application.recovery import recover_interrupted
from app.application.row_sources import MessageRows
from app.application.runner import pipeline_under_lock
from app.domain.batches import StreamRecord, StreamState
from app.domain.errors import ConfigurationError, InputFileError, NotAvailableError, PlatformError
from app.domain.schemas import SILVER_READINGS
from app.domain.sources import SourceConfig

#: Files one micro-batch takes at most, by default.
MAX_FILES_PER_TRIGGER = 100
#: Messages one micro-batch of a topic takes at most, by default.
MAX_MESSAGES_PER_TRIGGER = 200_000
#: How long an `--available-now` run of a topic waits for more messages before it ends.
DRAINED_SECONDS = 2.0
#: Succeeded micro-batches between compactions of the tables a stream writes, by default.
COMPACT_EVERY = 20
#: An idle trigger writes the stream's heartbeat unless one was written less than this long ago
#: (a trigger of 0 polls without a pause).
HEARTBEAT_MIN_SECONDS = 1.0
#: Between the layers of a long micro-batch, a heartbeat when the last is older than this.
IN_BATCH_HEARTBEAT_SECONDS = 10.0
#: After a lag request failed (a broker out of reach answers nothing for its whole timeout), the
#: next is made no sooner than this.
LAG_RETRY_SECONDS = 30.0


class StreamStoppedError(PlatformError):
    """A topic's micro-batch failed: the stream stops rather than go past data it could not store."""


@dataclass
class StreamSummary:
    """What a stream did until it stopped."""

    source: str
    micro_batches: list[BatchResult] = field(default_factory=list)
    #: Files a micro-batch failed on: not taken again by this stream (they are, after a restart).
    failed_files: list[str] = field(default_factory=list)
    #: Per compaction, each table's data files before and after.
    compactions: list[dict[str, tuple[int, int]]] = field(default_factory=list)

    @property
    def readings(self) -> int:
        return sum(r.reconciliation.rows_read for r in self.micro_batches if r.reconciliation)

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.micro_batches)


class LandingFolder:
    """The new files of a folder source, in arrival order. Checksums are kept per (path, size,
    modification time), so a poll reads only files that are new or changed since the last."""

    def __init__(self, platform: Platform, source: SourceConfig, pattern: str) -> None:
        self.platform = platform
        self.source = source
        self.pattern = pattern
        self._checksums: dict[tuple[str, int, int], str] = {}
        self.skipped: set[str] = set()

    def new_files(self) -> list[Path]:
        reader = self.platform.reader
        try:
            paths = reader.resolve_inputs(self.pattern, self.source.format)
        except InputFileError as error:
            if "no such file or folder" in error.message:
                raise
            return []  # an empty landing folder, or a glob nothing matches yet
        stats = {}
        for path in paths:
            if path.name.startswith("."):  # a file still being written, by the usual convention
                continue
            stat = path.stat()
            key = (str(path), stat.st_size, stat.st_mtime_ns)
            if key not in self._checksums:
                self._checksums[key] = reader.sha256_of(path)
            stats[path] = (stat.st_mtime_ns, key)
        checksums = {path: self._checksums[key] for path, (_, key) in stats.items()}
        taken = self.platform.metadata.successful_checksums(sorted(set(checksums.values())))
        new = [p for p, sha in checksums.items() if sha not in taken and str(p) not in self.skipped]
        return sorted(new, key=lambda p: (stats[p][0], str(p)))


class StreamMonitor:
    """A stream run's record in the metadata store, for /health and /metrics: `running` when it
    starts; a heartbeat with the last micro-batch's figures after every micro-batch, on idle
    triggers (at most every HEARTBEAT_MIN_SECONDS) and between the layers of a long micro-batch;
    `stopped` or `failed` when it ends. Writing it is best effort: a write the metadata store
    refuses is logged and the stream goes on (its micro-batches need the store anyway)."""

    def __init__(
        self,
        metadata: MetadataStore,
        source: str,
        *,
        trigger_seconds: float,
        lake: str | None = None,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        audit: StreamAudit | None = None,
    ) -> None:
        self.metadata = metadata
        #: Writes `stream start` and `stream stop` to the audit trail (None: nothing)
        self.audit = audit
        #: The wall clock of heartbeats and latencies (never a stream's `now`, which tests pin).
        self.clock = clock or (lambda: datetime.now(UTC))
        self.monotonic = monotonic
        started = self.clock()
        self.record = StreamRecord(
            run_id=new_batch_id(started),
            source=source,
            state="running",
            host=socket.gethostname(),
            pid=os.getpid(),
            trigger_seconds=trigger_seconds,
            started_at=started,
            heartbeat_at=started,
            lake=lake,
        )
        self.log = structlog.get_logger().bind(source=source, stream_run=self.record.run_id)
        self._written = -math.inf
        self._lag_failed = -math.inf

    def start(self) -> None:
        self._write()
        if self.audit is not None:
            self.audit.started(self.record.run_id)

    def took(self, result: BatchResult, *, oldest_event: datetime | None = None) -> None:
        """Keep a micro-batch's figures, as it ends (written by the next heartbeat): its duration,
        readings per second, and the seconds from `oldest_event` (its oldest message's timestamp,
        its oldest file's modification time) to now, when its rows are in silver."""
        if result.batch_id is None:  # nothing was new: no micro-batch ran
            return
        record = self.record
        record.micro_batches += 1
        record.last_batch_id = result.batch_id
        record.last_duration_seconds = result.duration_seconds
        record.last_readings_per_second = record.last_latency_seconds = None
        if result.status == "failed":
            return
        read = result.reconciliation.rows_read if result.reconciliation else 0
        record.readings += read
        if result.duration_seconds > 0:
            record.last_readings_per_second = read / result.duration_seconds
        if oldest_event is not None:
            record.last_latency_seconds = max(0.0, (self.clock() - oldest_event).total_seconds())

    def beat(self, *, topic: TopicReader | None = None, min_seconds: float = 0.0) -> None:
        """Write the heartbeat (with `topic`'s lag measured first), unless one was written less
        than `min_seconds` ago."""
        if self.monotonic() - self._written < min_seconds:
            return
        if topic is not None:
            self.measure_lag(topic)
        self._write()

    def idle(self, topic: TopicReader | None = None) -> None:
        """An idle trigger: a heartbeat, at most every HEARTBEAT_MIN_SECONDS."""
        self.beat(topic=topic, min_seconds=HEARTBEAT_MIN_SECONDS)

    def progress(self, progress: Progress | None) -> Progress:
        """`progress`, with a heartbeat between the layers of a long micro-batch."""

        def reported(layer: str, message: str) -> None:
            self.beat(min_seconds=IN_BATCH_HEARTBEAT_SECONDS)
            if progress is not None:
                progress(layer, message)

        return reported

    def measure_lag(self, topic: TopicReader) -> None:
        """The topic's consumer lag per partition, kept for the next write. Monitoring only: a
        failed request is logged (the last lag is kept) and not made again for LAG_RETRY_SECONDS."""
        if self.monotonic() - self._lag_failed < LAG_RETRY_SECONDS:
            return
        try:
            lag = topic.lag()
        except Exception as error:  # a broker out of reach must not stop the stream
            self._lag_failed = self.monotonic()
            self.log.warning("stream_lag_unknown", error=f"{type(error).__name__}: {error}")
            return
        self.record.lag = {str(partition): int(behind) for partition, behind in sorted(lag.items())}

    def stopped(self) -> None:
        self._end("stopped")

    def failed(self, error: BaseException) -> None:
        message = str(error) if isinstance(error, PlatformError) else f"{type(error).__name__}: {error}"
        self._end("failed", message)

    def _end(self, state: StreamState, error: str | None = None) -> None:
        record = self.record
        record.state = state
        record.error = error
        record.stopped_at = self.clock()
        self._write(record.stopped_at)
        if self.audit is not None:
            self.audit.stopped(record)

    def _write(self, now: datetime | None = None) -> None:
        self.record.heartbeat_at = now or self.clock()
        self._written = self.monotonic()
        try:
            self.metadata.record_stream(self.record)
        except Exception as error:  # monitoring: never the reason a stream stops, nor hides why it did
            self.log.warning(
                "stream_state_not_recorded", state=self.record.state, error=f"{type(error).__name__}: {error}"
            )


@contextmanager
def monitored(monitor: StreamMonitor) -> Iterator[StreamMonitor]:
    """Record the stream as running, then as stopped when the block ends, or failed (with the
    error, which goes on) when it raises."""
    monitor.start()
    try:
        yield monitor
    except BaseException as error:
        monitor.failed(error)
        raise
    monitor.stopped()


def _check_options(
    platform: Platform, *, trigger_seconds: float, max_files: int, max_messages: int, compact_every: int
) -> None:
    if compact_every < 0:
        raise ConfigurationError("--compact-every must be 0 (never) or more micro-batches")
    if trigger_seconds < 0:
        raise ConfigurationError("--trigger must be 0 or more seconds")
    if max_files < 1:
        raise ConfigurationError("--max-files must be at least 1")
    if max_messages < 1:
        raise ConfigurationError("--max-messages must be at least 1")
    if platform.execution_mode not in ("local", "databricks"):
        raise NotAvailableError(
            f"streaming in execution mode {platform.execution_mode!r} is not available yet; use EXECUTION_MODE=local"
        )


def run_stream(
    platform: Platform,
    *,
    source_name: str,
    config_file: Path | None = None,
    input_path: str | None = None,
    trigger_seconds: float = 10.0,
    available_now: bool = False,
    max_files: int = MAX_FILES_PER_TRIGGER,
    max_messages: int = MAX_MESSAGES_PER_TRIGGER,
    compact_every: int = COMPACT_EVERY,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    on_micro_batch: Callable[[BatchResult], None] | None = None,
    now: Callable[[], datetime] | None = None,
    audit: StreamAudit | None = None,
) -> StreamSummary:
    """Run `source_name` as a stream until `stop` is set (a signal's handler sets it: the
    micro-batch in hand finishes and commits first), or, with `available_now`, until the files
    there at the start are taken. Every `compact_every` succeeded micro-batches (0: never) the
    tables they wrote are compacted and checkpointed, between micro-batches, under the lock.
    `audit` records its start and stop (default: as the process's OS user, kind `service`)."""
    _check_options(
        platform,
        trigger_seconds=trigger_seconds,
        max_files=max_files,
        max_messages=max_messages,
        compact_every=compact_every,
    )
    source = platform.source(source_name, config_file)
    stop = stop or threading.Event()
    if source.format == "kafka" and input_path is not None:
        raise ConfigurationError(f"--input does not apply to source {source.name!r}: it reads topic {source.topic}")
    if platform.execution_mode == "databricks":
        # Spark Structured Streaming: its checkpoint under the lake keeps the positions, and each
        # of its micro-batches goes through the same step (lock, recovery, stages) as here.
        with _recovered(platform, source, trigger_seconds, progress):
            stream = _Stream(platform, source, trigger_seconds, compact_every, progress, on_micro_batch, now, audit)
        with monitored(stream.monitor):
            stream.summary.failed_files += platform.spark_stream(
                source,
                stream.micro_batch,
                input_path=input_path,
                trigger_seconds=trigger_seconds,
                available_now=available_now,
                max_files=max_files,
                max_messages=max_messages,
                stop=stop,
            )
        return stream.summary
    if source.format == "kafka":
        return _run_topic(
            platform,
            source,
            trigger_seconds=trigger_seconds,
            available_now=available_now,
            max_messages=max_messages,
            compact_every=compact_every,
            stop=stop,
            progress=progress,
            on_micro_batch=on_micro_batch,
            now=now,
            audit=audit,
        )
    landing = LandingFolder(platform, source, input_path or source.path)
    pending = landing.new_files()  # a missing folder fails here, before anything runs
    with _recovered(platform, source, trigger_seconds, progress):  # the watermark after recovery
        stream = _Stream(platform, source, trigger_seconds, compact_every, progress, on_micro_batch, now, audit)
    with monitored(stream.monitor) as monitor:
        while not stop.is_set():
            if pending:
                taken, pending = pending[:max_files], pending[max_files:]
                result = stream.micro_batch(partial(_take_files, source, taken), oldest_event=_oldest_change(taken))
                monitor.beat()
                if result.status == "failed":
                    landing.skipped.update(str(p) for p in taken)
                    stream.summary.failed_files += [str(p) for p in taken]
                if pending:
                    continue
            if available_now:
                break
            stop.wait(trigger_seconds)
            if not stop.is_set():
                pending = landing.new_files()
                if not pending:
                    monitor.idle()
    return stream.summary


def _oldest_change(paths: list[Path]) -> datetime | None:
    """The oldest modification time of `paths` (a file's arrival, for a folder stream's latency)."""
    times = []
    for path in paths:
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            continue
    return datetime.fromtimestamp(min(times), UTC) if times else None


def oldest_timestamp(messages: list[Message]) -> datetime | None:
    """The oldest timestamp among `messages` (None when none carries one)."""
    stamps = [m.timestamp_ms for m in messages if m.timestamp_ms is not None]
    return datetime.fromtimestamp(min(stamps) / 1000, UTC) if stamps else None


#: One micro-batch's run: the pipeline, its start, and the stream's watermark -> its result.
_MicroBatch = Callable[[BatchPipeline, datetime, datetime | None], BatchResult]


def _take_files(
    source: SourceConfig, files: list[Path], pipeline: BatchPipeline, started: datetime, watermark: datetime | None
) -> BatchResult:
    return pipeline.run(source, files, kind="stream", now=started, watermark=watermark)


def _take_messages(
    source: SourceConfig, rows: MessageRows, pipeline: BatchPipeline, started: datetime, watermark: datetime | None
) -> BatchResult:
    result = BatchResult(batch_id=new_batch_id(started), source=source.name, status="skipped")
    return pipeline.execute(source, rows, result, started, watermark=watermark, positions=rows.positions)


class _Stream:
    """What a running stream keeps between micro-batches: its summary, its watermark, and the
    tables written since the last compaction."""

    def __init__(
        self,
        platform: Platform,
        source: SourceConfig,
        trigger_seconds: float,
        compact_every: int,
        progress: Progress | None,
        on_micro_batch: Callable[[BatchResult], None] | None,
        now: Callable[[], datetime] | None,
        audit: StreamAudit | None = None,
    ) -> None:
        self.platform = platform
        self.source = source
        self.trigger_seconds = trigger_seconds
        self.compact_every = compact_every
        self.on_micro_batch = on_micro_batch
        self.now = now or (lambda: datetime.now(UTC))
        self.monitor = StreamMonitor(
            platform.metadata,
            source.name,
            trigger_seconds=trigger_seconds,
            lake=platform.lake,
            audit=audit or StreamAudit(platform.metadata, None, source.name),
        )
        self.progress = self.monitor.progress(progress)
        self.summary = StreamSummary(source=source.name)
        self.watermark = stored_watermark(platform, source)
        self.written: set[str] = set()
        self.since_compaction = 0

    def micro_batch(self, run: _MicroBatch, *, oldest_event: datetime | None = None) -> BatchResult:
        """Run one micro-batch under the lake's lock, then move the watermark, report it (to the
        monitor too: its figures, latency from `oldest_event`, are written by the next heartbeat),
        and compact every `compact_every` succeeded ones."""
        platform, source = self.platform, self.source
        with platform.lock(f"stream --source {source.name}", wait_seconds=max(self.trigger_seconds, 60.0)) as lock:
            result = run(pipeline_under_lock(platform, lock, self.progress), self.now(), self.watermark)
        self.monitor.took(result, oldest_event=oldest_event)
        self.watermark = _later(self.watermark, result.latest_interval)
        self.summary.micro_batches.append(result)
        if self.on_micro_batch:
            self.on_micro_batch(result)
        if result.status != "failed":
            self.written.update(result.tables)
            self.since_compaction += 1
            if self.compact_every and self.since_compaction >= self.compact_every:
                written = sorted(self.written)
                self.summary.compactions.append(_compact(platform, source, written, self.progress, self.monitor.audit))
                self.since_compaction = 0
        return result


def _compact(
    platform: Platform,
    source: SourceConfig,
    tables: list[str],
    progress: Progress | None,
    audit: StreamAudit | None = None,
) -> dict[str, tuple[int, int]]:
    """Compact and checkpoint `tables` under the lake's lock, between micro-batches, then vacuum
    them with Delta's safe retention (`SAFE_RETENTION_HOURS`, a week): the files compaction and
    merges replaced go once no version of the last week reads them, so time travel, undo and a
    replay reach back a week while a stream that runs for months keeps its folders small."""
    files: dict[str, tuple[int, int]] = {}
    vacuumed: dict[str, int] = {}
    with platform.lock(f"stream --source {source.name} (compaction)", wait_seconds=60.0):
        for table in tables:
            if platform.store.exists(table):
                files[table] = platform.store.compact(table)
                vacuumed[table] = platform.store.vacuum(table, retain_hours=SAFE_RETENTION_HOURS)
    structlog.get_logger().info("tables_compacted", source=source.name, files=files, vacuumed=vacuumed)
    if audit is not None:
        audit.compacted(files, vacuumed)
    if progress:
        progress("compact", ", ".join(f"{t}: {a} -> {b} files" for t, (a, b) in files.items()))
    return files


def stream_id(source: SourceConfig) -> str:
    """The prefix of the application ids a topic source's positions are recorded under."""
    return f"energy-platform-stream:{source.name}:{source.topic}"


def lake_positions(platform: Platform, source: SourceConfig, partitions: list[int]) -> dict[int, int]:
    """The last offset per partition the lake holds for a topic source (from its bronze table's
    transaction identifiers; -1: none)."""
    table = f"bronze_{source.name}"
    prefix = stream_id(source)
    positions = {p: platform.store.position(table, f"{prefix}:{p}") for p in partitions}
    return {p: -1 if v is None else v for p, v in positions.items()}


def _run_topic(
    platform: Platform,
    source: SourceConfig,
    *,
    trigger_seconds: float,
    available_now: bool,
    max_messages: int,
    compact_every: int,
    stop: threading.Event,
    progress: Progress | None,
    on_micro_batch: Callable[[BatchResult], None] | None,
    now: Callable[[], datetime] | None,
    audit: StreamAudit | None = None,
) -> StreamSummary:
    """A topic in micro-batches: positions from the lake, each micro-batch's commit records its own."""
    topic = platform.topic(source)
    try:
        # Under the lock, a killed micro-batch's commits are rolled back before the positions are
        # read: read first, they would include its messages, which would then never be read again.
        with _recovered(platform, source, trigger_seconds, progress):
            positions = lake_positions(platform, source, topic.partitions())
        stream = _Stream(platform, source, trigger_seconds, compact_every, progress, on_micro_batch, now, audit)
        topic.seek(positions)
        with monitored(stream.monitor) as monitor:
            # A micro-batch starts at most every trigger interval, as Spark's processing-time
            # trigger does: what arrives meanwhile waits for it, so a busy topic's micro-batches
            # grow with the interval and their fixed cost (VEE's context, gold, the commits) is
            # paid once per interval. One that takes longer than the interval is followed at once.
            due = 0.0
            while not stop.is_set():
                if not available_now and stop.wait(max(0.0, due - time.monotonic())):
                    break
                wait = DRAINED_SECONDS if available_now else trigger_seconds
                polled = time.monotonic()
                messages = topic.poll(max_messages=max_messages, timeout_seconds=max(wait, 0.1))
                if not messages:
                    if available_now:
                        break
                    monitor.idle(topic)
                    continue
                due = polled + trigger_seconds
                rows = MessageRows(
                    topic=topic.topic, messages=messages, key_field=source.columns.meter_id, stream_id=stream_id(source)
                )
                result = stream.micro_batch(
                    partial(_take_messages, source, rows), oldest_event=oldest_timestamp(messages)
                )
                if result.status == "failed":
                    # The micro-batch was rolled back: its messages are read again after a restart,
                    # never skipped. A stream does not go past data it could not store.
                    raise StreamStoppedError(
                        f"micro-batch {result.batch_id} of source {source.name!r} failed, so the stream stops "
                        f"at the positions the lake holds: {result.error}"
                    )
                topic.commit(rows.positions)
                monitor.beat(topic=topic)
            monitor.measure_lag(topic)  # a poll that found nothing more has moved past the last markers
    finally:
        topic.close()
    return stream.summary


@contextmanager
def _recovered(
    platform: Platform, source: SourceConfig, trigger_seconds: float, progress: Progress | None
) -> Iterator[None]:
    """Hold the lake's lock with what a killed run left behind rolled back, before a stream reads
    where it stands (its positions, its watermark) from the lake."""
    with platform.lock(f"stream --source {source.name}", wait_seconds=max(trigger_seconds, 60.0)) as lock:
        recover_interrupted(platform.store, platform.metadata, lake=platform.lake, stale=lock.stale, progress=progress)
        yield


def stored_watermark(platform: Platform, source: SourceConfig) -> datetime | None:
    """The latest interval start the lake's silver holds for a source: where a stream's watermark starts."""
    store = platform.store
    if not store.exists(SILVER_READINGS.name):
        return None
    latest = store.collect(
        store.read(SILVER_READINGS)
        .filter(nw.col("source") == source.name)
        .select(nw.col("interval_start_utc").max().alias("latest"))
    ).to_pylist()[0]["latest"]
    return cast("datetime | None", latest)


def _later(watermark: datetime | None, latest: datetime | None) -> datetime | None:
    if watermark is None or latest is None:
        return latest if watermark is None else watermark
    return max(watermark, latest)
