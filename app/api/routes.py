"""HTTP routes: health and run status. No business logic here."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse

from app import __version__
from app.api.dependencies import PlatformDep, SettingsDep
from app.application.runner import open_platform
from app.domain.errors import PlatformError

router = APIRouter()


@router.get("/health")
def health(settings: SettingsDep) -> JSONResponse:
    """Overall status and one entry per check; 503 when the metadata database fails its round trip."""
    checks: dict[str, Any] = {"execution_mode": settings.execution_mode, "version": __version__}
    try:
        with open_platform(settings) as platform:
            latency = platform.metadata.ping()
        checks["metadata_database"] = {"status": "ok", "latency_ms": round(latency * 1000, 2)}
        status, code = "ok", 200
    except PlatformError as error:
        checks["metadata_database"] = {"status": "failed", "error": str(error)}
        status, code = "failed", 503
    return JSONResponse({"status": status, "checks": checks}, status_code=code)


@router.get("/runs")
def list_runs(platform: PlatformDep, limit: int = 20) -> list[dict[str, Any]]:
    """Recent batch runs, newest first."""
    return [asdict(r) for r in platform.metadata.list_batches(limit=min(max(limit, 1), 200))]


@router.get("/runs/{run_id}")
def get_run(run_id: str, platform: PlatformDep) -> dict[str, Any]:
    """One run with its per-layer metrics, reconciliation and rule counts."""
    record = platform.metadata.get_batch(run_id)
    if record is None:
        raise HTTPException(status_code=404, detail=f"no run {run_id!r}")
    return asdict(record)
