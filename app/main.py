"""The HTTP service: `uvicorn app.main:app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api.routes import router
from app.domain.errors import PlatformError
from app.infrastructure.logging import configure_logging
from app.infrastructure.settings import get_settings


@asynccontextmanager
async def lifespan(service: FastAPI) -> AsyncIterator[None]:
    """Log as the settings say, secrets redacted, from the first event on."""
    settings_for = service.dependency_overrides.get(get_settings, get_settings)
    try:
        settings = settings_for()
    except PlatformError:  # invalid settings: every request reports them; log with the defaults
        configure_logging()
    else:
        configure_logging(log_format=settings.log_format, level=settings.log_level)
    yield


app = FastAPI(title="Energy Data Platform", version=__version__, lifespan=lifespan)
app.include_router(router)
