"""Which metadata errors are retried, and how: told apart by exception type and code, on real databases.

The classifier is tested over real driver exception objects (psycopg errors by SQLSTATE, sqlite3
errors by result code, some raised by SQLite itself); the policy on a real SQLite file locked by
another connection, a port where nothing listens, and the PostgreSQL server of TEST_POSTGRES_URL
refusing a login (those tests skip without it, except in CI).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog
from psycopg import errors as pg_errors
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL

from app.domain.batches import BatchRecord, InputFile
from app.domain.errors import MetadataStoreError
from app.infrastructure.repositories.metadata import MetadataUnavailableError, SqlMetadataStore, is_transient
from tests.integration.postgres import server_url

T0 = datetime(2025, 6, 1, tzinfo=UTC)

#: Messages that say the opposite of what the code means: the classifier must not read them.
SOUNDS_TRANSIENT = "server closed the connection unexpectedly; database is locked; connection refused"
SOUNDS_FINAL = 'password authentication failed for user "energy"; database "x" does not exist'


def _record() -> BatchRecord:
    return BatchRecord(
        batch_id=f"batch-{uuid.uuid4().hex}",
        source="meter_readings",
        execution_mode="local",
        status="running",
        started_at=T0,
        ingestion_time=T0,
        files=[InputFile("in/a.csv", uuid.uuid4().hex * 2, 10)],
    )


def _retries(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "metadata_retry"]


def _failure(
    url: str, call: Callable[[SqlMetadataStore], object], *, retry_seconds: float = 30, **options: Any
) -> tuple[MetadataStoreError, float, list[MutableMapping[str, Any]]]:
    """`call` on a new store of `url`, which must fail: the error, the seconds it took, the log."""
    store = SqlMetadataStore(url, retry_seconds=retry_seconds, **options)
    started = time.monotonic()
    try:
        with structlog.testing.capture_logs() as logs, pytest.raises(MetadataStoreError) as info:
            call(store)
    finally:
        store.dispose()
    return info.value, time.monotonic() - started, logs


# --- the classifier ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sqlstate",
    [
        "08000",  # connection exception
        "08001",  # client unable to establish connection
        "08003",  # connection does not exist
        "08006",  # connection failure
        "08P01",  # protocol violation
        "57P01",  # admin shutdown
        "57P02",  # crash shutdown
        "57P03",  # cannot connect now (starting up, shutting down)
        "40001",  # serialization failure
        "40P01",  # deadlock detected
        "53300",  # too many connections
    ],
)
def test_postgres_errors_of_a_transient_sqlstate_are_retried(sqlstate: str) -> None:
    error = pg_errors.lookup(sqlstate)(SOUNDS_FINAL)
    assert error.sqlstate == sqlstate
    assert is_transient(error)
    # As SQLAlchemy hands it over, whatever wrapper class it picked.
    assert is_transient(sa_exc.OperationalError("SELECT 1", {}, error))
    assert is_transient(sa_exc.DBAPIError("SELECT 1", {}, error))


@pytest.mark.parametrize(
    "sqlstate",
    [
        "28P01",  # invalid password
        "28000",  # invalid authorization specification (unknown role, pg_hba refusal)
        "3D000",  # no such database
        "42P01",  # undefined table (schema not migrated)
        "42501",  # insufficient privilege
        "42601",  # syntax error
        "23505",  # unique violation
        "22001",  # string too long
        "53100",  # disk full: same class as 53300, but not transient
        "57014",  # query cancelled: same class as 57P01, but not a shutdown
        "40002",  # integrity constraint violation at commit: class 40, but not a conflict
    ],
)
def test_postgres_errors_of_any_other_sqlstate_are_final(sqlstate: str) -> None:
    error = pg_errors.lookup(sqlstate)(SOUNDS_TRANSIENT)
    assert error.sqlstate == sqlstate
    assert not is_transient(error)
    assert not is_transient(sa_exc.OperationalError("SELECT 1", {}, error))


def test_a_postgres_operational_error_without_sqlstate_means_no_server_answered() -> None:
    # What psycopg raises for a refused port, an unknown host, a connection reset or timed out.
    assert is_transient(psycopg.OperationalError(SOUNDS_FINAL))
    assert is_transient(pg_errors.ConnectionTimeout("connection timeout expired"))
    # Other classes without a SQLSTATE are misuse of the driver, not an outage.
    assert not is_transient(psycopg.InterfaceError(SOUNDS_TRANSIENT))
    assert not is_transient(psycopg.ProgrammingError(SOUNDS_TRANSIENT))
    assert not is_transient(psycopg.DataError(SOUNDS_TRANSIENT))


def test_errors_of_no_database_driver_are_final() -> None:
    assert not is_transient(ValueError(SOUNDS_TRANSIENT))
    assert not is_transient(ConnectionRefusedError(SOUNDS_TRANSIENT))
    assert not is_transient(None)


def _sqlite_error(code: int, message: str) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        (sqlite3.SQLITE_BUSY, True),
        (sqlite3.SQLITE_BUSY_RECOVERY, True),
        (sqlite3.SQLITE_BUSY_SNAPSHOT, True),
        (sqlite3.SQLITE_BUSY_TIMEOUT, True),
        (sqlite3.SQLITE_LOCKED, True),
        (sqlite3.SQLITE_LOCKED_SHAREDCACHE, True),
        (sqlite3.SQLITE_LOCKED_VTAB, True),
        (sqlite3.SQLITE_CANTOPEN, False),
        (sqlite3.SQLITE_CANTOPEN_ISDIR, False),
        (sqlite3.SQLITE_READONLY, False),
        (sqlite3.SQLITE_CORRUPT, False),
        (sqlite3.SQLITE_FULL, False),
        (sqlite3.SQLITE_IOERR, False),
        (sqlite3.SQLITE_ERROR, False),
    ],
)
def test_sqlite_errors_are_told_apart_by_their_result_code(code: int, transient: bool) -> None:
    message = SOUNDS_FINAL if transient else SOUNDS_TRANSIENT
    assert is_transient(_sqlite_error(code, message)) is transient
    assert is_transient(sa_exc.OperationalError("INSERT", {}, _sqlite_error(code, message))) is transient


def test_sqlite_errors_raised_by_sqlite_itself(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError) as busy:
            other.execute("SELECT * FROM t")
    finally:
        holder.close()
        other.close()
    assert busy.value.sqlite_errorcode == sqlite3.SQLITE_BUSY
    assert is_transient(busy.value)

    # SQLITE_LOCKED: a table another connection of the same shared cache is writing.
    name = f"file:shared-{uuid.uuid4().hex}?mode=memory&cache=shared"
    writer = sqlite3.connect(name, uri=True, isolation_level=None)
    reader = sqlite3.connect(name, uri=True, isolation_level=None)
    try:
        writer.execute("CREATE TABLE t (x)")
        writer.execute("BEGIN")
        writer.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.OperationalError) as locked:
            reader.execute("SELECT * FROM t")
    finally:
        writer.close()
        reader.close()
    assert locked.value.sqlite_errorcode & 0xFF == sqlite3.SQLITE_LOCKED
    assert is_transient(locked.value)

    with pytest.raises(sqlite3.OperationalError) as cannot_open:
        sqlite3.connect(tmp_path / "absent" / "metadata.db")
    assert cannot_open.value.sqlite_errorcode == sqlite3.SQLITE_CANTOPEN
    assert not is_transient(cannot_open.value)


# --- the policy on real databases ---------------------------------------------------------------


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    """A migrated SQLite metadata file."""
    path = tmp_path / "metadata.db"
    store = SqlMetadataStore(f"sqlite:///{path}")
    store.migrate()
    store.dispose()
    return path


def test_a_locked_sqlite_database_is_retried_until_the_lock_is_released(sqlite_file: Path) -> None:
    # SQLite's own busy wait is cut to 50 ms, so the wait for the lock is the store's retries.
    store = SqlMetadataStore(f"sqlite:///{sqlite_file}?timeout=0.05", retry_seconds=10)
    holder = sqlite3.connect(sqlite_file, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # a write transaction: every other writer gets SQLITE_BUSY
    release = threading.Timer(0.5, holder.execute, args=("ROLLBACK",))
    record = _record()
    try:
        with structlog.testing.capture_logs() as logs:
            started = time.monotonic()
            release.start()
            sequence = store.start_batch(record)
            elapsed = time.monotonic() - started
        stored = store.get_batch(record.batch_id)
    finally:
        release.join()
        holder.close()
        store.dispose()
    assert elapsed >= 0.45
    assert elapsed < 5
    retries = _retries(logs)
    assert retries and {entry["operation"] for entry in retries} == {"start_batch"}
    assert [entry["attempt"] for entry in retries] == list(range(1, len(retries) + 1))
    assert all("database is locked" in entry["error"] for entry in retries)
    assert stored is not None and stored.status == "running" and stored.sequence == sequence == 1


def test_an_sqlite_file_that_cannot_be_opened_fails_at_once(tmp_path: Path) -> None:
    error, elapsed, logs = _failure(
        f"sqlite:///{tmp_path / 'absent' / 'metadata.db'}",
        lambda store: store.list_batches(),
        retry_seconds=30,
        create_dirs=False,
    )
    assert elapsed < 2
    assert not isinstance(error, MetadataUnavailableError)
    assert "unable to open database file" in str(error)
    assert _retries(logs) == []


def test_an_unreachable_port_is_retried_for_retry_seconds_then_fails() -> None:
    url = "postgresql+psycopg://energy:s3cret-pw@127.0.0.1:1/energy"
    retry_seconds = 1.5
    error, elapsed, logs = _failure(url, lambda store: store.list_batches(), retry_seconds=retry_seconds)
    assert isinstance(error, MetadataUnavailableError)
    assert retry_seconds <= elapsed < retry_seconds + 1.5
    retries = _retries(logs)
    assert len(retries) >= 3
    assert {entry["operation"] for entry in retries} == {"list_batches"}
    assert all(entry["database"] == "postgresql+psycopg://energy:***@127.0.0.1:1/energy" for entry in retries)
    waits = [entry["wait_seconds"] for entry in retries]
    assert waits[1] > waits[0] > 0  # growing
    assert sum(waits) == pytest.approx(retry_seconds, abs=0.3)  # the last wait ends at the deadline
    assert "s3cret-pw" not in str(error) + repr(logs)
    assert "postgresql+psycopg://energy:***@127.0.0.1:1/energy" in str(error)


def test_start_batch_retried_after_its_answer_was_lost_returns_its_own_first_attempt(
    sqlite_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlMetadataStore(f"sqlite:///{sqlite_file}", retry_seconds=10)
    real = SqlMetadataStore._start_numbered
    calls: list[bool] = []

    def committed_then_lost(self: SqlMetadataStore, record: BatchRecord, *, retry: bool) -> int:
        calls.append(retry)
        sequence = real(self, record, retry=retry)
        if len(calls) == 1:
            # The first attempt committed; its answer did not come back.
            raise MetadataUnavailableError("the connection was lost before the commit was acknowledged")
        return sequence

    monkeypatch.setattr(SqlMetadataStore, "_start_numbered", committed_then_lost)
    record = _record()
    try:
        with structlog.testing.capture_logs() as logs:
            sequence = store.start_batch(record)
        monkeypatch.undo()
        listed = store.list_batches(limit=10)
        # A first attempt of another call with the same id is still refused.
        with pytest.raises(MetadataStoreError, match="refused"):
            store.start_batch(record)
    finally:
        store.dispose()
    assert calls == [False, True]
    assert [entry["operation"] for entry in _retries(logs)] == ["start_batch"]
    assert sequence == 1
    assert [(batch.batch_id, batch.sequence) for batch in listed] == [(record.batch_id, 1)]


# --- a real PostgreSQL server that refuses the login ------------------------------------------------


@pytest.fixture
def postgres_server() -> URL:
    return server_url()


def test_credentials_the_server_refuses_fail_at_once_without_naming_the_password(postgres_server: URL) -> None:
    # The test server trusts local logins, so a wrong password for its own role would be let in;
    # a role it does not know, with a password, is refused (28000; a server asking for passwords
    # answers 28P01 for both). libpq gives psycopg no SQLSTATE for a refused login, so the store
    # asks libpq's PQping whether the server is up: it is, so the refusal is final.
    url = postgres_server.set(username=f"nobody_{uuid.uuid4().hex[:8]}", password="wr0ng-s3cret")
    error, elapsed, logs = _failure(url.render_as_string(hide_password=False), lambda store: store.list_batches())
    assert elapsed < 3
    assert not isinstance(error, MetadataUnavailableError)
    assert _retries(logs) == []
    message = str(error)
    assert "wr0ng-s3cret" not in message
    assert ":***@" in message
    assert "does not exist" in message


def test_a_database_the_server_does_not_have_fails_at_once(postgres_server: URL) -> None:
    url = postgres_server.set(database=f"no_such_database_{uuid.uuid4().hex[:8]}")
    error, elapsed, logs = _failure(url.render_as_string(hide_password=False), lambda store: store.get_batch("b-1"))
    assert elapsed < 3
    assert not isinstance(error, MetadataUnavailableError)
    assert _retries(logs) == []
