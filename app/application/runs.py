"""Runs started over HTTP: one at a time per service, in the background, inputs confined to landing."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from app.application.pipeline import new_batch_id
from app.application.runner import open_platform, run_batch
from app.domain.errors import ConfigurationError, ForbiddenPathError, PlatformError, RunInProgressError
from app.infrastructure.logging import get_logger
from app.infrastructure.settings import Settings
from app.infrastructure.source_config import load_sources


def confined_input(landing: Path, requested: str) -> str:
    """A path or glob under `landing`; absolute paths and `..` that leave it are refused."""
    candidate = Path(requested)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise ForbiddenPathError(f"input_path {requested!r} must be relative to the landing directory, without '..'")
    prefix: list[str] = []
    for part in candidate.parts:  # up to the first glob character; resolving follows symlinks
        if any(ch in part for ch in "*?["):
            break
        prefix.append(part)
    if not landing.joinpath(*prefix).resolve().is_relative_to(landing):
        raise ForbiddenPathError(f"input_path {requested!r} leads outside the landing directory")
    full = landing / candidate
    return str(full)


@dataclass
class RunState:
    """What the service knows of a run it started, before and after the metadata has it."""

    run_id: str
    source: str
    input_path: str | None
    status: str = "queued"
    error: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class RunService:
    """Starts batch runs in the background, one at a time per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: str | None = None
        self.runs: dict[str, RunState] = {}

    @property
    def running(self) -> str | None:
        return self._running

    def submit(self, settings: Settings, *, source: str, input_path: str | None) -> RunState:
        """Reserve the service for a new run (409 while one runs); the caller then calls `execute`."""
        sources = load_sources(settings.sources_config)
        if source not in sources:
            raise ConfigurationError(f"unknown source {source!r}; declared sources: {', '.join(sorted(sources))}")
        path = confined_input(settings.landing_root, input_path) if input_path else None
        if not self._lock.acquire(blocking=False):
            raise RunInProgressError(self._running or "unknown")
        run = RunState(run_id=new_batch_id(datetime.now(UTC)), source=source, input_path=path)
        self._running = run.run_id
        self.runs[run.run_id] = run
        return run

    def execute(self, settings: Settings, run: RunState) -> None:
        """Run the batch (in a background task) and release the service, whatever happens."""
        log = get_logger(run_id=run.run_id, source=run.source)
        run.status = "running"
        try:
            with open_platform(settings) as platform:
                result = run_batch(platform, source_name=run.source, input_path=run.input_path, batch_id=run.run_id)
            run.status, run.error = result.status, result.error
        except PlatformError as error:
            run.status, run.error = "failed", str(error)
            log.error("run_failed", error=run.error)
        except Exception as error:  # the service must stay usable; the traceback goes to the log
            run.status, run.error = "failed", f"{type(error).__name__}: {error}"
            log.exception("run_failed")
        finally:
            self._running = None
            self._lock.release()
