"""Errors the platform raises on purpose; each says what was wrong and what to do."""

from __future__ import annotations


class PlatformError(Exception):
    """Base of every error the platform reports to users without a traceback."""


class ConfigurationError(PlatformError):
    """A setting or source configuration is invalid."""


class InputFileError(PlatformError):
    """An input file cannot be read as the source declares it."""

    def __init__(self, path: str, message: str, *, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class ReconciliationError(PlatformError):
    """Rows read do not equal rows accepted, quarantined and replaced."""


class MetadataStoreError(PlatformError):
    """The metadata database could not be reached or refused an operation."""


class TableStoreError(PlatformError):
    """A table could not be read or written."""


class NotAvailableError(PlatformError):
    """A mode or feature that this version does not provide was requested."""


class RunInProgressError(PlatformError):
    """A batch run is already going on in this service."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} is in progress; start another when it has finished")


class ForbiddenPathError(PlatformError):
    """A user-supplied path points outside the directories it is confined to."""


class ValidationFailedError(PlatformError):
    """A rule of severity `fail` found failing rows: the batch stops and commits nothing."""

    def __init__(self, failures: dict[str, int]) -> None:
        self.failures = dict(failures)
        listed = ", ".join(f"{rule} ({count:,} row(s))" for rule, count in sorted(failures.items()))
        super().__init__(f"rule(s) of severity 'fail' failed: {listed}; nothing was written")


class InvariantError(PlatformError):
    """A batch's tables broke a rule that must always hold (one row per key, completeness <= 1, energy conserved)."""
