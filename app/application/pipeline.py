"""The batch pipeline: files -> bronze -> silver (+ quarantine) -> gold, with reconciliation."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import narwhals as nw
import pyarrow as pa

from app.application.metrics import BatchRecord, InputFile, LayerMetrics, Reconciliation
from app.domain.errors import InputFileError, PlatformError, ReconciliationError
from app.domain.parsing import parsed_readings, parsed_schema, raw_column
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
from app.infrastructure.readers import KIND_ERROR, KIND_MALFORMED, KIND_ROW, read_head, read_header, sha256_of
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


def rejected_records(rejected: pa.Table, *, header: list[str], source: str, batch_id: str, at: datetime) -> pa.Table:
    """Rejected parsed rows -> quarantine rows, the raw record as JSON keyed by the file header."""
    raw_cols = [rejected[raw_column(i)].to_pylist() for i in range(len(header))]
    records = [
        json.dumps(dict(zip(header, values, strict=True)), ensure_ascii=False) for values in zip(*raw_cols, strict=True)
    ]
    return _quarantine_rows(rejected, rejected["rejection_rule"], records, source=source, batch_id=batch_id, at=at)


def malformed_records(malformed: pa.Table, *, source: str, batch_id: str, at: datetime) -> pa.Table:
    """Lines the reader could not split into the header's fields -> quarantine rows."""
    records = [json.dumps({"line": text}, ensure_ascii=False) for text in malformed["detail"].to_pylist()]
    rules = pa.repeat(MALFORMED_ROW, malformed.num_rows).cast(pa.string())
    return _quarantine_rows(malformed, rules, records, source=source, batch_id=batch_id, at=at)


def _quarantine_rows(
    rows: pa.Table, rules: Any, records: list[str], *, source: str, batch_id: str, at: datetime
) -> pa.Table:
    n = rows.num_rows
    return pa.table(
        {
            "batch_id": pa.repeat(batch_id, n).cast(pa.string()),
            "source": pa.repeat(source, n).cast(pa.string()),
            "source_file": rows["source_file"].cast(pa.string()),
            "line_number": rows["line_number"],
            "rule": rules,
            "raw_record": pa.array(records, pa.string()),
            "quarantined_at": pa.repeat(pa.scalar(at, QUARANTINE_READINGS.schema.field("quarantined_at").type), n),
        }
    ).cast(QUARANTINE_READINGS.schema)


def parse_rows(raw: pa.Table, *, source: SourceConfig, header: list[str]) -> pa.Table:
    """Raw-read rows -> typed rows; runs per Arrow batch on either engine."""
    return parsed_readings(raw, source, header).cast(parsed_schema(header))


def bronze_columns(header: list[str]) -> list[str]:
    """File columns -> Delta-safe bronze column names that do not clash with lineage."""
    taken = set(BRONZE_LINEAGE.names)
    return [_bronze_name(c, taken) for c in header]


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
        finally:
            self.store.release()
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

    def _read(self, source: SourceConfig, result: BatchResult) -> tuple[nw.LazyFrame[Any], list[str], int]:
        """Read the batch's files on the engine; file-level errors fail the batch before any write."""
        paths = [f.path for f in result.files]
        # Headers first, from each file's first bytes, so both engines agree on the columns.
        headers = [read_header(p, read_head(Path(p)), source) for p in paths]
        header = list(dict.fromkeys(c for h in headers for c in h))
        read = self.store.cache(self.store.read_files(paths, source, header))
        per_file = self.store.collect(
            read.group_by("file_index", "kind").agg(nw.len().alias("rows"), nw.col("line_number").min().alias("line"))
        ).to_pylist()
        errors = sorted((r["file_index"], r["line"]) for r in per_file if r["kind"] == KIND_ERROR)
        if errors:
            index = errors[0][0]
            detail = self.store.collect(
                read.filter((nw.col("kind") == KIND_ERROR) & (nw.col("file_index") == index)).select("detail")
            )["detail"][0].as_py()
            raise InputFileError(paths[index], detail, line=errors[0][1])
        counts = [0] * len(paths)
        for r in per_file:
            counts[r["file_index"]] += r["rows"]
        result.files = [
            InputFile(path=f.path, sha256=f.sha256, size_bytes=f.size_bytes, record_count=n)
            for f, n in zip(result.files, counts, strict=True)
        ]
        return read, header, sum(counts)

    def _layers(self, source: SourceConfig, result: BatchResult, log: Any, started: datetime) -> None:
        assert result.batch_id is not None
        batch_id = result.batch_id
        store = self.store

        # Bronze: every row as received, with lineage.
        clock = time.perf_counter()
        self.progress("bronze", f"reading {len(result.files)} file(s)")
        read, header, rows_read = self._read(source, result)
        rows = read.filter(nw.col("kind") == KIND_ROW)
        malformed = read.filter(nw.col("kind") == KIND_MALFORMED)
        names = bronze_columns(header)
        bronze = rows.select(
            *(nw.col(c).alias(n) for c, n in zip(header, names, strict=True)),
            nw.lit(batch_id, nw.String()).alias("batch_id"),
            nw.lit(source.name, nw.String()).alias("source"),
            "source_file",
            "line_number",
            nw.lit(started, nw.Datetime("us", "UTC")).alias("ingested_at"),
        )
        spec = bronze_spec(source.name, names)
        bronze_rows = store.append(spec, bronze, batch_id=batch_id)
        result.tables[spec.name] = store.location(spec.name)
        malformed_rows = rows_read - bronze_rows
        self._layer_done(
            result, LayerMetrics("bronze", rows_read, bronze_rows, malformed_rows, time.perf_counter() - clock), log
        )

        # Silver: type in Arrow batches, validate and de-duplicate on the engine, then upsert.
        clock = time.perf_counter()
        parsed = store.map_arrow(rows, partial(parse_rows, source=source, header=header), parsed_schema(header))
        params = RuleParams.for_source(source, now_utc=started)
        validated = store.cache(validated_readings(parsed, params))
        rejected = validated.filter(~nw.col("rejection_rule").is_null())
        lineage: dict[str, Any] = {"source": source.name, "batch_id": batch_id, "at": started}
        quarantine = nw.concat(
            [
                store.map_arrow(
                    rejected, partial(rejected_records, header=header, **lineage), QUARANTINE_READINGS.schema
                ),
                store.map_arrow(malformed, partial(malformed_records, **lineage), QUARANTINE_READINGS.schema),
            ]
        )
        silver_params = SilverParams(source.name, batch_id, source.interval_minutes, source.series_timezone)
        silver = store.cache(silver_readings(validated, silver_params))
        rule_counts = store.collect(quarantine.group_by("rule").agg(nw.len().alias("rows"))).to_pylist()
        result.rule_counts = {r["rule"]: int(r["rows"]) for r in sorted(rule_counts, key=lambda r: r["rule"])}
        quarantined = sum(result.rule_counts.values())
        silver_rows = store.count_rows(silver)
        duplicates = bronze_rows - (quarantined - malformed_rows) - silver_rows
        result.reconciliation = Reconciliation(
            rows_read=rows_read,
            rows_accepted=silver_rows,
            rows_quarantined=quarantined,
            duplicates_replaced=duplicates,
        )
        if rows_read != silver_rows + quarantined + duplicates:
            raise ReconciliationError(f"batch {batch_id}: {result.reconciliation}")
        written = store.append(QUARANTINE_READINGS, quarantine, batch_id=batch_id)
        if written != quarantined:
            raise ReconciliationError(f"batch {batch_id}: {quarantined} rows rejected but {written} quarantined")
        bounds = self._bounds(silver) if silver_rows else None
        # A key's stored local day can differ from this batch's by a day at most (if the
        # source's zone changed), so the merge looks one day either side and no further.
        around = (bounds["first_day"] - timedelta(days=1), bounds["last_day"] + timedelta(days=1)) if bounds else None
        counts = store.upsert(SILVER_READINGS, silver, compare=SILVER_COMPARED, batch_id=batch_id, local_days=around)
        result.reconciliation = Reconciliation(
            rows_read=rows_read,
            rows_accepted=silver_rows,
            rows_quarantined=quarantined,
            duplicates_replaced=duplicates,
            silver_inserted=counts.inserted,
            silver_updated=counts.updated,
            silver_unchanged=counts.unchanged,
        )
        if not result.reconciliation.balanced:
            raise ReconciliationError(f"batch {batch_id}: rows do not reconcile: {result.reconciliation}")
        for table in (QUARANTINE_READINGS, SILVER_READINGS):
            result.tables[table.name] = store.location(table.name)
        self._layer_done(
            result,
            LayerMetrics("silver", bronze_rows, silver_rows, quarantined - malformed_rows, time.perf_counter() - clock),
            log,
        )

        # Gold: recompute only the meter-days and hours this batch touched.
        clock = time.perf_counter()
        gold_in, gold_out = self._gold(silver, bounds, batch_id) if bounds else (0, 0)
        for table in (GOLD_DAILY_METER_ENERGY, GOLD_HOURLY_PORTFOLIO_LOAD):
            result.tables[table.name] = store.location(table.name)
        self._layer_done(result, LayerMetrics("gold", gold_in, gold_out, 0, time.perf_counter() - clock), log)
        result.status = "succeeded"

    def _bounds(self, silver: nw.LazyFrame[Any]) -> dict[str, Any]:
        """First and last local day and interval start of the batch's silver rows."""
        return self.store.collect(
            silver.select(
                nw.col("local_date").min().alias("first_day"),
                nw.col("local_date").max().alias("last_day"),
                nw.col("interval_start_utc").min().alias("first"),
                nw.col("interval_start_utc").max().alias("last"),
            )
        ).to_pylist()[0]

    def _gold(self, silver: nw.LazyFrame[Any], bounds: dict[str, Any], batch_id: str) -> tuple[int, int]:
        store = self.store
        days = (bounds["first_day"], bounds["last_day"])
        touched_keys = silver.select("meter_id", "local_date").unique()
        in_days = store.read(SILVER_READINGS, where=[("local_date", ">=", days[0]), ("local_date", "<=", days[1])])
        touched = store.cache(in_days.join(touched_keys, on=["meter_id", "local_date"], how="semi"))
        zones = store.collect(touched.select("local_date", "timezone").unique()).to_pylist()
        calendar = local_day_minutes((z["local_date"], z["timezone"]) for z in zones)
        daily = gold_daily_meter_energy(touched, store.frame(calendar))
        daily_counts = self._upsert(GOLD_DAILY_METER_ENERGY, daily, batch_id, local_days=days)

        first = bounds["first"].replace(minute=0, second=0, microsecond=0)
        last = bounds["last"] + timedelta(hours=1)
        hours = store.read(
            SILVER_READINGS, where=[("interval_start_utc", ">=", first), ("interval_start_utc", "<", last)]
        )
        hourly_counts = self._upsert(GOLD_HOURLY_PORTFOLIO_LOAD, gold_hourly_portfolio_load(hours), batch_id)
        return store.count_rows(touched), daily_counts + hourly_counts

    def _upsert(
        self, spec: TableSpec, frame: nw.LazyFrame[Any], batch_id: str, local_days: tuple[date, date] | None = None
    ) -> int:
        counts = self.store.upsert(spec, frame, compare=spec.value_columns, batch_id=batch_id, local_days=local_days)
        return counts.inserted + counts.updated + counts.unchanged
