"""Wiring: settings -> the adapters (table store, metadata store, lake lock, file readers) -> a platform.

The one module that imports concrete adapters. The CLI builds a platform once per command, the
HTTP service once per process (in its lifespan), the Databricks job once per run; the
application's use cases see it through the `Platform` port.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from app.application.ports import FileReader, TableStore, TopicReader
from app.application.recovery import recover_interrupted
from app.domain.errors import ConfigurationError, PlatformError
from app.domain.sources import SourceConfig
from app.infrastructure import readers
from app.infrastructure.lake_reader import LakeReader
from app.infrastructure.lock import LakeBusyError, LakeLock
from app.infrastructure.logging import get_logger
from app.infrastructure.repositories.metadata import SqlMetadataStore
from app.infrastructure.repositories.pandas_repository import PandasDeltaStore
from app.infrastructure.settings import Settings
from app.infrastructure.source_config import load_sources

if TYPE_CHECKING:
    from app.infrastructure.spark_streaming import MicroBatchStep


@dataclass
class LocalPlatform:
    """The storage, metadata and reading implementations chosen by settings (see `Platform`)."""

    settings: Settings
    store: TableStore
    metadata: SqlMetadataStore
    reader: FileReader = field(default=readers)
    #: Pages of rows for the CLI's reads: scanned per call, nothing cached.
    reads: LakeReader = field(init=False)

    def __post_init__(self) -> None:
        self.reads = LakeReader(self.settings.data_dir, cache_rows=0)

    @property
    def execution_mode(self) -> str:
        return self.settings.execution_mode

    @property
    def lake(self) -> str:
        """The data directory, as batches record it."""
        return str(self.settings.data_dir.resolve())

    @property
    def compact_threshold(self) -> int:
        return self.settings.compact_small_files_threshold

    def sources(self, config_file: Path | None = None) -> dict[str, SourceConfig]:
        return load_sources(config_file or self.settings.sources_config)

    def source(self, name: str, config_file: Path | None = None) -> SourceConfig:
        sources = self.sources(config_file)
        if name not in sources:
            known = ", ".join(sorted(sources))
            raise ConfigurationError(f"unknown source {name!r}; declared sources: {known}")
        return sources[name]

    def lock(self, command: str, *, wait_seconds: float = 0.0) -> LakeLock:
        return LakeLock(self.settings.data_dir, command=command, wait_seconds=wait_seconds)

    def topic(self, source: SourceConfig) -> TopicReader:
        from app.infrastructure.kafka_topic import KafkaTopic

        if source.bootstrap_servers is None or source.topic is None:
            raise ConfigurationError(f"source {source.name!r} is not a kafka source")
        return KafkaTopic(
            source.bootstrap_servers,
            source.topic,
            group_id=source.group_id or f"energy-platform-{source.name}",
            consumer=source.consumer,
        )

    def spark_stream(
        self,
        source: SourceConfig,
        step: MicroBatchStep,
        *,
        input_path: str | None,
        trigger_seconds: float,
        available_now: bool,
        max_files: int,
        max_messages: int,
        stop: threading.Event,
    ) -> list[str]:
        """Databricks mode: `source` as a Spark Structured Streaming query whose micro-batches go
        through `step` (see `app.infrastructure.spark_streaming`); the files of failed micro-batches."""
        from app.infrastructure.spark_streaming import run_spark_stream

        return run_spark_stream(
            self,
            source,
            step,
            input_path=input_path,
            trigger_seconds=trigger_seconds,
            available_now=available_now,
            max_files=max_files,
            max_messages=max_messages,
            stop=stop,
        )

    def close(self) -> None:
        self.store.release()  # the DuckDB store's work folder and connection, Spark's cached frames
        self.metadata.dispose()


def table_store(settings: Settings) -> TableStore:
    """The table store of the configured execution mode."""
    if settings.execution_mode == "databricks":
        from app.infrastructure.repositories.spark_repository import SparkDeltaStore
        from app.infrastructure.spark import spark_session

        spark = spark_session(settings.spark_master, settings.spark_conf)
        return SparkDeltaStore(spark, str(settings.data_dir.resolve()))
    if settings.local_engine == "pandas":
        return PandasDeltaStore(settings.data_dir)
    from app.infrastructure.repositories.duckdb_repository import DuckDBDeltaStore

    return DuckDBDeltaStore(settings.data_dir, memory_limit=settings.local_memory_limit)


def report_store(settings: Settings) -> TableStore:
    """A store that reads the lake for one report of the service, in any execution mode: DuckDB
    over the Delta tables' files (the service reads the lake's files, never through Spark).
    `release()` it afterwards."""
    from app.infrastructure.repositories.duckdb_repository import DuckDBDeltaStore

    return DuckDBDeltaStore(settings.data_dir, memory_limit=settings.local_memory_limit)


def metadata_store(settings: Settings) -> SqlMetadataStore:
    """The metadata store of `settings` (a pooled engine), its schema migrated: once per process,
    and on demand by `energy-platform db upgrade`."""
    metadata = SqlMetadataStore(settings.metadata_url, retry_seconds=settings.metadata_retry_seconds)
    try:
        metadata.migrate()
    except BaseException:
        metadata.dispose()
        raise
    return metadata


def file_reader() -> FileReader:
    """The file reader: every format the platform reads, from a path or glob."""
    return readers


def metadata_probe(settings: Settings) -> SqlMetadataStore:
    """A metadata store that neither migrates nor retries: for a health probe that must answer now."""
    return SqlMetadataStore(settings.metadata_url, retry_seconds=0)


def build_platform(settings: Settings) -> LocalPlatform:
    """The platform for `settings`: metadata migrated, table store ready. Close it with `close()`.
    Opening never takes the lake's lock and never rolls anything back: writes recover first
    (see `runner.run_batch`), and `energy-platform recover` does it on demand."""
    settings.require_available()
    metadata = metadata_store(settings)
    try:
        store = table_store(settings)
    except BaseException:
        metadata.dispose()
        raise
    return LocalPlatform(settings=settings, store=store, metadata=metadata)


@contextmanager
def open_platform(settings: Settings) -> Iterator[LocalPlatform]:
    """`build_platform`, closed at the end of the block."""
    platform = build_platform(settings)
    try:
        yield platform
    finally:
        platform.close()


def recover(platform: LocalPlatform, *, wait_seconds: float = 0.0) -> list[str]:
    """Take the lake's lock, roll back and fail the batches a killed run left running; their ids."""
    with platform.lock("recover", wait_seconds=wait_seconds) as lock:
        records = recover_interrupted(platform.store, platform.metadata, lake=platform.lake, stale=lock.stale)
    return [record.batch_id for record in records]


@dataclass
class ServicePlatform:
    """What the HTTP service reads through: the metadata store (one pooled engine) and the lake's
    read side (snapshots cached per table version). No table store: runs open their own."""

    settings: Settings
    metadata: SqlMetadataStore
    reads: LakeReader

    def close(self) -> None:
        self.metadata.dispose()


def build_service(settings: Settings) -> ServicePlatform:
    """The service's platform, built once per process: the metadata schema migrated, and batches
    a killed run left running recovered if nobody holds the lake (never again per request)."""
    settings.require_available()
    metadata = metadata_store(settings)
    service = ServicePlatform(
        settings=settings, metadata=metadata, reads=LakeReader(settings.data_dir, cache_rows=settings.api_cache_rows)
    )
    if settings.execution_mode == "local" and metadata.running_batches(lake=str(settings.data_dir.resolve())):
        try:
            with open_platform(settings) as platform:
                recover(platform)
        except LakeBusyError:
            pass  # a run is at work: it recovers before it writes
        except (PlatformError, OSError) as error:
            get_logger().error("recovery_deferred", error=str(error))
    return service
