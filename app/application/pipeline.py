"""The batch pipeline: files -> bronze -> silver (+ quarantine) -> gold, with reconciliation."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import narwhals as nw
import pyarrow as pa
import pyarrow.compute as pc

from app.application.metrics import BatchRecord, InputFile, LayerMetrics, Reconciliation
from app.domain.errors import PlatformError, ReconciliationError
from app.domain.parsing import parsed_readings, raw_column
from app.domain.rules import MALFORMED_ROW, RuleParams, validated_readings
from app.domain.schemas import (
    BRONZE_LINEAGE,
    GOLD_DAILY_METER_ENERGY,
    GOLD_HOURLY_PORTFOLIO_LOAD,
    QUARANTINE_READINGS,
    SILVER_COMPARED,
    SILVER_READINGS,
    TableSpec,
    bronze_spec,
)
from app.domain.sources import SourceConfig
from app.domain.transforms import (
    SilverParams,
    gold_daily_meter_energy,
    gold_hourly_portfolio_load,
    local_day_minutes,
    silver_readings,
)
from app.infrastructure.monitoring import peak_rss_mib
from app.infrastructure.readers import RawFile, read_raw_csv, sha256_of
from app.infrastructure.repositories.base import MetadataStore, TableStore

Progress = Callable[[str, str], None]


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
    tables: dict[str, str] = field(default_factory=dict)
    duration_seconds: float = 0.0
    error: str | None = None


def _bronze_name(column: str, taken: set[str]) -> str:
    """File column -> a Delta-safe bronze column name that does not clash with lineage."""
    name = re.sub(r"[^0-9a-zA-Z_]+", "_", column.strip()).strip("_").lower() or "column"
    while name in taken:
        name += "_raw"
    taken.add(name)
    return name


def _bronze_table(raw: pa.Table, header: list[str], *, source: str, batch_id: str, at: datetime) -> pa.Table:
    taken = set(BRONZE_LINEAGE.names)
    names = [_bronze_name(c, taken) for c in header]
    n = raw.num_rows
    columns = [raw[c] for c in header] + [
        pa.repeat(batch_id, n),
        pa.repeat(source, n),
        raw["source_file"],
        raw["line_number"],
        pa.repeat(pa.scalar(at, BRONZE_LINEAGE.field("ingested_at").type), n),
    ]
    return pa.table(columns, names=names + BRONZE_LINEAGE.names)


def _quarantine_table(
    rejected: pa.Table,
    header: list[str],
    malformed: list[tuple[str, int, str]],
    *,
    source: str,
    batch_id: str,
    at: datetime,
) -> pa.Table:
    """Rejected rows with their rule and the raw record as JSON, keys as in the file header."""
    raw_cols = [rejected[raw_column(i)].to_pylist() for i in range(len(header))]
    records = [
        json.dumps(dict(zip(header, values, strict=True)), ensure_ascii=False) for values in zip(*raw_cols, strict=True)
    ]
    files = rejected["source_file"].to_pylist() + [f for f, _, _ in malformed]
    lines = rejected["line_number"].to_pylist() + [line for _, line, _ in malformed]
    rules = rejected["rejection_rule"].to_pylist() + [MALFORMED_ROW] * len(malformed)
    records += [json.dumps({"line": text}, ensure_ascii=False) for _, _, text in malformed]
    n = len(files)
    return pa.table(
        {
            "batch_id": pa.repeat(batch_id, n),
            "source": pa.repeat(source, n),
            "source_file": pa.array(files, pa.string()),
            "line_number": pa.array(lines, pa.int64()),
            "rule": pa.array(rules, pa.string()),
            "raw_record": pa.array(records, pa.string()),
            "quarantined_at": pa.repeat(pa.scalar(at, QUARANTINE_READINGS.schema.field("quarantined_at").type), n),
        }
    ).cast(QUARANTINE_READINGS.schema)


def _concat_raw(files: list[RawFile]) -> tuple[pa.Table, list[str]]:
    """All files' rows in one table with lineage and a batch-wide row order."""
    header = list(dict.fromkeys(c for f in files for c in f.header))
    tables = []
    for f in files:
        t = f.table
        for c in header:
            if c not in t.column_names:
                t = t.append_column(c, pa.repeat("", t.num_rows).cast(pa.string()))
        t = t.select([*header, "line_number"]).append_column(
            "source_file", pa.repeat(str(f.path), t.num_rows).cast(pa.string())
        )
        tables.append(t)
    raw = pa.concat_tables(tables)
    return raw.append_column("row_order", pa.array(range(raw.num_rows), pa.int64())), header


class BatchPipeline:
    """Runs one batch of one source against a table store and a metadata store."""

    def __init__(
        self,
        *,
        store: TableStore,
        metadata: MetadataStore,
        execution_mode: str,
        logger: Any,
        progress: Progress | None = None,
    ) -> None:
        self.store = store
        self.metadata = metadata
        self.execution_mode = execution_mode
        self.log = logger
        self.progress = progress or (lambda _layer, _message: None)

    def run(
        self,
        source: SourceConfig,
        paths: list[Path],
        *,
        force: bool = False,
        now: datetime | None = None,
        batch_id: str | None = None,
    ) -> BatchResult:
        started = now or datetime.now(UTC)
        clock = time.perf_counter()
        files = [InputFile(path=str(p), sha256=sha256_of(p), size_bytes=p.stat().st_size) for p in paths]
        result = BatchResult(batch_id=None, source=source.name, status="skipped")
        if not force:
            seen = self.metadata.successful_checksums([f.sha256 for f in files])
            result.skipped_files = [(f.path, seen[f.sha256]) for f in files if f.sha256 in seen]
            files = [f for f in files if f.sha256 not in seen]
        if not files:
            return result
        result.batch_id = batch_id or new_batch_id(started)
        result.files = files
        log = self.log.bind(batch_id=result.batch_id, execution_mode=self.execution_mode, source=source.name)
        checksum = hashlib.sha256("".join(f.sha256 for f in files).encode()).hexdigest()
        self.metadata.start_batch(
            BatchRecord(
                batch_id=result.batch_id,
                source=source.name,
                execution_mode=self.execution_mode,
                status="running",
                started_at=started,
                ingestion_time=started,
                files=files,
                checksum=checksum,
            )
        )
        log.info("batch_started", files=[f.path for f in files], record_count=None)
        try:
            self._layers(source, result, log, started)
        except PlatformError as error:
            result.status, result.error = "failed", str(error)
        except Exception as error:  # recorded, then re-raised: the batch must not stay "running"
            result.status, result.error = "failed", f"{type(error).__name__}: {error}"
            self._finish(result)
            log.error("batch_failed", error=result.error)
            raise
        result.duration_seconds = time.perf_counter() - clock
        self._finish(result)
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

    def _finish(self, result: BatchResult) -> None:
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

    def _layer_done(self, result: BatchResult, metrics: LayerMetrics, log: Any) -> None:
        result.layers.append(metrics)
        log.info("layer_completed", **{k: v for k, v in vars(metrics).items()})
        self.progress(
            metrics.layer,
            f"{metrics.records_in:,} in, {metrics.records_out:,} out, "
            f"{metrics.quarantined:,} quarantined, {metrics.duration_seconds:.2f}s",
        )

    def _layers(self, source: SourceConfig, result: BatchResult, log: Any, started: datetime) -> None:
        assert result.batch_id is not None
        batch_id = result.batch_id

        # Bronze: read every file first, so a bad file fails the batch before anything is written.
        clock = time.perf_counter()
        self.progress("bronze", f"reading {len(result.files)} file(s)")
        raw_files = [read_raw_csv(Path(f.path), source) for f in result.files]
        result.files = [
            InputFile(path=f.path, sha256=f.sha256, size_bytes=f.size_bytes, record_count=r.rows_read)
            for f, r in zip(result.files, raw_files, strict=True)
        ]
        raw, header = _concat_raw(raw_files)
        malformed = [(str(r.path), line, text) for r in raw_files for line, text in r.malformed]
        rows_read = raw.num_rows + len(malformed)
        bronze = _bronze_table(raw, header, source=source.name, batch_id=batch_id, at=started)
        spec = bronze_spec(source.name, bronze.column_names[: len(header)])
        bronze_rows = self.store.append(spec, self.store.frame(bronze), batch_id=batch_id)
        result.tables[spec.name] = self.store.location(spec.name)
        self._layer_done(
            result,
            LayerMetrics("bronze", rows_read, bronze_rows, len(malformed), time.perf_counter() - clock),
            log,
        )

        # Silver: type in Arrow, validate and de-duplicate on the engine, then upsert.
        clock = time.perf_counter()
        parsed = parsed_readings(raw, source)
        parsed = parsed.append_column("row_order", raw["row_order"])
        params = RuleParams.for_source(source, now_utc=started)
        validated = self.store.frame(self.store.to_arrow(validated_readings(self.store.frame(parsed), params)))
        rejected = self.store.to_arrow(validated.filter(~nw.col("rejection_rule").is_null()))
        silver_params = SilverParams(source.name, batch_id, source.interval_minutes, source.series_timezone)
        silver = self.store.to_arrow(silver_readings(validated, silver_params))
        quarantine = _quarantine_table(rejected, header, malformed, source=source.name, batch_id=batch_id, at=started)
        accepted_rows = raw.num_rows - rejected.num_rows
        duplicates = accepted_rows - silver.num_rows
        rule_counts = pc.value_counts(quarantine["rule"]).to_pylist() if quarantine.num_rows else []
        result.rule_counts = {item["values"]: int(item["counts"]) for item in rule_counts}
        result.reconciliation = Reconciliation(
            rows_read=rows_read,
            rows_accepted=silver.num_rows,
            rows_quarantined=quarantine.num_rows,
            duplicates_replaced=duplicates,
        )
        if rows_read != silver.num_rows + quarantine.num_rows + duplicates:
            raise ReconciliationError(f"batch {batch_id}: {result.reconciliation}")
        self.store.append(QUARANTINE_READINGS, self.store.frame(quarantine), batch_id=batch_id)
        counts = self.store.upsert(
            SILVER_READINGS, self.store.frame(silver), compare=SILVER_COMPARED, batch_id=batch_id
        )
        result.reconciliation = Reconciliation(
            rows_read=rows_read,
            rows_accepted=silver.num_rows,
            rows_quarantined=quarantine.num_rows,
            duplicates_replaced=duplicates,
            silver_inserted=counts.inserted,
            silver_updated=counts.updated,
            silver_unchanged=counts.unchanged,
        )
        if not result.reconciliation.balanced:
            raise ReconciliationError(f"batch {batch_id}: rows do not reconcile: {result.reconciliation}")
        for table in (QUARANTINE_READINGS, SILVER_READINGS):
            result.tables[table.name] = self.store.location(table.name)
        self._layer_done(
            result,
            LayerMetrics("silver", raw.num_rows, silver.num_rows, rejected.num_rows, time.perf_counter() - clock),
            log,
        )

        # Gold: recompute only the meter-days and hours this batch touched.
        clock = time.perf_counter()
        gold_in, gold_out = self._gold(silver, batch_id)
        for table in (GOLD_DAILY_METER_ENERGY, GOLD_HOURLY_PORTFOLIO_LOAD):
            result.tables[table.name] = self.store.location(table.name)
        self._layer_done(result, LayerMetrics("gold", gold_in, gold_out, 0, time.perf_counter() - clock), log)
        result.status = "succeeded"

    def _gold(self, silver: pa.Table, batch_id: str) -> tuple[int, int]:
        if silver.num_rows == 0:
            return 0, 0
        meters = pc.unique(silver["meter_id"]).to_pylist()
        days = pc.unique(silver["local_date"]).to_pylist()
        touched = self.store.read(SILVER_READINGS, where=[("meter_id", "in", meters), ("local_date", "in", days)])
        touched_rows = self.store.to_arrow(touched)
        calendar = local_day_minutes(
            zip(touched_rows["local_date"].to_pylist(), touched_rows["timezone"].to_pylist(), strict=True)
        )
        daily = gold_daily_meter_energy(self.store.frame(touched_rows), self.store.frame(calendar))
        daily_counts = self._upsert(GOLD_DAILY_METER_ENERGY, daily, batch_id)

        first = pc.min(silver["interval_start_utc"]).as_py().replace(minute=0, second=0, microsecond=0)
        last = pc.max(silver["interval_start_utc"]).as_py() + timedelta(hours=1)
        hours = self.store.read(
            SILVER_READINGS, where=[("interval_start_utc", ">=", first), ("interval_start_utc", "<", last)]
        )
        hourly_counts = self._upsert(GOLD_HOURLY_PORTFOLIO_LOAD, gold_hourly_portfolio_load(hours), batch_id)
        written = daily_counts + hourly_counts
        return touched_rows.num_rows, written

    def _upsert(self, spec: TableSpec, frame: nw.LazyFrame[Any], batch_id: str) -> int:
        counts = self.store.upsert(spec, frame, compare=spec.value_columns, batch_id=batch_id)
        return counts.inserted + counts.updated + counts.unchanged
