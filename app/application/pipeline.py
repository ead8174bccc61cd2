"""The batch pipeline: rows from a `RowSource` through the stages (read -> bronze -> validate ->
VEE -> silver -> gold), inside a unit of work that starts, commits or rolls back, and finishes
the batch."""

from __future__ import annotations

import resource
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
from opentelemetry import trace

from app.application import stages
from app.application.ports import FileReader, MetadataStore, TableStore
from app.application.row_sources import FileRows, QuarantineRows, RowSource
from app.application.stages import Batch
from app.domain.batches import BatchRecord, InputFile, LayerMetrics, Reconciliation
from app.domain.errors import ConfigurationError, NotAvailableError, PlatformError, ReconciliationError
from app.domain.rules import MALFORMED_ROW
from app.domain.schemas import (
    GOLD_DAILY_METER_ENERGY,
    GOLD_HOURLY_PORTFOLIO_LOAD,
    QUARANTINE_READINGS,
    SILVER_READINGS,
    bronze_spec,
)
from app.domain.sources import SourceConfig

#: Spans of a batch, its layers and stages (no-ops unless tracing is configured: OTEL_*).
_tracer = trace.get_tracer("energy_platform.pipeline")
#: Attribute names of the spans.
BATCH_ID, SOURCE, ROWS_IN, ROWS_OUT, QUARANTINED = (
    "energy_platform.batch_id",
    "energy_platform.source",
    "energy_platform.rows_in",
    "energy_platform.rows_out",
    "energy_platform.quarantined",
)

Progress = Callable[[str, str], None]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # macOS: bytes; Linux: KiB


def new_batch_id(now: datetime) -> str:
    """Sortable by start time, unique within the second."""
    return f"{now:%Y%m%d_%H%M%S}_{uuid.uuid4().hex[:6]}"


@dataclass
class BatchResult:
    """What a run did, for the CLI summary and the API."""

    batch_id: str | None
    source: str
    status: str
    files: list[InputFile] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    layers: list[LayerMetrics] = field(default_factory=list)
    reconciliation: Reconciliation | None = None
    rule_counts: dict[str, int] = field(default_factory=dict)
    #: Intervals estimation filled, per method.
    estimates: dict[str, int] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    duration_seconds: float = 0.0
    error: str | None = None
    #: The latest interval start among the batch's silver rows (a stream's watermark moves to it).
    latest_interval: datetime | None = None
    #: Tables compacted after the batch (too many small files): data files before and after.
    compacted: dict[str, tuple[int, int]] = field(default_factory=dict)


def _stage(name: str, batch: Batch) -> Any:
    """A span of one stage of `batch`, a child of its batch's span."""
    return _tracer.start_as_current_span(
        f"stage {name}", attributes={BATCH_ID: batch.batch_id, SOURCE: batch.source.name}
    )


def _end_batch_span(span: trace.Span, result: BatchResult) -> None:
    """The batch's span ends with its status and counts; a failed batch's is an error."""
    if not span.is_recording():
        return
    span.set_attribute("energy_platform.status", result.status)
    if result.reconciliation is not None:
        span.set_attributes(
            {
                "energy_platform.rows_read": result.reconciliation.rows_read,
                QUARANTINED: result.reconciliation.rows_quarantined,
                "energy_platform.silver_inserted": result.reconciliation.silver_inserted,
                "energy_platform.silver_updated": result.reconciliation.silver_updated,
            }
        )
    if result.status == "failed":
        span.set_status(trace.Status(trace.StatusCode.ERROR, result.error))
    span.end()


class UnitOfWork:
    """One batch's record in the metadata store and its commits to the lake: `start` records it
    as running, `rollback` undoes what it committed when it fails, `finish` records how it ended.
    A batch whose rollback failed stays recorded as running, so the next run's recovery retries."""

    def __init__(self, store: TableStore, metadata: MetadataStore, result: BatchResult, log: Any) -> None:
        self.store = store
        self.metadata = metadata
        self.result = result
        self.log = log

    def start(self, record: BatchRecord) -> int:
        """Record the batch as running; its sequence in the lake's order of commits."""
        return self.metadata.start_batch(record)

    def rollback(self) -> bool:
        """Roll back what the failed batch committed, saying so in its error. False if that failed."""
        result = self.result
        assert result.batch_id is not None
        try:
            undone = self.store.rollback(result.batch_id)
        except Exception as failure:  # the batch's own error stays the one reported
            self.log.error("rollback_failed", error=f"{type(failure).__name__}: {failure}")
            result.error = (
                f"{result.error} (rolling back its commits failed too: {failure}; the batch stays recorded as "
                "running, and the next run tries the rollback again)"
            )
            return False
        if undone:
            self.log.warning("batch_rolled_back", tables=undone)
            result.error = f"{result.error} (its commits to {', '.join(sorted(undone))} were rolled back)"
        return True

    def finish(self) -> None:
        result = self.result
        assert result.batch_id is not None
        self.metadata.finish_batch(
            batch_id=result.batch_id,
            status="failed" if result.status == "failed" else "succeeded",
            finished_at=datetime.now(UTC),
            record_count=result.reconciliation.rows_read if result.reconciliation else 0,
            reconciliation=result.reconciliation,
            layers=result.layers,
            rule_counts=result.rule_counts,
            error=result.error,
            files=result.files,
        )


class BatchPipeline:
    """Runs one batch of one source against a table store and a metadata store."""

    def __init__(
        self,
        *,
        store: TableStore,
        metadata: MetadataStore,
        reader: FileReader,
        execution_mode: str,
        logger: Any,
        progress: Progress | None = None,
        lake: str | None = None,
        on_batch: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.metadata = metadata
        self.reader = reader
        self.execution_mode = execution_mode
        self.log = logger
        self.progress = progress or (lambda _layer, _message: None)
        self.lake = lake
        #: Told the batch id before anything is recorded or written (the lake's lock names it).
        self.on_batch = on_batch or (lambda _batch_id: None)

    def run(
        self,
        source: SourceConfig,
        paths: list[Path],
        *,
        force: bool = False,
        now: datetime | None = None,
        batch_id: str | None = None,
        kind: str = "ingest",
        watermark: datetime | None = None,
    ) -> BatchResult:
        """Ingest `paths` as one batch (of `kind`: `ingest`, or `stream` for a stream's micro-batch);
        files already ingested successfully are skipped unless `force`."""
        started = now or datetime.now(UTC)
        files = [InputFile(path=str(p), sha256=self.reader.sha256_of(p), size_bytes=p.stat().st_size) for p in paths]
        result = BatchResult(batch_id=None, source=source.name, status="skipped")
        if not force:
            seen = self.metadata.successful_checksums([f.sha256 for f in files])
            result.skipped_files = [(f.path, seen[f.sha256]) for f in files if f.sha256 in seen]
            files = [f for f in files if f.sha256 not in seen]
        if not files:
            return result
        result.batch_id = batch_id or new_batch_id(started)
        result.files = files
        return self.execute(source, FileRows(self.reader, files, kind=kind), result, started, watermark=watermark)

    def replay(
        self, source: SourceConfig, original: BatchRecord, *, now: datetime | None = None, batch_id: str | None = None
    ) -> BatchResult:
        """Re-run the rows batch `original` quarantined through `source`'s current config and rules,
        as a new batch: rows that now pass reach silver and gold (by key, so once), the rest stay
        in quarantine under the original batch. Malformed lines stay as they are."""
        started = now or datetime.now(UTC)
        batch_of = original.batch_id
        if original.source != source.name:
            raise ConfigurationError(f"batch {batch_of} is of source {original.source!r}, not {source.name!r}")
        if original.status != "succeeded":
            raise ConfigurationError(
                f"batch {batch_of} is {original.status}; only a succeeded batch's quarantine can be replayed"
            )
        if source.value_kind == "register":
            raise NotAvailableError(
                f"source {source.name!r} reads meter registers, whose intervals depend on the rows around them "
                "in the file; re-ingest the files with --force instead of replaying their quarantine"
            )
        if source.ambiguous_time == "order":
            raise NotAvailableError(
                f"source {source.name!r} tells repeated fall-back hours apart by their order in the file, "
                "which quarantined rows no longer have; re-ingest the files with --force instead"
            )
        result = BatchResult(batch_id=None, source=source.name, status="skipped")
        stored = self.store.to_arrow(self.store.read(QUARANTINE_READINGS, where=[("batch_id", "in", [batch_of])]))
        malformed = pc.equal(stored["rule"], MALFORMED_ROW)
        rows = stored.filter(pc.invert(malformed)).sort_by([("source_file", "ascending"), ("line_number", "ascending")])
        if rows.num_rows == 0:
            result.error = f"batch {batch_of} has no quarantined rows that can be replayed"
            return result
        result.batch_id = batch_id or new_batch_id(started)
        return self.execute(
            source, QuarantineRows(replay_of=batch_of, rows=rows, kept=stored.filter(malformed)), result, started
        )

    def execute(
        self,
        source: SourceConfig,
        rows: RowSource,
        result: BatchResult,
        started: datetime,
        *,
        watermark: datetime | None = None,
        positions: Mapping[int, int] | None = None,
    ) -> BatchResult:
        """Run `rows` through the stages as batch `result.batch_id`, in a unit of work; `watermark`
        is a stream's, against which late reads are judged; `positions` a topic micro-batch's
        source positions (partition -> the last offset it takes), recorded with the batch."""
        assert result.batch_id is not None
        clock = time.perf_counter()
        self.on_batch(result.batch_id)
        log = self.log.bind(batch_id=result.batch_id, execution_mode=self.execution_mode, source=source.name)
        unit = UnitOfWork(self.store, self.metadata, result, log)
        sequence = unit.start(
            BatchRecord(
                batch_id=result.batch_id,
                source=source.name,
                execution_mode=self.execution_mode,
                status="running",
                started_at=started,
                ingestion_time=started,
                files=result.files,
                checksum=rows.checksum,
                kind=rows.kind,
                replay_of=rows.replay_of,
                lake=self.lake,
                positions={str(p): offset for p, offset in sorted((positions or {}).items())},
            )
        )
        log.info(
            "batch_started",
            files=[f.path for f in result.files],
            replay_of=rows.replay_of,
            sequence=sequence,
            record_count=None,
        )
        batch = Batch(
            source=source,
            batch_id=result.batch_id,
            sequence=sequence,
            started=started,
            store=self.store,
            positions=rows.recorded_positions,
            watermark=watermark,
            stream=rows.kind == "stream",
        )
        span = _tracer.start_span(
            "batch",
            attributes={
                BATCH_ID: result.batch_id,
                SOURCE: source.name,
                "energy_platform.kind": rows.kind,
                "energy_platform.execution_mode": self.execution_mode,
            },
        )
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                self._stages(batch, rows, result, log)
        except PlatformError as error:
            result.status, result.error = "failed", str(error)
            recorded = unit.rollback()
        except Exception as error:  # recorded, then re-raised: the batch must not stay "running"
            result.status, result.error = "failed", f"{type(error).__name__}: {error}"
            if unit.rollback():
                unit.finish()
            log.error("batch_failed", error=result.error)
            span.record_exception(error)
            _end_batch_span(span, result)
            raise
        else:
            recorded = True
        finally:
            self.store.release()
        result.duration_seconds = time.perf_counter() - clock
        if recorded:
            unit.finish()
        _end_batch_span(span, result)
        if result.status == "failed":
            log.error("batch_failed", error=result.error)
        else:
            log.info(
                "batch_completed",
                duration_seconds=round(result.duration_seconds, 3),
                record_count=result.reconciliation.rows_read if result.reconciliation else 0,
                peak_rss_mib=round(peak_rss_mib(), 1),
            )
        return result

    def _stages(self, batch: Batch, rows: RowSource, result: BatchResult, log: Any) -> None:
        """read -> validate -> VEE (a `fail` rule stops here, before any write) -> bronze ->
        quarantine and silver -> gold -> invariants."""
        store = self.store
        clock = time.perf_counter()
        self.progress("bronze", rows.describe())
        with _stage("read", batch) as span:
            read = rows.read(batch)
            span.set_attribute(ROWS_OUT, read.count)
        result.files = rows.files
        read_seconds = time.perf_counter() - clock

        clock = time.perf_counter()
        with _stage("validate", batch):
            validated = stages.validate(batch, read)
        with _stage("vee", batch):
            judged = stages.judge(batch, read, validated)
        result.rule_counts, result.estimates = judged.counts.rules, judged.counts.estimates
        stages.stop_on_fail(batch, judged)
        judge_seconds = time.perf_counter() - clock

        clock = time.perf_counter()
        with _stage("bronze", batch):
            landed = rows.land(batch, read)
        malformed = 0
        if landed is not None:
            malformed = read.count - landed
            spec = bronze_spec(batch.source.name, stages.bronze_columns(read.header))
            result.tables[spec.name] = store.location(spec.name)
            seconds = read_seconds + time.perf_counter() - clock
            self._layer_done(result, LayerMetrics("bronze", read.count, landed, malformed, seconds), log)

        clock = time.perf_counter()
        silver = stages.silver(batch, judged)
        result.reconciliation = stages.reconcile(batch, read.count, judged, silver)
        quarantined = judged.counts.quarantined
        with _stage("quarantine", batch) as span:
            written = rows.keep_quarantine(
                batch, stages.quarantine(batch, read, validated, judged, under=rows.quarantine_under(batch))
            )
            span.set_attribute(ROWS_OUT, written)
        if written != quarantined:
            raise ReconciliationError(f"batch {batch.batch_id}: {quarantined} rows rejected but {written} quarantined")
        with _stage("silver", batch) as span:
            merged = stages.merge_silver(batch, silver, replace_equal_rank=rows.replace_equal_rank)
            span.set_attributes(
                {"energy_platform.inserted": merged.inserted, "energy_platform.updated": merged.updated}
            )
        result.reconciliation = stages.reconcile(batch, read.count, judged, silver, merged)
        for table in (QUARANTINE_READINGS, SILVER_READINGS):
            result.tables[table.name] = store.location(table.name)
        self._layer_done(
            result,
            LayerMetrics(
                "silver",
                landed if landed is not None else read.count,
                silver.reads + silver.estimated,
                quarantined - malformed,
                judge_seconds + time.perf_counter() - clock,
            ),
            log,
        )

        clock = time.perf_counter()
        with _stage("gold", batch) as span:
            gold_in, gold_out = stages.gold(batch, silver)
            span.set_attributes({ROWS_IN: gold_in, ROWS_OUT: gold_out})
        result.latest_interval = silver.bounds["last"] if silver.bounds else None
        for table in (GOLD_DAILY_METER_ENERGY, GOLD_HOURLY_PORTFOLIO_LOAD):
            result.tables[table.name] = store.location(table.name)
        with _stage("invariants", batch):
            stages.check_invariants(batch, validated, judged, silver)
        self._layer_done(result, LayerMetrics("gold", gold_in, gold_out, 0, time.perf_counter() - clock), log)
        result.status = "succeeded"

    def _layer_done(self, result: BatchResult, metrics: LayerMetrics, log: Any) -> None:
        result.layers.append(metrics)
        # A layer's span ends now and lasts its own seconds (bronze: reading and landing).
        end = time.time_ns()
        span = _tracer.start_span(
            f"layer {metrics.layer}",
            start_time=end - int(metrics.duration_seconds * 1e9),
            attributes={
                BATCH_ID: result.batch_id or "",
                SOURCE: result.source,
                ROWS_IN: metrics.records_in,
                ROWS_OUT: metrics.records_out,
                QUARANTINED: metrics.quarantined,
            },
        )
        span.end(end_time=end)
        log.info("layer_completed", **{k: v for k, v in vars(metrics).items()})
        rate = metrics.records_in / metrics.duration_seconds if metrics.duration_seconds > 0 else 0.0
        self.progress(
            metrics.layer,
            f"{metrics.records_in:,} in, {metrics.records_out:,} out, "
            f"{metrics.quarantined:,} quarantined, {metrics.duration_seconds:.2f}s ({rate:,.0f} rows/s)",
        )
