"""Wiring: settings -> table store, metadata store, sources -> a pipeline run. Used by CLI, API and tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from app.application.pipeline import BatchPipeline, BatchResult, Progress
from app.domain.errors import ConfigurationError
from app.domain.sources import SourceConfig
from app.infrastructure.logging import get_logger
from app.infrastructure.readers import resolve_inputs
from app.infrastructure.repositories.base import TableStore
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
    metadata = SqlMetadataStore(settings.metadata_url)
    store: TableStore | None = None
    try:
        metadata.migrate()
        store = table_store(settings)
        yield Platform(settings=settings, store=store, metadata=metadata)
    finally:
        if store is not None:
            store.release()  # the DuckDB store's work folder and connection, Spark's cached frames
        metadata.dispose()


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
) -> BatchResult:
    """Run one batch of `source_name` over `input_path` (default: the source's declared path)."""
    sources = platform.sources(config_file)
    if source_name not in sources:
        known = ", ".join(sorted(sources))
        raise ConfigurationError(f"unknown source {source_name!r}; declared sources: {known}")
    source = sources[source_name]
    paths = resolve_inputs(input_path or source.path, source.format)
    pipeline = BatchPipeline(
        store=platform.store,
        metadata=platform.metadata,
        execution_mode=platform.settings.execution_mode,
        logger=get_logger(),
        progress=progress,
    )
    return pipeline.run(source, paths, force=force, now=now, batch_id=batch_id)
