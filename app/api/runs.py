"""Runs started over HTTP: one at a time per service, in the background, inputs confined to landing."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from app.application.audit import recorded_on_error
from app.application.pipeline import new_batch_id
from app.application.runner import run_batch
from app.domain.audit import RUN_BATCH, Actor
from app.domain.errors import (
    ConfigurationError,
    ForbiddenPathError,
    InputFileError,
    PlatformError,
    RunInProgressError,
)
from app.infrastructure.logging import get_logger, redact_text
from app.infrastructure.settings import Settings
from app.infrastructure.source_config import load_sources
from app.wiring import file_reader, open_platform

#: How many rounds of percent-decoding an input path is checked after (`%252e` is `%2e` is `.`).
_DECODE_ROUNDS = 3


def _forms(requested: str) -> list[str]:
    """The path as given and as any layer of percent-decoding would read it, `\\` taken as `/`."""
    forms = [requested]
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    return [form.replace("\\", "/") for form in forms]


def confined_input(landing: Path, requested: str) -> str:
    """A path or glob under `landing`. Refused: absolute paths, `..`, the same written
    percent-encoded or with backslashes, control characters, and anything that leads out of
    `landing` once symlinks are followed."""
    for form in _forms(requested):
        if any(ord(ch) < 32 or ch == "\x7f" for ch in form):
            raise ForbiddenPathError(f"input_path {requested!r} contains control characters")
        if form.startswith("/") or ".." in PurePosixPath(form).parts:
            raise ForbiddenPathError(
                f"input_path {requested!r} must be relative to the landing directory, without '..'"
            )
    candidate = Path(requested)
    prefix: list[str] = []
    for part in candidate.parts:  # up to the first glob character; resolving follows symlinks
        if any(ch in part for ch in "*?["):
            break
        prefix.append(part)
    if not landing.joinpath(*prefix).resolve().is_relative_to(landing):
        raise ForbiddenPathError(f"input_path {requested!r} leads outside the landing directory")
    return str(landing / candidate)


def check_inputs_confined(landing: Path, pattern: str, source_format: str) -> None:
    """Refuse `pattern` if a file it matches now (through a symlinked file or folder below a glob)
    lies outside `landing`. No match is no error here: the run reports missing input itself."""
    try:
        files = file_reader().resolve_inputs(pattern, source_format)
    except InputFileError:
        return
    outside = [f for f in files if not f.resolve().is_relative_to(landing)]
    if outside:
        shown = outside[0].relative_to(landing) if outside[0].is_relative_to(landing) else outside[0].name
        raise ForbiddenPathError(
            f"input_path matches {len(outside)} file(s) that lead outside the landing directory "
            f"through a symlink, e.g. {str(shown)!r}"
        )


@dataclass
class RunState:
    """What the service knows of a run it started, before and after the metadata has it."""

    run_id: str
    source: str
    input_path: str | None
    source_format: str = "csv"
    status: str = "queued"
    error: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Who asked for it (an API key's name), as the audit trail records the run
    actor: Actor | None = None


class RunService:
    """Starts batch runs in the background, one at a time per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: str | None = None
        self.runs: dict[str, RunState] = {}

    @property
    def running(self) -> str | None:
        return self._running

    def submit(
        self, settings: Settings, *, source: str, input_path: str | None, actor: Actor | None = None
    ) -> RunState:
        """Reserve the service for a new run (409 while one runs); the caller then calls `execute`."""
        sources = load_sources(settings.sources_config)
        if source not in sources:
            raise ConfigurationError(f"unknown source {source!r}; declared sources: {', '.join(sorted(sources))}")
        path = None
        if input_path:
            path = confined_input(settings.landing_root, input_path)
            check_inputs_confined(settings.landing_root, path, sources[source].format)
        if not self._lock.acquire(blocking=False):
            raise RunInProgressError(self._running or "unknown")
        run = RunState(
            run_id=new_batch_id(datetime.now(UTC)),
            source=source,
            input_path=path,
            source_format=sources[source].format,
            actor=actor,
        )
        self._running = run.run_id
        self.runs[run.run_id] = run
        return run

    def execute(self, settings: Settings, run: RunState) -> None:
        """Run the batch (in a background task) and release the service, whatever happens."""
        log = get_logger(run_id=run.run_id, source=run.source)
        run.status = "running"
        try:
            with open_platform(settings) as platform:
                if run.input_path is not None:  # again: the landing directory may have changed since submit
                    details = {"input": run.input_path, "batch_id": run.run_id}
                    with recorded_on_error(platform.metadata, run.actor, RUN_BATCH, target=run.source, details=details):
                        check_inputs_confined(settings.landing_root, run.input_path, run.source_format)
                result = run_batch(
                    platform, source_name=run.source, input_path=run.input_path, batch_id=run.run_id, actor=run.actor
                )
            run.status, run.error = result.status, result.error and redact_text(result.error)
        except PlatformError as error:
            run.status, run.error = "failed", redact_text(str(error))
            log.error("run_failed", error=run.error)
        except Exception as error:  # the service must stay usable; the traceback goes to the log
            run.status, run.error = "failed", redact_text(f"{type(error).__name__}: {error}")
            log.exception("run_failed")
        finally:
            self._running = None
            self._lock.release()
