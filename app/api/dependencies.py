"""FastAPI dependencies, declared once as Annotated aliases."""

from __future__ import annotations

import hmac
import threading
from typing import Annotated

from fastapi import Depends, HTTPException, Security
from fastapi.security import APIKeyHeader

from app.api.runs import RunService
from app.domain.audit import Actor
from app.infrastructure.settings import Settings, get_settings
from app.wiring import ServicePlatform, build_service

API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="One of the service's keys: API_KEY, or one of API_KEYS."
)
_RUNS = RunService()


class Services:
    """The service's platform, built once per process (in the lifespan, or by the first request
    when the app runs without one) and shared by every request and thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: ServicePlatform | None = None

    def get(self, settings: Settings) -> ServicePlatform:
        current = self._current
        if current is not None and current.settings is settings:
            return current
        with self._lock:
            current = self._current
            if current is None or current.settings != settings:  # tests swap settings between apps
                if current is not None:
                    current.close()
                self._current = current = build_service(settings)
            return current

    def built(self, settings: Settings) -> ServicePlatform | None:
        """The platform if it is built for `settings`, without building it."""
        current = self._current
        return current if current is not None and current.settings == settings else None

    def close(self) -> None:
        with self._lock:
            if self._current is not None:
                self._current.close()
                self._current = None


SERVICES = Services()


async def current_settings() -> Settings:
    """The process's settings; tests override this dependency. Dependencies here are coroutines:
    FastAPI runs a plain function in a worker thread, a hop per dependency per request."""
    return get_settings()


async def platform(settings: Annotated[Settings, Depends(current_settings)]) -> ServicePlatform:
    """The process's platform (built once; see `Services`)."""
    return SERVICES.get(settings)


def run_service() -> RunService:
    """The process's run service: one run at a time."""
    return _RUNS


def _check_key(settings: Settings, given: str | None) -> str:
    """The name of the key `given` is (API_KEY_NAME for API_KEY, a name of API_KEYS): every key is
    compared, each in constant time, so the time taken says nothing of which matched or how far."""
    keys = settings.named_api_keys
    if not keys:
        raise HTTPException(
            status_code=403, detail="this endpoint is disabled: the service has no API_KEY or API_KEYS set"
        )
    offered = (given or "").encode()
    matched: str | None = None
    for name, key in keys.items():
        if hmac.compare_digest(offered, key.get_secret_value().encode()) and matched is None:
            matched = name
    if given is None or matched is None:
        raise HTTPException(status_code=401, detail="missing or wrong X-API-Key header")
    return matched


async def require_key(
    settings: Annotated[Settings, Depends(current_settings)], key: Annotated[str | None, Security(API_KEY_HEADER)]
) -> Actor:
    """Mutating endpoints (and the audit trail): a key of the service, compared in constant time;
    refused when none is set. The caller is the key's name, as the audit trail records it."""
    return Actor(_check_key(settings, key), "api")


async def read_access(
    settings: Annotated[Settings, Depends(current_settings)], key: Annotated[str | None, Security(API_KEY_HEADER)]
) -> None:
    """Read endpoints: open unless API_PROTECT_READS is set."""
    if settings.api_protect_reads:
        _check_key(settings, key)


SettingsDep = Annotated[Settings, Depends(current_settings)]
PlatformDep = Annotated[ServicePlatform, Depends(platform)]
RunServiceDep = Annotated[RunService, Depends(run_service)]
WriteAccess = Depends(require_key)
#: The caller of a mutating endpoint: its key's name (kind `api`), for the audit trail.
ApiActor = Annotated[Actor, Depends(require_key)]
ReadAccess = Depends(read_access)
