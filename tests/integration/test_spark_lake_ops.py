"""Operating the lake in Databricks mode: history, a past version, optimize, vacuum and the change
feed on a real local Spark with Delta Lake, through the same use cases as local mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.application.lake_ops import optimize_tables, table_changes, table_history, vacuum_tables
from app.application.runner import run_batch
from app.domain.errors import ConfigurationError
from app.infrastructure.settings import Settings
from app.wiring import open_platform
from tests.integration.conftest import NOW, write_csv

pytestmark = [pytest.mark.spark, pytest.mark.slow]

CONFIG = '[sources.feed]\npath = "in"\nunit = "kWh"\ninterval_minutes = 60\n'


def _day(meter: str, value: float, day: int = 1) -> list[str]:
    return [f"{meter},2025-06-{day:02d}T{h:02d}:00Z,{value}" for h in range(24)]


def test_history_as_of_optimize_vacuum_and_changes_on_spark(tmp_path: Path, spark: Any) -> None:
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    settings = Settings(execution_mode="databricks", data_dir=tmp_path / "lake", _env_file=None)  # type: ignore[call-arg]
    with open_platform(settings) as platform:
        batches = []
        for name, rows in (("a.csv", _day("A", 1.0)), ("b.csv", [*_day("A", 2.0)[:10], *_day("B", 1.0)[:5]])):
            path = write_csv(tmp_path / "in" / name, rows, header="meter_id,timestamp,value")
            result = run_batch(
                platform, source_name="feed", config_file=tmp_path / "sources.toml", input_path=str(path), now=NOW
            )
            assert result.status == "succeeded", result.error
            batches.append(result.batch_id)

        versions = table_history(platform, "silver_readings")
        tagged = [v for v in versions if v.batch_id in batches]
        assert [v.batch_id for v in tagged][:2] == [batches[1], batches[0]]
        assert tagged[0].operation == "MERGE" and (tagged[0].rows_added, tagged[0].rows_updated) == (5, 10)
        first = max(v.version for v in versions if v.batch_id == batches[0])

        store = platform.store
        assert set(store.head("silver_readings", limit=100, as_of=first)["energy_kwh"].to_pylist()) == {1.0}
        assert set(store.head("silver_readings", limit=100)["energy_kwh"].to_pylist()) == {1.0, 2.0}

        since = tagged[0].version
        changed = table_changes(platform, "silver_readings", since_version=since).to_pylist()
        assert sorted((r["change"], r["meter_id"]) for r in changed) == sorted(
            [("update", "A")] * 10 + [("insert", "B")] * 5
        )

        before = store.count("silver_readings")
        files = optimize_tables(platform, name="silver_readings", zorder=["meter_id"])
        assert set(files) == {"silver_readings"} and store.count("silver_readings") == before
        with pytest.raises(ConfigurationError, match="shorter than Delta's safe default"):
            vacuum_tables(platform, name="silver_readings", retain_hours=0)
        deleted = vacuum_tables(platform, name="silver_readings", retain_hours=0, force=True)
        assert deleted["silver_readings"] >= 1 and store.count("silver_readings") == before
