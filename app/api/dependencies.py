"""FastAPI dependencies, declared once as Annotated aliases."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Security
from fastapi.security import APIKeyHeader

from app.api.runs import RunService
from app.infrastructure.settings import Settings, get_settings
from app.wiring import LocalPlatform as Platform
from app.wiring import open_platform

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="The service's API_KEY.")
_RUNS = RunService()


def platform(settings: Annotated[Settings, Depends(get_settings)]) -> Iterator[Platform]:
    """The platform for this request's settings; tests override `get_settings`."""
    with open_platform(settings) as opened:
        yield opened


def run_service() -> RunService:
    """The process's run service: one run at a time."""
    return _RUNS


def _check_key(settings: Settings, given: str | None) -> None:
    if settings.api_key is None:
        raise HTTPException(status_code=403, detail="this endpoint is disabled: the service has no API_KEY set")
    expected = settings.api_key.get_secret_value().encode()
    if given is None or not hmac.compare_digest(given.encode(), expected):
        raise HTTPException(status_code=401, detail="missing or wrong X-API-Key header")


def require_key(
    settings: Annotated[Settings, Depends(get_settings)], key: Annotated[str | None, Security(API_KEY_HEADER)]
) -> None:
    """Mutating endpoints: the API key, compared in constant time; refused when none is set."""
    _check_key(settings, key)


def read_access(
    settings: Annotated[Settings, Depends(get_settings)], key: Annotated[str | None, Security(API_KEY_HEADER)]
) -> None:
    """Read endpoints: open unless API_PROTECT_READS is set."""
    if settings.api_protect_reads:
        _check_key(settings, key)


SettingsDep = Annotated[Settings, Depends(get_settings)]
PlatformDep = Annotated[Platform, Depends(platform)]
RunServiceDep = Annotated[RunService, Depends(run_service)]
WriteAccess = Depends(require_key)
ReadAccess = Depends(read_access)
