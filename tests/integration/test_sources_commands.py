"""`energy-platform sources check` and `sources infer` as a user runs them, and the small CLI fixes
(`quarantine list` of an unknown batch, `batches list` at 80 columns).

Most tests run the command in-process through Typer's CliRunner; the ones marked slow start a
real process or a whole run. The real files are those of ../shared/data (the same as
examples/data, whose README gives their provenance).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import structlog
from typer.testing import CliRunner, Result

from app.cli import app
from app.domain.batches import BatchRecord
from app.infrastructure.settings import Settings
from app.infrastructure.source_config import load_sources
from app.wiring import open_platform
from tests.integration.test_cli import OUTER_SETTINGS, cli

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" if (REPO.parent / "shared" / "data").is_dir() else REPO / "examples" / "data"
DATA_FILES = sorted(p for p in DATA.rglob("*") if p.is_file() and p.name != "README.md")


def run(tmp_path: Path, *args: str, columns: int = 200) -> Result:
    """The command in-process, with a data directory of its own and no outer settings."""
    env: dict[str, str | None] = {"DATA_DIR": str(tmp_path / "lake"), "LOG_FORMAT": "json", "COLUMNS": str(columns)}
    env.update(dict.fromkeys(OUTER_SETTINGS))
    logging = structlog.get_config()
    try:
        return CliRunner().invoke(app, list(args), env=env)
    finally:  # the CLI logs to the runner's stderr, which is closed once it returns
        structlog.configure(**logging)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the repository


def _source(tmp_path: Path, name: str, rows: list[str], keys: str, header: str = "meter_id,timestamp,value") -> Path:
    """A one-file source: the CSV and a config declaring it; returns the config."""
    data = tmp_path / "in" / f"{name}.csv"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    config = tmp_path / f"{name}.toml"
    config.write_text(f'[sources.{name}]\npath = "in/{name}.csv"\n{keys}\n', encoding="utf-8")
    return config


def _check(tmp_path: Path, config: Path, name: str, *extra: str) -> dict[str, Any]:
    result = run(tmp_path, "sources", "check", "--config", str(config), "--source", name, "--json", *extra)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "lake").exists(), "sources check wrote to the data directory"
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def _half_hours(start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(minutes=30 * i) for i in range(count)]


def _utc_rows(meter: str, starts: list[datetime], value: float = 0.25) -> list[str]:
    return [
        f"{meter},{t.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ},{value + (i % 7) * 0.01:.3f}" for i, t in enumerate(starts)
    ]


# --- sources check ------------------------------------------------------------------------------


def test_a_clean_file_gives_no_hint_and_reports_its_series(tmp_path: Path) -> None:
    midnight = datetime(2025, 6, 1, tzinfo=ZoneInfo("Europe/London")).astimezone(UTC)
    rows = _utc_rows("M1", _half_hours(midnight, 48))
    config = _source(tmp_path, "clean", rows, 'unit = "kWh"\nseries_timezone = "Europe/London"')

    checked = _check(tmp_path, config, "clean", "--rows", "3")

    assert checked["hints"] == [] and checked["run_would_fail"] is False
    assert checked["rows_read"] == 48 and checked["accepted"] == 48 and checked["quarantined"] == 0
    assert [r["line"] for r in checked["first_rows"]] == [2, 3, 4]
    first = checked["first_rows"][0]
    assert first["timestamp_text"] == "2025-05-31T23:00:00Z"
    assert first["utc"] == "2025-05-31 23:00Z" and first["local_time"] == "2025-06-01 00:00+01:00"
    assert first["energy_kwh"] == 0.25 and first["rule"] is None
    (series,) = checked["series"]
    assert series["meter_id"] == "M1" and series["intervals"] == 48 and series["interval_minutes"] == 30
    assert series["first_day"] == "2025-06-01" and series["last_day"] == "2025-06-01"
    assert checked["dst_days"] == [] and checked["estimated"] == {}


def test_dst_change_days_count_intervals_per_series_in_the_series_zone(tmp_path: Path) -> None:
    london = ZoneInfo("Europe/London")
    day = datetime(2025, 3, 30, tzinfo=london).astimezone(UTC)
    starts = _half_hours(day, 46)  # the 23-hour day, every half-hour
    rows = _utc_rows("M1", starts) + _utc_rows("M2", starts[:-2])
    config = _source(tmp_path, "spring", rows, 'unit = "kWh"\nseries_timezone = "Europe/London"')

    checked = _check(tmp_path, config, "spring")

    (day_report,) = checked["dst_days"]
    assert day_report["local_date"] == "2025-03-30" and day_report["expected"] == 46
    assert day_report["text"] == [
        "2025-03-30 Europe/London (23-hour day): 46 of 46 half-hours for 1 series",
        "2025-03-30 Europe/London (23-hour day): 44 of 46 half-hours for 1 series",
    ]
    assert {r["rule"]: r["rows"] for r in checked["rule_counts"]}.get("missing_intervals") == 2
    assert checked["hints"] == []


def test_rule_counts_name_each_rule_with_its_severity(tmp_path: Path) -> None:
    starts = _half_hours(datetime(2025, 6, 1, tzinfo=UTC), 6)
    rows = [*_utc_rows("M1", starts), "M1,not a time,0.2", ",2025-06-01T05:00:00Z,0.2", "M1,2025-06-01T05:30:00Z,abc"]
    config = _source(tmp_path, "junk", rows, 'unit = "kWh"')

    checked = _check(tmp_path, config, "junk")

    counts = {r["rule"]: (r["severity"], r["rows"]) for r in checked["rule_counts"]}
    assert counts["timestamp_unparseable"] == ("quarantine", 1)
    assert counts["meter_id_missing"] == ("quarantine", 1)
    assert counts["value_unparseable"] == ("quarantine", 1)
    assert checked["rows_read"] == checked["accepted"] + checked["quarantined"] + checked["duplicates_replaced"]


def test_a_rule_of_severity_fail_says_the_run_would_stop(tmp_path: Path) -> None:
    rows = [*_utc_rows("M1", _half_hours(datetime(2025, 6, 1, tzinfo=UTC), 4)), "M1,not a time,0.2"]
    keys = 'unit = "kWh"\nrules = { timestamp_unparseable = { severity = "fail" } }'
    config = _source(tmp_path, "strict", rows, keys)

    assert _check(tmp_path, config, "strict")["run_would_fail"] is True
    result = run(tmp_path, "sources", "check", "--config", str(config), "--source", "strict")
    assert result.exit_code == 0, result.output  # the files could be read: the check did its work
    assert (
        "A run would stop before writing anything" in result.stdout
        and "timestamp_unparseable (1 rows)" in result.stdout
    )


def test_hint_a_unit_1000_times_too_large(tmp_path: Path) -> None:
    starts = _half_hours(datetime(2025, 6, 1, tzinfo=UTC), 48)
    rows = [f"M1,{t:%Y-%m-%dT%H:%M:%SZ},{1200 + i}" for i, t in enumerate(starts)]  # Wh, declared kWh
    config = _source(tmp_path, "watts", rows, 'unit = "kWh"')

    (hint,) = _check(tmp_path, config, "watts")["hints"]

    assert hint["key"] == "unit"
    assert "48 of 48 readings fail above_physical_max" in hint["message"]
    assert "in unit kWh" in hint["message"] and 'set unit = "Wh"' in hint["message"]


@pytest.mark.parametrize(
    ("day", "skipped", "repeated", "says"),
    [
        ("2025-03-30", {"01:00", "01:30"}, set(), "has no rows at 01:00-02:00 on 2025-03-30"),
        ("2025-10-26", set(), {"01:00", "01:30"}, "repeats 01:00-02:00 on 2025-10-26"),
    ],
)
def test_hint_naive_local_times_read_as_utc(
    tmp_path: Path, day: str, skipped: set[str], repeated: set[str], says: str
) -> None:
    rows = []
    for hour in range(4):
        for minute in (0, 30):
            wall = f"{hour:02d}:{minute:02d}"
            if wall not in skipped:
                rows += [f"M1,{day} {wall},0.2"] * (2 if wall in repeated else 1)
    config = _source(tmp_path, "local", rows, 'unit = "kWh"\nseries_timezone = "Europe/London"')

    hints = _check(tmp_path, config, "local")["hints"]

    assert [h["key"] for h in hints] == ["timestamp_timezone"]
    assert says in hints[0]["message"] and 'set timestamp_timezone = "Europe/London"' in hints[0]["message"]


def test_hint_day_and_month_swapped(tmp_path: Path) -> None:
    rows = [f"M1,{day:02d}/03/2025 {hour},0.2" for day in range(10, 21) for hour in ("00:00", "12:00")]
    config = _source(tmp_path, "swapped", rows, 'unit = "kWh"\ntimestamp_format = "%m/%d/%Y %H:%M"')

    (hint,) = _check(tmp_path, config, "swapped")["hints"]

    assert hint["key"] == "timestamp_format"
    assert "16 rows fail timestamp_unparseable" in hint["message"]
    assert "day and month look swapped" in hint["message"] and '"%d/%m/%Y %H:%M"' in hint["message"]


@pytest.mark.parametrize(
    ("reads", "newest_first", "says"),
    [
        ([100.0, 100.4, 101.0, 101.2, 102.0, 102.5], True, "listed newest-first"),
        ([100.0, 99.0, 98.5, 97.0, 96.2, 95.0], False, "probably not a register"),
    ],
)
def test_hint_register_order(tmp_path: Path, reads: list[float], newest_first: bool, says: str) -> None:
    stamps = [datetime(2025, 6, 1, hour, tzinfo=UTC) for hour in range(len(reads))]
    rows = [f"M1,{t:%Y-%m-%dT%H:%M:%SZ},{v}" for t, v in zip(stamps, reads, strict=True)]
    rows = rows[::-1] if newest_first else rows
    config = _source(tmp_path, "stand", rows, 'unit = "kWh"\nvalue_kind = "register"\ninterval_minutes = 60')

    hints = _check(tmp_path, config, "stand")["hints"]

    assert [h["key"] for h in hints] == ["value_kind"]
    assert says in hints[0]["message"]


def test_people_get_tables_and_hints(tmp_path: Path) -> None:
    rows = [f"M1,{day:02d}/03/2025 00:00,0.2" for day in range(10, 21)]
    config = _source(tmp_path, "swapped", rows, 'unit = "kWh"\ntimestamp_format = "%m/%d/%Y %H:%M"')

    result = run(tmp_path, "sources", "check", "--config", str(config), "--source", "swapped", columns=120)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "nothing was written" in out and "First rows as parsed" in out and "Rows per rule" in out
    assert "timestamp_unparseable" in out and "hint (timestamp_format):" in out
    assert not (tmp_path / "lake").exists()


def test_a_file_level_error_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    config = _source(
        tmp_path, "bad", ["M1;2025-06-01T00:00:00Z;0.2"], 'unit = "kWh"', header="meter_id;timestamp;value"
    )

    result = run(tmp_path, "sources", "check", "--config", str(config), "--source", "bad")

    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "bad.csv, line 1:" in line and "missing required column" in line
    assert "Traceback" not in result.output and not (tmp_path / "lake").exists()


def test_an_unknown_source_is_an_error(tmp_path: Path) -> None:
    result = run(tmp_path, "sources", "check", "--source", "prices")
    assert result.exit_code == 1 and "unknown source 'prices'" in result.stderr


def test_check_leaves_an_existing_data_directory_as_it_was(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    (lake / "silver").mkdir(parents=True)
    (lake / "silver" / "marker").write_text("x", encoding="utf-8")
    before = sorted((p.relative_to(lake), p.stat().st_mtime_ns) for p in lake.rglob("*"))
    rows = _utc_rows("M1", _half_hours(datetime(2025, 6, 1, tzinfo=UTC), 4))
    config = _source(tmp_path, "clean", rows, 'unit = "kWh"')

    result = run(tmp_path, "sources", "check", "--config", str(config), "--source", "clean")

    assert result.exit_code == 0, result.output
    assert sorted((p.relative_to(lake), p.stat().st_mtime_ns) for p in lake.rglob("*")) == before


@pytest.mark.slow
def test_check_of_the_bundled_sample_counts_what_a_run_counts(tmp_path: Path) -> None:
    """The figures of the README's run of the sample, every time (the check is deterministic)."""
    for _ in range(2):
        result = run(tmp_path, "sources", "check", "--source", "meter_readings", "--json", "--rows", "1")
        assert result.exit_code == 0, result.output
        checked = json.loads(result.stdout)
        counts = {r["rule"]: r["rows"] for r in checked["rule_counts"]}
        assert (checked["accepted"], checked["quarantined"], checked["duplicates_replaced"]) == (105_276, 29, 565)
        assert counts["duplicate_replaced"] == 565 and counts["missing_intervals"] == 60
        assert checked["estimated"] == {"like_day": 60}
    assert not (tmp_path / "lake").exists()


@pytest.mark.slow
def test_check_as_a_real_process_on_the_bundled_sample(tmp_path: Path) -> None:
    result = cli(tmp_path, "sources", "check", "--source", "meter_readings", "--json")

    assert result.returncode == 0, result.stderr
    checked = json.loads(result.stdout)
    assert checked["rows_read"] == 105_870
    assert checked["rows_read"] == checked["accepted"] + checked["quarantined"] + checked["duplicates_replaced"]
    assert checked["dst_days"][0]["text"] == [
        "2025-03-30 Europe/London (23-hour day): 46 of 46 half-hours for 36 series"
    ]
    assert not (tmp_path / "lake").exists()


# --- sources infer ------------------------------------------------------------------------------


def _infer(tmp_path: Path, data: Path) -> tuple[str, Path]:
    """`sources infer` on a file, its TOML written beside the test; (source name, config file)."""
    result = run(tmp_path, "sources", "infer", str(data))
    assert result.exit_code == 0, result.output
    name = re.search(r"^\[sources\.(\w+)\]$", result.stdout, re.MULTILINE)
    assert name is not None, result.stdout
    config = tmp_path / "inferred.toml"
    config.write_text(result.stdout, encoding="utf-8")
    return name.group(1), config


@pytest.mark.slow
@pytest.mark.parametrize("data", DATA_FILES, ids=lambda p: p.name[:40])
def test_every_real_file_gets_a_config_that_loads_and_checks(tmp_path: Path, data: Path) -> None:
    name, config = _infer(tmp_path, data)

    source = load_sources(config)[name]
    assert Path(source.path) == data.resolve()
    checked = _check(tmp_path, config, name)
    assert checked["rows_read"] > 0 and checked["first_rows"]
    assert checked["rows_read"] == checked["accepted"] + checked["quarantined"] + checked["duplicates_replaced"]


def test_infer_names_the_source_as_asked(tmp_path: Path) -> None:
    result = run(tmp_path, "sources", "infer", str(DATA / "eia930" / "PJM.csv"), "--name", "pjm_demand")
    assert result.exit_code == 0 and "[sources.pjm_demand]" in result.stdout
    refused = run(tmp_path, "sources", "infer", str(DATA / "eia930" / "PJM.csv"), "--name", "PJM demand")
    assert refused.exit_code == 1 and refused.stderr.startswith("error: --name 'PJM demand'")


def test_infer_of_a_missing_or_empty_file_is_an_error(tmp_path: Path) -> None:
    missing = run(tmp_path, "sources", "infer", str(tmp_path / "nowhere.csv"))
    assert missing.exit_code == 1 and "nowhere.csv" in missing.stderr and "Traceback" not in missing.output
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    empty = run(tmp_path, "sources", "infer", str(tmp_path / "empty.csv"))
    assert empty.exit_code == 1 and "is empty" in empty.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "data",
    [
        DATA / "eia930" / "PJM.csv",
        DATA / "fluvius" / "Verbruikshistoriek_elektriciteit_123456789123456789_20211012_20240929_kwartiertotalen.csv",
    ],
    ids=["eia930_wide", "fluvius_long"],
)
def test_an_inferred_config_runs_a_real_batch(tmp_path: Path, data: Path) -> None:
    drafted = cli(tmp_path, "sources", "infer", str(data), "--name", "drafted")
    assert drafted.returncode == 0, drafted.stderr
    (tmp_path / "drafted.toml").write_text(drafted.stdout, encoding="utf-8")

    result = cli(tmp_path, "run-batch", "--config", "drafted.toml", "--source", "drafted")

    assert result.returncode == 0, result.stderr
    found = re.search(r"reconciliation: ([\d,]+) read = ([\d,]+) accepted", result.stdout)
    assert found is not None, result.stdout
    assert int(found.group(2).replace(",", "")) > 0


# --- small fixes --------------------------------------------------------------------------------


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "lake", _env_file=None)  # type: ignore[call-arg]


def test_quarantine_list_of_an_unknown_batch_is_an_error(tmp_path: Path) -> None:
    result = run(tmp_path, "quarantine", "list", "--batch-id", "20250601_120000_abcdef")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no batch '20250601_120000_abcdef'")


def test_batches_list_keeps_batch_ids_whole_in_80_columns(tmp_path: Path) -> None:
    now = datetime(2025, 6, 1, 12, tzinfo=UTC)
    ids = ["20250601_120000_abcdef", "20250601_130000_fedcba"]
    with open_platform(_settings(tmp_path)) as platform:
        for batch_id, replay_of in zip(ids, [None, ids[0]], strict=True):
            record = BatchRecord(
                batch_id=batch_id,
                source="fluvius_electricity_nl",
                execution_mode="local",
                status="running",
                started_at=now,
                ingestion_time=now,
                kind="replay" if replay_of else "ingest",
                replay_of=replay_of,
            )
            platform.metadata.start_batch(record)
            platform.metadata.finish_batch(
                batch_id=batch_id,
                status="succeeded",
                finished_at=now,
                record_count=105_870,
                reconciliation=None,
                layers=[],
                rule_counts={},
                error=None,
                files=[],
            )

    result = run(tmp_path, "batches", "list", columns=80)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for batch_id in ids:
        assert any(line.startswith(batch_id) for line in lines), result.stdout
    assert "succeeded" in result.stdout and "105,870" in result.stdout
