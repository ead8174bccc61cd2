"""HTTP routes: health, runs, batches, quality, quarantine, gold and metrics. No business logic here."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, date, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, BackgroundTasks, HTTPException, Query
from fastapi import Path as PathParameter
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app import __version__
from app.api.dependencies import (
    SERVICES,
    ApiActor,
    PlatformDep,
    ReadAccess,
    RunServiceDep,
    SettingsDep,
    WriteAccess,
)
from app.application import prometheus, queries
from app.application.audit import audit_trail, record_action
from app.application.lake_ops import change_rows, parse_as_of
from app.application.report import QualityReport, source_report
from app.domain.audit import RUN_BATCH, Actor, AuditRecord
from app.domain.batches import BATCH_ID_PATTERN, BatchRecord, StreamRecord
from app.domain.errors import ConfigurationError, ForbiddenPathError, PlatformError, RunInProgressError
from app.domain.schemas import (
    GOLD_DAILY_METER_ENERGY,
    GOLD_HOURLY_PORTFOLIO_LOAD,
    QUARANTINE_READINGS,
    TABLES,
    TableSpec,
)
from app.infrastructure.logging import get_logger, redact_text
from app.infrastructure.report_html import render_report
from app.infrastructure.settings import Settings
from app.infrastructure.source_config import load_sources
from app.wiring import ServicePlatform, metadata_probe, report_store


class JSON(Response):
    """JSON through orjson: pages of rows (dates, times, floats) serialise several times faster
    than through the standard encoder. NaN and infinities are written as null."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


router = APIRouter()
reads = APIRouter(dependencies=[ReadAccess], default_response_class=JSON)

Limit = Annotated[int, Query(ge=1, le=1000, description="Rows per page.")]
#: Rows to skip: at most 2^31 - 1 (an offset past a table's rows gives an empty page; one past a
#: 64-bit integer could not even be written back in the page's JSON).
Offset = Annotated[int, Query(ge=0, le=2**31 - 1, description="Rows to skip.")]

#: Batch and run ids as the platform makes them (`20250601_120000_ab12cd`): anything else is refused
#: with 422 before it reaches a query, a predicate or a path.
_ID = f"^{BATCH_ID_PATTERN}$"
_ID_HELP = "Letters, digits, '_', '.', ':' and '-', starting with a letter or digit; at most 128."
BatchIdQuery = Annotated[str, Query(pattern=_ID, description=f"A batch id. {_ID_HELP}")]
BatchIdPath = Annotated[str, PathParameter(pattern=_ID, description=f"A batch id. {_ID_HELP}")]
RunIdPath = Annotated[str, PathParameter(pattern=_ID, description=f"A run id. {_ID_HELP}")]


@router.get("/health", tags=["service"])
def health(settings: SettingsDep) -> JSONResponse:
    """Overall status and one entry per check; 503 naming the failing check when any fails. Also
    `streams`: the state (running, stale, stopped, failed) and lag of each source's latest stream run."""
    checks: dict[str, Any] = {
        "execution_mode": {"status": "ok", "value": settings.execution_mode},
        "version": {"status": "ok", "value": __version__},
    }
    clock = time.perf_counter()
    built = SERVICES.built(settings)
    store = built.metadata if built else None
    streams: list[dict[str, Any]] = []
    try:
        if store is None:  # not built (the database was down at start): a probe answers now, without retries
            store = metadata_probe(settings)
        store.ping()
        checks["metadata_database"] = {"status": "ok", "latency_ms": round((time.perf_counter() - clock) * 1000, 2)}
        streams = _streams(store)
    except PlatformError as error:
        checks["metadata_database"] = {"status": "failed", "error": redact_text(str(error))}
    finally:
        if built is None and store is not None:
            store.dispose()
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=settings.data_dir, prefix=".health-"):
            pass
        checks["table_storage"] = {"status": "ok", "path": str(settings.data_dir)}
    except OSError as error:
        checks["table_storage"] = {"status": "failed", "error": f"{settings.data_dir}: {error.strerror}"}
    failed = sorted(name for name, check in checks.items() if check["status"] != "ok")
    body = {"status": "failed" if failed else "ok", "failed_checks": failed, "checks": checks, "streams": streams}
    return JSONResponse(body, status_code=503 if failed else 200)


def _streams(store: Any) -> list[dict[str, Any]]:
    """The latest run of each source's stream, as /health shows it (informational: a stream's
    state never fails the service's health). [] when the store cannot say (say, not migrated)."""
    try:
        records: list[StreamRecord] = store.streams()
    except PlatformError:
        return []
    now = datetime.now(UTC)
    return [_stream_view(record, now) for record in records]


def _stream_view(record: StreamRecord, now: datetime) -> dict[str, Any]:
    return {
        "source": record.source,
        "state": record.shown_state(now),
        "run_id": record.run_id,
        "host": record.host,
        "pid": record.pid,
        "started_at": record.started_at.isoformat(),
        "heartbeat_at": record.heartbeat_at.isoformat(),
        "heartbeat_age_seconds": round(record.heartbeat_age_seconds(now), 3),
        "stale_after_seconds": record.stale_after_seconds,
        "stopped_at": record.stopped_at.isoformat() if record.stopped_at else None,
        "micro_batches": record.micro_batches,
        "readings": record.readings,
        "last_micro_batch_id": record.last_batch_id,
        "last_micro_batch_seconds": record.last_duration_seconds,
        "readings_per_second": record.last_readings_per_second,
        "event_to_silver_latency_seconds": record.last_latency_seconds,
        "lag": record.lag,
        "lag_total": record.total_lag,
        "error": redact_text(record.error) if record.error else None,
    }


class RunRequest(BaseModel):
    """A batch run to start: a declared source and a path or glob under the landing directory."""

    source: str = Field(default="meter_readings", examples=["meter_readings"])
    input_path: str | None = Field(
        default=None,
        description="Relative to the landing directory; the source's declared path when omitted.",
        examples=["meter_readings/2025-04/*.csv"],
    )


class RunAccepted(BaseModel):
    run_id: str
    status: str


def _run_view(record: BatchRecord) -> dict[str, Any]:
    view = asdict(record)
    view["run_id"] = record.batch_id
    if record.error:  # an error text can quote a connection string or a token
        view["error"] = redact_text(record.error)
    return view


@router.post("/runs", status_code=202, response_model=RunAccepted, dependencies=[WriteAccess], tags=["runs"])
def start_run(
    request: RunRequest,
    settings: SettingsDep,
    runs: RunServiceDep,
    background: BackgroundTasks,
    actor: ApiActor,
) -> RunAccepted:
    """Start a batch run in the background; 409 while another run of this service is in progress.
    The audit trail records the run (action `run-batch`) under the name of the key used, when it
    ends, or as refused at once (409, 422)."""
    try:
        run = runs.submit(settings, source=request.source, input_path=request.input_path, actor=actor)
    except RunInProgressError as error:
        _refused_run(settings, actor, request, error)
        raise HTTPException(status_code=409, detail=str(error)) from None
    except (ForbiddenPathError, ConfigurationError) as error:
        _refused_run(settings, actor, request, error)
        raise HTTPException(status_code=422, detail=str(error)) from None
    background.add_task(runs.execute, settings, run)
    return RunAccepted(run_id=run.run_id, status=run.status)


def _refused_run(settings: Settings, actor: Actor, request: RunRequest, error: PlatformError) -> None:
    """Record a run refused before it started, under the key's name (a platform that cannot be
    built now, the metadata database down, is logged instead: the refusal stands)."""
    try:
        metadata = SERVICES.get(settings).metadata
    except PlatformError as failure:
        get_logger().warning(
            "audit_not_recorded", action=RUN_BATCH, actor=actor.name, outcome="refused", error=redact_text(str(failure))
        )
        return
    details = {"input": request.input_path}
    record_action(
        metadata, actor, RUN_BATCH, outcome="refused", target=request.source, details=details, error=str(error)
    )


@reads.get("/runs", tags=["runs"])
def list_runs(platform: PlatformDep, limit: Limit = 20) -> JSON:
    """Recent batch runs, newest first."""
    return JSON([_run_view(r) for r in platform.metadata.list_batches(limit=limit)])


@reads.get("/runs/{run_id}", tags=["runs"])
def get_run(run_id: RunIdPath, platform: PlatformDep, runs: RunServiceDep) -> JSON:
    """One run: status, per-layer metrics, reconciliation, rule counts, error."""
    record = platform.metadata.get_batch(run_id)
    if record is not None:
        return JSON(_run_view(record))
    state = runs.runs.get(run_id)
    if state is None:
        raise HTTPException(status_code=404, detail=f"no run {run_id!r}")
    return JSON({"run_id": state.run_id, "source": state.source, "status": state.status, "error": state.error})


def _batch_view(record: BatchRecord) -> dict[str, Any]:
    keys = ("batch_id", "source", "kind", "ingestion_time", "record_count", "checksum", "status", "files", "positions")
    return {k: v for k, v in asdict(record).items() if k in keys}


@reads.get("/batches", tags=["batches"])
def list_batches(platform: PlatformDep, limit: Limit = 20, source: str | None = None) -> JSON:
    """Batch metadata, newest first: source, kind, ingestion_time, record_count, checksum, files, and
    a topic micro-batch's positions (partition -> last offset)."""
    return JSON([_batch_view(r) for r in platform.metadata.list_batches(limit=limit, source=source)])


def _batch(platform: Any, batch_id: str) -> BatchRecord:
    record: BatchRecord | None = platform.metadata.get_batch(batch_id)
    if record is None:
        raise HTTPException(status_code=404, detail=f"no batch {batch_id!r}")
    return record


@reads.get("/batches/{batch_id}", tags=["batches"])
def get_batch(batch_id: BatchIdPath, platform: PlatformDep) -> JSON:
    return JSON(_batch_view(_batch(platform, batch_id)))


@reads.get("/quality", tags=["quality"])
def quality(batch_id: BatchIdQuery, platform: PlatformDep) -> JSON:
    """Rows per validation rule for one batch, with its reconciliation."""
    record = _batch(platform, batch_id)
    reconciliation = asdict(record.reconciliation) if record.reconciliation else None
    return JSON({"batch_id": batch_id, "rule_counts": record.rule_counts, "reconciliation": reconciliation})


async def _answered(platform: ServicePlatform, spec: TableSpec, read: Callable[[], Any]) -> Any:
    """`read()` on the event loop when its table is in memory, else in a worker thread."""
    if platform.reads.cached(spec):
        return read()
    return await run_in_threadpool(read)


def _report(settings: Settings, platform: ServicePlatform, **given: str | None) -> QualityReport:
    zones = {name: s.series_timezone for name, s in load_sources(settings.sources_config).items()}
    store = report_store(settings)
    try:
        return source_report(store, platform.metadata, zones, **given)
    except ConfigurationError as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    finally:
        store.release()


ReportSource = Annotated[str | None, Query(description="Only this source's meters and batches.")]
ReportFrom = Annotated[
    str | None, Query(alias="from", description="First local day (YYYY-MM-DD); default 90 days before `to`.")
]
ReportTo = Annotated[str | None, Query(description="Last local day (YYYY-MM-DD); default the newest day in gold.")]
ReportMeter = Annotated[str | None, Query(max_length=256, description="The meter whose intervals to draw.")]


@reads.get("/report", response_class=HTMLResponse, tags=["quality"])
def quality_report(
    settings: SettingsDep,
    platform: PlatformDep,
    source: ReportSource = None,
    first: ReportFrom = None,
    to: ReportTo = None,
    meter: ReportMeter = None,
) -> HTMLResponse:
    """The data-quality report as one self-contained HTML page (as `energy-platform report` writes it)."""
    report = _report(settings, platform, source=source, first=first, last=to, meter=meter)
    return HTMLResponse(render_report(report))


@reads.get("/quality/summary", tags=["quality"])
def quality_summary(
    settings: SettingsDep,
    platform: PlatformDep,
    source: ReportSource = None,
    first: ReportFrom = None,
    to: ReportTo = None,
    meter: ReportMeter = None,
) -> JSON:
    """The report's numbers: completeness, estimates, load, quarantine and batches, with the same filters."""
    return JSON(_report(settings, platform, source=source, first=first, last=to, meter=meter).summary())


@reads.get("/quarantine", tags=["quality"])
async def quarantine(batch_id: BatchIdQuery, platform: PlatformDep, limit: Limit = 100, offset: Offset = 0) -> JSON:
    """Rejected rows of one batch with rule, file, line and the raw record, paged."""
    await run_in_threadpool(_batch, platform, batch_id)
    page = await _answered(
        platform,
        QUARANTINE_READINGS,
        lambda: queries.quarantined_rows(platform.reads, batch_id=batch_id, limit=limit, offset=offset),
    )
    return JSON(asdict(page))


def _check_range(start: Any, end: Any) -> None:
    if start > end:
        raise HTTPException(status_code=422, detail="start must not be after end")


def _as_of(text: str | None) -> int | datetime | None:
    """The `as_of` query parameter: a table version, or an ISO 8601 instant."""
    if text is None:
        return None
    try:
        return parse_as_of(text)
    except ConfigurationError as error:
        raise HTTPException(status_code=422, detail=str(error)) from None


AsOf = Annotated[
    str | None,
    Query(
        description="Read the table as it was: a version number (`energy-platform tables history`) or an ISO 8601 "
        "time with offset (the latest version committed then). Default: the newest version.",
        examples=["3", "2025-06-01T12:00:00+00:00"],
    ),
]


async def _answered_as_of(
    platform: ServicePlatform, spec: TableSpec, as_of: int | datetime | None, read: Callable[[], Any]
) -> Any:
    """`_answered`, or a past version's read in a worker thread; a version the table lacks is a 404."""
    if as_of is None:
        return await _answered(platform, spec, read)
    try:
        return await run_in_threadpool(read)
    except ConfigurationError as error:
        raise HTTPException(status_code=404, detail=str(error)) from None


@reads.get("/meters/{meter_id}/daily", tags=["gold"])
async def meter_daily(
    meter_id: str,
    start: date,
    end: date,
    platform: PlatformDep,
    limit: Limit = 100,
    offset: Offset = 0,
    as_of: AsOf = None,
) -> JSON:
    """Daily energy, peak demand and completeness of one meter, local days start..end inclusive."""
    _check_range(start, end)
    version = _as_of(as_of)
    page = await _answered_as_of(
        platform,
        GOLD_DAILY_METER_ENERGY,
        version,
        lambda: queries.meter_daily(
            platform.reads, meter_id=meter_id, start=start, end=end, limit=limit, offset=offset, as_of=version
        ),
    )
    if page is None:
        raise HTTPException(status_code=404, detail=f"no meter {meter_id!r} in gold")
    return JSON(asdict(page))


@reads.get("/portfolio/hourly", tags=["gold"])
async def portfolio_hourly(
    start: datetime,
    end: datetime,
    platform: PlatformDep,
    limit: Limit = 100,
    offset: Offset = 0,
    as_of: AsOf = None,
) -> JSON:
    """Portfolio load per UTC hour in [start, end); times without an offset are taken as UTC."""
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
    _check_range(start, end)
    version = _as_of(as_of)
    page = await _answered_as_of(
        platform,
        GOLD_HOURLY_PORTFOLIO_LOAD,
        version,
        lambda: queries.portfolio_hourly(
            platform.reads, start=start, end=end, limit=limit, offset=offset, as_of=version
        ),
    )
    return JSON(asdict(page))


#: Tables whose changes the API serves: those that record Delta's change data feed.
_CHANGE_FEED_TABLES = sorted(spec.name for spec in TABLES.values() if spec.change_feed)


@reads.get("/tables/{name}/changes", tags=["gold"])
def changes(
    name: str,
    since_version: Annotated[int, Query(ge=0, description="The first table version to include.")],
    platform: PlatformDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> JSON:
    """Rows a silver or gold table's versions since `since_version` inserted, updated (the row
    after) and deleted, oldest first: `change`, `version`, `committed_at` and the table's columns."""
    if name not in _CHANGE_FEED_TABLES:
        raise HTTPException(
            status_code=404, detail=f"no change feed for {name!r}; tables: {', '.join(_CHANGE_FEED_TABLES)}"
        )
    try:
        rows = change_rows(platform.reads.changes(TABLES[name], since_version=since_version))
    except PlatformError as error:
        raise HTTPException(status_code=404, detail=redact_text(str(error))) from None
    page = rows.slice(offset, limit).to_pylist()
    return JSON({"items": page, "total": rows.num_rows, "limit": limit, "offset": offset})


def _audit_view(record: AuditRecord) -> dict[str, Any]:
    view = {"id": record.id, **asdict(record)}
    view["at"] = record.at.isoformat()
    if record.error:
        view["error"] = redact_text(record.error)
    return view


@router.get("/audit", dependencies=[WriteAccess], response_class=JSON, tags=["service"])
def audit(
    platform: PlatformDep,
    limit: Limit = 100,
    action: Annotated[str | None, Query(description="Only this action, e.g. `run-batch`, `tables vacuum`.")] = None,
    actor: Annotated[str | None, Query(description="Only this actor: an API key's name or an OS user.")] = None,
    since: Annotated[
        datetime | None, Query(description="Only actions at or after this ISO 8601 time (no offset: UTC).")
    ] = None,
) -> JSON:
    """The audit trail, newest first: each mutating action's time (UTC), actor and its kind (`cli`,
    `api`, `stream`, `service`), action, target, details, outcome (`succeeded`, `failed`,
    `refused`) and error. Needs a key, as the mutating endpoints do."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    records = audit_trail(platform.metadata, limit=limit, action=action, actor=actor, since=since)
    return JSON([_audit_view(record) for record in records])


@reads.get("/metrics", response_class=PlainTextResponse, tags=["service"])
def metrics(platform: PlatformDep) -> PlainTextResponse:
    """Prometheus text format: runs by status, records processed and quarantined, last success and
    failure per source, rows and time per layer, streams, and the freshness of silver per source."""
    body = prometheus.render(platform.metadata, newest_intervals=platform.reads.newest_interval_ends)
    return PlainTextResponse(body, media_type=prometheus.CONTENT_TYPE)


router.include_router(reads)
