"""Wiring: settings -> table store, metadata store, sources -> a pipeline run. Used by CLI, API and tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from app.application.pipeline import BatchPipeline, BatchResult, Progress
from app.application.recovery import recover_interrupted
from app.domain.errors import ConfigurationError, PlatformError
from app.domain.sources import SourceConfig
from app.infrastructure.lock import LakeBusyError, LakeLock
from app.infrastructure.logging import get_logger
from app.infrastructure.readers import resolve_inputs
from app.infrastructure.repositories.base import TableStore, checked_batch_id
from app.infrastructure.repositories.metadata import SqlMetadataStore
from app.infrastructure.repositories.pandas_repository import PandasDeltaStore
from app.infrastructure.settings import Settings
from app.infrastructure.source_config import load_sources


@dataclass
class Platform:
    """The storage and metadata implementations chosen by settings."""

    settings: Settings
    store: TableStore
    metadata: SqlMetadataStore

    def sources(self, config_file: Path | None = None) -> dict[str, SourceConfig]:
        return load_sources(config_file or self.settings.sources_config)

    def source(self, name: str, config_file: Path | None = None) -> SourceConfig:
        sources = self.sources(config_file)
        if name not in sources:
            known = ", ".join(sorted(sources))
            raise ConfigurationError(f"unknown source {name!r}; declared sources: {known}")
        return sources[name]

    @property
    def lake(self) -> str:
        """The data directory, as batches record it."""
        return str(self.settings.data_dir.resolve())

    def lock(self, command: str, *, wait_seconds: float = 0.0) -> LakeLock:
        return LakeLock(self.settings.data_dir, command=command, wait_seconds=wait_seconds)

    def pipeline(self, *, progress: Progress | None, lock: LakeLock) -> BatchPipeline:
        return BatchPipeline(
            store=self.store,
            metadata=self.metadata,
            execution_mode=self.settings.execution_mode,
            logger=get_logger(),
            progress=progress,
            lake=self.lake,
            on_batch=lock.hold_batch,
        )

    def recover(self, lock: LakeLock, progress: Progress | None = None) -> None:
        """With the lock held: roll back and fail the batches a killed run left running."""
        recover_interrupted(self.store, self.metadata, lake=self.lake, stale=lock.stale, progress=progress)


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


@contextmanager
def open_platform(settings: Settings) -> Iterator[Platform]:
    """Build the platform for `settings`; the metadata schema is migrated on open."""
    settings.require_available()
    metadata = SqlMetadataStore(settings.metadata_url, retry_seconds=settings.metadata_retry_seconds)
    store: TableStore | None = None
    try:
        metadata.migrate()
        store = table_store(settings)
        platform = Platform(settings=settings, store=store, metadata=metadata)
        _recover_if_abandoned(platform)
        yield platform
    finally:
        if store is not None:
            store.release()  # the DuckDB store's work folder and connection, Spark's cached frames
        metadata.dispose()


def _recover_if_abandoned(platform: Platform) -> None:
    """If a killed run left a batch running and nobody holds the lake now, recover it, so
    that no command shows a half-written batch. In Databricks mode only runs recover (the
    job runs one at a time; a file lock on cluster storage may not be seen by other nodes).
    A recovery that fails is logged and left to the next run: reading goes on."""
    if platform.settings.execution_mode == "databricks" or not platform.metadata.running_batches(lake=platform.lake):
        return
    try:
        with platform.lock("recover") as lock:
            platform.recover(lock)
    except LakeBusyError:
        return  # the batch is at work in another process
    except (PlatformError, OSError) as error:
        get_logger().error("recovery_deferred", error=str(error))


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
) -> BatchResult:
    """Run one batch of `source_name` over `input_path` (default: the source's declared path),
    holding the lake's lock (waiting up to `wait_seconds` for it)."""
    if batch_id is not None:
        checked_batch_id(batch_id)
    source = platform.source(source_name, config_file)
    paths = resolve_inputs(input_path or source.path, source.format)
    with platform.lock(f"run-batch --source {source_name}", wait_seconds=wait_seconds) as lock:
        platform.recover(lock, progress)
        return platform.pipeline(progress=progress, lock=lock).run(
            source, paths, force=force, now=now, batch_id=batch_id
        )


def replay_quarantine(
    platform: Platform,
    *,
    batch_id: str,
    source_name: str | None = None,
    config_file: Path | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
    wait_seconds: float = 0.0,
) -> BatchResult:
    """Re-run batch `batch_id`'s quarantined rows through its source's current config and rules."""
    original = platform.metadata.get_batch(checked_batch_id(batch_id))
    if original is None:
        raise ConfigurationError(f"there is no batch {batch_id!r}; `energy-platform quarantine list` shows them")
    source = platform.source(source_name or original.source, config_file)
    with platform.lock(f"quarantine replay --batch-id {batch_id}", wait_seconds=wait_seconds) as lock:
        platform.recover(lock, progress)
        return platform.pipeline(progress=progress, lock=lock).replay(source, original, now=now)
