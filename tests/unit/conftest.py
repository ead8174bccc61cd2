"""Unit-test fixtures: tiny frames on the local engine (pandas with Arrow dtypes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.infrastructure.repositories.pandas_repository import PandasDeltaStore


@pytest.fixture(params=["pandas"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> PandasDeltaStore:
    """The frame engine a transform runs on; parametrised so more engines can join."""
    assert request.param == "pandas"
    return PandasDeltaStore(tmp_path)
