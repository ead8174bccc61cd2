"""Fixtures shared by every suite: one local Spark session with Delta Lake for the `spark` tests, and
the same logging set-up before and after every test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog

#: Spark settings for tests: a small local session on this machine's two cores.
TEST_SPARK_CONF = {"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2"}


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A real local Spark session with the Delta Lake jars, started once per test run."""
    from app.infrastructure.spark import spark_session

    session = spark_session("local[2]", TEST_SPARK_CONF)
    yield session
    session.stop()


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A command run in-process (typer's CliRunner) sends log events to the runner's stream, which
    is closed once it returns: each test ends with the logging it started with."""
    config = structlog.get_config()
    yield
    structlog.configure(**config)
