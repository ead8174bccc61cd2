"""The batch pipeline: files -> bronze -> silver (+ quarantine) -> gold, with reconciliation."""

from __future__ import annotations

import json
import re
import resource
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import narwhals as nw
import pyarrow as pa
import pyarrow.compute as pc

from app.application.ports import FileReader, MetadataStore, TableStore
from app.domain.batches import BatchRecord, InputFile, LayerMetrics, Reconciliation, batch_checksum, replay_checksum
from app.domain.errors import (
    ConfigurationError,
    InputFileError,
    InvariantError,
    NotAvailableError,
    PlatformError,
    ReconciliationError,
    ValidationFailedError,
)
from app.domain.parsing import parsed_readings, parsed_schema, raw_column
from app.domain.registers import (
    METHOD_REGISTER_SPREAD,
    RegisterParams,
    difference_registers,
    register_schema,
    spread_register_spans,
)
from app.domain.rules import (
    DUPLICATE_REPLACED,
    MALFORMED_ROW,
    MISSING_INTERVALS,
    SERIES_RULES,
    RuleParams,
    validated_readings,
)
from app.domain.schemas import (
    BRONZE_LINEAGE,
    GOLD_DAILY_METER_ENERGY,
    GOLD_HOURLY_PORTFOLIO_LOAD,
    KIND_ERROR,
    KIND_MALFORMED,
    KIND_ROW,
    NARWHALS_TYPES,
    QUARANTINE_READINGS,
    SILVER_COMPARED,
    SILVER_READINGS,
    UTC_TIMESTAMP,
    TableSpec,
    bronze_spec,
    read_schema,
)
from app.domain.sources import SourceConfig
from app.domain.transforms import (
    SilverParams,
    deduplicated_readings,
    gold_daily_meter_energy,
    gold_hourly_portfolio_load,
    local_day_minutes,
    quality_rank,
    silver_readings,
)
from app.domain.vee import VEE_RULES, VeeParams, apply_vee, vee_schema

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


@dataclass(frozen=True)
class _Counts:
    rules: dict[str, int]
    quarantined: int
    duplicates: int
    estimates: dict[str, int]
    #: Rows added by booking register spans on each of their intervals.
    spread: int = 0


#: Columns the VEE stage works on, besides the raw file columns carried for quarantine.
_VEE_FIELDS = pa.schema(
    [
        ("meter_id", pa.string()),
        ("direction", pa.string()),
        ("interval_start_utc", UTC_TIMESTAMP),
        ("interval_minutes", pa.int32()),
        ("local_date", pa.date32()),
        ("energy_kwh", pa.float64()),
        ("reported_kwh", pa.float64()),
        ("quality_flag", pa.string()),
        ("quality_rank", pa.int32()),
        ("rejection_rule", pa.string()),
        ("validation_flags", pa.string()),
        ("role", pa.string()),
        ("estimation_method", pa.string()),
        ("source_file", pa.string()),
        ("line_number", pa.int64()),
        ("row_order", pa.int64()),
    ]
)


def vee_input_schema() -> pa.Schema:
    """Schema of the VEE stage's input. The raw file columns stay behind: the few rows a series
    rule quarantines get them back by their key and read order."""
    return _VEE_FIELDS


def _vee_columns(
    frame: nw.LazyFrame[Any], schema: pa.Schema, *, reported: nw.Expr, energy: nw.Expr | None = None
) -> nw.LazyFrame[Any]:
    """Batch rows in the VEE input layout."""
    derived = {
        "energy_kwh": energy if energy is not None else nw.col("energy_kwh"),
        "reported_kwh": reported,
        "quality_flag": nw.col("quality"),
        "role": nw.lit("batch"),
    }
    if "estimation_method" not in frame.collect_schema().names():  # set on register spans only
        derived["estimation_method"] = nw.lit(None, nw.String())
    return frame.select(
        *(
            (derived[n] if n in derived else nw.col(n)).cast(NARWHALS_TYPES[schema.field(n).type]).alias(n)
            for n in schema.names
        )
    )


def _history_columns(frame: nw.LazyFrame[Any], schema: pa.Schema) -> nw.LazyFrame[Any]:
    """Stored silver rows in the VEE input layout, as context."""
    columns = []
    for name in schema.names:
        dtype = NARWHALS_TYPES[schema.field(name).type]
        if name == "role":
            columns.append(nw.lit("history", nw.String()).alias(name))
        elif name == "validation_flags":
            columns.append(nw.lit("", nw.String()).alias(name))
        elif name in SILVER_READINGS.schema.names and name != "reported_kwh":
            columns.append(nw.col(name).cast(dtype).alias(name))
        elif name == "row_order":  # not null: pandas cannot cast a null literal to an integer
            columns.append(nw.lit(-1, dtype).alias(name))
        else:  # reported value, rejection, read order and raw columns: none for stored rows
            columns.append(nw.lit(None, dtype).alias(name))
    return frame.select(*columns)


#: Silver columns the daily gold table is computed from.
_GOLD_DAILY_INPUT = (
    "meter_id",
    "direction",
    "local_date",
    "timezone",
    "energy_kwh",
    "interval_minutes",
    "quality_flag",
)
#: Parsed columns the rules read and nothing after them does.
_PARSE_ONLY = ("timestamp_status", "value", "value_status", "unit", "local_seconds")


#: Relative tolerance of the invariants' float comparisons.
_TOLERANCE = 1e-9


def _validated_schema(parsed: pa.Schema) -> pa.Schema:
    """Schema of `validated_readings` over parsed rows, without the columns only the rules read."""
    kept = [f for f in parsed if f.name not in _PARSE_ONLY]
    return pa.schema(
        [*kept, ("energy_kwh", pa.float64()), ("rejection_rule", pa.string()), ("validation_flags", pa.string())]
    )


def _concat(frames: list[nw.LazyFrame[Any]]) -> nw.LazyFrame[Any]:
    """`nw.concat`, without pandas' warning about all-null columns (their types are declared)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The behavior of DataFrame concatenation", FutureWarning)
        return nw.concat(frames)


def _apply_vee(table: pa.Table, *, params: VeeParams, schema: pa.Schema) -> pa.Table:
    """`apply_vee` on rows typed as declared (an engine may hand over all-null columns untyped).
    Tables have no row order, so the output is not sorted."""
    return apply_vee(table.select(schema.names).cast(schema), params, ordered=False)


def register_params(source: SourceConfig, rules: RuleParams) -> RegisterParams:
    """How a register source's reads are differenced (interval ends make a read's time its end)."""
    ends_given = source.columns.interval_end is not None or source.columns.period is not None
    return RegisterParams(
        rules=rules, label="end" if ends_given else source.timestamp_label, series_timezone=source.series_timezone
    )


def vee_params(source: SourceConfig) -> VeeParams:
    """The source's series rules and estimation settings."""
    return VeeParams(
        series_timezone=source.series_timezone,
        validation=source.validation,
        estimation=source.estimation,
        severities={rule: source.severity(rule) for rule in VEE_RULES},
    )


def _placeable() -> nw.Expr:
    """A rejected row whose key can be trusted: VEE places it (its interval is estimated, its value kept)."""
    return (
        ~nw.col("rejection_rule").is_null()
        & (nw.col("meter_id") != "")
        & ~nw.col("interval_start_utc").is_null()
        & ~nw.col("interval_minutes").is_null()
        & nw.col("direction").is_in(["import", "export"])
    ).fill_null(value=False)


def vee_batch_rows(validated: nw.LazyFrame[Any], accepted: nw.LazyFrame[Any]) -> nw.LazyFrame[Any]:
    """The batch's rows in the VEE input layout: accepted reads de-duplicated, and the rejected
    rows VEE can place."""
    schema = vee_input_schema()
    rejected = validated.filter(_placeable()).with_columns(quality_rank=quality_rank())
    return _concat(
        [
            _vee_columns(deduplicated_readings(accepted), schema, reported=nw.col("energy_kwh")),
            _vee_columns(rejected, schema, reported=nw.col("energy_kwh"), energy=nw.lit(None, nw.Float64())),
        ]
    )


def parse_rows(raw: pa.Table, *, source: SourceConfig, header: list[str]) -> pa.Table:
    """Raw-read rows -> typed rows; runs per Arrow batch on either engine."""
    return parsed_readings(raw, source, header).cast(parsed_schema(header))


def bronze_columns(header: list[str]) -> list[str]:
    """File columns -> Delta-safe bronze column names that do not clash with lineage."""
    taken = set(BRONZE_LINEAGE.names)
    return [_bronze_name(c, taken) for c in header]


#: What a batch reads: the raw-read rows, the header they are under, and how many there are.
ReadRows = tuple[nw.LazyFrame[Any], list[str], int]


@dataclass(frozen=True)
class _Replay:
    """A replay's original batch, and its quarantine rows that stay as they are (malformed lines)."""

    batch_of: str
    kept: pa.Table


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
    ) -> BatchResult:
        started = now or datetime.now(UTC)
        clock = time.perf_counter()
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
        checksum = batch_checksum(f.sha256 for f in files)
        return self._execute(
            source, result, started, clock, checksum=checksum, read=lambda: self._read(source, result), replay=None
        )

    def replay(
        self, source: SourceConfig, original: BatchRecord, *, now: datetime | None = None, batch_id: str | None = None
    ) -> BatchResult:
        """Re-run the rows batch `original` quarantined through `source`'s current config and rules,
        as a new batch: rows that now pass reach silver and gold (by key, so once), the rest stay
        in quarantine under the original batch. Malformed lines stay as they are."""
        started = now or datetime.now(UTC)
        clock = time.perf_counter()
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
        # In file order, so that of two reads of one interval the later line wins, as on ingest.
        rows = stored.filter(pc.invert(malformed)).sort_by([("source_file", "ascending"), ("line_number", "ascending")])
        if rows.num_rows == 0:
            result.error = f"batch {batch_of} has no quarantined rows that can be replayed"
            return result
        result.batch_id = batch_id or new_batch_id(started)
        replay = _Replay(batch_of=batch_of, kept=stored.filter(malformed))
        checksum = replay_checksum(batch_of, rows.num_rows)
        return self._execute(
            source, result, started, clock, checksum=checksum, read=lambda: self._quarantined(rows), replay=replay
        )

    def _quarantined(self, rows: pa.Table) -> ReadRows:
        """Quarantine rows as raw-read rows under the header their records were keyed by."""
        records = [json.loads(text) for text in rows["raw_record"].to_pylist()]
        header = list(dict.fromkeys(column for record in records for column in record))
        n = rows.num_rows
        columns: dict[str, Any] = {c: pa.array([r.get(c) for r in records], pa.string()) for c in header}
        columns.update(
            file_index=pa.repeat(pa.scalar(0, pa.int32()), n),
            source_file=rows["source_file"],
            line_number=rows["line_number"],
            row_order=pa.array(range(n), pa.int64()),
            kind=pa.repeat(KIND_ROW, n).cast(pa.string()),
            detail=pa.nulls(n, pa.string()),
            occurrence=pa.repeat(pa.scalar(0, pa.int32()), n),
        )
        return self.store.frame(pa.table(columns).cast(read_schema(header))), header, n

    def _execute(
        self,
        source: SourceConfig,
        result: BatchResult,
        started: datetime,
        clock: float,
        *,
        checksum: str,
        read: Callable[[], ReadRows],
        replay: _Replay | None,
    ) -> BatchResult:
        assert result.batch_id is not None
        self.on_batch(result.batch_id)
        log = self.log.bind(batch_id=result.batch_id, execution_mode=self.execution_mode, source=source.name)
        sequence = self.metadata.start_batch(
            BatchRecord(
                batch_id=result.batch_id,
                source=source.name,
                execution_mode=self.execution_mode,
                status="running",
                started_at=started,
                ingestion_time=started,
                files=result.files,
                checksum=checksum,
                kind="replay" if replay else "ingest",
                replay_of=replay.batch_of if replay else None,
                lake=self.lake,
            )
        )
        log.info(
            "batch_started",
            files=[f.path for f in result.files],
            replay_of=replay.batch_of if replay else None,
            sequence=sequence,
            record_count=None,
        )
        try:
            self._layers(source, result, log, started, read=read, sequence=sequence, replay=replay)
        except PlatformError as error:
            result.status, result.error = "failed", str(error)
            recorded = self._undone(result, log)
        except Exception as error:  # recorded, then re-raised: the batch must not stay "running"
            result.status, result.error = "failed", f"{type(error).__name__}: {error}"
            if self._undone(result, log):
                self._finish(result)
            log.error("batch_failed", error=result.error)
            raise
        else:
            recorded = True
        finally:
            self.store.release()
        result.duration_seconds = time.perf_counter() - clock
        if recorded:
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

    def _undone(self, result: BatchResult, log: Any) -> bool:
        """Roll back what a failed batch committed, saying so in its error. False if that failed:
        the batch then stays recorded as running, so the next run's recovery tries again."""
        assert result.batch_id is not None
        try:
            undone = self.store.rollback(result.batch_id)
        except Exception as failure:  # the batch's own error stays the one reported
            log.error("rollback_failed", error=f"{type(failure).__name__}: {failure}")
            result.error = (
                f"{result.error} (rolling back its commits failed too: {failure}; the batch stays recorded as "
                "running, and the next run tries the rollback again)"
            )
            return False
        if undone:
            log.warning("batch_rolled_back", tables=undone)
            result.error = f"{result.error} (its commits to {', '.join(sorted(undone))} were rolled back)"
        return True

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
        headers = [self.reader.read_header(p, self.reader.read_head(Path(p)), source) for p in paths]
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

    def _layers(
        self,
        source: SourceConfig,
        result: BatchResult,
        log: Any,
        started: datetime,
        *,
        read: Callable[[], ReadRows],
        sequence: int,
        replay: _Replay | None,
    ) -> None:
        assert result.batch_id is not None
        batch_id = result.batch_id
        store = self.store

        # Read, type and validate everything first: a rule of severity `fail` stops the
        # batch before any table is written.
        clock = time.perf_counter()
        if replay:
            self.progress("bronze", f"replaying the quarantine of batch {replay.batch_of}")
        else:
            self.progress("bronze", f"reading {len(result.files)} file(s)")
        raw, header, rows_read = read()
        rows = raw.filter(nw.col("kind") == KIND_ROW)
        malformed = raw.filter(nw.col("kind") == KIND_MALFORMED)
        names = bronze_columns(header)
        bronze = rows.select(
            *(nw.col(c).alias(n) for c, n in zip(header, names, strict=True)),
            nw.lit(batch_id, nw.String()).alias("batch_id"),
            nw.lit(source.name, nw.String()).alias("source"),
            "source_file",
            "line_number",
            nw.lit(started, nw.Datetime("us", "UTC")).alias("ingested_at"),
        )
        bronze_seconds = time.perf_counter() - clock

        clock = time.perf_counter()
        validated, accepted = self._validated(source, rows, header, started)
        vee = store.cache(self._vee(source, validated, accepted))
        counts = self._rule_counts(validated, accepted, vee, malformed)
        result.rule_counts = counts.rules
        result.estimates = counts.estimates
        failures = {r: n for r, n in counts.rules.items() if n and source.severity(r) == "fail"}
        if failures:
            raise ValidationFailedError(failures)

        # Bronze: every row as received, with lineage. A replay's rows are in bronze already.
        if replay is None:
            write_clock = time.perf_counter()
            spec = bronze_spec(source.name, names)
            bronze_rows = store.append(spec, bronze, batch_id=batch_id, sequence=sequence)
            result.tables[spec.name] = store.location(spec.name)
            malformed_rows = rows_read - bronze_rows
            self._layer_done(
                result,
                LayerMetrics(
                    "bronze", rows_read, bronze_rows, malformed_rows, bronze_seconds + time.perf_counter() - write_clock
                ),
                log,
            )
        else:
            bronze_rows, malformed_rows = rows_read, 0

        # Silver: accepted reads and estimates upserted; rejected rows to quarantine (a replay's
        # stay under the batch they came from).
        lineage: dict[str, Any] = {
            "source": source.name,
            "batch_id": replay.batch_of if replay else batch_id,
            "at": started,
        }
        # Rows a series rule quarantined, with their raw columns from the validated rows.
        series_keys = ["meter_id", "direction", "interval_start_utc", "row_order"]
        series_rejected = validated.drop("rejection_rule").join(
            vee.filter((nw.col("role") == "batch") & nw.col("rejection_rule").is_in(SERIES_RULES)).select(
                *series_keys, "rejection_rule"
            ),
            on=series_keys,
            how="inner",
        )
        quarantine_parts = [
            store.map_arrow(
                validated.filter(~nw.col("rejection_rule").is_null()),
                partial(rejected_records, header=header, **lineage),
                QUARANTINE_READINGS.schema,
            ),
            store.map_arrow(
                series_rejected, partial(rejected_records, header=header, **lineage), QUARANTINE_READINGS.schema
            ),
            store.map_arrow(malformed, partial(malformed_records, **lineage), QUARANTINE_READINGS.schema),
        ]
        quarantine = _concat(quarantine_parts)
        silver_params = SilverParams(source.name, batch_id, source.series_timezone)
        # A projection of the cached VEE rows: not cached again.
        silver = silver_readings(vee, silver_params)
        quarantined = counts.quarantined
        estimated = sum(counts.estimates.values())
        silver_rows = store.count_rows(silver) - estimated
        duplicates = counts.duplicates
        result.reconciliation = Reconciliation(
            rows_read=rows_read,
            rows_accepted=silver_rows,
            rows_quarantined=quarantined,
            duplicates_replaced=duplicates,
            rows_estimated=estimated,
            rows_spread=counts.spread,
        )
        if rows_read + counts.spread != silver_rows + quarantined + duplicates:
            raise ReconciliationError(f"batch {batch_id}: {result.reconciliation}")
        if replay is None:
            written = store.append(QUARANTINE_READINGS, quarantine, batch_id=batch_id, sequence=sequence)
        else:
            kept = replay.kept.num_rows
            written = (
                store.replace(
                    QUARANTINE_READINGS,
                    _concat([quarantine, store.frame(replay.kept.cast(QUARANTINE_READINGS.schema))]),
                    batch_of=replay.batch_of,
                    batch_id=batch_id,
                    sequence=sequence,
                )
                - kept
            )
        if written != quarantined:
            raise ReconciliationError(f"batch {batch_id}: {quarantined} rows rejected but {written} quarantined")
        bounds = self._bounds(silver) if silver_rows + estimated else None
        # A key's stored local day can differ from this batch's by a day at most (if the
        # source's zone changed), so the merge looks one day either side and no further.
        around = (bounds["first_day"] - timedelta(days=1), bounds["last_day"] + timedelta(days=1)) if bounds else None
        merged = store.upsert(
            SILVER_READINGS,
            silver,
            compare=SILVER_COMPARED,
            batch_id=batch_id,
            local_days=around,
            rank="quality_rank",
            sequence=sequence,
            # A replayed read fills what its batch could not (an estimate, a gap), and never
            # overwrites a read a later batch delivered.
            replace_equal_rank=replay is None,
        )
        result.reconciliation = Reconciliation(
            rows_read=rows_read,
            rows_accepted=silver_rows,
            rows_quarantined=quarantined,
            duplicates_replaced=duplicates,
            silver_inserted=merged.inserted,
            silver_updated=merged.updated,
            silver_unchanged=merged.unchanged,
            rows_estimated=estimated,
            rows_spread=counts.spread,
        )
        if not result.reconciliation.balanced:
            raise ReconciliationError(f"batch {batch_id}: rows do not reconcile: {result.reconciliation}")
        for table in (QUARANTINE_READINGS, SILVER_READINGS):
            result.tables[table.name] = store.location(table.name)
        self._layer_done(
            result,
            LayerMetrics(
                "silver",
                bronze_rows,
                silver_rows + estimated,
                quarantined - malformed_rows,
                time.perf_counter() - clock,
            ),
            log,
        )

        # Gold: recompute only the meter-days and hours this batch touched.
        clock = time.perf_counter()
        gold_in, gold_out = self._gold(silver, bounds, batch_id, sequence) if bounds else (0, 0)
        for table in (GOLD_DAILY_METER_ENERGY, GOLD_HOURLY_PORTFOLIO_LOAD):
            result.tables[table.name] = store.location(table.name)
        if bounds:
            self._check_invariants(bounds, validated if source.value_kind == "register" else None, vee)
        self._layer_done(result, LayerMetrics("gold", gold_in, gold_out, 0, time.perf_counter() - clock), log)
        result.status = "succeeded"

    def _validated(
        self, source: SourceConfig, rows: nw.LazyFrame[Any], header: list[str], started: datetime
    ) -> tuple[nw.LazyFrame[Any], nw.LazyFrame[Any]]:
        """Raw rows -> (every row typed and judged by the row rules, the accepted ones).

        Register reads are differenced per series in time order first, and a difference that
        spans several intervals is booked on each of them among the accepted rows.
        """
        store = self.store
        schema = parsed_schema(header)
        parsed = store.map_arrow(rows, partial(parse_rows, source=source, header=header), schema)
        params = RuleParams.for_source(source, now_utc=started)
        register = source.value_kind == "register"
        if register:
            schema = register_schema(schema)
            differencing = partial(difference_registers, params=register_params(source, params))
            parsed = store.map_groups(parsed, ["meter_id", "direction"], differencing, schema)
        # Only what VEE, quarantine and the counts read next is kept.
        validated = store.cache(validated_readings(parsed, params).drop(*_PARSE_ONLY))
        accepted = validated.filter(nw.col("rejection_rule").is_null())
        if register:
            spread = partial(spread_register_spans, series_timezone=source.series_timezone)
            accepted = store.cache(store.map_arrow(accepted, spread, _validated_schema(schema)))
        return validated, accepted

    def _vee(
        self, source: SourceConfig, validated: nw.LazyFrame[Any], accepted: nw.LazyFrame[Any]
    ) -> nw.LazyFrame[Any]:
        """Series rules and estimation over the batch's readings, with stored silver as context."""
        store = self.store
        schema = vee_input_schema()
        batch = vee_batch_rows(validated, accepted)
        # The batch's days and series, from the rows that make up `batch`: accepted or placeable.
        in_batch = validated.filter(nw.col("rejection_rule").is_null() | _placeable())
        days = store.collect(
            in_batch.select(nw.col("local_date").min().alias("first"), nw.col("local_date").max().alias("last"))
        ).to_pylist()[0]
        parts = [batch]
        if days["first"] is not None and store.exists(SILVER_READINGS.name):
            look_back = max(source.validation.lookback_days, source.estimation.like_day_weeks * 7)
            reach = source.estimation.max_gap_days + 1
            stored = store.read(
                SILVER_READINGS,
                where=[
                    ("local_date", ">=", days["first"] - timedelta(days=look_back + reach)),
                    ("local_date", "<=", days["last"] + timedelta(days=reach)),
                ],
            )
            series = in_batch.select("meter_id", "direction").unique()
            # Estimates are not context (their intervals are gaps to fill again); register shares are reads.
            measured = nw.col("estimation_method").is_null() | (nw.col("estimation_method") == METHOD_REGISTER_SPREAD)
            history = stored.filter(measured).join(series, on=["meter_id", "direction"], how="semi")
            parts.append(_history_columns(history, schema))
        return store.map_groups(
            _concat(parts),
            ["meter_id", "direction"],
            partial(_apply_vee, params=vee_params(source), schema=schema),
            vee_schema(schema),
        )

    def _rule_counts(
        self,
        validated: nw.LazyFrame[Any],
        accepted_rows: nw.LazyFrame[Any],
        vee: nw.LazyFrame[Any],
        malformed: nw.LazyFrame[Any],
    ) -> _Counts:
        """Rows per rule (rejected or flagged), duplicates, and intervals estimated per method."""
        store = self.store
        counts: dict[str, int] = {}
        quarantined = 0
        row_rejections = store.collect(
            validated.filter(~nw.col("rejection_rule").is_null()).group_by("rejection_rule").agg(nw.len().alias("rows"))
        ).to_pylist()
        for r in row_rejections:
            counts[r["rejection_rule"]] = counts.get(r["rejection_rule"], 0) + int(r["rows"])
            quarantined += int(r["rows"])
        malformed_rows = store.count_rows(malformed)
        if malformed_rows:
            counts[MALFORMED_ROW] = malformed_rows
            quarantined += malformed_rows
        series_rejected = 0
        batch_rows = vee.filter(nw.col("role") == "batch")
        judged = store.collect(
            batch_rows.group_by("rejection_rule", "validation_flags").agg(nw.len().alias("rows"))
        ).to_pylist()
        for r in judged:
            rule, n = r["rejection_rule"], int(r["rows"])
            if rule in SERIES_RULES:
                counts[rule] = counts.get(rule, 0) + n
                quarantined += n
                series_rejected += n
            for flag in filter(None, (r["validation_flags"] or "").split(";")):
                if flag != rule:  # a `fail` series rule both flags and rejects its row
                    counts[flag] = counts.get(flag, 0) + n
        accepted = store.count_rows(validated.filter(nw.col("rejection_rule").is_null()))
        # Register spans booked on several intervals add rows: one per further interval.
        spread = store.count_rows(accepted_rows) - accepted
        kept = store.count_rows(batch_rows.filter(nw.col("rejection_rule").is_null()))
        duplicates = accepted + spread - kept - series_rejected
        if duplicates:
            counts[DUPLICATE_REPLACED] = duplicates
        by_role = store.collect(
            vee.filter(nw.col("role") != "batch").group_by("role", "estimation_method").agg(nw.len().alias("rows"))
        ).to_pylist()
        estimates = {r["estimation_method"]: int(r["rows"]) for r in by_role if r["role"] == "estimate"}
        missing = sum(int(r["rows"]) for r in by_role)
        if missing:
            counts[MISSING_INTERVALS] = missing
        return _Counts(
            rules=dict(sorted(counts.items())),
            quarantined=quarantined,
            duplicates=duplicates,
            estimates=estimates,
            spread=spread,
        )

    def _check_invariants(
        self, bounds: dict[str, Any], register_reads: nw.LazyFrame[Any] | None, vee: nw.LazyFrame[Any]
    ) -> None:
        """What must hold after a batch's writes, over the local days it touched (so the cost follows
        the batch, not the lake): one silver row per key; every gold day complete at most once,
        with no more intervals than its grid has; and for registers, the energy booked equal to the
        differences of the chain of reads. A breach fails the batch, which rolls it back."""
        store = self.store
        days = [
            ("local_date", ">=", bounds["first_day"] - timedelta(days=1)),
            ("local_date", "<=", bounds["last_day"] + timedelta(days=1)),
        ]
        problems: list[str] = []
        keys = list(SILVER_READINGS.keys)
        repeated = store.collect(
            store.read(SILVER_READINGS, where=days)
            .group_by(*keys)
            .agg(nw.len().alias("rows"))
            .filter(nw.col("rows") > 1)
            .select(nw.len().alias("keys"), nw.col("meter_id").min().alias("meter_id"))
        ).to_pylist()[0]
        if repeated["keys"]:
            problems.append(f"{repeated['keys']:,} silver key(s) stored twice (e.g. meter {repeated['meter_id']})")
        over = store.collect(
            store.read(GOLD_DAILY_METER_ENERGY, where=days)
            .filter(
                (nw.col("completeness") > 1 + _TOLERANCE)
                | (nw.col("interval_count") > nw.col("expected_interval_count"))
            )
            .select(
                nw.len().alias("days"),
                nw.col("meter_id").min().alias("meter_id"),
                nw.col("completeness").max().alias("completeness"),
            )
        ).to_pylist()[0]
        if over["days"]:
            problems.append(
                f"{over['days']:,} gold day(s) with completeness above 1 or more intervals than the day has "
                f"(e.g. meter {over['meter_id']}, completeness up to {over['completeness']})"
            )
        if register_reads is not None:
            problems += self._register_energy(register_reads, vee)
        if problems:
            raise InvariantError("the batch's tables would be wrong, so nothing is kept: " + "; ".join(problems))

    def _register_energy(self, reads: nw.LazyFrame[Any], vee: nw.LazyFrame[Any]) -> list[str]:
        """Per series, the energy a register batch booked against the differences of its chain of reads."""
        series = ["meter_id", "direction"]
        derived = (
            reads.filter(nw.col("register_chain") & nw.col("rejection_rule").is_null())
            .group_by(*series)
            .agg(nw.col("energy_kwh").sum().alias("derived_kwh"))
        )
        booked = (
            vee.filter(
                (nw.col("role") == "batch")
                & (nw.col("rejection_rule").is_null() | nw.col("rejection_rule").is_in(SERIES_RULES))
            )
            .with_columns(
                kwh=nw.when(nw.col("rejection_rule").is_null())
                .then(nw.col("energy_kwh"))
                .otherwise(nw.col("reported_kwh"))
                .fill_null(0.0)
            )
            .group_by(*series)
            .agg(nw.col("kwh").sum().alias("booked_kwh"))
        )
        compared = self.store.collect(derived.join(booked, on=series, how="left")).to_pylist()
        wrong = [
            r
            for r in compared
            if abs((r["booked_kwh"] or 0.0) - r["derived_kwh"]) > _TOLERANCE * max(1.0, abs(r["derived_kwh"]))
        ]
        return [
            f"meter {r['meter_id']} ({r['direction']}): {r['booked_kwh'] or 0.0:.6f} kWh booked but its register reads "
            f"differ by {r['derived_kwh']:.6f} kWh"
            for r in wrong[:3]
        ]

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

    def _gold(self, silver: nw.LazyFrame[Any], bounds: dict[str, Any], batch_id: str, sequence: int) -> tuple[int, int]:
        store = self.store
        days = (bounds["first_day"], bounds["last_day"])
        touched_keys = silver.select("meter_id", "local_date").unique()
        in_days = store.read(SILVER_READINGS, where=[("local_date", ">=", days[0]), ("local_date", "<=", days[1])])
        touched = store.cache(
            in_days.join(touched_keys, on=["meter_id", "local_date"], how="semi").select(*_GOLD_DAILY_INPUT)
        )
        zones = store.collect(touched.select("local_date", "timezone").unique()).to_pylist()
        calendar = local_day_minutes((z["local_date"], z["timezone"]) for z in zones)
        daily = gold_daily_meter_energy(touched, store.frame(calendar))
        daily_counts = self._upsert(GOLD_DAILY_METER_ENERGY, daily, batch_id, sequence, local_days=days)

        first = bounds["first"].replace(minute=0, second=0, microsecond=0)
        last = bounds["last"] + timedelta(hours=1)
        hours = store.read(
            SILVER_READINGS,
            where=[
                ("interval_start_utc", ">=", first),
                ("interval_start_utc", "<", last),
                # An hour's rows lie within a day of the batch's local days, whatever their zone.
                ("local_date", ">=", days[0] - timedelta(days=1)),
                ("local_date", "<=", days[1] + timedelta(days=1)),
            ],
        )
        hourly_counts = self._upsert(GOLD_HOURLY_PORTFOLIO_LOAD, gold_hourly_portfolio_load(hours), batch_id, sequence)
        return store.count_rows(touched), daily_counts + hourly_counts

    def _upsert(
        self,
        spec: TableSpec,
        frame: nw.LazyFrame[Any],
        batch_id: str,
        sequence: int,
        local_days: tuple[date, date] | None = None,
    ) -> int:
        counts = self.store.upsert(
            spec, frame, compare=spec.value_columns, batch_id=batch_id, local_days=local_days, sequence=sequence
        )
        return counts.inserted + counts.updated + counts.unchanged
