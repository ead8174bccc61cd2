"""The retention and compaction settings, and which rows each layer's retention names."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from app.application.retention import RetentionPolicy, retention_plan
from app.domain.errors import ConfigurationError
from app.infrastructure.settings import environment_variable_names, load_settings

NAMES = ("RETENTION_BRONZE_DAYS", "RETENTION_QUARANTINE_DAYS", "RETENTION_SILVER_DAYS", "RETENTION_GOLD_DAYS")


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting of the shell, and no `.env`, in the way."""
    for name in [*environment_variable_names(), "RETENTION_LANDING_DAYS", "COMPACT_SMALL_FILES"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_retention_is_unset_by_default_and_read_per_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert [getattr(settings, n.lower()) for n in NAMES] == [None] * 4
    assert settings.compact_small_files_threshold == 50
    monkeypatch.setenv("RETENTION_BRONZE_DAYS", "30")
    monkeypatch.setenv("RETENTION_QUARANTINE_DAYS", "")  # as compose writes an unset variable: kept
    monkeypatch.setenv("COMPACT_SMALL_FILES_THRESHOLD", "0")
    settings = load_settings()
    assert (settings.retention_bronze_days, settings.retention_quarantine_days) == (30, None)
    assert settings.compact_small_files_threshold == 0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RETENTION_SILVER_DAYS", "0", "RETENTION_SILVER_DAYS: Input should be greater than or equal to 1"),
        ("RETENTION_GOLD_DAYS", "a week", "RETENTION_GOLD_DAYS: Input should be a valid integer"),
        ("COMPACT_SMALL_FILES_THRESHOLD", "-1", "COMPACT_SMALL_FILES_THRESHOLD: Input should be greater than or equal"),
        ("RETENTION_LANDING_DAYS", "3", "RETENTION_LANDING_DAYS: no such setting; the retention and compaction"),
        ("COMPACT_SMALL_FILES", "10", "COMPACT_SMALL_FILES: no such setting"),
    ],
)
def test_a_bad_or_unknown_setting_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=message):
        load_settings()


def test_an_unknown_retention_in_dotenv_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RETENTION_BRONZE_DAYS=7\nretention_raw_days=7\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="RETENTION_RAW_DAYS: no such setting"):
        load_settings()


def test_each_layer_is_judged_by_its_own_time() -> None:
    now = datetime(2025, 11, 1, 6, tzinfo=UTC)
    tables = ["bronze_a", "bronze_b", "quarantine_readings", "silver_readings", "gold_daily_meter_energy", "other"]
    tables.append("gold_hourly_portfolio_load")
    plan = retention_plan(tables, RetentionPolicy(bronze_days=10, silver_days=30, gold_days=365), now)
    assert plan == {
        "bronze_a": [("ingested_at", "<", now - timedelta(days=10))],
        "bronze_b": [("ingested_at", "<", now - timedelta(days=10))],
        "silver_readings": [("local_date", "<", date(2025, 10, 2)), ("local_month", "<=", date(2025, 10, 1))],
        "gold_daily_meter_energy": [("local_date", "<", date(2024, 11, 1))],
        "gold_hourly_portfolio_load": [("hour_utc", "<", now - timedelta(days=365))],
    }
    quarantine = retention_plan(tables, RetentionPolicy(quarantine_days=1), now)
    assert quarantine == {"quarantine_readings": [("quarantined_at", "<", now - timedelta(days=1))]}
    assert retention_plan(tables, RetentionPolicy(), now) == {}
