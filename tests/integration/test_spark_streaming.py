"""Streaming in Databricks mode: Spark Structured Streaming from a real Kafka broker into the
same stages, against a local-mode stream of the same topic; and Spark's micro-batches written
once, whether Spark runs one again after its commits or after they were rolled back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from confluent_kafka import Producer
from deltalake import DeltaTable

from app.application.streaming import StreamStoppedError, StreamSummary, run_stream
from app.domain.rules import MALFORMED_ROW
from app.domain.schemas import SILVER_COMPARED, SILVER_READINGS, TABLES
from app.infrastructure.repositories.spark_repository import SparkDeltaStore
from app.infrastructure.settings import Settings
from app.infrastructure.spark_streaming import checkpoint_location, stream_tables
from app.wiring import open_platform
from tests.integration.conftest import NOW
from tests.integration.kafka import bootstrap_servers, fresh_topic

pytestmark = [pytest.mark.spark, pytest.mark.slow]

#: Columns that name a batch or the time it ran: they differ between any two runs.
RUN_COLUMNS = frozenset({"batch_id", "ingested_at", "updated_at", "quarantined_at"})
#: Offsets per micro-batch (messages, and the transaction markers and aborted messages between
#: them): the topic's 150 messages in two.
MAX_MESSAGES = 100
COMPARED = ("silver_readings", "quarantine_readings", "gold_daily_meter_energy", "gold_hourly_portfolio_load")


def _readings(meters: int, days: int) -> list[dict[str, Any]]:
    """Hourly readings of `meters` meters over `days` days of June 2025."""
    return [
        {
            "meter_id": f"M{m}",
            "timestamp": f"2025-06-{1 + h // 24:02d}T{h % 24:02d}:00Z",
            "value": round(0.25 + m + (h % 24) / 10, 3),
            "unit": "kWh",
        }
        for h in range(24 * days)
        for m in range(meters)
    ]


def _produce(servers: str, topic: str, values: list[tuple[str, bytes]], *, per_transaction: int) -> None:
    """Send (key, value) messages in committed transactions, each followed by an aborted one of
    the same keys with value 999, which must never land."""
    producer = Producer({"bootstrap.servers": servers, "transactional.id": f"test-{topic}", "linger.ms": 5})
    producer.init_transactions(30)
    for start in range(0, len(values), per_transaction):
        chunk = values[start : start + per_transaction]
        producer.begin_transaction()
        for key, value in chunk:
            producer.produce(topic, key=key.encode(), value=value)
        producer.commit_transaction(30)
        producer.begin_transaction()
        for key, _ in chunk[:3]:
            poison = {"meter_id": key, "timestamp": "2025-06-01T00:00Z", "value": 999, "unit": "kWh"}
            producer.produce(topic, key=key.encode(), value=json.dumps(poison).encode())
        producer.flush(30)
        producer.abort_transaction(30)


def _messages(readings: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    return [(r["meter_id"], json.dumps(r).encode()) for r in readings]


def _config(folder: Path, servers: str, topic: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "sources.toml"
    config.write_text(
        f'[sources.feed]\nformat = "kafka"\nbootstrap_servers = "{servers}"\ntopic = "{topic}"\n'
        'interval_minutes = 60\ncolumns = { unit = "unit" }\n',
        encoding="utf-8",
    )
    return config


def _settings(lake: Path, mode: Literal["local", "databricks"]) -> Settings:
    return Settings(execution_mode=mode, data_dir=lake, _env_file=None)  # type: ignore[call-arg]


def _stream(lake: Path, mode: Literal["local", "databricks"], config: Path, **options: Any) -> StreamSummary:
    with open_platform(_settings(lake, mode)) as platform:
        return run_stream(
            platform, source_name="feed", config_file=config, available_now=True, now=lambda: NOW, **options
        )


def _tables(lake: Path) -> dict[str, list[dict[str, Any]]]:
    """Each compared table's rows, sorted, without the columns of the run; floats rounded to 1e-9."""
    tables = {}
    for name in COMPARED:
        location = lake / TABLES[name].layer / name
        rows = DeltaTable(str(location)).to_pyarrow_table().to_pylist() if location.is_dir() else []
        tables[name] = sorted(
            (
                {k: round(v, 9) if isinstance(v, float) else v for k, v in row.items() if k not in RUN_COLUMNS}
                for row in rows
            ),
            key=lambda row: json.dumps(row, default=str, sort_keys=True),
        )
    return tables


def _versions(store: SparkDeltaStore, tables: list[str]) -> dict[str, int]:
    return {t: DeltaTable(store.location(t)).version() for t in tables if store.exists(t)}


@pytest.fixture(scope="module")
def topic() -> Iterator[tuple[str, str]]:
    servers = bootstrap_servers()
    with fresh_topic(servers, partitions=2) as name:
        yield servers, name


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory, spark: Any, topic: tuple[str, str]) -> dict[str, Any]:
    """One topic (3 meters over 2 days, repeats, a correction, a message that is not JSON, aborted
    transactions) streamed with --available-now in local mode, and in Databricks mode in two
    runs: the first fails in its second micro-batch's gold stage, after that micro-batch's
    bronze, quarantine and silver commits, which are rolled back; the second runs it again."""
    from app.application import stages
    from app.domain.errors import TableStoreError

    servers, name = topic
    root = tmp_path_factory.mktemp("spark-stream")
    config = _config(root, servers, name)
    readings = _readings(3, 2)
    corrected = {**readings[7], "value": 5.5}  # read later: replaces the reading of the same hour
    messages = [*_messages(readings), *_messages(readings[:4]), *_messages([corrected]), ("M1", b"not json")]
    _produce(servers, name, messages, per_transaction=40)
    local = _stream(root / "local", "local", config, max_messages=MAX_MESSAGES)

    real_gold = stages.gold
    calls = {"n": 0}

    def gold_failing_on_the_second(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise TableStoreError("the disk is full")
        return real_gold(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stages, "gold", gold_failing_on_the_second)
        with pytest.raises(StreamStoppedError, match="the disk is full") as stopped:
            _stream(root / "spark", "databricks", config, max_messages=MAX_MESSAGES)
    on_spark = _stream(root / "spark", "databricks", config, max_messages=MAX_MESSAGES)
    return {
        "root": root,
        "config": config,
        "local": local,
        "spark": on_spark,
        "stopped": str(stopped.value),
        "messages": len(messages),
    }


def test_a_topic_streamed_in_both_modes_gives_the_same_tables(streamed: dict[str, Any]) -> None:
    local, on_spark = streamed["local"], streamed["spark"]
    assert local.failed == on_spark.failed == 0
    assert local.readings == streamed["messages"]  # committed messages only, each once
    # The second Spark run: the micro-batch the first one failed on, run again by Spark.
    assert 0 < on_spark.readings < streamed["messages"]
    root = streamed["root"]
    left, right = _tables(root / "local"), _tables(root / "spark")
    assert left["silver_readings"] and left["gold_daily_meter_energy"]
    assert [r["rule"] for r in right["quarantine_readings"]] == [MALFORMED_ROW]
    for name in COMPARED:
        assert left[name] == right[name], name
    bronze = DeltaTable(str(root / "spark" / "bronze" / "bronze_feed")).to_pyarrow_table()
    assert bronze.num_rows == streamed["messages"] - 1  # the malformed message is in quarantine only
    assert "999" not in set(bronze["value"].to_pylist())


def test_a_failed_micro_batch_stops_the_spark_stream_and_loses_nothing(streamed: dict[str, Any]) -> None:
    assert "runs again when the stream restarts" in streamed["stopped"]
    with open_platform(_settings(streamed["root"] / "spark", "databricks")) as platform:
        batches = platform.metadata.list_batches(limit=50)
    assert {(b.kind, b.execution_mode) for b in batches} == {("stream", "databricks")}
    failed = [b for b in batches if b.status == "failed"]
    succeeded = [b for b in batches if b.status == "succeeded"]
    assert len(failed) == 1 and len(succeeded) >= 2
    assert failed[0].error is not None and "rolled back" in failed[0].error
    # Every committed message was read once by a micro-batch that succeeded.
    assert sum(b.record_count for b in succeeded) == streamed["messages"]
    # The rolled-back micro-batch's identifiers stayed in the logs (a restore keeps them), so
    # its second run wrote under the next free one.
    lake = streamed["root"] / "spark"
    for table in ("bronze_feed", SILVER_READINGS.name):
        salted = [version for version, app_id in _transactions(lake, table) if app_id.endswith("~1")]
        assert salted == [1], table  # Spark's micro-batch 1, the one that failed


def test_a_micro_batch_spark_runs_again_changes_nothing(streamed: dict[str, Any]) -> None:
    """Spark ran the last micro-batch, but its end never reached the checkpoint (say, the driver
    died): the next start runs it again, and the lake and the metadata store stay as they are."""
    root, config = streamed["root"], streamed["config"]
    lake = root / "spark"
    commits = checkpoint_location(lake, "feed") / "commits"
    last = max(int(p.name) for p in commits.iterdir() if p.name.isdigit())
    with open_platform(_settings(lake, "databricks")) as platform:
        assert isinstance(platform.store, SparkDeltaStore)
        tables = stream_tables(platform.source("feed", config))
        before = (_versions(platform.store, tables), len(platform.metadata.list_batches(limit=100)))
        (commits / str(last)).unlink()
        (commits / f".{last}.crc").unlink(missing_ok=True)

        again = run_stream(platform, source_name="feed", config_file=config, available_now=True, now=lambda: NOW)

        after = (_versions(platform.store, tables), len(platform.metadata.list_batches(limit=100)))
    assert [(r.batch_id, r.status) for r in again.micro_batches] == [(None, "skipped")]
    assert after == before
    assert (commits / str(last)).is_file()  # Spark recorded its end this time


def test_a_write_of_a_committed_micro_batch_is_skipped_by_delta(streamed: dict[str, Any]) -> None:
    """Below the stream's own check: Delta skips a write that carries a committed micro-batch's
    transaction identifier, and the store's merge inside that micro-batch's transaction commits
    nothing and reports the counts of the commit that holds it."""
    lake = streamed["root"] / "spark"
    app_id, epoch = _last_micro_batch(lake)
    with open_platform(_settings(lake, "databricks")) as platform:
        store = platform.store
        assert isinstance(store, SparkDeltaStore)
        silver = store.read(SILVER_READINGS)
        rows = store.count_rows(silver)
        before = _versions(store, [SILVER_READINGS.name])
        writer = silver.to_native().write.format("delta").mode("append")
        writer.option("txnAppId", app_id).option("txnVersion", epoch).save(store.location(SILVER_READINGS.name))
        assert store.stream_committed(app_id, epoch, [SILVER_READINGS.name]) == [SILVER_READINGS.name]
        assert store.stream_committed(app_id, epoch + 1, [SILVER_READINGS.name]) == []
        with store.stream_transaction(app_id, epoch):
            merged = store.upsert(
                SILVER_READINGS, silver, compare=SILVER_COMPARED, batch_id="again", rank="quality_rank"
            )
        after = _versions(store, [SILVER_READINGS.name])
    assert after == before
    assert merged.inserted > 0 and merged.inserted + merged.updated + merged.unchanged == rows


def _transactions(lake: Path, table: str) -> list[tuple[int, str]]:
    """The (version, application id) of every transaction identifier a table's commits set."""
    layer = TABLES[table].layer if table in TABLES else table.split("_", 1)[0]  # bronze_<source>
    log = lake / layer / table / "_delta_log"
    found: list[tuple[int, str]] = []
    for entry in log.glob("*.json"):
        for line in entry.read_text(encoding="utf-8").splitlines():
            if '"txn"' in line:
                txn = json.loads(line)["txn"]
                found.append((txn["version"], txn["appId"]))
    return found


def _last_micro_batch(lake: Path) -> tuple[str, int]:
    """The application id and the last micro-batch id the stream's commits carry in silver."""
    epoch, app_id = max(_transactions(lake, SILVER_READINGS.name))
    return app_id, epoch
