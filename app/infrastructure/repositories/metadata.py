"""Batch metadata store on SQLAlchemy: SQLite by default, PostgreSQL in production."""

from __future__ import annotations

import functools
import sqlite3
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    ColumnElement,
    Connection,
    DateTime,
    Dialect,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Row,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    delete,
    extract,
    func,
    insert,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.engine import Engine
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
)
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from app.domain.audit import ActorKind, AuditOutcome, AuditRecord
from app.domain.batches import (
    BatchRecord,
    BatchStatus,
    InputFile,
    Layer,
    LayerMetrics,
    MetricTotals,
    Reconciliation,
    StreamRecord,
    StreamState,
    batch_checksum,
)
from app.domain.errors import MetadataStoreError
from app.infrastructure.logging import get_logger, redact_text

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

LAYER_ORDER: dict[str, int] = {layer: index for index, layer in enumerate(get_args(Layer))}
STATUSES: frozenset[str] = frozenset(get_args(BatchStatus))
STREAM_STATES: frozenset[str] = frozenset(get_args(StreamState))
AUDIT_OUTCOMES: frozenset[str] = frozenset(get_args(AuditOutcome))
ACTOR_KINDS: frozenset[str] = frozenset(get_args(ActorKind))

# Keeps IN (...) lists under SQLite's bound-parameter limit whatever the caller passes.
_IN_CHUNK = 500

_RECONCILIATION_FIELDS = (
    "rows_read",
    "rows_accepted",
    "rows_quarantined",
    "duplicates_replaced",
    "silver_inserted",
    "silver_updated",
    "silver_unchanged",
    "rows_estimated",
    "rows_spread",
)

_T = TypeVar("_T")
_P = ParamSpec("_P")

#: PostgreSQL SQLSTATE classes and codes that mean "not now": a connection exception (class 08), the
#: server shut down by an administrator or a crash or still starting (57P01-57P03), a transaction
#: the server cancelled to resolve a conflict (serialization failure, deadlock), too many clients.
#: Anything else (28xxx credentials, 3D000 no such database, 42xxx a refused statement) is final.
_TRANSIENT_SQLSTATE_CLASSES = ("08",)
_TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01", "53300"})
#: SQLite's primary result codes (the low byte of an extended code) for a file another connection
#: holds locked: SQLITE_BUSY (and BUSY_RECOVERY, BUSY_SNAPSHOT, ...) and SQLITE_LOCKED (and its own).
_TRANSIENT_SQLITE_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
#: Waits between attempts grow exponentially (with jitter) from the first to the cap; the last one is
#: cut short so that the final attempt is made when the store's retry time runs out.
_FIRST_WAIT_SECONDS = 0.2
_MAX_WAIT_SECONDS = 5.0
#: How long the reachability check of a failed PostgreSQL connection may take (libpq's minimum is 2).
_PING_TIMEOUT_SECONDS = 5


class MetadataUnavailableError(MetadataStoreError):
    """The metadata database could not be reached; the call may succeed if tried again."""


def is_transient(error: BaseException | None) -> bool:
    """Whether a driver error (or SQLAlchemy's wrapper of one) means the database is out of reach or
    busy for now, so the same call may succeed if made again. Decided by the exception's type and
    code (PostgreSQL's SQLSTATE, SQLite's result code), never by its message."""
    if isinstance(error, DBAPIError):
        error = error.orig
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF in _TRANSIENT_SQLITE_CODES
    psycopg = _psycopg()
    if psycopg is not None and isinstance(error, psycopg.Error):
        sqlstate = error.sqlstate
        if sqlstate is None:
            # No SQLSTATE: the client got no answer from a server (refused, unknown host, reset,
            # closed mid-statement, timed out); misuse of the driver raises other classes.
            return isinstance(error, psycopg.OperationalError)
        return sqlstate.startswith(_TRANSIENT_SQLSTATE_CLASSES) or sqlstate in _TRANSIENT_SQLSTATES
    return False


def _psycopg() -> Any:
    """The psycopg module when it is loaded, else None. SQLAlchemy loads it with the PostgreSQL
    dialect; until then no error is one of its own, and a SQLite store never pays for importing it."""
    return sys.modules.get("psycopg")


def _retried(
    method: Callable[Concatenate[SqlMetadataStore, _P], _T],
) -> Callable[Concatenate[SqlMetadataStore, _P], _T]:
    """Make `method` under the store's retry policy; each such method is idempotent, so a call
    whose answer was lost can simply be made again."""

    @functools.wraps(method)
    def call(self: SqlMetadataStore, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return self._with_retries(method.__name__, lambda _attempt: method(self, *args, **kwargs))

    return call


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp written as UTC and always read back as aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # SQLite keeps no offset, so every value must be normalised to the same zone first.
        return _require_aware(value, "timestamp").astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # Only SQLite gets here; it dropped the offset of a value we wrote as UTC.
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# Query-side description of the schema; the tables themselves are created only by the
# Alembic migrations in app/infrastructure/migrations, which must stay in step with this.
METADATA = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

batches = Table(
    "batches",
    METADATA,
    Column("batch_id", String(128), nullable=False),
    Column("source", String(255), nullable=False),
    Column("execution_mode", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime(), nullable=True),
    Column("ingestion_time", UtcDateTime(), nullable=False),
    Column("record_count", BigInteger(), nullable=False),
    Column("checksum", String(64), nullable=True),
    Column("error", Text(), nullable=True),
    *(Column(name, BigInteger(), nullable=True) for name in _RECONCILIATION_FIELDS),
    Column("sequence", BigInteger(), nullable=True),
    Column("kind", String(16), nullable=False, server_default="ingest"),
    Column("replay_of", String(128), nullable=True),
    Column("lake", Text(), nullable=True),
    # A topic micro-batch's {partition: last offset}; NULL for other batches.
    Column("positions", JSON(none_as_null=True), nullable=True),
    # The undo batch that took this batch's rows out of the lake (`batches undo`), if any.
    Column("undone_by", String(128), nullable=True),
    PrimaryKeyConstraint("batch_id"),
    CheckConstraint("status IN ('running', 'succeeded', 'failed', 'skipped')", name="status"),
    Index(None, "started_at"),
    Index(None, "sequence", unique=True),
)

batch_files = Table(
    "batch_files",
    METADATA,
    Column("id", Integer(), autoincrement=True, nullable=False),
    Column("batch_id", String(128), nullable=False),
    Column("path", Text(), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger(), nullable=False),
    Column("record_count", BigInteger(), nullable=False),
    PrimaryKeyConstraint("id"),
    ForeignKeyConstraint(["batch_id"], ["batches.batch_id"]),
    Index(None, "sha256"),
    Index(None, "batch_id"),
)

layer_metrics = Table(
    "layer_metrics",
    METADATA,
    Column("batch_id", String(128), nullable=False),
    Column("layer", String(16), nullable=False),
    Column("records_in", BigInteger(), nullable=False),
    Column("records_out", BigInteger(), nullable=False),
    Column("quarantined", BigInteger(), nullable=False),
    Column("duration_seconds", Float(), nullable=False),
    PrimaryKeyConstraint("batch_id", "layer"),
    ForeignKeyConstraint(["batch_id"], ["batches.batch_id"]),
    CheckConstraint("layer IN ('bronze', 'silver', 'gold')", name="layer"),
)

rule_counts = Table(
    "rule_counts",
    METADATA,
    Column("batch_id", String(128), nullable=False),
    Column("rule", String(255), nullable=False),
    Column("count", BigInteger(), nullable=False),
    PrimaryKeyConstraint("batch_id", "rule"),
    ForeignKeyConstraint(["batch_id"], ["batches.batch_id"]),
)

#: One row per run of a stream: its state and heartbeat, and its last micro-batch's figures.
streams = Table(
    "streams",
    METADATA,
    Column("run_id", String(128), nullable=False),
    Column("source", String(255), nullable=False),
    Column("lake", Text(), nullable=True),
    Column("state", String(16), nullable=False),
    Column("host", Text(), nullable=False),
    Column("pid", BigInteger(), nullable=False),
    Column("trigger_seconds", Float(), nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("heartbeat_at", UtcDateTime(), nullable=False),
    Column("stopped_at", UtcDateTime(), nullable=True),
    Column("last_batch_id", String(128), nullable=True),
    Column("micro_batches", BigInteger(), nullable=False),
    Column("readings", BigInteger(), nullable=False),
    Column("last_duration_seconds", Float(), nullable=True),
    Column("last_readings_per_second", Float(), nullable=True),
    Column("last_latency_seconds", Float(), nullable=True),
    Column("lag", JSON(none_as_null=True), nullable=True),
    Column("error", Text(), nullable=True),
    PrimaryKeyConstraint("run_id"),
    CheckConstraint("state IN ('running', 'stopped', 'failed')", name="state"),
    Index(None, "source", "started_at"),
)

#: The audit trail: one row per mutating action, appended, never changed.
audit = Table(
    "audit",
    METADATA,
    Column("id", Integer(), autoincrement=True, nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("actor_kind", String(16), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", Text(), nullable=True),
    Column("details", JSON(none_as_null=True), nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("error", Text(), nullable=True),
    PrimaryKeyConstraint("id"),
    CheckConstraint("outcome IN ('succeeded', 'failed', 'refused')", name="outcome"),
    CheckConstraint("actor_kind IN ('cli', 'api', 'stream', 'service')", name="actor_kind"),
    Index(None, "at"),
    Index(None, "action", "at"),
    Index(None, "actor", "at"),
)


def files_checksum(files: Iterable[InputFile]) -> str | None:
    """The batch checksum of `files` (`batch_checksum`); None for no files."""
    digests = [file.sha256 for file in files]
    return batch_checksum(digests) if digests else None


class SqlMetadataStore:
    """Records batches, their input files, layer metrics and rule counts in a SQL database."""

    def __init__(self, url: str, *, create_dirs: bool = True, retry_seconds: float = 60.0) -> None:
        #: How long a call keeps retrying while the database is unreachable
        self.retry_seconds = retry_seconds
        try:
            self._url = make_url(url)
        except ArgumentError:
            # The parser's message repeats the raw URL, password included.
            raise MetadataStoreError(
                "The metadata database URL cannot be parsed; expected a form like "
                "sqlite:///path/to/metadata.db or postgresql+psycopg://user:password@host/db."
            ) from None
        if create_dirs:
            self._create_sqlite_dir()
        try:
            self._engine: Engine = create_engine(self._url, pool_pre_ping=True)
        except NoSuchModuleError:
            raise MetadataStoreError(
                f"The metadata database URL {self.url_for_display} names an unknown database "
                "dialect or driver; use sqlite:///... or postgresql+psycopg://..."
            ) from None
        except ArgumentError as exc:
            reason = self._scrub(str(exc).strip().splitlines()[0])
            raise MetadataStoreError(
                f"The metadata database URL {self.url_for_display} is not valid: {reason}"
            ) from None
        except ImportError as exc:
            raise MetadataStoreError(
                f"The database driver {self._url.get_driver_name()!r} for {self.url_for_display} "
                f"is not installed ({exc}); install it (for PostgreSQL: pip install "
                "'psycopg[binary]') or use a different metadata database URL."
            ) from exc

    @property
    def url_for_display(self) -> str:
        """The database URL with its password masked (in the user part or the query string)."""
        return redact_text(self._url.render_as_string(hide_password=True))

    def _retrying(self, operation: str) -> Retrying:
        """The one retry policy of every metadata call but `ping`: while the call fails with
        MetadataUnavailableError, wait (exponentially growing, with jitter) and make it again, until
        `retry_seconds` have passed since the first attempt; then raise the last error."""
        backoff = wait_exponential(multiplier=_FIRST_WAIT_SECONDS, max=_MAX_WAIT_SECONDS) + wait_random(
            0, _FIRST_WAIT_SECONDS
        )

        def wait(state: RetryCallState) -> float:
            # Never sleep past the deadline: the last attempt is made when the retry time runs out.
            remaining = self.retry_seconds - (state.seconds_since_start or 0.0)
            return max(0.0, min(backoff(state), remaining))

        def log(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            get_logger().warning(
                "metadata_retry",
                operation=operation,
                attempt=state.attempt_number,
                wait_seconds=round(state.next_action.sleep, 3) if state.next_action is not None else None,
                database=self.url_for_display,
                error=str(error),
            )

        return Retrying(
            retry=retry_if_exception_type(MetadataUnavailableError),
            stop=stop_after_delay(self.retry_seconds),
            wait=wait,
            before_sleep=log,
            reraise=True,
        )

    def _with_retries(self, operation: str, call: Callable[[int], _T]) -> _T:
        """`call(attempt)` under the retry policy; `attempt` counts from 1."""
        for attempt in self._retrying(operation):
            with attempt:
                result = call(attempt.retry_state.attempt_number)
        return result

    @_retried
    def migrate(self) -> None:
        """Bring the schema up to the newest migration; does nothing if it is already there.

        Two processes opening a new database at once both start migrating it; the one that
        loses finds the schema already created, waits for the other to finish, and goes on.
        A database already at the newest migration is recognised without loading Alembic (a
        third of a second at every start of a command)."""
        if self._at_newest():
            return
        from alembic.config import Config

        config = Config()
        # Config values go through configparser interpolation, so a literal % must be doubled.
        config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        config.set_main_option("sqlalchemy.url", self._url.render_as_string(hide_password=False).replace("%", "%%"))
        for wait in (0.2, 0.5, 1.0, 2.0, None):
            try:
                self._upgrade(config)
                return
            except MetadataUnavailableError:
                raise
            except MetadataStoreError as error:
                # Losing the race shows as a refused DDL statement; a refused connection or a
                # schema newer than this code will not mend by waiting.
                cause = error.__cause__
                if wait is None or not (isinstance(cause, DBAPIError) and cause.statement is not None):
                    raise
                time.sleep(wait)
                if self._at_head(config):
                    return

    @_retried
    def schema_version(self) -> str | None:
        """The schema's migration revision (None before the first migration)."""
        from alembic.runtime.migration import MigrationContext

        with self._connection("read the schema version") as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def _at_newest(self) -> bool:
        """Whether the database records exactly the newest migration file's revision (the files
        are `NNNN_name.py` with revision "NNNN", one after the other); False when unsure."""
        newest = max(
            (p.name[:4] for p in (MIGRATIONS_DIR / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")), default=None
        )
        try:
            with self._connection("read the schema version") as connection:
                rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        except (MetadataStoreError, DBAPIError):
            return False
        return newest is not None and [tuple(r) for r in rows] == [(newest,)]

    def _at_head(self, config: Any) -> bool:
        """Whether the database's schema is at the newest migration."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        heads = set(ScriptDirectory.from_config(config).get_heads())
        try:
            with self._connection("read the schema version") as connection:
                current = set(MigrationContext.configure(connection).get_current_heads())
        except MetadataStoreError:
            return False
        return current == heads

    def _upgrade(self, config: Any) -> None:
        from alembic import command
        from alembic.util.exc import CommandError

        with self._transaction("apply the schema migrations") as connection:
            config.attributes["connection"] = connection
            try:
                command.upgrade(config, "head")
            except CommandError as exc:
                raise MetadataStoreError(
                    f"The metadata database at {self.url_for_display} could not be "
                    f"migrated: {self._scrub(str(exc))}. It may have been migrated by a "
                    "newer version of the platform; upgrade the platform or use another "
                    "database."
                ) from exc

    def ping(self) -> float:
        """Run a SELECT 1 round trip and return how many seconds it took. Not retried: a health
        check wants to know whether the database answers now."""
        started = time.perf_counter()
        with self._connection("connect and run SELECT 1") as connection:
            connection.execute(text("SELECT 1")).scalar_one()
        return time.perf_counter() - started

    def start_batch(self, record: BatchRecord) -> int:
        """Record a batch as running, with its input files; returns the batch's sequence number,
        one more than any batch's before it. A batch id already recorded is refused, except when
        this call is a retry whose first attempt did record it before the connection was lost."""
        _require_aware(record.started_at, "started_at")
        _require_aware(record.ingestion_time, "ingestion_time")
        # From the second attempt on, a batch already recorded just as this one may be this call's own
        # first attempt, committed before the connection was lost.
        return self._with_retries("start_batch", lambda attempt: self._start_numbered(record, retry=attempt > 1))

    def _start_numbered(self, record: BatchRecord, *, retry: bool) -> int:
        """`_start_batch`, again if another batch took the same next number at the same moment
        (two data directories sharing one database)."""
        for _ in range(10):
            try:
                return self._start_batch(record, retry=retry)
            except MetadataStoreError as error:
                cause = error.__cause__
                if not (isinstance(cause, IntegrityError) and "sequence" in str(cause.orig).lower()):
                    raise
        raise MetadataStoreError(f"could not give batch {record.batch_id!r} a sequence number; try again")

    def _start_batch(self, record: BatchRecord, *, retry: bool) -> int:
        checksum = record.checksum if record.checksum is not None else files_checksum(record.files)
        with self._transaction(f"start batch {record.batch_id!r}") as connection:
            stored = connection.execute(
                select(batches.c.sequence, batches.c.started_at, batches.c.checksum, batches.c.status).where(
                    batches.c.batch_id == record.batch_id
                )
            ).first()
            if (
                retry
                and stored is not None
                and stored.sequence is not None
                and stored.status == "running"
                and stored.started_at == record.started_at
                and stored.checksum == checksum
            ):
                return int(stored.sequence)
            sequence = int(connection.execute(select(func.coalesce(func.max(batches.c.sequence), 0))).scalar_one()) + 1
            connection.execute(
                insert(batches).values(
                    batch_id=record.batch_id,
                    source=record.source,
                    execution_mode=record.execution_mode,
                    status="running",
                    started_at=record.started_at,
                    ingestion_time=record.ingestion_time,
                    record_count=record.record_count,
                    checksum=checksum,
                    sequence=sequence,
                    kind=record.kind,
                    replay_of=record.replay_of,
                    lake=record.lake,
                    positions=_positions_value(record.positions),
                )
            )
            if record.files:
                connection.execute(
                    insert(batch_files),
                    [_file_row(record.batch_id, file) for file in record.files],
                )
        return sequence

    @_retried
    def finish_batch(
        self,
        *,
        batch_id: str,
        status: BatchStatus,
        finished_at: datetime,
        record_count: int,
        reconciliation: Reconciliation | None,
        layers: list[LayerMetrics],
        rule_counts: dict[str, int],
        error: str | None = None,
        files: list[InputFile] | None = None,
    ) -> None:
        """Record how a batch ended; replaces any layer metrics and rule counts written before."""
        _require_aware(finished_at, "finished_at")
        with self._transaction(f"finish batch {batch_id!r}") as connection:
            updated = connection.execute(
                update(batches)
                .where(batches.c.batch_id == batch_id)
                .values(
                    status=status,
                    finished_at=finished_at,
                    record_count=record_count,
                    error=_storable_text(error),
                    **_reconciliation_values(reconciliation),
                )
            )
            if updated.rowcount == 0:
                # Raising inside the block rolls the transaction back.
                raise MetadataStoreError(
                    f"Batch {batch_id!r} was never started in the metadata database at "
                    f"{self.url_for_display}; call start_batch before finish_batch."
                )
            self._replace_children(connection, batch_id, layers, rule_counts)
            if files is not None:
                self._update_files(connection, batch_id, files)

    @_retried
    def fail_running(self, *, batch_id: str, finished_at: datetime, error: str) -> bool:
        """Record a batch that is still running as failed with `error`; False if it was not running."""
        _require_aware(finished_at, "finished_at")
        with self._transaction(f"fail batch {batch_id!r}") as connection:
            updated = connection.execute(
                update(batches)
                .where(batches.c.batch_id == batch_id, batches.c.status == "running")
                .values(status="failed", finished_at=finished_at, error=_storable_text(error))
            )
            return bool(updated.rowcount)

    @_retried
    def successful_checksums(self, checksums: list[str]) -> dict[str, str]:
        """Map each given SHA-256 already ingested by a succeeded batch (not undone since) to that batch's id."""
        found: dict[str, str] = {}
        with self._connection("look up file checksums") as connection:
            for chunk in _chunks(sorted(set(checksums))):
                rows = connection.execute(
                    select(batch_files.c.sha256, batch_files.c.batch_id)
                    .join(batches, batches.c.batch_id == batch_files.c.batch_id)
                    .where(
                        batches.c.status == "succeeded",
                        batches.c.undone_by.is_(None),
                        batch_files.c.sha256.in_(chunk),
                    )
                    .order_by(batches.c.started_at, batches.c.batch_id)
                )
                for sha256, batch_id in rows:
                    # The first batch that ingested a file is the one worth pointing at.
                    found.setdefault(sha256, batch_id)
        return found

    @_retried
    def list_batches(self, *, limit: int = 20, source: str | None = None, kind: str | None = None) -> list[BatchRecord]:
        """Return the newest batches first, optionally only those of one source or one kind."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        query = select(batches)
        if source is not None:
            query = query.where(batches.c.source == source)
        if kind is not None:
            query = query.where(batches.c.kind == kind)
        query = query.order_by(batches.c.started_at.desc(), batches.c.batch_id.desc()).limit(limit)
        with self._connection("list batches") as connection:
            return self._records(connection, connection.execute(query).all())

    @_retried
    def running_batches(self, *, lake: str) -> list[BatchRecord]:
        """Batches of `lake` recorded as running, oldest first: under the lake's lock, those
        are batches whose process died before it recorded how they ended."""
        query = (
            select(batches)
            .where(batches.c.status == "running", batches.c.lake == lake)
            .order_by(batches.c.started_at, batches.c.batch_id)
        )
        with self._connection("list running batches") as connection:
            return self._records(connection, connection.execute(query).all())

    @_retried
    def get_batch(self, batch_id: str) -> BatchRecord | None:
        """Return the full record of one batch, or None if there is no such batch."""
        with self._connection(f"read batch {batch_id!r}") as connection:
            rows = connection.execute(select(batches).where(batches.c.batch_id == batch_id)).all()
            records = self._records(connection, rows)
        return records[0] if records else None

    @_retried
    def batches_after(self, sequence: int, *, lake: str) -> list[BatchRecord]:
        """The batches of `lake` numbered after `sequence`, oldest first (for `batches undo`)."""
        query = (
            select(batches).where(batches.c.sequence > sequence, batches.c.lake == lake).order_by(batches.c.sequence)
        )
        with self._connection("list later batches") as connection:
            return self._records(connection, connection.execute(query).all())

    @_retried
    def undone_batches(self, batch_ids: Sequence[str]) -> dict[str, list[str]]:
        """The undo batches among `batch_ids` and those that undid one of them: each with every
        batch it undid, oldest first."""
        found: dict[str, list[str]] = {}
        with self._connection("list the batches undone") as connection:
            undos = set(batch_ids)
            for chunk in _chunks(sorted(set(batch_ids))):
                undos.update(
                    connection.execute(
                        select(batches.c.undone_by).where(
                            batches.c.batch_id.in_(chunk), batches.c.undone_by.is_not(None)
                        )
                    ).scalars()
                )
            for chunk in _chunks(sorted(undos)):
                rows = connection.execute(
                    select(batches.c.undone_by, batches.c.batch_id)
                    .where(batches.c.undone_by.in_(chunk))
                    .order_by(batches.c.sequence)
                )
                for undo_id, batch_id in rows:
                    found.setdefault(undo_id, []).append(batch_id)
        return found

    @_retried
    def finish_undo(self, *, batch_id: str, undone: list[str], finished_at: datetime) -> None:
        """Record undo batch `batch_id` as succeeded and each batch of `undone` as undone by it,
        in one transaction; a batch of `undone` that is unknown or undone already rolls it back."""
        _require_aware(finished_at, "finished_at")
        with self._transaction(f"finish undo {batch_id!r}") as connection:
            finished = connection.execute(
                update(batches)
                .where(batches.c.batch_id == batch_id, batches.c.status == "running")
                .values(status="succeeded", finished_at=finished_at, error=None)
            )
            marked = connection.execute(
                update(batches)
                .where(batches.c.batch_id.in_(undone), batches.c.undone_by.is_(None))
                .values(undone_by=batch_id)
            )
            if finished.rowcount != 1 or marked.rowcount != len(set(undone)):
                # Raising inside the block rolls the transaction back.
                raise MetadataStoreError(
                    f"undo {batch_id!r} could not be recorded in the metadata database at {self.url_for_display}: "
                    "it is not running, or one of the batches it undid is unknown or undone already"
                )

    @_retried
    def metric_totals(self) -> MetricTotals:
        """Totals over every batch, each a GROUP BY in the database: finished batches per source,
        kind and status, batches running, per source sums over its succeeded batches, its last
        failure and its last succeeded batch's quarantine share, and per source and layer sums
        over the layer metrics of succeeded batches."""
        succeeded = batches.c.status == "succeeded"
        duration = self._seconds_between(batches.c.started_at, batches.c.finished_at)
        runs: dict[tuple[str, str, BatchStatus], int] = {}
        running = 0
        last_failure: dict[str, datetime] = {}
        sums: dict[str, dict[str, Any]] = defaultdict(dict)
        with self._connection("sum up the batches") as connection:
            counted = connection.execute(
                select(
                    batches.c.source, batches.c.kind, batches.c.status, func.count(), func.max(batches.c.finished_at)
                ).group_by(batches.c.source, batches.c.kind, batches.c.status)
            )
            for source, kind, status, count, finished in counted:
                if status == "running":
                    running += int(count)
                    continue
                runs[(source, kind, self._status(status))] = int(count)
                if status == "failed" and finished is not None:
                    last_failure[source] = max(last_failure.get(source, finished), finished)
            totals = connection.execute(
                select(
                    batches.c.source,
                    func.sum(batches.c.record_count).label("records_processed"),
                    func.sum(func.coalesce(batches.c.rows_quarantined, 0)).label("records_quarantined"),
                    func.sum(func.coalesce(batches.c.rows_estimated, 0)).label("rows_estimated"),
                    func.sum(duration).label("duration_seconds"),
                    func.count(duration).label("duration_count"),
                    func.max(batches.c.finished_at).label("last_success"),
                )
                .where(succeeded)
                .group_by(batches.c.source)
            )
            for row in totals:
                sums[row.source] = row._asdict()
            ratios = self._last_quarantine_ratios(connection)
            layers = self._layer_totals(connection)
        return MetricTotals(
            runs=runs,
            running=running,
            last_failure=last_failure,
            last_quarantine_ratio=ratios,
            layer_records_in={key: int(row.records_in or 0) for key, row in layers.items()},
            layer_records_out={key: int(row.records_out or 0) for key, row in layers.items()},
            layer_duration_seconds={key: float(row.duration_seconds or 0) for key, row in layers.items()},
            layer_count={key: int(row.batches) for key, row in layers.items()},
            records_processed={source: int(row["records_processed"] or 0) for source, row in sums.items()},
            records_quarantined={source: int(row["records_quarantined"] or 0) for source, row in sums.items()},
            rows_estimated={source: int(row["rows_estimated"] or 0) for source, row in sums.items()},
            duration_seconds={source: float(row["duration_seconds"] or 0) for source, row in sums.items()},
            duration_count={source: int(row["duration_count"]) for source, row in sums.items()},
            last_success={
                source: row["last_success"] for source, row in sums.items() if row["last_success"] is not None
            },
        )

    def _last_quarantine_ratios(self, connection: Connection) -> dict[str, float]:
        """Per source, rows quarantined / rows read of its last succeeded batch (by finish) that read any."""
        latest = (
            select(
                batches.c.source,
                batches.c.record_count,
                batches.c.rows_quarantined,
                func.row_number()
                .over(
                    partition_by=batches.c.source,
                    order_by=(batches.c.finished_at.desc(), batches.c.batch_id.desc()),
                )
                .label("newest"),
            ).where(batches.c.status == "succeeded", batches.c.record_count > 0)
        ).subquery()
        rows = connection.execute(
            select(latest.c.source, latest.c.record_count, latest.c.rows_quarantined).where(latest.c.newest == 1)
        )
        return {row.source: (row.rows_quarantined or 0) / row.record_count for row in rows}

    def _layer_totals(self, connection: Connection) -> dict[tuple[str, Layer], Row[Any]]:
        """Per (source, layer), sums over the layer metrics of succeeded batches."""
        rows = connection.execute(
            select(
                batches.c.source,
                layer_metrics.c.layer,
                func.sum(layer_metrics.c.records_in).label("records_in"),
                func.sum(layer_metrics.c.records_out).label("records_out"),
                func.sum(layer_metrics.c.duration_seconds).label("duration_seconds"),
                func.count().label("batches"),
            )
            .join(batches, batches.c.batch_id == layer_metrics.c.batch_id)
            .where(batches.c.status == "succeeded")
            .group_by(batches.c.source, layer_metrics.c.layer)
        )
        return {(row.source, self._layer(row.layer)): row for row in rows}

    @_retried
    def record_stream(self, record: StreamRecord) -> None:
        """Write a stream run's row: inserted the first time, replaced after (one transaction)."""
        for name in ("started_at", "heartbeat_at"):
            _require_aware(getattr(record, name), name)
        if record.stopped_at is not None:
            _require_aware(record.stopped_at, "stopped_at")
        values = _stream_values(record)
        with self._transaction(f"record stream run {record.run_id!r}") as connection:
            updated = connection.execute(update(streams).where(streams.c.run_id == record.run_id).values(**values))
            if updated.rowcount == 0:
                connection.execute(insert(streams).values(run_id=record.run_id, **values))

    @_retried
    def get_stream(self, run_id: str) -> StreamRecord | None:
        """One stream run, or None if there is no such run."""
        with self._connection(f"read stream run {run_id!r}") as connection:
            row = connection.execute(select(streams).where(streams.c.run_id == run_id)).first()
        return None if row is None else self._stream(row)

    @_retried
    def streams(self) -> list[StreamRecord]:
        """The latest run (by start) of each source's stream, sorted by source."""
        latest = (
            select(
                streams,
                func.row_number()
                .over(partition_by=streams.c.source, order_by=(streams.c.started_at.desc(), streams.c.run_id.desc()))
                .label("newest"),
            )
        ).subquery()
        query = select(*(latest.c[column.name] for column in streams.columns)).where(latest.c.newest == 1)
        with self._connection("list the streams") as connection:
            rows = connection.execute(query.order_by(latest.c.source)).all()
        return [self._stream(row) for row in rows]

    def _stream(self, row: Row[Any]) -> StreamRecord:
        if row.state not in STREAM_STATES:
            raise MetadataStoreError(
                f"The metadata database at {self.url_for_display} holds an unknown stream "
                f"state {row.state!r}; it was probably written by a newer version of the platform."
            )
        return StreamRecord(
            run_id=row.run_id,
            source=row.source,
            state=cast(StreamState, row.state),
            host=row.host,
            pid=row.pid,
            trigger_seconds=row.trigger_seconds,
            started_at=row.started_at,
            heartbeat_at=row.heartbeat_at,
            lake=row.lake,
            stopped_at=row.stopped_at,
            last_batch_id=row.last_batch_id,
            micro_batches=row.micro_batches,
            readings=row.readings,
            last_duration_seconds=row.last_duration_seconds,
            last_readings_per_second=row.last_readings_per_second,
            last_latency_seconds=row.last_latency_seconds,
            lag=_positions(row.lag),
            error=row.error,
        )

    @_retried
    def pseudonymise(self, text_found: str, replacement: str) -> int:
        """`text_found` replaced by `replacement` in every free-text field kept here: batch errors
        and file paths, stream errors, the audit trail's targets, details and errors (an error may
        quote a meter id, a file may be named after one). An SQLite file is then compacted, so the
        old text leaves its pages too. Returns the rows changed."""
        fields = [
            (batches, batches.c.error),
            (batch_files, batch_files.c.path),
            (streams, streams.c.error),
            (audit, audit.c.target),
            (audit, audit.c.error),
        ]
        changed = 0
        with self._transaction("pseudonymise a value") as connection:
            for table, column in fields:
                found = column.contains(text_found, autoescape=True)
                replaced = func.replace(column, text_found, replacement)
                changed += connection.execute(update(table).where(found).values({column.name: replaced})).rowcount
            details = sql_cast(audit.c.details, Text)
            replaced_details: ColumnElement[Any] = func.replace(details, text_found, replacement)
            if connection.dialect.name == "postgresql":
                replaced_details = sql_cast(replaced_details, JSON)
            found = details.contains(text_found, autoescape=True)
            changed += connection.execute(update(audit).where(found).values(details=replaced_details)).rowcount
        if self._engine.dialect.name == "sqlite":
            with self._translated("compact the database"), self._engine.connect() as connection:
                autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
                autocommit.exec_driver_sql("VACUUM")
                autocommit.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return changed

    def record_audit(self, record: AuditRecord) -> int:
        """Append one action to the audit trail; returns its id. Secrets known to the log redaction
        are masked in its error and details. A retry after a lost answer finds the row its first
        attempt wrote (same time, actor, action, target and outcome) rather than writing it twice."""
        _require_aware(record.at, "at")
        if record.outcome not in AUDIT_OUTCOMES:
            raise ValueError(f"unknown audit outcome {record.outcome!r}")
        if record.actor_kind not in ACTOR_KINDS:
            raise ValueError(f"unknown actor kind {record.actor_kind!r}")
        values = {
            "at": record.at,
            "actor": _storable_text(record.actor),
            "actor_kind": record.actor_kind,
            "action": record.action,
            "target": _storable_text(record.target),
            "details": _redacted(record.details) or None,
            "outcome": record.outcome,
            "error": _storable_text(redact_text(record.error)) if record.error is not None else None,
        }
        return self._with_retries("record_audit", lambda attempt: self._record_audit(values, retry=attempt > 1))

    def _record_audit(self, values: dict[str, Any], *, retry: bool) -> int:
        with self._transaction(f"record the audit of {values['action']!r}") as connection:
            if retry:
                stored = connection.execute(
                    select(audit.c.id).where(
                        *(audit.c[name] == values[name] for name in ("at", "actor", "action", "outcome")),
                        audit.c.target.is_(None) if values["target"] is None else audit.c.target == values["target"],
                    )
                ).first()
                if stored is not None:
                    return int(stored.id)
            key = connection.execute(insert(audit).values(**values)).inserted_primary_key
            if key is None:  # every dialect the store supports returns it
                raise MetadataStoreError(
                    f"The metadata database at {self.url_for_display} gave no id to an audit record"
                )
            return int(key[0])

    @_retried
    def list_audit(
        self, limit: int, *, action: str | None = None, actor: str | None = None, since: datetime | None = None
    ) -> list[AuditRecord]:
        """Recorded actions, newest first (by time, then id): of `action` and `actor` if given, at
        or after `since`."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        query = select(audit)
        if action is not None:
            query = query.where(audit.c.action == action)
        if actor is not None:
            query = query.where(audit.c.actor == actor)
        if since is not None:
            query = query.where(audit.c.at >= _require_aware(since, "since"))
        query = query.order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit)
        with self._connection("read the audit trail") as connection:
            rows = connection.execute(query).all()
        return [self._audit(row) for row in rows]

    def _audit(self, row: Row[Any]) -> AuditRecord:
        if row.outcome not in AUDIT_OUTCOMES or row.actor_kind not in ACTOR_KINDS:
            raise MetadataStoreError(
                f"The metadata database at {self.url_for_display} holds an unknown audit outcome "
                f"{row.outcome!r} or actor kind {row.actor_kind!r}; it was probably written by a newer "
                "version of the platform."
            )
        return AuditRecord(
            id=row.id,
            at=row.at,
            actor=row.actor,
            actor_kind=cast(ActorKind, row.actor_kind),
            action=row.action,
            target=row.target,
            details=dict(row.details or {}),
            outcome=cast(AuditOutcome, row.outcome),
            error=row.error,
        )

    def _seconds_between(self, start: ColumnElement[Any], end: ColumnElement[Any]) -> ColumnElement[Any]:
        """Seconds from `start` to `end` computed in the database (NULL while `end` is NULL)."""
        if self._engine.dialect.name == "sqlite":
            # SQLite keeps these as text; julianday() reads them to the millisecond, which the
            # rounding restores after the subtraction of two large day numbers.
            return func.round((func.julianday(end) - func.julianday(start)) * 86400.0, 3)
        return extract("epoch", end) - extract("epoch", start)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def _create_sqlite_dir(self) -> None:
        database = self._url.database
        if self._url.get_backend_name() != "sqlite" or not database or database == ":memory:":
            return
        if database.startswith("file:"):
            # URI filenames may name shared in-memory databases; leave those to SQLite.
            return
        directory = Path(database).expanduser().parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MetadataStoreError(
                f"Cannot create the directory {str(directory)!r} for the metadata database "
                f"{self.url_for_display}: {exc.strerror}; check the path and its permissions."
            ) from exc

    @contextmanager
    def _connection(self, action: str) -> Iterator[Connection]:
        """Lend a connection whose driver errors surface as MetadataStoreError."""
        with self._translated(action), self._open(action) as connection:
            yield connection

    @contextmanager
    def _transaction(self, action: str) -> Iterator[Connection]:
        """Lend a connection in a transaction that commits on success, errors translated."""
        with self._translated(action), self._open(action) as connection, connection.begin():
            yield connection

    def _open(self, action: str) -> Connection:
        """A connection from the pool, a failure to get one translated as such."""
        try:
            return self._engine.connect()
        except DBAPIError as exc:
            raise self._error(action, exc, connecting=True) from exc

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn driver errors into MetadataStoreError that names the masked URL."""
        try:
            yield
        except DBAPIError as exc:
            raise self._error(action, exc, connecting=False) from exc

    def _error(self, action: str, exc: DBAPIError, *, connecting: bool) -> MetadataStoreError:
        """The MetadataStoreError for a driver error: MetadataUnavailableError when trying again may help."""
        if isinstance(exc, IntegrityError | DataError):
            # DataError: a value the column cannot hold, e.g. too long for PostgreSQL's VARCHAR(n).
            return MetadataStoreError(
                f"The metadata database at {self.url_for_display} refused to {action}: "
                f"{self._reason(exc)}. Check that batch ids are unique and values are valid."
            )
        transient = is_transient(exc) and not (connecting and self._refused_by_server(exc.orig))
        error = MetadataUnavailableError if transient else MetadataStoreError
        return error(
            f"Could not {action} in the metadata database at {self.url_for_display}: "
            f"{self._reason(exc)}. Check that the database is running and reachable, that "
            "the URL, credentials and file permissions are right, and that migrations "
            "have been applied."
        )

    def _refused_by_server(self, error: BaseException | None) -> bool:
        """Whether a PostgreSQL connection that failed without a SQLSTATE was refused by a server that
        is up (credentials, database name, access rules: final), not out of reach (worth retrying).

        libpq keeps the SQLSTATE of a refused connection to itself (psycopg's error has none), so
        ask libpq's PQping, which reads it: OK when the server answered, REJECT while it is starting
        or shutting down (57P03), NO_RESPONSE when nothing answered. A server refusing more clients
        (53300) also pings OK, so at connection time that too is final."""
        psycopg = _psycopg()
        if psycopg is None or not isinstance(error, psycopg.OperationalError) or error.sqlstate is not None:
            return False
        if self._url.get_backend_name() != "postgresql" or self._url.get_driver_name() != "psycopg":
            return False
        from psycopg import pq
        from psycopg.conninfo import make_conninfo

        params: dict[str, Any] = {"connect_timeout": _PING_TIMEOUT_SECONDS}
        params |= {key: value for key, value in self._url.query.items() if isinstance(value, str)}
        params |= self._url.translate_connect_args(username="user", database="dbname")
        try:
            conninfo = make_conninfo("", **params)
        except psycopg.Error:
            return False
        return bool(pq.PGconn.ping(conninfo.encode()) == pq.Ping.OK)

    def _reason(self, exc: DBAPIError) -> str:
        # The driver's own message, without the SQL and parameters SQLAlchemy appends.
        lines = str(exc.orig).strip().splitlines()
        return self._scrub(lines[0] if lines else type(exc.orig).__name__)

    def _scrub(self, message: str) -> str:
        password = self._url.password
        return redact_text(message.replace(password, "***") if password else message)

    def _replace_children(
        self,
        connection: Connection,
        batch_id: str,
        layers: Sequence[LayerMetrics],
        counts: dict[str, int],
    ) -> None:
        connection.execute(delete(layer_metrics).where(layer_metrics.c.batch_id == batch_id))
        connection.execute(delete(rule_counts).where(rule_counts.c.batch_id == batch_id))
        if layers:
            connection.execute(
                insert(layer_metrics),
                [
                    {
                        "batch_id": batch_id,
                        "layer": layer.layer,
                        "records_in": layer.records_in,
                        "records_out": layer.records_out,
                        "quarantined": layer.quarantined,
                        "duration_seconds": layer.duration_seconds,
                    }
                    for layer in layers
                ],
            )
        if counts:
            connection.execute(
                insert(rule_counts),
                [{"batch_id": batch_id, "rule": rule, "count": n} for rule, n in counts.items()],
            )

    def _update_files(self, connection: Connection, batch_id: str, files: Sequence[InputFile]) -> None:
        for file in files:
            updated = connection.execute(
                update(batch_files)
                .where(batch_files.c.batch_id == batch_id, batch_files.c.path == file.path)
                .values(record_count=file.record_count)
            )
            if updated.rowcount == 0:
                # A file found only after the batch started still belongs to its history.
                connection.execute(insert(batch_files).values(**_file_row(batch_id, file)))

    def _records(self, connection: Connection, rows: Sequence[Row[Any]]) -> list[BatchRecord]:
        """Build full records for batch rows, loading their children in a few queries."""
        ids = [row.batch_id for row in rows]
        files: defaultdict[str, list[InputFile]] = defaultdict(list)
        layers: defaultdict[str, list[LayerMetrics]] = defaultdict(list)
        counts: defaultdict[str, dict[str, int]] = defaultdict(dict)
        for chunk in _chunks(ids):
            for row in connection.execute(
                select(batch_files).where(batch_files.c.batch_id.in_(chunk)).order_by(batch_files.c.id)
            ):
                files[row.batch_id].append(
                    InputFile(
                        path=row.path,
                        sha256=row.sha256,
                        size_bytes=row.size_bytes,
                        record_count=row.record_count,
                    )
                )
            for row in connection.execute(select(layer_metrics).where(layer_metrics.c.batch_id.in_(chunk))):
                layers[row.batch_id].append(
                    LayerMetrics(
                        layer=self._layer(row.layer),
                        records_in=row.records_in,
                        records_out=row.records_out,
                        quarantined=row.quarantined,
                        duration_seconds=row.duration_seconds,
                    )
                )
            # Unpacked by position: Row.count is the tuple method, not the column.
            for batch_id, rule, count in connection.execute(
                select(rule_counts.c.batch_id, rule_counts.c.rule, rule_counts.c.count)
                .where(rule_counts.c.batch_id.in_(chunk))
                .order_by(rule_counts.c.rule)
            ):
                counts[batch_id][rule] = count
        return [
            BatchRecord(
                batch_id=row.batch_id,
                source=row.source,
                execution_mode=row.execution_mode,
                status=self._status(row.status),
                started_at=row.started_at,
                ingestion_time=row.ingestion_time,
                files=files[row.batch_id],
                finished_at=row.finished_at,
                record_count=row.record_count,
                checksum=row.checksum,
                error=row.error,
                reconciliation=_reconciliation(row),
                layers=sorted(layers[row.batch_id], key=lambda layer: LAYER_ORDER[layer.layer]),
                rule_counts=counts[row.batch_id],
                sequence=row.sequence,
                kind=row.kind,
                replay_of=row.replay_of,
                lake=row.lake,
                positions=_positions(row.positions),
                undone_by=row.undone_by,
            )
            for row in rows
        ]

    def _status(self, value: str) -> BatchStatus:
        if value not in STATUSES:
            raise MetadataStoreError(
                f"The metadata database at {self.url_for_display} holds an unknown batch "
                f"status {value!r}; it was probably written by a newer version of the platform."
            )
        return cast(BatchStatus, value)

    def _layer(self, value: str) -> Layer:
        if value not in LAYER_ORDER:
            raise MetadataStoreError(
                f"The metadata database at {self.url_for_display} holds an unknown layer "
                f"{value!r}; it was probably written by a newer version of the platform."
            )
        return cast(Layer, value)


def _require_aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value


def _storable_text(value: str | None) -> str | None:
    """Free text with NUL bytes made visible: PostgreSQL's text columns cannot hold them."""
    # An error message can quote raw input bytes; refusing it would leave the batch "running".
    return None if value is None else value.replace("\x00", "\\x00")


def _redacted(value: Any) -> Any:
    """A JSON value with every text in it passed through the log redaction (and NUL bytes made visible)."""
    if isinstance(value, str):
        return _storable_text(redact_text(value))
    if isinstance(value, dict):
        return {str(key): _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


def _file_row(batch_id: str, file: InputFile) -> dict[str, object]:
    return {
        "batch_id": batch_id,
        "path": file.path,
        "sha256": file.sha256,
        "size_bytes": file.size_bytes,
        "record_count": file.record_count,
    }


def _positions_value(positions: dict[str, int]) -> dict[str, int] | None:
    """Partition -> offset (or lag) as the JSON column keeps it: NULL when there is none."""
    return {str(key): int(value) for key, value in positions.items()} or None


def _positions(value: Any) -> dict[str, int]:
    """The JSON column read back (NULL: {})."""
    return {str(key): int(number) for key, number in (value or {}).items()}


def _stream_values(record: StreamRecord) -> dict[str, Any]:
    return {
        "source": record.source,
        "lake": record.lake,
        "state": record.state,
        "host": record.host,
        "pid": record.pid,
        "trigger_seconds": record.trigger_seconds,
        "started_at": record.started_at,
        "heartbeat_at": record.heartbeat_at,
        "stopped_at": record.stopped_at,
        "last_batch_id": record.last_batch_id,
        "micro_batches": record.micro_batches,
        "readings": record.readings,
        "last_duration_seconds": record.last_duration_seconds,
        "last_readings_per_second": record.last_readings_per_second,
        "last_latency_seconds": record.last_latency_seconds,
        "lag": _positions_value(record.lag),
        "error": _storable_text(record.error),
    }


def _reconciliation_values(reconciliation: Reconciliation | None) -> dict[str, int | None]:
    return {name: None if reconciliation is None else getattr(reconciliation, name) for name in _RECONCILIATION_FIELDS}


def _reconciliation(row: Row[Any]) -> Reconciliation | None:
    if row.rows_read is None:
        return None
    return Reconciliation(**{name: getattr(row, name) or 0 for name in _RECONCILIATION_FIELDS})


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]
