"""Unit-test fixtures: tiny frames on each engine the platform runs (pandas, and Spark)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.infrastructure.repositories.pandas_repository import PandasDeltaStore


@pytest.fixture(params=["pandas", pytest.param("spark", marks=pytest.mark.spark)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The frame engine a transform or rule runs on: every such test runs on both."""
    if request.param == "pandas":
        return PandasDeltaStore(tmp_path)
    from app.infrastructure.repositories.spark_repository import SparkDeltaStore

    return SparkDeltaStore(request.getfixturevalue("spark"), str(tmp_path))
