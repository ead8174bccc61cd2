"""The HTTP service: `uvicorn app.main:app`."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api.dependencies import SERVICES, current_settings
from app.api.routes import router
from app.api.tracing import TracingMiddleware
from app.domain.errors import ConfigurationError, PlatformError
from app.infrastructure.logging import configure_logging, get_logger
from app.infrastructure.settings import get_settings
from app.infrastructure.tracing import configure_tracing


@asynccontextmanager
async def lifespan(service: FastAPI) -> AsyncIterator[None]:
    """Log as the settings say, secrets redacted, from the first event on; build the platform once
    (migrations and recovery run here, never per request) and close it at shutdown."""
    settings_for = service.dependency_overrides.get(current_settings, get_settings)
    try:
        settings = settings_for()
    except PlatformError:  # invalid settings: every request reports them; log with the defaults
        configure_logging()
        yield
        return
    log_format, level = settings.logging_setup(terminal=sys.stderr.isatty())
    configure_logging(log_format=log_format, level=level)
    try:
        configure_tracing()
    except ConfigurationError as error:  # the service runs on; its traces are not exported
        get_logger().error("tracing_not_configured", error=str(error))
    try:
        SERVICES.get(settings)
    except PlatformError as error:  # e.g. the database is down: /health says so, requests retry the build
        get_logger().error("service_start_deferred", error=str(error))
    try:
        yield
    finally:
        SERVICES.close()


app = FastAPI(title="Energy Data Platform", version=__version__, lifespan=lifespan)
app.include_router(router)
app.add_middleware(TracingMiddleware)
