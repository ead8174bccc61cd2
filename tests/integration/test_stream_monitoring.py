"""Watching a stream: the state a running stream records in the metadata store (running, a heartbeat
with its last micro-batch's figures and a topic's consumer lag, then stopped or failed; stale when
its heartbeat stopped), as /health and /metrics show it from another process's point of view, over
a real Kafka topic and a landing folder; and the metadata store's stream records and micro-batch
positions, on SQLite and on PostgreSQL (TEST_POSTGRES_URL; skipped without it, except in CI)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from confluent_kafka import Producer
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, inspect

from app.api.dependencies import current_settings
from app.application.streaming import StreamStoppedError, StreamSummary, lake_positions, run_stream
from app.domain.batches import BatchRecord, InputFile, StreamRecord
from app.domain.errors import MetadataStoreError
from app.infrastructure.repositories.metadata import MIGRATIONS_DIR, SqlMetadataStore
from app.infrastructure.settings import Settings
from app.main import app
from app.wiring import LocalPlatform, open_platform
from tests.integration.conftest import NOW, write_csv
from tests.integration.kafka import bootstrap_servers, fresh_topic

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
METERS, HOURS = 4, 24
#: Readings the test topic holds: one per meter and hour of a day.
READINGS = METERS * HOURS
_T = TypeVar("_T")


# --- the metadata store's contract, on SQLite and PostgreSQL ---------------------------------------


@pytest.fixture
def metadata_store(metadata_url: str) -> Iterator[SqlMetadataStore]:
    store = SqlMetadataStore(metadata_url, retry_seconds=2)
    store.migrate()
    yield store
    store.dispose()


def _stream(source: str = "feed", *, started_at: datetime = T0, **fields: Any) -> StreamRecord:
    return StreamRecord(
        run_id=f"run-{uuid.uuid4().hex}",
        source=source,
        state="running",
        host="worker-7.example",
        pid=4242,
        trigger_seconds=10.0,
        started_at=started_at,
        heartbeat_at=started_at,
        lake="/lakes/one",
        **fields,
    )


def test_a_stream_run_is_inserted_then_replaced_by_its_run_id(metadata_store: SqlMetadataStore) -> None:
    paris = timezone(timedelta(hours=1))
    record = _stream(started_at=datetime(2026, 1, 5, 13, 0, 0, 250000, tzinfo=paris))
    metadata_store.record_stream(record)
    stored = metadata_store.get_stream(record.run_id)
    assert stored == record  # every field, times as the same instant
    assert stored is not None and stored.started_at.tzinfo == UTC

    record.heartbeat_at = record.started_at + timedelta(seconds=30)
    record.micro_batches, record.readings, record.last_batch_id = 3, 1_250_000, "20260105_120030_abcdef"
    record.last_duration_seconds, record.last_readings_per_second, record.last_latency_seconds = 2.5, 5e5, 1.75
    record.lag = {"0": 0, "1": 12, "10": 3}
    metadata_store.record_stream(record)
    assert metadata_store.get_stream(record.run_id) == record

    record.state, record.stopped_at = "failed", record.heartbeat_at
    record.error = "micro-batch failed: bad byte \x00 in a message"
    metadata_store.record_stream(record)
    stored = metadata_store.get_stream(record.run_id)
    assert stored is not None and stored.state == "failed" and stored.stopped_at == record.stopped_at
    assert stored.error == "micro-batch failed: bad byte \\x00 in a message"
    assert metadata_store.streams() == [stored]  # one row per run, however often it is written
    assert metadata_store.get_stream("no-such-run") is None


def test_streams_lists_the_latest_run_of_each_source(metadata_store: SqlMetadataStore) -> None:
    first = _stream("meters", started_at=T0)
    first.state = "stopped"
    latest = _stream("meters", started_at=T0 + timedelta(hours=1))
    other = _stream("head_end", started_at=T0 - timedelta(days=1))
    other.lag = {"0": 5}
    for record in (latest, other, first):
        metadata_store.record_stream(record)
    assert metadata_store.streams() == [other, latest]


def test_a_stream_run_refuses_naive_times_and_unknown_states(metadata_store: SqlMetadataStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        metadata_store.record_stream(_stream(started_at=datetime(2026, 1, 5, 12, 0)))
    weird = _stream()
    weird.state = "paused"  # type: ignore[assignment]
    with pytest.raises(MetadataStoreError):
        metadata_store.record_stream(weird)


def test_a_batch_keeps_its_positions(metadata_store: SqlMetadataStore) -> None:
    def record(positions: dict[str, int], kind: str) -> BatchRecord:
        return BatchRecord(
            batch_id=f"batch-{uuid.uuid4().hex}",
            source="feed",
            execution_mode="local",
            status="running",
            started_at=T0,
            ingestion_time=T0,
            files=[] if positions else [InputFile("in/a.csv", uuid.uuid4().hex * 2, 10)],
            checksum=uuid.uuid4().hex * 2,
            kind=kind,
            positions=positions,
        )

    topic, folder, plain = record({"0": 41, "2": 7}, "stream"), record({}, "stream"), record({}, "ingest")
    for batch in (topic, folder, plain):
        metadata_store.start_batch(batch)
    metadata_store.finish_batch(
        batch_id=topic.batch_id,
        status="succeeded",
        finished_at=T0 + timedelta(seconds=1),
        record_count=50,
        reconciliation=None,
        layers=[],
        rule_counts={},
    )
    stored = metadata_store.get_batch(topic.batch_id)
    assert stored is not None and stored.positions == {"0": 41, "2": 7} and stored.kind == "stream"
    listed = {b.batch_id: b.positions for b in metadata_store.list_batches(limit=10)}
    assert listed == {topic.batch_id: {"0": 41, "2": 7}, folder.batch_id: {}, plain.batch_id: {}}


def test_the_streams_migration_goes_down_and_up_again(metadata_store: SqlMetadataStore, metadata_url: str) -> None:
    metadata_store.record_stream(_stream())
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", metadata_url.replace("%", "%%"))
    command.downgrade(config, "0005")
    engine = create_engine(metadata_url)
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            assert "streams" not in inspector.get_table_names()
            assert "positions" not in {c["name"] for c in inspector.get_columns("batches")}
    finally:
        engine.dispose()
    metadata_store.migrate()
    assert metadata_store.streams() == []
    assert metadata_store.schema_version() == ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


# --- a stream seen from the API --------------------------------------------------------------------


@pytest.fixture
def lake_settings(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(data_dir=tmp_path / "lake", _env_file=None)  # type: ignore[call-arg]
    app.dependency_overrides[current_settings] = lambda: settings
    yield settings
    app.dependency_overrides.clear()


def _health(settings: Settings) -> dict[str, Any]:
    response = TestClient(app).get("/health")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "ok" and set(body["checks"]) >= {"metadata_database", "table_storage"}
    return body


def _metrics() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = TestClient(app).get("/metrics")
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _stream_samples(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, source: str
) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(item for item in labels if item[0] != "source"): value
        for (sample, labels), value in samples.items()
        if sample == name and ("source", source) in labels
    }


def _state_of(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], source: str) -> str:
    [(labels, _)] = [
        item for item in _stream_samples(samples, "energy_platform_stream_state", source).items() if item[1] == 1.0
    ]
    return dict(labels)["state"]


def _wait_for(what: str, condition: Callable[[], _T | None], seconds: float = 90.0) -> _T:
    deadline = time.monotonic() + seconds
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds:g}s for {what}")
        time.sleep(0.1)


@pytest.fixture
def topic() -> Iterator[tuple[str, str]]:
    servers = bootstrap_servers()
    with fresh_topic(servers, partitions=2) as name:
        yield servers, name


def _produce(servers: str, name: str, day: int = 1) -> None:
    """One reading per meter and hour, alternately to partitions 0 and 1 (not in transactions, so
    a partition read to its end has a lag of exactly 0)."""
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 5})
    readings = [
        {"meter_id": f"M{m}", "timestamp": f"2025-06-{day:02d}T{h:02d}:00Z", "value": 0.5 + m + h / 10, "unit": "kWh"}
        for h in range(HOURS)
        for m in range(METERS)
    ]
    for index, reading in enumerate(readings):
        producer.produce(
            name, key=reading["meter_id"].encode(), value=json.dumps(reading).encode(), partition=index % 2
        )
    assert producer.flush(30) == 0


def _kafka_config(tmp_path: Path, servers: str, name: str) -> Path:
    config = tmp_path / "sources.toml"
    config.write_text(
        f'[sources.feed]\nformat = "kafka"\nbootstrap_servers = "{servers}"\ntopic = "{name}"\n'
        'interval_minutes = 60\ncolumns = { unit = "unit" }\n',
        encoding="utf-8",
    )
    return config


def _outer_environment() -> dict[str, str]:
    """This process's environment without the settings that would change what a command does."""
    outer = ("EXECUTION_MODE", "PROCESSING_MODE", "METADATA_DB_URL", "SOURCES_CONFIG", "LOCAL_ENGINE", "STORAGE_PATH")
    return {k: v for k, v in os.environ.items() if k not in outer}


class StreamThread:
    """`run_stream` in a thread until `stop()`; its summary, or the error it raised."""

    def __init__(self, platform: LocalPlatform, **options: Any) -> None:
        self.event = threading.Event()
        self.summary: StreamSummary | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(platform, options), daemon=True)
        self.thread.start()

    def _run(self, platform: LocalPlatform, options: dict[str, Any]) -> None:
        try:
            self.summary = run_stream(platform, stop=self.event, now=lambda: NOW, **options)
        except BaseException as error:
            self.error = error

    def stop(self) -> StreamSummary:
        self.event.set()
        self.thread.join(120)
        assert not self.thread.is_alive(), "the stream did not stop within 120 s"
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


def test_a_topic_stream_records_positions_state_and_lag_and_the_api_shows_them(
    topic: tuple[str, str], tmp_path: Path, lake_settings: Settings
) -> None:
    servers, name = topic
    config = _kafka_config(tmp_path, servers, name)
    _produce(servers, name)

    with open_platform(lake_settings) as platform:
        # One micro-batch of at most 10 messages, then stop: the rest of the topic is its lag.
        stop = threading.Event()
        first = run_stream(
            platform,
            source_name="feed",
            config_file=config,
            trigger_seconds=0.2,
            max_messages=10,
            stop=stop,
            on_micro_batch=lambda _result: stop.set(),
            now=lambda: NOW,
        )
        [ended] = platform.metadata.streams()
        [batch] = platform.metadata.list_batches(kind="stream")
        taken = first.readings
        assert 1 <= taken <= 10 and len(first.micro_batches) == 1
        assert (ended.state, ended.micro_batches, ended.readings, ended.error) == ("stopped", 1, taken, None)
        assert ended.stopped_at is not None and ended.heartbeat_at == ended.stopped_at
        assert (ended.host, ended.pid, ended.lake) == (socket.gethostname(), os.getpid(), platform.lake)
        assert ended.last_batch_id == batch.batch_id and ended.last_duration_seconds
        assert ended.total_lag == READINGS - taken and set(ended.lag) == {"0", "1"}
        # The micro-batch's positions: the last offset it took per partition, as the lake holds them.
        held = lake_positions(platform, platform.source("feed", config), [0, 1])
        assert batch.positions == {str(p): offset for p, offset in held.items() if offset >= 0}
        assert sum(offset + 1 for offset in batch.positions.values()) == taken
        shown_by_cli = subprocess.run(
            [sys.executable, "-m", "app.cli", "batches", "show", batch.batch_id],
            capture_output=True,
            text=True,
            env={**_outer_environment(), "DATA_DIR": str(lake_settings.data_dir), "COLUMNS": "200"},
            cwd=tmp_path,
            timeout=300,
            check=False,
        )
        offsets = ", ".join(f"{p}: {o}" for p, o in sorted(batch.positions.items()))
        assert shown_by_cli.returncode == 0, shown_by_cli.stderr
        assert f"positions (partition: last offset taken) {offsets}" in shown_by_cli.stdout

        # Restarted, it takes the rest and idles with no lag; the API process sees it running.
        running = StreamThread(platform, source_name="feed", config_file=config, trigger_seconds=0.2)
        try:
            record = _wait_for(
                "the stream to take the rest of the topic and measure no lag",
                lambda: next(
                    (
                        r
                        for r in platform.metadata.streams()
                        if r.run_id != ended.run_id and r.readings == READINGS - taken and r.lag == {"0": 0, "1": 0}
                    ),
                    None,
                ),
            )
            health = _health(lake_settings)
            metrics = _metrics()
        finally:
            summary = running.stop()
        assert summary.readings == READINGS - taken

        [shown] = health["streams"]
        assert shown["source"] == "feed" and shown["state"] == "running" and shown["run_id"] == record.run_id
        assert (shown["lag"], shown["lag_total"]) == ({"0": 0, "1": 0}, 0)
        assert shown["readings"] == READINGS - taken and shown["micro_batches"] >= 1
        assert shown["pid"] == os.getpid() and shown["stale_after_seconds"] == 60.0
        assert 0 <= shown["heartbeat_age_seconds"] < 60 and shown["stopped_at"] is None and shown["error"] is None
        assert shown["last_micro_batch_seconds"] > 0 and shown["readings_per_second"] > 0
        # From the oldest message's timestamp (its produce time) to its micro-batch's end.
        latency = shown["event_to_silver_latency_seconds"]
        assert latency is not None and 0 <= latency < 120

        assert _stream_samples(metrics, "energy_platform_stream_up", "feed") == {(): 1.0}
        assert _state_of(metrics, "feed") == "running"
        assert _stream_samples(metrics, "energy_platform_stream_consumer_lag_messages", "feed") == {
            (("partition", "0"),): 0.0,
            (("partition", "1"),): 0.0,
        }
        assert _stream_samples(metrics, "energy_platform_stream_last_micro_batch_duration_seconds", "feed")[()] > 0
        assert _stream_samples(metrics, "energy_platform_stream_last_readings_per_second", "feed")[()] > 0
        beat = _stream_samples(metrics, "energy_platform_stream_heartbeat_timestamp_seconds", "feed")[()]
        assert abs(beat - time.time()) < 60

        stopped = platform.metadata.get_stream(record.run_id)
        assert stopped is not None and stopped.state == "stopped" and stopped.error is None
        assert [r.run_id for r in platform.metadata.streams()] == [record.run_id]  # the latest run only
        assert _health(lake_settings)["streams"][0]["state"] == "stopped"
        assert _stream_samples(_metrics(), "energy_platform_stream_up", "feed") == {(): 0.0}

        client = TestClient(app)
        detail = client.get(f"/batches/{batch.batch_id}").json()
        assert detail["kind"] == "stream" and detail["positions"] == batch.positions
        assert detail in client.get("/batches").json()


def test_a_stream_stopped_by_a_failed_micro_batch_is_recorded_failed(
    topic: tuple[str, str], tmp_path: Path, lake_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.application import stages
    from app.domain.errors import TableStoreError

    servers, name = topic
    config = _kafka_config(tmp_path, servers, name)
    _produce(servers, name)

    def gold_failing(*_args: Any, **_kwargs: Any) -> Any:
        raise TableStoreError("the disk is full")

    with open_platform(lake_settings) as platform:
        monkeypatch.setattr(stages, "gold", gold_failing)
        with pytest.raises(StreamStoppedError, match="the disk is full"):
            run_stream(platform, source_name="feed", config_file=config, available_now=True, now=lambda: NOW)
        [record] = platform.metadata.streams()
        [batch] = platform.metadata.list_batches(kind="stream")

    assert record.state == "failed" and record.stopped_at is not None
    assert record.error is not None and "failed, so the stream stops" in record.error
    assert "the disk is full" in record.error
    assert (record.micro_batches, record.readings, record.last_batch_id) == (1, 0, batch.batch_id)
    assert batch.status == "failed" and batch.positions  # what it would have taken, for the record
    [shown] = _health(lake_settings)["streams"]
    assert shown["state"] == "failed" and "the disk is full" in shown["error"]
    metrics = _metrics()
    assert _state_of(metrics, "feed") == "failed"
    assert _stream_samples(metrics, "energy_platform_stream_up", "feed") == {(): 0.0}


def test_a_stream_whose_heartbeat_stopped_shows_as_stale(lake_settings: Settings) -> None:
    with open_platform(lake_settings) as platform:
        killed = _stream("meters", started_at=datetime.now(UTC) - timedelta(hours=1))
        killed.trigger_seconds = 30.0
        killed.heartbeat_at = datetime.now(UTC) - timedelta(seconds=91)  # > 3 x 30 s
        fresh = _stream("head_end", started_at=datetime.now(UTC))
        for record in (killed, fresh):
            platform.metadata.record_stream(record)
    streams = {s["source"]: s for s in _health(lake_settings)["streams"]}
    assert streams["meters"]["state"] == "stale" and streams["meters"]["stale_after_seconds"] == 90.0
    assert streams["head_end"]["state"] == "running"
    assert streams["head_end"]["lag"] == {} and streams["head_end"]["lag_total"] is None
    metrics = _metrics()
    assert _state_of(metrics, "meters") == "stale" and _state_of(metrics, "head_end") == "running"
    assert _stream_samples(metrics, "energy_platform_stream_up", "meters") == {(): 0.0}


def test_a_folder_stream_records_the_latency_from_a_files_arrival(tmp_path: Path, lake_settings: Settings) -> None:
    (tmp_path / "sources.toml").write_text(
        '[sources.feed]\npath = "landing"\nunit = "kWh"\ninterval_minutes = 60\n', encoding="utf-8"
    )
    landing = tmp_path / "landing"
    path = write_csv(
        landing / "day1.csv",
        [f"A,2025-06-01T{h:02d}:00Z,{h + 1}" for h in range(24)],
        header="meter_id,timestamp,value",
    )
    arrived = time.time() - 120
    os.utime(path, (arrived, arrived))
    with open_platform(lake_settings) as platform:
        run_stream(
            platform,
            source_name="feed",
            config_file=tmp_path / "sources.toml",
            input_path=str(landing),
            available_now=True,
            now=lambda: NOW,
        )
        [record] = platform.metadata.streams()
        [batch] = platform.metadata.list_batches(kind="stream")
    assert (record.state, record.micro_batches, record.readings) == ("stopped", 1, 24)
    assert record.last_latency_seconds is not None and 120 <= record.last_latency_seconds < 120 + 60
    assert record.lag == {} and batch.positions == {} and batch.files[0].path == str(path)
    detail = TestClient(app).get(f"/batches/{batch.batch_id}").json()
    assert detail["positions"] == {} and detail["kind"] == "stream"
    [shown] = _health(lake_settings)["streams"]
    assert shown["state"] == "stopped" and shown["event_to_silver_latency_seconds"] >= 120
    latency = _stream_samples(_metrics(), "energy_platform_stream_last_event_to_silver_latency_seconds", "feed")
    assert latency[()] >= 120


@pytest.mark.slow
def test_the_stream_command_records_sigterm_as_stopped_and_a_kill_leaves_it_to_go_stale(tmp_path: Path) -> None:
    (tmp_path / "sources.toml").write_text(
        '[sources.feed]\npath = "landing"\nunit = "kWh"\ninterval_minutes = 60\n', encoding="utf-8"
    )
    write_csv(
        tmp_path / "landing" / "day1.csv",
        [f"A,2025-06-01T{h:02d}:00Z,{h + 1}" for h in range(24)],
        header="meter_id,timestamp,value",
    )
    lake = tmp_path / "lake"
    environment = {
        **_outer_environment(),
        "DATA_DIR": str(lake),
        "LOG_FORMAT": "json",
        "SOURCES_CONFIG": str(tmp_path / "sources.toml"),
    }
    metadata = SqlMetadataStore(f"sqlite:///{lake / 'metadata.db'}", create_dirs=False, retry_seconds=5)

    def started() -> tuple[subprocess.Popen[str], StreamRecord]:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "stream", "--source", "feed", "--trigger", "0.5"],
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def seen() -> StreamRecord | None:
            assert process.poll() is None, process.communicate()[1]
            if not (lake / "metadata.db").exists():
                return None
            try:
                return next((r for r in metadata.streams() if r.pid == process.pid), None)
            except MetadataStoreError:  # not migrated yet
                return None

        return process, _wait_for("the stream command's record", seen, seconds=120)

    process, record = started()
    try:
        assert record.state == "running" and record.host == socket.gethostname()
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    stopped = metadata.get_stream(record.run_id)
    assert stopped is not None and stopped.state == "stopped" and stopped.stopped_at is not None

    process, record = started()
    process.kill()  # no chance to say so: it stays recorded as running, and its heartbeat ages
    process.communicate(timeout=60)
    killed = metadata.get_stream(record.run_id)
    metadata.dispose()
    assert killed is not None and killed.state == "running"
    assert killed.shown_state(datetime.now(UTC)) == "running"
    assert killed.shown_state(killed.heartbeat_at + timedelta(seconds=61)) == "stale"
