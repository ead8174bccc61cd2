"""The audit trail of mutating actions: who ran what on which source, table or batch, when, with
which arguments, and how it ended (succeeded, failed, or refused before anything was written).

Use cases wrap themselves in `audited`, which writes one record when the block ends; a stream
writes `stream start` and `stream stop` through `StreamAudit`. Recording is never the reason an
action fails: a record the metadata store refuses is logged as a warning (`audit_not_recorded`),
and the action's own outcome stands.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import structlog

from app.application.ports import MetadataStore
from app.domain.audit import (
    STREAM_COMPACT,
    STREAM_START,
    STREAM_STOP,
    Actor,
    ActorKind,
    AuditOutcome,
    AuditRecord,
)
from app.domain.batches import StreamRecord
from app.domain.errors import (
    ConfigurationError,
    ForbiddenPathError,
    NotAvailableError,
    PlatformError,
    RunInProgressError,
)
from app.domain.parsing import option_instant

if TYPE_CHECKING:
    from app.application.pipeline import BatchResult

#: Errors that mean the platform refused the action before writing anything: an argument, a
#: setting or a path it does not accept, a mode it does not run, a run already in progress.
REFUSALS: tuple[type[BaseException], ...] = (
    ConfigurationError,
    NotAvailableError,
    ForbiddenPathError,
    RunInProgressError,
)


def os_user() -> str:
    """The OS user running this process, as `getpass.getuser()` says (LOGNAME, USER, ... then the
    password database); `uid:<n>` for a uid without a name (a container's arbitrary user)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):
        getuid = getattr(os, "getuid", None)
        return f"uid:{getuid()}" if getuid is not None else "unknown"


def cli_actor() -> Actor:
    """A command-line user: the OS user."""
    return Actor(os_user(), "cli")


def default_actor() -> Actor:
    """A caller that did not say who acts (a script or a job calling a use case directly): the
    process's OS user, as the platform."""
    return Actor(os_user(), "service")


def outcome_of(error: BaseException) -> AuditOutcome:
    return "refused" if isinstance(error, REFUSALS) else "failed"


def error_text(error: BaseException) -> str:
    """An error as the audit trail keeps it: a platform error's message, else its type and message."""
    if isinstance(error, PlatformError):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def jsonable(value: Any) -> Any:
    """`value` as JSON can hold it: paths and times as text, tuples and sets as lists, keys as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, set | frozenset):
        return sorted(jsonable(item) for item in value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, PurePath):
        return str(value)
    return str(value)


def record_action(
    metadata: MetadataStore,
    actor: Actor,
    action: str,
    *,
    outcome: AuditOutcome,
    target: str | None = None,
    details: Mapping[str, Any] | None = None,
    error: str | None = None,
    at: datetime | None = None,
    kind: ActorKind | None = None,
) -> AuditRecord | None:
    """Write one audit record (`at`: now if not given); None, with a warning logged, when the
    metadata store refuses it. Never raises: the action's outcome does not depend on it."""
    record = AuditRecord(
        at=at or datetime.now(UTC),
        actor=actor.name,
        actor_kind=kind or actor.kind,
        action=action,
        outcome=outcome,
        target=target,
        details=jsonable(dict(details or {})),
        error=error,
    )
    try:
        metadata.record_audit(record)
    except Exception as failure:  # an audit write must never turn a done action into a failed one
        structlog.get_logger().warning(
            "audit_not_recorded",
            action=action,
            target=target,
            actor=actor.name,
            actor_kind=record.actor_kind,
            outcome=outcome,
            error=f"{type(failure).__name__}: {failure}",
        )
        return None
    return record


@dataclass
class AuditEntry:
    """What an `audited` block records: its target, its details (the block adds what it did),
    and its outcome: succeeded unless the block raises or calls `failed`."""

    target: str | None
    details: dict[str, Any] = field(default_factory=dict)
    outcome: AuditOutcome = "succeeded"
    error: str | None = None

    def failed(self, error: str | None) -> None:
        self.outcome, self.error = "failed", error

    def batch(self, result: BatchResult) -> BatchResult:
        """Keep what a run or replay did (its batch, status, rows read); a failed batch fails the entry."""
        self.details["batch_id"] = result.batch_id
        self.details["status"] = result.status
        if result.reconciliation is not None:
            self.details["rows_read"] = result.reconciliation.rows_read
        if result.status == "failed":
            self.failed(result.error)
        return result


@contextmanager
def audited(
    metadata: MetadataStore,
    actor: Actor | None,
    action: str,
    *,
    target: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> Iterator[AuditEntry]:
    """Record `action` when the block ends: refused (a `REFUSALS` error), failed (any other
    error, which goes on) or the entry's outcome; `at` is when the block began, and the details
    get its `duration_seconds`. `actor` None: `default_actor()`."""
    actor = actor or default_actor()
    at = datetime.now(UTC)
    started = time.monotonic()
    entry = AuditEntry(target=target, details=dict(details or {}))

    def write(outcome: AuditOutcome, error: str | None) -> None:
        entry.details["duration_seconds"] = round(time.monotonic() - started, 3)
        record_action(
            metadata, actor, action, outcome=outcome, target=entry.target, details=entry.details, error=error, at=at
        )

    try:
        yield entry
    except BaseException as error:
        write(outcome_of(error), error_text(error))
        raise
    write(entry.outcome, entry.error)


@contextmanager
def recorded_on_error(
    metadata: MetadataStore,
    actor: Actor | None,
    action: str,
    *,
    target: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> Iterator[None]:
    """Record `action` only if the block raises (refused or failed, and the error goes on): for
    checks made before the use case that records the action itself runs."""
    try:
        yield
    except BaseException as error:
        record_action(
            metadata,
            actor or default_actor(),
            action,
            outcome=outcome_of(error),
            target=target,
            details=details,
            error=error_text(error),
        )
        raise


class StreamAudit:
    """A stream run's audit records: `stream start` when it starts (its run id in the details),
    `stream stop` when it ends (succeeded when it stopped, failed with the error, and its micro-batch
    and reading counts), and `stream compact` (by the stream itself) after each compaction. A
    stream refused or failed before it started is recorded as a `stream start` of that outcome by
    `until_started`, around the whole run."""

    def __init__(
        self,
        metadata: MetadataStore,
        actor: Actor | None,
        source: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.metadata = metadata
        self.actor = actor or default_actor()
        self.source = source
        self.details = dict(details or {})
        #: The stream run's id, once it started
        self.run_id: str | None = None

    def started(self, run_id: str) -> None:
        self.run_id = run_id
        self._record(STREAM_START, "succeeded", {"run_id": run_id, **self.details})

    def stopped(self, record: StreamRecord) -> None:
        """The run ended as `record` says (state stopped or failed, error, counts)."""
        outcome: AuditOutcome = "failed" if record.state == "failed" else "succeeded"
        details = {"run_id": record.run_id, "micro_batches": record.micro_batches, "readings": record.readings}
        if record.last_batch_id:
            details["last_micro_batch_id"] = record.last_batch_id
        self._record(STREAM_STOP, outcome, details, error=record.error)

    def compacted(self, files: Mapping[str, tuple[int, int]], vacuumed: Mapping[str, int]) -> None:
        """A compaction the stream ran on its own: each table's data files before and after, and
        the files its vacuum (with the safe retention) deleted."""
        details = {"run_id": self.run_id, "files": files, "vacuumed": vacuumed}
        self._record(STREAM_COMPACT, "succeeded", details, kind="stream")

    @contextmanager
    def until_started(self) -> Iterator[StreamAudit]:
        """Around a whole stream run: an error before the stream started is recorded as its
        `stream start`, refused or failed (once it started, `stream stop` records how it ended)."""
        try:
            yield self
        except BaseException as error:
            if self.run_id is None:
                self._record(STREAM_START, outcome_of(error), self.details, error=error_text(error))
            raise

    def _record(
        self,
        action: str,
        outcome: AuditOutcome,
        details: Mapping[str, Any],
        *,
        error: str | None = None,
        kind: ActorKind | None = None,
    ) -> None:
        record_action(
            self.metadata,
            self.actor,
            action,
            outcome=outcome,
            target=self.source,
            details=details,
            error=error,
            kind=kind,
        )


def parse_since(text: str) -> datetime:
    """`--since`: an ISO 8601 time with its offset, or a date alone (its midnight UTC)."""
    return option_instant(text, "--since", expected="not an ISO 8601 time")


def audit_trail(
    metadata: MetadataStore,
    *,
    limit: int = 20,
    action: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
) -> list[AuditRecord]:
    """The recorded actions, newest first, of one action and one actor if given, from `since` on."""
    if limit < 1:
        raise ConfigurationError("--limit must be at least 1")
    return metadata.list_audit(limit, action=action, actor=actor, since=since)
