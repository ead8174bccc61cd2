"""Streaming mode: a source read continuously, in micro-batches, through the same stages as a batch.

A folder source's landing folder is polled every trigger interval; each new file (by the
checksum manifest: a file a succeeded batch took is never taken again) is taken once, in
arrival order (modification time, then name), as a micro-batch of kind `stream`. Each
micro-batch holds the lake's lock while it writes, so batch runs and replays interleave with
it, and recovers a killed one's commits first, like a batch run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import cast

import narwhals as nw
import structlog

from app.application.pipeline import BatchPipeline, BatchResult, Progress, new_batch_id
from app.application.ports import Platform
from app.application.row_sources import MessageRows
from app.application.runner import pipeline_under_lock
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
    if platform.execution_mode != "local":
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
) -> StreamSummary:
    """Run `source_name` as a stream until `stop` is set (a signal's handler sets it: the
    micro-batch in hand finishes and commits first), or, with `available_now`, until the files
    there at the start are taken. Every `compact_every` succeeded micro-batches (0: never) the
    tables they wrote are compacted and checkpointed, between micro-batches, under the lock."""
    _check_options(
        platform,
        trigger_seconds=trigger_seconds,
        max_files=max_files,
        max_messages=max_messages,
        compact_every=compact_every,
    )
    source = platform.source(source_name, config_file)
    stop = stop or threading.Event()
    if source.format == "kafka":
        if input_path is not None:
            raise ConfigurationError(f"--input does not apply to source {source.name!r}: it reads topic {source.topic}")
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
        )
    landing = LandingFolder(platform, source, input_path or source.path)
    stream = _Stream(platform, source, trigger_seconds, compact_every, progress, on_micro_batch, now)
    pending = landing.new_files()  # a missing folder fails here, before anything runs
    while not stop.is_set():
        if pending:
            taken, pending = pending[:max_files], pending[max_files:]
            result = stream.micro_batch(partial(_take_files, source, taken))
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
    return stream.summary


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
    return pipeline.execute(source, rows, result, started, watermark=watermark)


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
    ) -> None:
        self.platform = platform
        self.source = source
        self.trigger_seconds = trigger_seconds
        self.compact_every = compact_every
        self.progress = progress
        self.on_micro_batch = on_micro_batch
        self.now = now or (lambda: datetime.now(UTC))
        self.summary = StreamSummary(source=source.name)
        self.watermark = stored_watermark(platform, source)
        self.written: set[str] = set()
        self.since_compaction = 0

    def micro_batch(self, run: _MicroBatch) -> BatchResult:
        """Run one micro-batch under the lake's lock, then move the watermark, report it, and
        compact every `compact_every` succeeded ones."""
        platform, source = self.platform, self.source
        with platform.lock(f"stream --source {source.name}", wait_seconds=max(self.trigger_seconds, 60.0)) as lock:
            result = run(pipeline_under_lock(platform, lock, self.progress), self.now(), self.watermark)
        self.watermark = _later(self.watermark, result.latest_interval)
        self.summary.micro_batches.append(result)
        if self.on_micro_batch:
            self.on_micro_batch(result)
        if result.status != "failed":
            self.written.update(result.tables)
            self.since_compaction += 1
            if self.compact_every and self.since_compaction >= self.compact_every:
                self.summary.compactions.append(_compact(platform, source, sorted(self.written), self.progress))
                self.since_compaction = 0
        return result


def _compact(
    platform: Platform, source: SourceConfig, tables: list[str], progress: Progress | None
) -> dict[str, tuple[int, int]]:
    """Compact and checkpoint `tables` under the lake's lock, between micro-batches."""
    files: dict[str, tuple[int, int]] = {}
    with platform.lock(f"stream --source {source.name} (compaction)", wait_seconds=60.0):
        for table in tables:
            if platform.store.exists(table):
                files[table] = platform.store.compact(table)
    structlog.get_logger().info("tables_compacted", source=source.name, files=files)
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
) -> StreamSummary:
    """A topic in micro-batches: positions from the lake, each micro-batch's commit records its own."""
    stream = _Stream(platform, source, trigger_seconds, compact_every, progress, on_micro_batch, now)
    topic = platform.topic(source)
    try:
        topic.seek(lake_positions(platform, source, topic.partitions()))
        while not stop.is_set():
            wait = DRAINED_SECONDS if available_now else trigger_seconds
            messages = topic.poll(max_messages=max_messages, timeout_seconds=max(wait, 0.1))
            if not messages:
                if available_now:
                    break
                continue
            rows = MessageRows(
                topic=topic.topic, messages=messages, key_field=source.columns.meter_id, stream_id=stream_id(source)
            )
            result = stream.micro_batch(partial(_take_messages, source, rows))
            if result.status == "failed":
                # The micro-batch was rolled back: its messages are read again after a restart,
                # never skipped. A stream does not go past data it could not store.
                raise StreamStoppedError(
                    f"micro-batch {result.batch_id} of source {source.name!r} failed, so the stream stops "
                    f"at the positions the lake holds: {result.error}"
                )
            topic.commit(rows.positions)
    finally:
        topic.close()
    return stream.summary


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
