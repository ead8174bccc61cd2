"""Databricks-mode streams: Spark Structured Streaming into the platform's micro-batches.

A topic source is read with Spark's Kafka source, committed transactions only
(`kafka.isolation.level=read_committed`), at most `--max-messages` per micro-batch; a folder
source with Spark's file source (`binaryFile`, only the new files' paths: the stages read them),
or with Auto Loader (`cloudFiles`) on a Databricks cluster, at most `--max-files` per micro-batch.
Triggers: every `--trigger` seconds (`processingTime`), or what is there now (`availableNow`).

`foreachBatch` hands each micro-batch to the stream's step (`run_stream`'s, as for a local
stream): under the lake's lock, after recovering killed batches, the pipeline's stages run on it
as a batch of kind `stream`: messages as `MessageRows` (the same JSON mapping through the
source's `columns`), files as a batch of files. Spark keeps the stream's progress in its
checkpoint, `<lake>/_checkpoints/<source>`, and runs a micro-batch whose end it did not record
again after a restart, with the same id and the same input. Every Delta commit of micro-batch N
of the query carries Delta's transaction identifier (the query's application id, N) (see
`SparkDeltaStore.stream_transaction`): a micro-batch whose commits the lake holds is skipped
whole, so its second run changes nothing, not even the metadata store's batches; one whose
commits were rolled back (a failed or killed run) is written again.

A failed micro-batch of a topic stops the stream (its commits are rolled back and Spark runs it
again after a restart: nothing is skipped); a failed micro-batch of files is reported, and the
stream goes on without them, as a local folder stream does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc

from app.application.pipeline import BatchPipeline, BatchResult, new_batch_id
from app.application.ports import Message, Platform
from app.application.row_sources import MessageRows
from app.application.streaming import StreamStoppedError, lake_positions, oldest_timestamp
from app.domain.errors import ConfigurationError, InputFileError, NotAvailableError
from app.domain.schemas import (
    GOLD_DAILY_METER_ENERGY,
    GOLD_HOURLY_PORTFOLIO_LOAD,
    QUARANTINE_READINGS,
    SILVER_READINGS,
    bronze_table_name,
)
from app.domain.sources import SourceConfig
from app.infrastructure.kafka_topic import FIXED_SETTINGS, consumer_settings
from app.infrastructure.logging import get_logger
from app.infrastructure.repositories.spark_repository import SparkDeltaStore, _file_key
from app.infrastructure.spark import on_databricks, require_kafka

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.streaming import DataStreamReader

#: The folder under the lake root holding each stream's Spark checkpoint, by source name.
CHECKPOINTS = "_checkpoints"
#: Prefix of the Delta application id of a Spark stream's commits: `<prefix>:<source>:<query id>`.
APP_ID = "energy-platform-spark-stream"
#: How often the driver looks at the query and at the stop signal, in seconds.
POLL_SECONDS = 1

#: One micro-batch's run: the pipeline (under the lake's lock), its start, the stream's watermark.
MicroBatchRun = Callable[[BatchPipeline, datetime, "datetime | None"], BatchResult]


class MicroBatchStep(Protocol):
    """A stream's step: one micro-batch's run under the lake's lock, reported (`_Stream.micro_batch`)."""

    def __call__(self, run: MicroBatchRun, *, oldest_event: datetime | None = None) -> BatchResult: ...


def checkpoint_location(lake: str | Path, source: str) -> Path:
    """Where the Spark checkpoint of `source`'s stream lives: `<lake>/_checkpoints/<source>`."""
    return Path(lake) / CHECKPOINTS / source


def stream_app_id(source: SourceConfig, query_id: str) -> str:
    """The Delta application id of the commits of one stream query (its id is kept in its checkpoint)."""
    return f"{APP_ID}:{source.name}:{query_id}"


def stream_tables(source: SourceConfig) -> list[str]:
    """The tables a micro-batch of `source` writes."""
    return [
        bronze_table_name(source.name),
        QUARANTINE_READINGS.name,
        SILVER_READINGS.name,
        GOLD_DAILY_METER_ENERGY.name,
        GOLD_HOURLY_PORTFOLIO_LOAD.name,
    ]


def run_spark_stream(
    platform: Platform,
    source: SourceConfig,
    step: MicroBatchStep,
    *,
    input_path: str | None = None,
    trigger_seconds: float = 10.0,
    available_now: bool = False,
    max_files: int = 100,
    max_messages: int = 200_000,
    stop: threading.Event | None = None,
) -> list[str]:
    """Run `source` as a Structured Streaming query whose micro-batches go through `step`, until
    `stop` is set (the micro-batch in hand finishes first) or, with `available_now`, until what
    was there at the start is taken. Returns the files of failed micro-batches (folder sources);
    a failed micro-batch of a topic raises StreamStoppedError."""
    store = platform.store
    if not isinstance(store, SparkDeltaStore):
        raise NotAvailableError("a Spark stream needs EXECUTION_MODE=databricks (the Spark table store)")
    stop = stop or threading.Event()
    if source.format == "kafka":
        if input_path is not None:
            raise ConfigurationError(f"--input does not apply to source {source.name!r}: it reads topic {source.topic}")
        require_kafka(store.spark)
    checkpoint = checkpoint_location(store.root, source.name)
    batches = _MicroBatches(platform, store, source, step, input_path or source.path)
    frame = _topic_frame(platform, store, source, checkpoint, max_messages) if source.format == "kafka" else None
    if frame is None:
        frame = _folder_frame(platform, store, source, batches.pattern, max_files)
    writer = (
        frame.writeStream.foreachBatch(batches)
        .queryName(f"energy-platform-{source.name}")
        .option("checkpointLocation", str(checkpoint))
    )
    writer = (
        writer.trigger(availableNow=True)
        if available_now
        else writer.trigger(processingTime=f"{max(trigger_seconds, 0.0):g} seconds")
    )
    log = get_logger(source=source.name, checkpoint=str(checkpoint))
    query = writer.start()
    batches.start(stream_app_id(source, str(query.id)))
    log.info("spark_stream_started", query_id=str(query.id), available_now=available_now)
    failure: Exception | None = None
    try:
        while True:
            try:
                if query.awaitTermination(POLL_SECONDS):
                    break
            except Exception as error:  # StreamingQueryException: the query ended with an error
                failure = error
                break
            if stop.is_set():
                batches.stopping()  # waits for the micro-batch in hand
                query.stop()
                break
    finally:
        if query.isActive:  # an interrupt: stop the query, the micro-batch in hand is run again next time
            batches.stopping(wait=False)
            query.stop()
    log.info("spark_stream_stopped", query_id=str(query.id), failed_files=len(batches.failed_files))
    if batches.error is not None:
        raise batches.error
    if failure is not None and not batches.stopped:
        raise StreamStoppedError(f"the Spark stream of source {source.name!r} failed: {_first_line(failure)}")
    return batches.failed_files


class _Stopping(Exception):
    """Raised by foreachBatch for a micro-batch that starts after the stream was told to stop:
    it is not taken (Spark runs it again when the stream restarts)."""


class _MicroBatches:
    """`foreachBatch`'s function: each Spark micro-batch through the stream's step, one at a time."""

    def __init__(
        self, platform: Platform, store: SparkDeltaStore, source: SourceConfig, step: MicroBatchStep, pattern: str
    ) -> None:
        self.platform = platform
        self.store = store
        self.source = source
        self.step = step
        self.pattern = pattern
        self.app_id = ""
        self.failed_files: list[str] = []
        #: The error a micro-batch raised (the stream's error, rather than Spark's wrapping of it).
        self.error: BaseException | None = None
        self.stopped = False
        self._ready = threading.Event()
        self._busy = threading.Lock()
        self.log = get_logger(source=source.name)

    def start(self, app_id: str) -> None:
        """The query's application id, known once it started: micro-batches wait for it."""
        self.app_id = app_id
        self._ready.set()

    def stopping(self, *, wait: bool = True) -> None:
        """Take no micro-batch from now on; with `wait`, once the one in hand has finished."""
        if wait:
            with self._busy:
                self.stopped = True
        else:
            self.stopped = True
        self._ready.set()

    def __call__(self, frame: DataFrame, epoch: int) -> None:
        self._ready.wait()
        with self._busy:
            if self.stopped:
                raise _Stopping(f"micro-batch {epoch} not taken: the stream is stopping")
            try:
                if self.source.format == "kafka":
                    self._messages(frame, epoch)
                else:
                    self._files(frame, epoch)
            except BaseException as error:
                self.error = self.error or error
                raise

    def _messages(self, frame: DataFrame, epoch: int) -> None:
        source = self.source
        table = frame.select("partition", "offset", "key", "value", "timestamp").toArrow()
        # Arrow keeps instants as UTC epoch values whatever the session's zone.
        millis = pc.divide(table["timestamp"].cast(pa.int64()), 1000)
        table = table.set_column(4, "timestamp", millis)
        messages = sorted(
            (
                Message(partition=p, offset=o, key=k, value=v, timestamp_ms=t)
                for p, o, k, v, t in zip(*(table[c].to_pylist() for c in table.column_names), strict=True)
            ),
            key=lambda m: (m.partition, m.offset),
        )
        if not messages:
            return
        assert source.topic is not None
        # No stream id: a Spark stream's positions are its checkpoint's, not the lake's.
        rows = MessageRows(topic=source.topic, messages=messages, key_field=source.columns.meter_id)
        run = partial(_take_messages, self.store, self.app_id, epoch, source, rows)
        result = self.step(run, oldest_event=oldest_timestamp(messages))
        if result.status == "failed":
            # Rolled back: Spark runs the micro-batch again after a restart, and nothing is skipped.
            raise StreamStoppedError(
                f"micro-batch {result.batch_id} (Spark micro-batch {epoch}) of source {source.name!r} failed, "
                f"so the stream stops; it runs again when the stream restarts: {result.error}"
            )

    def _files(self, frame: DataFrame, epoch: int) -> None:
        table = frame.select("path", "modificationTime").toArrow()
        accepted = self._accepted()
        arrived = sorted(
            (_utc(modified), _local_path(path))
            for path, modified in zip(table["path"].to_pylist(), table["modificationTime"].to_pylist(), strict=True)
        )
        taken = [(modified, path) for modified, path in arrived if path in accepted]
        if not taken:
            return
        paths = [Path(path) for _, path in taken]
        stamps = [modified for modified, _ in taken if modified is not None]
        run = partial(_take_files, self.store, self.app_id, epoch, self.source, paths)
        result = self.step(run, oldest_event=min(stamps) if stamps else None)
        if result.status == "failed":
            self.failed_files += [str(p) for p in paths]
            self.log.warning(
                "spark_stream_files_failed",
                epoch=epoch,
                files=[str(p) for p in paths],
                note="this query does not take them again; run-batch or a local stream takes them",
            )

    def _accepted(self) -> set[str]:
        """The files the source's pattern takes (its format's extensions in a folder), as paths."""
        try:
            return {str(p.resolve()) for p in self.platform.reader.resolve_inputs(self.pattern, self.source.format)}
        except InputFileError:
            return set()


def _local_path(location: str) -> str:
    """A path as Spark lists it (`file:/a/b%20c.csv`) -> the file's resolved local path."""
    return str(Path(unquote(_file_key(location))).resolve())


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _skipped(store: SparkDeltaStore, app_id: str, epoch: int, source: SourceConfig) -> BatchResult | None:
    """A skipped result if the lake holds micro-batch `epoch`'s commits already, else None."""
    committed = store.stream_committed(app_id, epoch, stream_tables(source))
    if not committed:
        return None
    get_logger(source=source.name).info(
        "spark_micro_batch_already_committed", epoch=epoch, app_id=app_id, tables=committed
    )
    return BatchResult(batch_id=None, source=source.name, status="skipped")


def _take_messages(
    store: SparkDeltaStore,
    app_id: str,
    epoch: int,
    source: SourceConfig,
    rows: MessageRows,
    pipeline: BatchPipeline,
    started: datetime,
    watermark: datetime | None,
) -> BatchResult:
    skipped = _skipped(store, app_id, epoch, source)
    if skipped is not None:
        return skipped
    result = BatchResult(batch_id=new_batch_id(started), source=source.name, status="skipped")
    with store.stream_transaction(app_id, epoch):
        return pipeline.execute(source, rows, result, started, watermark=watermark, positions=rows.positions)


def _take_files(
    store: SparkDeltaStore,
    app_id: str,
    epoch: int,
    source: SourceConfig,
    paths: list[Path],
    pipeline: BatchPipeline,
    started: datetime,
    watermark: datetime | None,
) -> BatchResult:
    skipped = _skipped(store, app_id, epoch, source)
    if skipped is not None:
        return skipped
    with store.stream_transaction(app_id, epoch):
        # Files a succeeded batch took already are skipped, as a local folder stream skips them.
        return pipeline.run(source, paths, kind="stream", now=started, watermark=watermark)


# -- the sources --------------------------------------------------------------------------------


def _topic_frame(
    platform: Platform, store: SparkDeltaStore, source: SourceConfig, checkpoint: Path, max_messages: int
) -> DataFrame:
    assert source.bootstrap_servers is not None and source.topic is not None
    reader: DataStreamReader = store.spark.readStream.format("kafka")
    options = {
        **_consumer_options(source),
        "kafka.bootstrap.servers": source.bootstrap_servers,
        "subscribe": source.topic,
        # Committed transactions only: an aborted transaction's messages never reach the lake.
        "kafka.isolation.level": "read_committed",
        "startingOffsets": _starting_offsets(platform, source, checkpoint),
        "maxOffsetsPerTrigger": str(max_messages),
        # As a local stream: a position retention deleted reads from the oldest message kept.
        "failOnDataLoss": "false",
    }
    for key, value in options.items():
        reader = reader.option(key, value)
    return reader.load()


def _consumer_options(source: SourceConfig) -> dict[str, str]:
    """The source's `consumer` settings as the Kafka source's `kafka.` options, checked as a local
    stream checks them. Settings Spark fixes itself (offset commits and resets, the group) are
    left to it; the rest go to the Java client, whose names mostly match librdkafka's."""
    assert source.bootstrap_servers is not None
    settings = consumer_settings(source.bootstrap_servers, source.group_id or source.name, source.consumer)
    fixed = {"bootstrap.servers", "group.id", "auto.offset.reset", *FIXED_SETTINGS}
    return {f"kafka.{key}": _text(value) for key, value in settings.items() if key not in fixed}


def _text(value: str | int | bool) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _starting_offsets(platform: Platform, source: SourceConfig, checkpoint: Path) -> str:
    """Where a new query starts: after the positions the lake holds for the topic (those a local
    stream recorded), else at the earliest message. A query with a checkpoint goes on from it."""
    if (checkpoint / "offsets").is_dir():
        return "earliest"  # not read: the checkpoint's offsets win
    topic = platform.topic(source)
    try:
        partitions = topic.partitions()
    finally:
        topic.close()
    positions = lake_positions(platform, source, partitions)
    if all(offset < 0 for offset in positions.values()):
        return "earliest"
    # -2: the partition's earliest offset.
    return json.dumps({source.topic: {str(p): offset + 1 if offset >= 0 else -2 for p, offset in positions.items()}})


#: Spark's `binaryFile` source's columns.
_BINARY_FILE_COLUMNS = "path STRING, modificationTime TIMESTAMP, length BIGINT, content BINARY"


def _folder_frame(
    platform: Platform, store: SparkDeltaStore, source: SourceConfig, pattern: str, max_files: int
) -> DataFrame:
    try:
        platform.reader.resolve_inputs(pattern, source.format)
    except InputFileError as error:
        if "no such file or folder" in error.message:
            raise  # as a local stream: a missing folder fails before anything runs
    location = str(Path(pattern).resolve()) if not any(c in pattern for c in "*?[{") else pattern
    reader: DataStreamReader
    if on_databricks():  # Auto Loader: files found by listing or notification, state in the checkpoint
        reader = (
            store.spark.readStream.format("cloudFiles")
            .option("cloudFiles.format", "binaryFile")
            .option("cloudFiles.maxFilesPerTrigger", str(max_files))
        )
    else:
        reader = store.spark.readStream.format("binaryFile").schema(_BINARY_FILE_COLUMNS)
        reader = reader.option("maxFilesPerTrigger", str(max_files))
    return reader.load(location)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
