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
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app import __version__
from app.api.dependencies import SERVICES, PlatformDep, ReadAccess, RunServiceDep, SettingsDep, WriteAccess
from app.application import prometheus, queries
from app.domain.batches import BATCH_ID_PATTERN, BatchRecord
from app.domain.errors import ConfigurationError, ForbiddenPathError, PlatformError, RunInProgressError
from app.domain.schemas import GOLD_DAILY_METER_ENERGY, GOLD_HOURLY_PORTFOLIO_LOAD, QUARANTINE_READINGS, TableSpec
from app.infrastructure.logging import redact_text
from app.wiring import ServicePlatform, metadata_probe


class JSON(Response):
    """JSON through orjson: pages of rows (dates, times, floats) serialise several times faster
    than through the standard encoder. NaN and infinities are written as null."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


router = APIRouter()
reads = APIRouter(dependencies=[ReadAccess], default_response_class=JSON)

Limit = Annotated[int, Query(ge=1, le=1000, description="Rows per page.")]
Offset = Annotated[int, Query(ge=0, description="Rows to skip.")]

#: Batch and run ids as the platform makes them (`20250601_120000_ab12cd`): anything else is refused
#: with 422 before it reaches a query, a predicate or a path.
_ID = f"^{BATCH_ID_PATTERN}$"
_ID_HELP = "Letters, digits, '_', '.', ':' and '-', starting with a letter or digit; at most 128."
BatchIdQuery = Annotated[str, Query(pattern=_ID, description=f"A batch id. {_ID_HELP}")]
BatchIdPath = Annotated[str, PathParameter(pattern=_ID, description=f"A batch id. {_ID_HELP}")]
RunIdPath = Annotated[str, PathParameter(pattern=_ID, description=f"A run id. {_ID_HELP}")]


@router.get("/health", tags=["service"])
def health(settings: SettingsDep) -> JSONResponse:
    """Overall status and one entry per check; 503 naming the failing check when any fails."""
    checks: dict[str, Any] = {
        "execution_mode": {"status": "ok", "value": settings.execution_mode},
        "version": {"status": "ok", "value": __version__},
    }
    clock = time.perf_counter()
    built = SERVICES.built(settings)
    store = built.metadata if built else None
    try:
        if store is None:  # not built (the database was down at start): a probe answers now, without retries
            store = metadata_probe(settings)
        store.ping()
        checks["metadata_database"] = {"status": "ok", "latency_ms": round((time.perf_counter() - clock) * 1000, 2)}
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
    body = {"status": "failed" if failed else "ok", "failed_checks": failed, "checks": checks}
    return JSONResponse(body, status_code=503 if failed else 200)


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
    request: RunRequest, settings: SettingsDep, runs: RunServiceDep, background: BackgroundTasks
) -> RunAccepted:
    """Start a batch run in the background; 409 while another run of this service is in progress."""
    try:
        run = runs.submit(settings, source=request.source, input_path=request.input_path)
    except RunInProgressError as error:
        raise HTTPException(status_code=409, detail=str(error)) from None
    except (ForbiddenPathError, ConfigurationError) as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    background.add_task(runs.execute, settings, run)
    return RunAccepted(run_id=run.run_id, status=run.status)


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
    keys = ("batch_id", "source", "ingestion_time", "record_count", "checksum", "status", "files")
    return {k: v for k, v in asdict(record).items() if k in keys}


@reads.get("/batches", tags=["batches"])
def list_batches(platform: PlatformDep, limit: Limit = 20, source: str | None = None) -> JSON:
    """Batch metadata, newest first: source, ingestion_time, record_count, checksum, files."""
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


@reads.get("/meters/{meter_id}/daily", tags=["gold"])
async def meter_daily(
    meter_id: str, start: date, end: date, platform: PlatformDep, limit: Limit = 100, offset: Offset = 0
) -> JSON:
    """Daily energy, peak demand and completeness of one meter, local days start..end inclusive."""
    _check_range(start, end)
    page = await _answered(
        platform,
        GOLD_DAILY_METER_ENERGY,
        lambda: queries.meter_daily(
            platform.reads, meter_id=meter_id, start=start, end=end, limit=limit, offset=offset
        ),
    )
    if page is None:
        raise HTTPException(status_code=404, detail=f"no meter {meter_id!r} in gold")
    return JSON(asdict(page))


@reads.get("/portfolio/hourly", tags=["gold"])
async def portfolio_hourly(
    start: datetime, end: datetime, platform: PlatformDep, limit: Limit = 100, offset: Offset = 0
) -> JSON:
    """Portfolio load per UTC hour in [start, end); times without an offset are taken as UTC."""
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
    _check_range(start, end)
    page = await _answered(
        platform,
        GOLD_HOURLY_PORTFOLIO_LOAD,
        lambda: queries.portfolio_hourly(platform.reads, start=start, end=end, limit=limit, offset=offset),
    )
    return JSON(asdict(page))


@reads.get("/metrics", response_class=PlainTextResponse, tags=["service"])
def metrics(platform: PlatformDep) -> PlainTextResponse:
    """Prometheus text format: runs by status, records processed and quarantined, last success per source."""
    return PlainTextResponse(prometheus.render(platform.metadata), media_type=prometheus.CONTENT_TYPE)


router.include_router(reads)
