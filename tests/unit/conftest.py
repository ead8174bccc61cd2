"""Unit-test fixtures: tiny frames on each engine the platform runs (DuckDB, pandas, and Spark)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.infrastructure.repositories.duckdb_repository import DuckDBDeltaStore
from app.infrastructure.repositories.pandas_repository import PandasDeltaStore


@pytest.fixture(params=["duckdb", "pandas", pytest.param("spark", marks=pytest.mark.spark)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The frame engine a transform or rule runs on: every such test runs on each."""
    if request.param == "pandas":
        yield PandasDeltaStore(tmp_path)
    elif request.param == "duckdb":
        store = DuckDBDeltaStore(tmp_path)
        yield store
        store.release()
    else:
        from app.infrastructure.repositories.spark_repository import SparkDeltaStore

        yield SparkDeltaStore(request.getfixturevalue("spark"), str(tmp_path))
