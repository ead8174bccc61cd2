"""Batch metadata store on SQLAlchemy: SQLite by default, PostgreSQL in production."""

from __future__ import annotations

import functools
import re
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast, get_args

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
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
    func,
    insert,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
)

from app.domain.batches import (
    BatchRecord,
    BatchStatus,
    InputFile,
    Layer,
    LayerMetrics,
    Reconciliation,
    batch_checksum,
)
from app.domain.errors import MetadataStoreError
from app.infrastructure.logging import get_logger, redact_text

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

LAYER_ORDER: dict[str, int] = {layer: index for index, layer in enumerate(get_args(Layer))}
STATUSES: frozenset[str] = frozenset(get_args(BatchStatus))

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

#: PostgreSQL error classes that mean "the server went away or is not there yet": connection
#: exceptions (08xxx), shutdown by an administrator or a crash, "starting up", too many clients.
_TRANSIENT_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
#: Connection failures that trying again will not mend: credentials, names, access rules.
_REFUSED = re.compile(
    r"authentication failed|does not exist|no pg_hba\.conf entry|could not translate host name|"
    r"Name or service not known|permission denied|SSL|certificate",
    re.IGNORECASE,
)
#: Waits between attempts grow from the first to the cap, until the store's retry time is spent.
_FIRST_WAIT_SECONDS = 0.2
_MAX_WAIT_SECONDS = 5.0


class MetadataUnavailableError(MetadataStoreError):
    """The metadata database could not be reached; the call may succeed if tried again."""


def _transient(exc: DBAPIError) -> bool:
    """Whether `exc` is a lost or refused connection (worth retrying), not a refused statement."""
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    original = exc.orig
    if isinstance(original, sqlite3.Error):
        # A file that another process holds locked; every other SQLite error is final.
        return "locked" in str(original) or "busy" in str(original)
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate is None:
        # No SQLSTATE: the client got no answer (refused, reset, closed mid-statement), or the
        # driver turned the server's refusal of the connection into text: those stay refused.
        return not _REFUSED.search(str(original))
    return str(sqlstate).startswith(_TRANSIENT_SQLSTATES)


def _with_retries(store: SqlMetadataStore, operation: str, call: Callable[[int], _T]) -> _T:
    """`call(attempt)`, made again after a growing wait while the database is unreachable,
    until the store's retry time is spent."""
    deadline = time.monotonic() + store.retry_seconds
    wait = _FIRST_WAIT_SECONDS
    attempt = 1
    while True:
        try:
            return call(attempt)
        except MetadataUnavailableError as error:
            if time.monotonic() + wait > deadline:
                raise
            get_logger().warning(
                "metadata_retry", operation=operation, attempt=attempt, wait_seconds=wait, error=str(error)
            )
            time.sleep(wait)
            wait = min(wait * 2, _MAX_WAIT_SECONDS)
            attempt += 1


def _retried(
    method: Callable[Concatenate[SqlMetadataStore, _P], _T],
) -> Callable[Concatenate[SqlMetadataStore, _P], _T]:
    """Retry `method` while the database is unreachable; each such method is idempotent, so a
    call whose answer was lost can simply be made again."""

    @functools.wraps(method)
    def call(self: SqlMetadataStore, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return _with_retries(self, method.__name__, lambda _attempt: method(self, *args, **kwargs))

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

    @_retried
    def migrate(self) -> None:
        """Bring the schema up to the newest migration; does nothing if it is already there.

        Two processes opening a new database at once both start migrating it; the one that
        loses finds the schema already created, waits for the other to finish, and goes on."""
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
            except MetadataStoreError:
                if wait is None:
                    raise
                time.sleep(wait)
                if self._at_head(config):
                    return

    def schema_version(self) -> str | None:
        """The schema's migration revision (None before the first migration)."""
        with self._connection("read the schema version") as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def _at_head(self, config: Config) -> bool:
        """Whether the database's schema is at the newest migration."""
        heads = set(ScriptDirectory.from_config(config).get_heads())
        try:
            with self._connection("read the schema version") as connection:
                current = set(MigrationContext.configure(connection).get_current_heads())
        except MetadataStoreError:
            return False
        return current == heads

    def _upgrade(self, config: Config) -> None:
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
        """Run a SELECT 1 round trip and return how many seconds it took."""
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
        return _with_retries(self, "start_batch", lambda attempt: self._start_numbered(record, retry=attempt > 1))

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
        """Map each given SHA-256 already ingested by a succeeded batch to that batch's id."""
        found: dict[str, str] = {}
        with self._connection("look up file checksums") as connection:
            for chunk in _chunks(sorted(set(checksums))):
                rows = connection.execute(
                    select(batch_files.c.sha256, batch_files.c.batch_id)
                    .join(batches, batches.c.batch_id == batch_files.c.batch_id)
                    .where(batches.c.status == "succeeded", batch_files.c.sha256.in_(chunk))
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
        with self._translated(action), self._engine.connect() as connection:
            yield connection

    @contextmanager
    def _transaction(self, action: str) -> Iterator[Connection]:
        """Lend a connection in a transaction that commits on success, errors translated."""
        with self._translated(action), self._engine.begin() as connection:
            yield connection

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn driver errors into MetadataStoreError that names the masked URL."""
        try:
            yield
        except (IntegrityError, DataError) as exc:
            # DataError: a value the column cannot hold, e.g. too long for PostgreSQL's VARCHAR(n).
            raise MetadataStoreError(
                f"The metadata database at {self.url_for_display} refused to {action}: "
                f"{self._reason(exc)}. Check that batch ids are unique and values are valid."
            ) from exc
        except DBAPIError as exc:
            error = MetadataUnavailableError if _transient(exc) else MetadataStoreError
            raise error(
                f"Could not {action} in the metadata database at {self.url_for_display}: "
                f"{self._reason(exc)}. Check that the database is running and reachable, that "
                "the URL, credentials and file permissions are right, and that migrations "
                "have been applied."
            ) from exc

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


def _file_row(batch_id: str, file: InputFile) -> dict[str, object]:
    return {
        "batch_id": batch_id,
        "path": file.path,
        "sha256": file.sha256,
        "size_bytes": file.size_bytes,
        "record_count": file.record_count,
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
