"""Operating the lake in Databricks mode, on a real local Spark with Delta Lake: retention deletes
exactly the expired bronze rows, `meters forget` leaves no file holding the meter id (deletion
vectors purged too), and batches' transaction identifiers carry the time a checkpoint expires
them by."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import CommitProperties, DeltaTable, Transaction

from app.application.erasure import forget_meter
from app.application.retention import RetentionPolicy, apply_retention
from app.application.runner import run_batch
from app.infrastructure.repositories.base import APP_ID, TRANSACTION_RETENTION, TRANSACTION_RETENTION_VALUE
from app.infrastructure.settings import Settings
from app.wiring import open_platform
from tests.integration.conftest import NOW, write_csv
from tests.integration.test_forget import OTHER, SECRET, holders

pytestmark = [pytest.mark.spark, pytest.mark.slow]

CONFIG = '[sources.feed]\npath = "in"\nunit = "kWh"\ninterval_minutes = 60\n'


def _hours(meter: str, value: float, day: int, hours: range) -> list[str]:
    return [f"{meter},2025-06-{day:02d}T{h:02d}:00Z,{value}" for h in hours]


def _txns(table: Path) -> list[dict[str, Any]]:
    actions = []
    for commit in sorted((table / "_delta_log").glob("*.json")):
        for line in commit.read_text(encoding="utf-8").splitlines():
            if '"txn"' in line:
                actions.append(json.loads(line)["txn"])
    return actions


def test_retention_and_forget_on_spark(tmp_path: Path, spark: Any) -> None:
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    settings = Settings(execution_mode="databricks", data_dir=tmp_path / "lake", _env_file=None)  # type: ignore[call-arg]
    lake = settings.data_dir
    with open_platform(settings) as platform:
        batches = []
        for name, rows, age in (
            ("a.csv", [*_hours(SECRET, 1.0, 1, range(24)), *_hours(OTHER, 2.0, 1, range(12))], timedelta(days=30)),
            ("b.csv", [*_hours(SECRET, 3.0, 2, range(24)), f"{SECRET},2025-06-02T05:30Z,x"], timedelta(hours=1)),
        ):
            path = write_csv(tmp_path / "in" / name, rows, header="meter_id,timestamp,value")
            result = run_batch(
                platform, source_name="feed", config_file=tmp_path / "sources.toml", input_path=str(path), now=NOW - age
            )
            assert result.status == "succeeded", result.error
            batches.append(result.batch_id)
        store = platform.store

        # Tables bound their transaction identifiers, and the batches' carry their time.
        silver = lake / "silver" / "silver_readings"
        assert DeltaTable(str(silver)).metadata().configuration[TRANSACTION_RETENTION] == TRANSACTION_RETENTION_VALUE
        ours = [t for t in _txns(silver) if t["appId"].startswith(f"{APP_ID}:")]
        assert len(ours) == 2 and all(t.get("lastUpdated") for t in ours)
        # An identifier of a batch eight days ago: Spark's next checkpoint (forget writes one) drops it.
        expired = Transaction(f"{APP_ID}:old:1", 1, last_updated=int((time.time() - 8 * 86400) * 1000))
        DeltaTable(str(silver)).alter.set_table_properties(
            {"delta.appendOnly": "false"}, commit_properties=CommitProperties(app_transactions=[expired])
        )
        assert DeltaTable(str(silver)).transaction_version(expired.app_id) is None  # delta-rs: expired already

        # Retention: bronze keeps 15 days, so the first batch's 36 bronze rows go.
        retained = apply_retention(platform, RetentionPolicy(bronze_days=15), now=NOW)
        assert retained.deleted == {"bronze_feed": 36}
        bronze = store.head("bronze_feed", limit=1000)
        assert set(bronze["batch_id"].to_pylist()) == {batches[1]} and bronze.num_rows == 25

        # Forget, on a silver table whose deletes leave deletion vectors.
        spark.sql(f"ALTER TABLE delta.`{silver}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = true)")
        assert any(p.startswith("silver") for p in holders(lake, SECRET))
        erasure = forget_meter(platform, SECRET)
        assert erasure.deleted == {
            "bronze_feed": 25,
            "quarantine_readings": 1,
            "silver_readings": 48,
            "gold_daily_meter_energy": 2,
        }
        assert erasure.portfolio == {"recomputed": 12, "removed": 36}
        readings = store.head("silver_readings", limit=1000)
        assert set(readings["meter_id"].to_pylist()) == {OTHER} and readings.num_rows == 12
        load = store.head("gold_hourly_portfolio_load", limit=1000)
        assert load.num_rows == 12 and pc.all(pc.equal(load["meter_count"], 1)).as_py()
        assert holders(lake, SECRET) == []
        log = silver / "_delta_log"
        version = json.loads((log / "_last_checkpoint").read_text(encoding="utf-8"))["version"]
        kept = pq.read_table(log / f"{version:020d}.checkpoint.parquet").column("txn").to_pylist()
        assert {t["appId"] for t in kept if t} == {t["appId"] for t in ours}
