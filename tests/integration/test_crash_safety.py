"""A run killed with SIGKILL at any point leaves every table readable; recovery (`energy-platform
recover`, which every run does first) leaves no partial batch in silver or gold and the batch
failed in the metadata store, and a next run ends with the tables an uninterrupted run would
have written."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from app.infrastructure.lock import holder_of
from app.infrastructure.settings import Settings
from app.wiring import open_platform, recover
from tests.integration.crash_run import POINTS
from tests.integration.test_reliability import day_rows, lake_state, write_day

pytestmark = pytest.mark.slow  # every test kills and restarts CLI processes

ROOT = Path(__file__).resolve().parents[2]
#: Lineage that differs between any two runs: batch ids and wall-clock times.
VOLATILE = {"batch_id", "ingested_at", "quarantined_at"}


def _env(lake: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_PATH", "DATA_DIR", "METADATA_DB"))}
    env.update(STORAGE_PATH=str(lake), LOG_FORMAT="json", PYTHONPATH=str(ROOT))
    return env


def _cli(lake: Path, *args: str, point: str | None = None) -> subprocess.CompletedProcess[str]:
    module = ["-m", "tests.integration.crash_run", point] if point else ["-m", "app.cli"]
    return subprocess.run(
        [sys.executable, *module, *args], env=_env(lake), cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def _tables_open(lake: Path) -> dict[str, int]:
    """Every Delta table under the lake, read whole: name -> rows."""
    rows = {}
    for log in sorted(lake.glob("*/*/_delta_log")):
        rows[log.parent.name] = DeltaTable(str(log.parent)).to_pyarrow_table().num_rows
    return rows


def _settings(lake: Path) -> Settings:
    return Settings(data_dir=lake, _env_file=None)  # type: ignore[call-arg]


def _comparable(state: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """Tables without run-specific lineage, floats to 9 decimals (a sum's last bits depend on
    the order its terms were added in), rows sorted."""
    out = {}
    for name, table in state.items():
        table = table.drop_columns([c for c in table.column_names if c in VOLATILE])
        for index, field in enumerate(table.schema):
            if pa.types.is_floating(field.type):
                # Python's round: Arrow's can leave two values that round alike a last bit apart.
                rounded = [None if v is None else round(v, 9) for v in table.column(index).to_pylist()]
                table = table.set_column(index, field, pa.array(rounded, field.type))
        out[name] = table.sort_by([(c, "ascending") for c in table.column_names])
    return out


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A lake seeded with day 1, the second day's file, and the lake after an uninterrupted day 2."""
    base = tmp_path_factory.mktemp("crash")
    day1 = write_day(base / "in" / "day1.csv", day_rows(1))
    day2 = write_day(base / "in" / "day2.csv", day_rows(2))
    seeded = base / "seeded"
    assert _cli(seeded, "run-batch", "--input", str(day1)).returncode == 0
    baseline = base / "baseline"
    shutil.copytree(seeded, baseline)
    done = _cli(baseline, "run-batch", "--input", str(day2))
    assert done.returncode == 0, done.stderr
    return {"seeded": seeded, "baseline": baseline, "day2": day2}


def test_there_are_at_least_ten_kill_points_over_every_layer_and_the_metadata() -> None:
    names = " ".join(POINTS)
    assert len(POINTS) >= 10
    for part in ("metadata start", "bronze", "quarantine", "silver", "gold", "metadata finish"):
        assert part in names


@pytest.mark.parametrize("point", [p for p in POINTS if p != "during recovery"])
def test_a_run_killed_at_any_point_recovers_to_the_uninterrupted_result(
    lakes: dict[str, Path], tmp_path: Path, point: str
) -> None:
    lake = tmp_path / "lake"
    shutil.copytree(lakes["seeded"], lake)
    before = lake_state(lake)

    killed = _cli(lake, "run-batch", "--input", str(lakes["day2"]), point=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    # Straight after the kill: every table opens and reads, and the lock is free again.
    assert _tables_open(lake)
    assert holder_of(lake) is None

    # Opening the lake to read changes nothing: the batch is still recorded as running.
    with open_platform(_settings(lake)) as platform:
        batch = platform.metadata.list_batches(limit=1)[0]
    if point != "after metadata finish":
        assert batch.status == "running"
    # Recovering finds the batch and rolls it back (or finds it finished).
    with open_platform(_settings(lake)) as platform:
        recovered = recover(platform)
        batch = platform.metadata.list_batches(limit=1)[0]
    assert recovered == ([] if point == "after metadata finish" else [batch.batch_id])
    if point == "after metadata finish":
        assert batch.status == "succeeded"
        assert _comparable(lake_state(lake)) == _comparable(lake_state(lakes["baseline"]))
    else:
        assert batch.status == "failed"
        assert batch.error is not None and batch.error.startswith("interrupted")
        assert _comparable(lake_state(lake)) == _comparable(before), "a partial batch is visible"

    again = _cli(lake, "run-batch", "--input", str(lakes["day2"]))
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert _comparable(lake_state(lake)) == _comparable(lake_state(lakes["baseline"]))


def test_a_recovery_killed_midway_is_finished_by_the_next_one(lakes: dict[str, Path], tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    shutil.copytree(lakes["seeded"], lake)
    before = lake_state(lake)
    killed = _cli(lake, "run-batch", "--input", str(lakes["day2"]), point="after silver commit")
    assert killed.returncode == -signal.SIGKILL
    recovering = _cli(lake, "recover", point="during recovery")
    assert recovering.returncode == -signal.SIGKILL, recovering.stderr

    recovered = _cli(lake, "recover")
    assert recovered.returncode == 0, recovered.stderr
    assert "Recovered 1 interrupted batch" in recovered.stdout
    assert _comparable(lake_state(lake)) == _comparable(before)
    again = _cli(lake, "run-batch", "--input", str(lakes["day2"]))
    assert again.returncode == 0, again.stderr
    assert _comparable(lake_state(lake)) == _comparable(lake_state(lakes["baseline"]))
