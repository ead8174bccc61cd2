"""Throwaway PostgreSQL databases for contract tests, on the server named by TEST_POSTGRES_URL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

#: A SQLAlchemy URL of a PostgreSQL server whose user may CREATE and DROP databases.
URL_VARIABLE = "TEST_POSTGRES_URL"
#: Set (as CI does) to fail rather than skip when TEST_POSTGRES_URL is missing.
REQUIRE_VARIABLES = ("CI", "REQUIRE_POSTGRES")

_HOW_TO_START = (
    f"start a private test server and point the tests at it with "
    f"`export {URL_VARIABLE}=$(scripts/postgres-test-server.sh | tail -n 1)` "
    "(stop it with `scripts/postgres-test-server.sh stop`)"
)


def postgres_required() -> bool:
    """Whether CI or REQUIRE_POSTGRES is set to something other than an explicit no."""
    return any(os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no") for name in REQUIRE_VARIABLES)


def server_url() -> URL:
    """The server from TEST_POSTGRES_URL; without it skip the test, or fail it where PostgreSQL is required."""
    raw = os.environ.get(URL_VARIABLE, "").strip()
    if not raw:
        message = f"{URL_VARIABLE} is not set, so this test cannot run on PostgreSQL; {_HOW_TO_START}."
        if postgres_required():
            pytest.fail(f"{message} {' or '.join(REQUIRE_VARIABLES)} is set, so it may not be skipped.", pytrace=False)
        pytest.skip(message)
    url = make_url(raw)
    if url.get_backend_name() != "postgresql":
        pytest.fail(f"{URL_VARIABLE} must name a PostgreSQL server, got {url.render_as_string()}", pytrace=False)
    return url


@contextmanager
def fresh_database(server: URL) -> Iterator[str]:
    """Create an empty database with a unique name, yield its URL, and drop it afterwards.

    Each test gets its own database, so migrations always start from nothing and no test
    sees another's rows; creating one from template1 takes well under a tenth of a second.
    """
    name = f"energy_test_{uuid.uuid4().hex}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        try:
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        except OperationalError as exc:
            pytest.fail(
                f"Cannot create a test database on {server.render_as_string()}: {str(exc.orig).strip()}; "
                f"is the server running? To {_HOW_TO_START}.",
                pytrace=False,
            )
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            # FORCE ends any connection a failed test left open (PostgreSQL 13 and newer).
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
