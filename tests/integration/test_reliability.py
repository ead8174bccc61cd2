"""Idempotent commits and runs, one writer per lake, rollback of failed batches, quarantine replay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import narwhals as nw
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from app.application.ports import UpsertCounts
from app.application.runner import replay_quarantine, run_batch
from app.domain.errors import TableStoreError
from app.domain.schemas import GOLD_HOURLY_PORTFOLIO_LOAD, QUARANTINE_READINGS, SILVER_READINGS, TableSpec
from app.infrastructure.lock import LakeBusyError, LakeLock, holder_of
from app.infrastructure.settings import Settings
from app.main import app
from app.wiring import LocalPlatform, open_platform
from tests.integration.conftest import NOW

ROOT = Path(__file__).resolve().parents[2]
METERS = ("M-1", "M-2", "M-3")


def day_rows(day: int) -> list[str]:
    """Three meters' half-hours of 2025-06-<day> (UTC), a corrected re-read, unreadable and
    implausible values."""
    start = datetime(2025, 6, day, tzinfo=UTC)
    rows = []
    for meter_index, meter in enumerate(METERS):
        for slot in range(48):
            at = (start + timedelta(minutes=30 * slot)).isoformat().replace("+00:00", "Z")
            rows.append(f"{meter},{at},{0.1 + 0.01 * ((slot + meter_index * 7 + day) % 13):.2f},kWh")
    first = start.isoformat().replace("+00:00", "Z")
    rows.append(f"M-1,{first},0.55,kWh")  # a corrected read of M-1's first interval: last read wins
    rows[10] = rows[10].rsplit(",", 2)[0] + ",abc,kWh"  # value_unparseable
    rows[60] = rows[60].rsplit(",", 2)[0] + ",600,kWh"  # 1,200 kW: above_physical_max at the default 1,000 kW
    return rows


def write_day(path: Path, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("meter_id,timestamp,value,unit\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def lake_state(lake: Path) -> dict[str, pa.Table]:
    """Every Delta table under `lake`, whole."""
    return {
        log.parent.name: DeltaTable(str(log.parent)).to_pyarrow_table() for log in sorted(lake.glob("*/*/_delta_log"))
    }


def _sorted(table: pa.Table, drop: tuple[str, ...] = ()) -> pa.Table:
    table = table.drop_columns([c for c in drop if c in table.column_names])
    return table.sort_by([(c, "ascending") for c in table.column_names])


def _read(platform: LocalPlatform, spec: TableSpec) -> pa.Table:
    return platform.store.to_arrow(platform.store.read(spec))


@pytest.fixture
def days(tmp_path: Path) -> tuple[Path, Path]:
    return write_day(tmp_path / "in" / "day1.csv", day_rows(1)), write_day(tmp_path / "in" / "day2.csv", day_rows(2))


# --- Idempotency ----------------------------------------------------------------------------


def test_a_retried_commit_of_the_same_sequence_is_a_no_op(platform: LocalPlatform) -> None:
    store = platform.store
    rows = pa.table(
        {
            "hour_utc": pa.array([datetime(2025, 6, 1, h, tzinfo=UTC) for h in range(3)], pa.timestamp("us", "UTC")),
            "direction": ["import"] * 3,
            "energy_kwh": [1.0, 2.0, 3.0],
            "meter_count": pa.array([1, 1, 1], pa.int64()),
        }
    )
    spec = GOLD_HOURLY_PORTFOLIO_LOAD
    frame = store.frame(rows.select(spec.schema.names).cast(spec.schema))
    first = store.upsert(spec, frame, compare=spec.value_columns, batch_id="b1", sequence=7)
    version = DeltaTable(store.location(spec.name)).version()
    retried = store.upsert(spec, frame, compare=spec.value_columns, batch_id="b1", sequence=7)
    assert first == UpsertCounts(inserted=3, updated=0, unchanged=0)
    assert retried == first
    assert DeltaTable(store.location(spec.name)).version() == version
    assert DeltaTable(store.location(spec.name)).transaction_version("energy-platform:b1:7") == 7

    appended = store.append(QUARANTINE_READINGS, store.frame(_quarantine_rows("b1", 2)), batch_id="b1", sequence=7)
    again = store.append(QUARANTINE_READINGS, store.frame(_quarantine_rows("b1", 2)), batch_id="b1", sequence=7)
    assert (appended, again) == (2, 2)
    assert store.count(QUARANTINE_READINGS.name) == 2
    # The next batch's commit is not mistaken for a retry.
    assert store.append(QUARANTINE_READINGS, store.frame(_quarantine_rows("b2", 1)), batch_id="b2", sequence=8) == 1
    assert store.count(QUARANTINE_READINGS.name) == 3


def _quarantine_rows(batch_id: str, n: int) -> pa.Table:
    return pa.table(
        {
            "batch_id": [batch_id] * n,
            "source": ["meter_readings"] * n,
            "source_file": ["in.csv"] * n,
            "line_number": pa.array(range(2, n + 2), pa.int64()),
            "rule": ["value_missing"] * n,
            "raw_record": ['{"meter_id": "M"}'] * n,
            "quarantined_at": pa.array([NOW] * n, pa.timestamp("us", "UTC")),
        }
    ).cast(QUARANTINE_READINGS.schema)


def test_running_the_same_files_again_or_forced_leaves_silver_and_gold_as_they_were(
    platform: LocalPlatform, days: tuple[Path, Path]
) -> None:
    day1, day2 = days
    assert run_batch(platform, input_path=str(day1), now=NOW).status == "succeeded"
    assert run_batch(platform, input_path=str(day2), now=NOW).status == "succeeded"
    state = lake_state(platform.settings.data_dir)

    skipped = run_batch(platform, input_path=str(day2), now=NOW)
    assert skipped.batch_id is None and skipped.skipped_files
    forced = run_batch(platform, input_path=str(day2), now=NOW, force=True)
    assert forced.status == "succeeded"
    assert forced.reconciliation is not None
    assert forced.reconciliation.silver_inserted == 0 and forced.reconciliation.silver_updated == 0
    after = lake_state(platform.settings.data_dir)
    for table in ("silver_readings", "gold_daily_meter_energy", "gold_hourly_portfolio_load"):
        assert _sorted(after[table], ("batch_id",)) == _sorted(state[table], ("batch_id",)), table
    # Bronze keeps what was received, the second day twice; it never reaches silver twice.
    received = len(day_rows(2))
    assert after["bronze_meter_readings"].num_rows == state["bronze_meter_readings"].num_rows + received


# --- Rollback of a failed batch ---------------------------------------------------------------


class _FailingGold:
    """The real store, failing the gold hourly merge as a full disk would."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def upsert(self, spec: TableSpec, frame: Any, **kwargs: Any) -> UpsertCounts:
        if spec.name == GOLD_HOURLY_PORTFOLIO_LOAD.name:
            raise TableStoreError(f"{spec.name}: merge failed: No space left on device")
        result: UpsertCounts = self._store.upsert(spec, frame, **kwargs)
        return result


def test_a_batch_that_fails_midway_rolls_back_what_it_committed(
    platform: LocalPlatform, days: tuple[Path, Path]
) -> None:
    day1, day2 = days
    assert run_batch(platform, input_path=str(day1), now=NOW).status == "succeeded"
    before = lake_state(platform.settings.data_dir)
    failing = LocalPlatform(settings=platform.settings, store=_FailingGold(platform.store), metadata=platform.metadata)
    result = run_batch(failing, input_path=str(day2), now=NOW)
    assert result.status == "failed"
    assert result.error is not None
    assert "No space left on device" in result.error and "rolled back" in result.error
    after = lake_state(platform.settings.data_dir)
    assert after.keys() == before.keys()
    for name in before:
        assert _sorted(after[name]) == _sorted(before[name]), name
    assert result.batch_id is not None
    record = platform.metadata.get_batch(result.batch_id)
    assert record is not None and record.status == "failed"
    # The files were not ingested: the next run takes them.
    assert run_batch(platform, input_path=str(day2), now=NOW).status == "succeeded"


def test_the_first_batch_failing_removes_the_tables_it_created(
    platform: LocalPlatform, days: tuple[Path, Path]
) -> None:
    failing = LocalPlatform(settings=platform.settings, store=_FailingGold(platform.store), metadata=platform.metadata)
    assert run_batch(failing, input_path=str(days[0]), now=NOW).status == "failed"
    assert lake_state(platform.settings.data_dir) == {}


# --- One writer per lake ----------------------------------------------------------------------


def _hold_lock(lake: Path, batch_id: str) -> subprocess.Popen[str]:
    """Another process that takes the lake's lock for `batch_id` and keeps it until killed."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from app.infrastructure.lock import LakeLock
        lock = LakeLock(Path({str(lake)!r}), command="run-batch")
        lock.acquire()
        lock.hold_batch({batch_id!r})
        print("held", flush=True)
        time.sleep(600)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_is_refused_with_the_running_batch_named(
    platform: LocalPlatform, days: tuple[Path, Path], settings: Settings
) -> None:
    holder = _hold_lock(settings.data_dir, "20250601_120000_abcdef")
    try:
        with pytest.raises(LakeBusyError, match=r"batch 20250601_120000_abcdef \(run-batch, process \d+"):
            run_batch(platform, input_path=str(days[0]), now=NOW)
        assert platform.metadata.list_batches() == []
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_waiting_run_goes_ahead_once_the_lock_is_free(
    platform: LocalPlatform, days: tuple[Path, Path], settings: Settings
) -> None:
    holder = _hold_lock(settings.data_dir, "20250601_120000_abcdef")
    started = time.monotonic()
    try:
        subprocess.Popen(["sh", "-c", f"sleep 1.5; kill {holder.pid}"])
        result = run_batch(platform, input_path=str(days[0]), now=NOW, wait_seconds=60)
    finally:
        holder.kill()
        holder.wait()
    assert result.status == "succeeded"
    assert time.monotonic() - started >= 1.5


def test_a_lock_left_by_a_killed_process_is_detected_and_released(settings: Settings) -> None:
    holder = _hold_lock(settings.data_dir, "20250601_120000_abcdef")
    assert holder_of(settings.data_dir) is not None
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert holder_of(settings.data_dir) is None
    with LakeLock(settings.data_dir, command="run-batch") as lock:
        assert lock.stale is not None
        assert (lock.stale.pid, lock.stale.batch_id) == (holder.pid, "20250601_120000_abcdef")
    with LakeLock(settings.data_dir, command="run-batch") as lock:
        assert lock.stale is None  # released in the normal way last time


@pytest.mark.slow
def test_two_cli_runs_at_once_serialise_or_refuse_and_corrupt_nothing(tmp_path: Path, days: tuple[Path, Path]) -> None:
    lake = tmp_path / "lake"
    env = {**os.environ, "STORAGE_PATH": str(lake), "PYTHONPATH": str(ROOT)}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "app.cli", "run-batch", "--input", str(day)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for day in days
    ]
    outcomes = [(run.wait(timeout=300), run.communicate()) for run in runs]
    codes = sorted(code for code, _ in outcomes)
    refused = [err for code, (_, err) in outcomes if code != 0]
    assert codes in ([0, 0], [0, 1])
    for err in refused:
        assert "is in use by batch" in err and "Traceback" not in err
    with open_platform(Settings(data_dir=lake, _env_file=None)) as platform:  # type: ignore[call-arg]
        succeeded = [b for b in platform.metadata.list_batches() if b.status == "succeeded"]
        assert len(succeeded) == 2 - len(refused)
        silver = platform.store.to_arrow(platform.store.read(SILVER_READINGS))
    keys = set(zip(*(silver[c].to_pylist() for c in ("meter_id", "direction", "interval_start_utc")), strict=True))
    assert len(keys) == silver.num_rows  # no key twice
    assert set(silver["batch_id"].to_pylist()) == {b.batch_id for b in succeeded}
    actual = [flag for flag in silver["quality_flag"].to_pylist() if flag == "actual"]
    assert len(actual) == len(succeeded) * (48 * len(METERS) - 2)  # two reads per day rejected
    for table in lake_state(lake).values():
        assert table.num_rows > 0


# --- Quarantine replay --------------------------------------------------------------------------


def _raise_max_demand(tmp_path: Path) -> Path:
    config = tmp_path / "sources.toml"
    config.write_text(
        textwrap.dedent(
            """
            [sources.meter_readings]
            path = "in/*.csv"
            columns = { unit = "unit" }
            timestamp_timezone = "Europe/London"
            series_timezone = "Europe/London"
            max_demand_kw = 5000
            """
        ),
        encoding="utf-8",
    )
    return config


def test_replay_after_a_config_fix_moves_passing_rows_to_silver_and_gold_once(
    platform: LocalPlatform, days: tuple[Path, Path], tmp_path: Path
) -> None:
    day1, _ = days
    first = run_batch(platform, input_path=str(day1), now=NOW)
    assert first.batch_id is not None and first.reconciliation is not None
    assert first.rule_counts["above_physical_max"] == 1 and first.rule_counts["value_unparseable"] == 1
    silver_before = _read(platform, SILVER_READINGS)
    m2 = pc_filter(silver_before, "M-2", datetime(2025, 6, 1, 6, tzinfo=UTC))
    assert m2 == [("estimated", 0)]  # the implausible read was rejected and its interval estimated here

    # Nothing changed yet: everything stays in quarantine, nothing reaches silver.
    unchanged = replay_quarantine(platform, batch_id=first.batch_id, now=NOW)
    assert unchanged.status == "succeeded" and unchanged.reconciliation is not None
    assert unchanged.reconciliation.rows_read == 2 and unchanged.reconciliation.rows_quarantined == 2
    assert _sorted(_read(platform, SILVER_READINGS), ("batch_id",)) == _sorted(silver_before, ("batch_id",))

    replay = replay_quarantine(platform, batch_id=first.batch_id, config_file=_raise_max_demand(tmp_path), now=NOW)
    assert replay.status == "succeeded" and replay.reconciliation is not None
    rec = replay.reconciliation
    assert (rec.rows_read, rec.rows_accepted, rec.rows_quarantined) == (2, 1, 1)
    assert rec.silver_updated == 1 and rec.silver_inserted == 0
    silver = _read(platform, SILVER_READINGS)
    assert silver.num_rows == silver_before.num_rows
    assert pc_filter(silver, "M-2", datetime(2025, 6, 1, 6, tzinfo=UTC)) == [("actual", 600.0)]
    gold = platform.store.to_arrow(
        platform.store.read(SILVER_READINGS).filter(nw.col("meter_id") == "M-2").select("energy_kwh")
    )
    daily = _read_gold_day(platform, "M-2")
    assert daily == pytest.approx(sum(gold["energy_kwh"].to_pylist()))

    quarantine = _read(platform, QUARANTINE_READINGS)
    assert quarantine["batch_id"].to_pylist() == [first.batch_id]
    assert quarantine["rule"].to_pylist() == ["value_unparseable"]
    record = platform.metadata.get_batch(replay.batch_id or "")
    assert record is not None and (record.kind, record.replay_of, record.status) == (
        "replay",
        first.batch_id,
        "succeeded",
    )

    # Exactly once: replaying again re-runs only the row still in quarantine.
    again = replay_quarantine(platform, batch_id=first.batch_id, config_file=_raise_max_demand(tmp_path), now=NOW)
    assert again.reconciliation is not None and again.reconciliation.rows_read == 1
    assert _sorted(_read(platform, SILVER_READINGS), ("batch_id",)) == _sorted(silver, ("batch_id",))


def test_replay_never_overwrites_a_read_a_later_batch_delivered(
    platform: LocalPlatform, days: tuple[Path, Path], tmp_path: Path
) -> None:
    first = run_batch(platform, input_path=str(days[0]), now=NOW)
    assert first.batch_id is not None
    at = datetime(2025, 6, 1, 6, tzinfo=UTC)
    corrected = write_day(tmp_path / "in" / "corrected.csv", ["M-2,2025-06-01T06:00:00Z,0.33,kWh"])
    assert run_batch(platform, input_path=str(corrected), now=NOW).status == "succeeded"
    assert pc_filter(_read(platform, SILVER_READINGS), "M-2", at) == [("actual", 0.33)]

    replay = replay_quarantine(platform, batch_id=first.batch_id, config_file=_raise_max_demand(tmp_path), now=NOW)
    assert replay.status == "succeeded" and replay.reconciliation is not None
    assert replay.reconciliation.rows_accepted == 1 and replay.reconciliation.silver_updated == 0
    assert pc_filter(_read(platform, SILVER_READINGS), "M-2", at) == [("actual", 0.33)]


def pc_filter(silver: pa.Table, meter: str, at: datetime) -> list[tuple[str, float]]:
    rows = [r for r in silver.to_pylist() if r["meter_id"] == meter and r["interval_start_utc"] == at]
    return [(r["quality_flag"], 0 if r["quality_flag"] == "estimated" else r["energy_kwh"]) for r in rows]


def _read_gold_day(platform: LocalPlatform, meter: str) -> float:
    table = DeltaTable(platform.store.location("gold_daily_meter_energy")).to_pyarrow_table()
    return float(sum(r["energy_kwh"] for r in table.to_pylist() if r["meter_id"] == meter))


# --- The HTTP service -------------------------------------------------------------------------


def test_an_http_run_while_another_process_holds_the_lake_fails_naming_its_batch(tmp_path: Path) -> None:
    from tests.integration.test_api import KEY, _client, _landing_file

    settings = Settings(data_dir=tmp_path / "lake", api_key=KEY, _env_file=None)  # type: ignore[call-arg]
    _landing_file(settings)
    holder = _hold_lock(settings.data_dir, "20250601_120000_abcdef")
    try:
        client = _client(settings)
        run_id = client.post("/runs", json={"input_path": "meters/*.csv"}, headers={"X-API-Key": KEY}).json()["run_id"]
        detail = client.get(f"/runs/{run_id}").json()
    finally:
        holder.kill()
        holder.wait()
        app.dependency_overrides.clear()
    assert detail["status"] == "failed"
    assert "is in use by batch 20250601_120000_abcdef" in detail["error"]
    assert not (settings.data_dir / "silver").exists()


@pytest.mark.slow
def test_an_http_request_after_a_killed_run_sees_it_rolled_back(tmp_path: Path, days: tuple[Path, Path]) -> None:
    from tests.integration.test_api import _client

    settings = Settings(data_dir=tmp_path / "lake", _env_file=None)  # type: ignore[call-arg]
    with open_platform(settings) as platform:
        assert run_batch(platform, input_path=str(days[0]), now=NOW).status == "succeeded"
    before = lake_state(settings.data_dir)
    env = {**os.environ, "STORAGE_PATH": str(settings.data_dir), "PYTHONPATH": str(ROOT)}
    killed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.crash_run",
            "after silver commit",
            "run-batch",
            "--input",
            str(days[1]),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL

    try:
        batches = _client(settings).get("/batches").json()
    finally:
        app.dependency_overrides.clear()
    assert [b["status"] for b in batches] == ["failed", "succeeded"]
    after = lake_state(settings.data_dir)
    for name in before:
        assert _sorted(after[name]) == _sorted(before[name]), name
