"""The HTTP service: `uvicorn app.main:app`."""

from __future__ import annotations

from fastapi import FastAPI

from app import __version__
from app.api.routes import router

app = FastAPI(title="Energy Data Platform", version=__version__)
app.include_router(router)
