"""Fixtures for tests that run the pipeline on real Delta tables and a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from app.infrastructure.settings import Settings
from app.wiring import LocalPlatform, open_platform

#: A fixed "now" after the sample period, so the future-timestamp rule is reproducible.
NOW = datetime(2025, 11, 1, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "lake", _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def platform(settings: Settings) -> Iterator[LocalPlatform]:
    with open_platform(settings) as opened:
        yield opened


def read_table(platform: LocalPlatform, name: str) -> pa.Table:
    """A whole table, rows sorted by every column, for equality checks."""
    table = DeltaTable(platform.store.location(name)).to_pyarrow_table()
    return table.sort_by([(c, "ascending") for c in table.column_names])


def write_csv(path: Path, rows: list[str], header: str = "meter_id,timestamp,value,unit") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty metadata database: a new SQLite file, or a new database on the TEST_POSTGRES_URL
    server (the metadata store's contract holds on both)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'metadata.db'}"
        return
    from tests.integration.postgres import fresh_database, server_url

    with fresh_database(server_url()) as url:
        yield url
