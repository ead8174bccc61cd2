"""Automatic compaction after a batch (local mode): a table the batch wrote whose small files pass
COMPACT_SMALL_FILES_THRESHOLD is compacted, with its files before and after in the batch's
result, log and audit record; 0 turns it off."""

from __future__ import annotations

from pathlib import Path

import pytest
from deltalake import DeltaTable

from app.application.runner import run_batch
from app.domain.audit import RUN_BATCH
from app.infrastructure.settings import Settings
from app.wiring import open_platform
from tests.integration.conftest import NOW, read_table, write_csv

CONFIG = '[sources.feed]\npath = "in"\nunit = "kWh"\ninterval_minutes = 60\n'


def _settings(tmp_path: Path, threshold: int) -> Settings:
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    return Settings(data_dir=tmp_path / "lake", compact_small_files_threshold=threshold, _env_file=None)  # type: ignore[call-arg]


def _day(day: int) -> list[str]:
    return [f"A,2025-06-{day:02d}T{h:02d}:00Z,{day}" for h in range(24)]


def _files(settings: Settings, table: str) -> int:
    return len(DeltaTable(str(settings.data_dir / table.split("_")[0] / table)).file_uris())


def test_a_batch_compacts_the_tables_whose_small_files_pass_the_threshold(tmp_path: Path) -> None:
    settings = _settings(tmp_path, threshold=3)
    results = []
    with open_platform(settings) as platform:
        for day in range(1, 6):
            path = write_csv(tmp_path / "in" / f"{day}.csv", _day(day), header="meter_id,timestamp,value")
            results.append(
                run_batch(
                    platform,
                    source_name="feed",
                    config_file=tmp_path / "sources.toml",
                    input_path=str(path),
                    now=NOW,
                )
            )
        assert [r.status for r in results] == ["succeeded"] * 5
        # Each batch adds a file to each table (silver: to its one month's partition): the fourth
        # batch leaves 4 small files, more than 3, and compacts them into one; the fifth leaves 2.
        assert [r.compacted for r in results[:3]] == [{}, {}, {}]
        compacted = results[3].compacted
        assert set(compacted) == {
            "bronze_feed",
            "silver_readings",
            "gold_daily_meter_energy",
            "gold_hourly_portfolio_load",
        }
        assert all(before == 4 and after == 1 for before, after in compacted.values())
        assert results[4].compacted == {}
        assert _files(settings, "silver_readings") == 2
        assert read_table(platform, "silver_readings").num_rows == 5 * 24
        assert platform.store.small_files("silver_readings") == 2
        [last, fourth, *_] = platform.metadata.list_audit(5, action=RUN_BATCH)
        assert "compacted" not in last.details
        assert fourth.details["compacted"] == {t: list(files) for t, files in compacted.items()}


@pytest.mark.parametrize("threshold", [0, 100])
def test_no_compaction_when_off_or_under_the_threshold(tmp_path: Path, threshold: int) -> None:
    settings = _settings(tmp_path, threshold=threshold)
    with open_platform(settings) as platform:
        for day in range(1, 5):
            path = write_csv(tmp_path / "in" / f"{day}.csv", _day(day), header="meter_id,timestamp,value")
            result = run_batch(
                platform, source_name="feed", config_file=tmp_path / "sources.toml", input_path=str(path), now=NOW
            )
            assert result.status == "succeeded" and result.compacted == {}
        assert _files(settings, "silver_readings") == 4


def test_small_files_counts_only_what_compaction_could_merge(tmp_path: Path) -> None:
    settings = _settings(tmp_path, threshold=0)
    with open_platform(settings) as platform:
        # Two months: one file in each of silver's two partitions, which compaction cannot merge.
        rows = [*_day(1), *[f"A,2025-07-01T{h:02d}:00Z,1" for h in range(24)]]
        path = write_csv(tmp_path / "in" / "a.csv", rows, header="meter_id,timestamp,value")
        run_batch(platform, source_name="feed", config_file=tmp_path / "sources.toml", input_path=str(path), now=NOW)
        assert _files(settings, "silver_readings") == 2
        assert platform.store.small_files("silver_readings") == 0
        assert platform.store.small_files("bronze_feed") == 0  # one file
