"""The `energy-platform` command as a user runs it: a real process, real files, exit codes, logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import write_csv

pytestmark = pytest.mark.slow

#: Settings of the shell the tests run in that would change what the command does.
OUTER_SETTINGS = (
    "EXECUTION_MODE",
    "PROCESSING_MODE",
    "METADATA_DB_URL",
    "SOURCES_CONFIG",
    "LOCAL_ENGINE",
    "STORAGE_PATH",
)


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **{k: v for k, v in os.environ.items() if k not in OUTER_SETTINGS},
        "DATA_DIR": str(tmp_path / "lake"),
        "LOG_FORMAT": "json",
        "COLUMNS": "200",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_run_batch_on_the_sample_then_inspect_it(tmp_path: Path) -> None:
    run = cli(tmp_path, "run-batch")

    assert run.returncode == 0, run.stderr
    assert "succeeded" in run.stdout and "reconciliation:" in run.stdout
    for table in ("silver_readings", "quarantine_readings", "gold_daily_meter_energy"):
        assert str(tmp_path / "lake") in run.stdout and table in run.stdout
    events = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert names[0] == "batch_started" and names[-1] == "batch_completed"
    assert names.count("layer_completed") == 3
    batch_id = events[0]["batch_id"]
    for event in events:
        assert event["batch_id"] == batch_id and event["execution_mode"] == "local"
        assert event["timestamp"].endswith("Z")
    for layer in ("bronze", "silver", "gold"):
        assert f"{layer} " in run.stderr  # progress per layer

    listed = cli(tmp_path, "batches", "list")
    assert listed.returncode == 0 and batch_id in listed.stdout
    shown = cli(tmp_path, "batches", "show", batch_id)
    assert shown.returncode == 0 and "timestamp_in_dst_gap" in shown.stdout and "silver" in shown.stdout
    head = cli(tmp_path, "tables", "show", "gold_daily_meter_energy", "--limit", "3")
    assert head.returncode == 0 and "expected_interval_count" in head.stdout

    again = cli(tmp_path, "run-batch")
    assert again.returncode == 0 and "already ingested" in again.stdout


def test_bad_input_exits_non_zero_without_traceback(tmp_path: Path) -> None:
    bad = write_csv(tmp_path / "bad.csv", [], header="meter_id;timestamp;value;unit")

    run = cli(tmp_path, "run-batch", "--input", str(bad))

    assert run.returncode == 1
    assert "Traceback" not in run.stderr + run.stdout
    assert str(bad) in run.stderr and "line 1" in run.stderr


def test_missing_path_exits_non_zero_naming_it(tmp_path: Path) -> None:
    run = cli(tmp_path, "run-batch", "--input", "nowhere/*.csv")
    assert run.returncode == 1 and "nowhere/*.csv" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EXECUTION_MODE": "cloud"}, "EXECUTION_MODE"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"SPARK_CONF": "not json"}, "SPARK_CONF"),
    ],
)
def test_invalid_settings_fail_at_start_naming_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    run = cli(tmp_path, "run-batch", **env)
    assert run.returncode == 1 and message in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "lake" / "silver").exists()


def test_settings_are_read_from_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PROCESSING_MODE=streaming\n", encoding="utf-8")
    run = cli(tmp_path, "run-batch", "--force")
    assert run.returncode == 1 and "--force does not apply with PROCESSING_MODE=streaming" in run.stderr


def test_unknown_source_lists_the_declared_ones(tmp_path: Path) -> None:
    run = cli(tmp_path, "run-batch", "--source", "prices")
    assert run.returncode == 1 and "unknown source 'prices'" in run.stderr and "meter_readings" in run.stderr


def test_secrets_stay_out_of_output_and_logs(tmp_path: Path) -> None:
    secrets = {
        "API_KEY": "api-key-s3cret",
        "DATABRICKS_TOKEN": "dapi-s3cret",
        "METADATA_DB_URL": "postgresql+psycopg://energy:db-s3cret@127.0.0.1:1/energy",
    }
    result = cli(tmp_path, "run-batch", LOG_LEVEL="DEBUG", METADATA_RETRY_SECONDS="1", **secrets)
    assert result.returncode == 1 and "127.0.0.1" in result.stderr  # it failed, naming the server
    assert '"event": "metadata_retry"' in result.stderr  # after retrying for a second
    output = result.stdout + result.stderr
    for secret in ("api-key-s3cret", "dapi-s3cret", "db-s3cret"):
        assert secret not in output


def test_quarantine_list_and_replay_from_the_command_line(tmp_path: Path) -> None:
    from tests.integration.test_reliability import day_rows, write_day

    day = write_day(tmp_path / "in" / "day1.csv", day_rows(1))
    assert cli(tmp_path, "run-batch", "--input", str(day)).returncode == 0
    listed = cli(tmp_path, "quarantine", "list")
    assert listed.returncode == 0, listed.stderr
    assert "above_physical_max" in listed.stdout and "value_unparseable" in listed.stdout
    batch_id = next(line.split("│")[1].strip() for line in listed.stdout.splitlines() if "value_unparseable" in line)

    rows = cli(tmp_path, "quarantine", "list", "--batch-id", batch_id)
    assert f"Quarantine of batch {batch_id}: 2 row(s)" in rows.stdout
    assert '"value": "abc"' in rows.stdout and "day1.csv" in rows.stdout

    config = tmp_path / "sources.toml"
    config.write_text(
        "[sources.meter_readings]\n"
        'path = "in/*.csv"\n'
        'columns = { unit = "unit" }\n'
        'timestamp_timezone = "Europe/London"\n'
        'series_timezone = "Europe/London"\n'
        "max_demand_kw = 5000\n",
        encoding="utf-8",
    )
    replayed = cli(tmp_path, "quarantine", "replay", "--batch-id", batch_id, "--config", str(config))
    assert replayed.returncode == 0, replayed.stderr
    assert "reconciliation: 2 read = 1 accepted + 1 quarantined" in replayed.stdout
    after = cli(tmp_path, "quarantine", "list")
    assert "value_unparseable" in after.stdout and "above_physical_max" not in after.stdout
    assert "(succeeded)" in after.stdout  # the replay, listed against its batch

    missing = cli(tmp_path, "quarantine", "replay", "--batch-id", "no_such_batch")
    assert missing.returncode == 1
    assert "there is no batch 'no_such_batch'" in missing.stderr and "Traceback" not in missing.stderr


def test_db_upgrade_migrates_a_new_database_and_says_its_version(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    from app.infrastructure.repositories.metadata import MIGRATIONS_DIR

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    for _ in range(2):  # a new database, then one already at the newest schema
        upgraded = cli(tmp_path, "db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr
        assert f"at schema version {head}" in upgraded.stdout
    assert (tmp_path / "lake" / "metadata.db").is_file()
