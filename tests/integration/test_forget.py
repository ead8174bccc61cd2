"""`meters forget` (local mode): one meter's data leaves every layer and the quarantine, the
portfolio load is recomputed without it, and afterwards no file under the lake holds its id."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from app.application.erasure import ErasureError, forget_meter
from app.application.lake_ops import optimize_tables, table_history
from app.application.runner import run_batch
from app.domain.audit import METERS_FORGET
from app.domain.errors import ConfigurationError, TableStoreError
from app.infrastructure.lock import LakeBusyError
from app.wiring import LocalPlatform
from tests.integration.conftest import NOW, read_table, write_csv

CONFIG = '[sources.feed]\npath = "in"\nunit = "kWh"\ninterval_minutes = 60\n'
#: The meter to forget: an id no other value of the lake contains.
SECRET = "MTR-7f3a9c"
OTHER = "MTR-000001"


def _batch(platform: LocalPlatform, tmp_path: Path, name: str, rows: list[str]) -> str:
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    path = write_csv(tmp_path / "in" / name, rows, header="meter_id,timestamp,value")
    result = run_batch(
        platform, source_name="feed", config_file=tmp_path / "sources.toml", input_path=str(path), now=NOW
    )
    assert result.status == "succeeded", result.error
    assert result.batch_id is not None
    return result.batch_id


def _hours(meter: str, value: float, day: int, hours: range) -> list[str]:
    return [f"{meter},2025-06-{day:02d}T{h:02d}:00Z,{value}" for h in hours]


def holders(root: Path, text: str) -> list[str]:
    """Every file under `root` whose bytes hold `text`, or (Parquet, whose pages may be compressed)
    whose decoded values do: data files, change data, log commits and checkpoints, checksums,
    the metadata database, anything."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hit = text.encode() in data
        if not hit and data[:4] == b"PAR1":
            hit = text in json.dumps(pq.read_table(path).to_pylist(), default=str)
        if hit:
            found.append(path.relative_to(root).as_posix())
    return found


def _lake_with_both_meters(platform: LocalPlatform, tmp_path: Path) -> list[str]:
    """Two days of two meters over three batches (merges: change data files), a quarantined row
    and a malformed line of the secret meter, and a compaction (a checkpoint with statistics)."""
    batches = [
        _batch(platform, tmp_path, "a.csv", [*_hours(SECRET, 1.0, 1, range(24)), *_hours(OTHER, 2.0, 1, range(12))]),
        _batch(
            platform,
            tmp_path,
            "b.csv",
            [*_hours(SECRET, 3.0, 1, range(6)), f"{SECRET},2025-06-02T05:00Z,oops", f"{SECRET},2025-06-02T06:00Z"],
        ),
        _batch(platform, tmp_path, "c.csv", [*_hours(SECRET, 1.5, 2, range(24)), *_hours(OTHER, 2.5, 2, range(24))]),
    ]
    optimize_tables(platform)
    return batches


def test_forget_erases_the_meter_from_every_layer_and_every_file(platform: LocalPlatform, tmp_path: Path) -> None:
    _lake_with_both_meters(platform, tmp_path)
    lake = platform.settings.data_dir
    assert {"silver", "gold", "bronze", "quarantine"} <= {p.split("/")[0] for p in holders(lake, SECRET)}
    other_silver = read_table(platform, "silver_readings").filter(
        pc.equal(read_table(platform, "silver_readings")["meter_id"], OTHER)
    )
    other_daily = read_table(platform, "gold_daily_meter_energy").filter(
        pc.equal(read_table(platform, "gold_daily_meter_energy")["meter_id"], OTHER)
    )
    other_bronze = read_table(platform, "bronze_feed").filter(
        pc.equal(read_table(platform, "bronze_feed")["meter_id"], OTHER)
    )

    erasure = forget_meter(platform, SECRET)

    digest = "sha256:" + hashlib.sha256(SECRET.encode()).hexdigest()
    assert erasure.meter == digest
    assert erasure.deleted == {
        "bronze_feed": 24 + 6 + 1 + 24,  # its "oops" row too (a malformed line is not a bronze row)
        "quarantine_readings": 2,
        "silver_readings": 48,
        "gold_daily_meter_energy": 2,
    }
    assert read_table(platform, "silver_readings") == other_silver
    assert read_table(platform, "gold_daily_meter_energy") == other_daily
    assert read_table(platform, "bronze_feed") == other_bronze
    assert read_table(platform, "quarantine_readings").num_rows == 0

    # The portfolio load: the other meter's hours alone; hours only the secret meter had are gone.
    load = read_table(platform, "gold_hourly_portfolio_load").sort_by("hour_utc")
    assert load["meter_count"].to_pylist() == [1] * 36
    expected = {(r["interval_start_utc"], r["energy_kwh"]) for r in other_silver.to_pylist()}
    assert set(zip(load["hour_utc"].to_pylist(), load["energy_kwh"].to_pylist(), strict=True)) == expected
    assert erasure.portfolio == {"recomputed": 36, "removed": 12}

    # No file under the lake holds the id: data, change data, log commits, checkpoints, metadata database.
    assert holders(lake, SECRET) == []
    assert set(erasure.purged) == {"bronze_feed", "quarantine_readings", "silver_readings", "gold_daily_meter_energy"}
    # The audit trail names the meter by its digest.
    [record] = platform.metadata.list_audit(5, action=METERS_FORGET)
    assert (record.outcome, record.target) == ("succeeded", digest)
    assert record.details["deleted"] == erasure.deleted
    # Time travel and undo end at the erasure: the history before it is gone.
    history = table_history(platform, "silver_readings")
    with pytest.raises(TableStoreError, match="no version as of 0"):
        platform.store.head("silver_readings", limit=1, as_of=0)
    assert min(v.version for v in history) > 0
    # The lake goes on: another batch of the other meter merges as before.
    _batch(platform, tmp_path, "d.csv", _hours(OTHER, 9.0, 3, range(24)))
    assert pc.sum(pc.equal(read_table(platform, "silver_readings")["meter_id"], OTHER)).as_py() == 60
    assert holders(lake, SECRET) == []


def test_forget_refuses_while_the_lock_is_held(platform: LocalPlatform, tmp_path: Path) -> None:
    _batch(platform, tmp_path, "a.csv", _hours(SECRET, 1.0, 1, range(24)))
    before = read_table(platform, "silver_readings")
    with platform.lock("run-batch --source feed"), pytest.raises(LakeBusyError, match="is in use by"):
        forget_meter(platform, SECRET)
    assert read_table(platform, "silver_readings") == before
    [record] = platform.metadata.list_audit(5, action=METERS_FORGET)
    assert record.outcome == "failed" and SECRET not in json.dumps(record.details) + str(record.error)
    with pytest.raises(ConfigurationError, match="give the id of the meter"):
        forget_meter(platform, "  ")


def test_forget_says_what_it_could_not_erase_without_naming_the_meter(platform: LocalPlatform, tmp_path: Path) -> None:
    _batch(platform, tmp_path, "a.csv", [*_hours(SECRET, 1.0, 1, range(24)), *_hours(OTHER, 2.0, 1, range(24))])
    # An input file kept under the data directory, named after the meter: forget does not delete inputs.
    kept = write_csv(platform.settings.data_dir / "landing" / f"{SECRET}.csv", _hours(SECRET, 1.0, 1, range(2)))

    with pytest.raises(
        ErasureError, match=r"still held by 1 file\(s\) under the lake: landing/<meter sha256:"
    ) as raised:
        forget_meter(platform, SECRET)

    assert SECRET not in str(raised.value)
    assert kept.exists()
    assert pc.sum(pc.equal(read_table(platform, "silver_readings")["meter_id"], SECRET)).as_py() == 0
    [record] = platform.metadata.list_audit(5, action=METERS_FORGET)
    assert record.outcome == "failed" and SECRET not in str(record.error)
    kept.unlink()
    again = forget_meter(platform, SECRET)  # nothing left to delete; the check passes now
    assert again.deleted["silver_readings"] == 0
    assert holders(platform.settings.data_dir, SECRET) == []


def test_forget_of_a_meter_the_lake_never_had_changes_no_row(platform: LocalPlatform, tmp_path: Path) -> None:
    _batch(platform, tmp_path, "a.csv", _hours(OTHER, 2.0, 1, range(24)))
    tables = {t: read_table(platform, t) for t in platform.store.tables()}
    erasure = forget_meter(platform, "NO-SUCH-METER")
    assert set(erasure.deleted.values()) == {0}
    assert erasure.portfolio == {"recomputed": 0, "removed": 0}
    assert {t: read_table(platform, t) for t in tables} == tables
    assert isinstance(tables["silver_readings"], pa.Table)


@pytest.mark.slow
def test_retention_apply_and_meters_forget_from_the_command_line(tmp_path: Path) -> None:
    from tests.integration.test_cli import cli

    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    path = write_csv(tmp_path / "in" / "a.csv", [*_hours(SECRET, 1.0, 1, range(24))], header="meter_id,timestamp,value")
    ran = cli(tmp_path, "run-batch", "--source", "feed", "--config", "sources.toml", "--input", str(path))
    assert ran.returncode == 0, ran.stderr

    kept = cli(tmp_path, "retention", "apply")
    assert kept.returncode == 0 and "No retention is set" in kept.stdout
    applied = cli(tmp_path, "retention", "apply", RETENTION_BRONZE_DAYS="1", RETENTION_QUARANTINE_DAYS="1")
    assert applied.returncode == 0, applied.stderr
    assert "bronze_feed: 0 rows deleted, 0 files vacuumed" in applied.stdout  # ingested just now: kept
    unknown = cli(tmp_path, "retention", "apply", RETENTION_LANDING_DAYS="1")
    assert unknown.returncode == 1 and "RETENTION_LANDING_DAYS: no such setting" in unknown.stderr

    forgot = cli(tmp_path, "meters", "forget", SECRET)
    assert forgot.returncode == 0, forgot.stderr
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    assert f"Meter sha256:{digest} erased" in forgot.stdout
    assert "silver_readings: 24 rows deleted" in forgot.stdout
    assert SECRET not in forgot.stdout + forgot.stderr  # neither the summary nor the log names it
    assert holders(tmp_path / "lake", SECRET) == []


def test_forget_renames_the_meter_in_the_metadata_stores_file_names_and_errors(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    """A per-meter export is named after its meter, and an error may quote a meter id: the
    metadata database (in the data directory by default) then holds the id too. Forget puts the
    digest in its place there, and compacts the SQLite file so no old page keeps it."""
    batch = _batch(platform, tmp_path, f"{SECRET}.csv", _hours(SECRET, 1.0, 1, range(24)))
    _batch(platform, tmp_path, "other.csv", _hours(OTHER, 2.0, 1, range(24)))
    lake = platform.settings.data_dir
    assert "metadata.db" in holders(lake, SECRET)

    erasure = forget_meter(platform, SECRET)

    assert erasure.metadata_rows >= 1
    assert holders(lake, SECRET) == []
    record = platform.metadata.get_batch(batch)
    assert record is not None
    [file] = record.files
    assert file.path.endswith(f"{erasure.meter}.csv")
