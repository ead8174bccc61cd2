"""Streaming mode over a Kafka topic on a real broker: committed messages only, each once, with the
positions kept in the lake, to the same tables a batch of the same readings gives."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.application.pipeline import BatchResult
from app.application.ports import Message
from app.application.runner import run_batch
from app.application.streaming import StreamStoppedError, StreamSummary, lake_positions, run_stream
from app.infrastructure.kafka_topic import KafkaTopic
from app.infrastructure.settings import Settings
from app.wiring import LocalPlatform, open_platform
from tests.integration.conftest import NOW, read_table
from tests.integration.kafka import Record, bootstrap_servers, fresh_topic, produce_transactions

DROPPED = {"batch_id", "ingested_at", "updated_at", "quarantined_at", "source_file", "line_number"}


@pytest.fixture
def topic() -> Iterator[tuple[str, str]]:
    servers = bootstrap_servers()
    with fresh_topic(servers, partitions=3) as name:
        yield servers, name


def _readings(meters: int, hours: range, day: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "meter_id": f"M{m}",
            "timestamp": f"2025-06-{day:02d}T{h:02d}:00Z",
            "value": round(0.5 + m + h / 10, 3),
            "unit": "kWh",
        }
        for h in hours
        for m in range(meters)
    ]


def _produce(
    servers: str, topic: str, readings: list[dict[str, Any]], *, per_transaction: int, abort_every: int
) -> None:
    """Send readings in committed transactions; after every `abort_every`-th, a transaction of
    the same readings with value 999 that is aborted, so it must never land. Each call is a new
    producer with a transactional id of its own: two producers under one id fence each other (a
    run of the second call under the first's id had its abort refused, INVALID_TXN_STATE)."""

    def records(chunk: list[dict[str, Any]], value: float | None = None) -> list[Record]:
        sent = chunk if value is None else [{**r, "value": value} for r in chunk]
        return [(r["meter_id"].encode(), json.dumps(r).encode()) for r in sent]

    transactions: list[tuple[list[Record], bool]] = []
    for number, start in enumerate(range(0, len(readings), per_transaction), start=1):
        chunk = readings[start : start + per_transaction]
        transactions.append((records(chunk), True))
        if abort_every and number % abort_every == 0:
            transactions.append((records(chunk, 999), False))
    produce_transactions(servers, topic, transactions, transactional_id=f"test-{topic}-{uuid.uuid4().hex}")


def _config(tmp_path: Path, servers: str, topic: str) -> Path:
    config = tmp_path / "sources.toml"
    config.write_text(
        f'[sources.feed]\nformat = "kafka"\nbootstrap_servers = "{servers}"\ntopic = "{topic}"\n'
        'interval_minutes = 60\ncolumns = { unit = "unit" }\n'
        '[sources.files]\npath = "in"\ninterval_minutes = 60\ncolumns = { unit = "unit" }\n',
        encoding="utf-8",
    )
    return config


def _tables(platform: LocalPlatform) -> dict[str, list[dict[str, Any]]]:
    """Rows without lineage; sums rounded to 1e-9 kWh, as the order of a sum's terms differs."""
    return {
        name: [
            {k: round(v, 9) if isinstance(v, float) else v for k, v in r.items() if k not in DROPPED | {"source"}}
            for r in read_table(platform, name).to_pylist()
        ]
        for name in ("silver_readings", "gold_daily_meter_energy", "gold_hourly_portfolio_load")
    }


def _batch_tables(
    tmp_path: Path, config: Path, readings: list[dict[str, Any]], name: str
) -> dict[str, list[dict[str, Any]]]:
    """The tables one batch run over a file of `readings` gives."""
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.csv"):
        old.unlink()
    (folder / "readings.csv").write_text(
        "meter_id,timestamp,value,unit\n"
        + "".join(f"{r['meter_id']},{r['timestamp']},{r['value']},{r['unit']}\n" for r in readings),
        encoding="utf-8",
    )
    settings = Settings(data_dir=tmp_path / name, _env_file=None)  # type: ignore[call-arg]
    with open_platform(settings) as platform:
        result = run_batch(platform, source_name="files", config_file=config, now=NOW)
        assert result.status == "succeeded", result.error
        return _tables(platform)


def test_a_topic_streams_committed_readings_once_to_the_tables_a_batch_gives(
    topic: tuple[str, str], tmp_path: Path
) -> None:
    servers, name = topic
    config = _config(tmp_path, servers, name)
    readings = _readings(6, range(24))
    repeats = readings[:5]  # exact repeats, as a producer's retry sends them
    _produce(servers, name, readings + repeats, per_transaction=25, abort_every=2)

    settings = Settings(data_dir=tmp_path / "stream", _env_file=None)  # type: ignore[call-arg]
    with open_platform(settings) as platform:
        first = run_stream(
            platform, source_name="feed", config_file=config, available_now=True, max_messages=40, now=lambda: NOW
        )
        assert first.failed == 0 and len(first.micro_batches) >= 2
        assert first.readings == len(readings) + len(repeats)  # committed ones only: no aborted message
        assert {b.kind for b in platform.metadata.list_batches(limit=50)} == {"stream"}

        later = _readings(6, range(24), day=2)
        _produce(servers, name, later, per_transaction=50, abort_every=1)
        second = run_stream(platform, source_name="feed", config_file=config, available_now=True, now=lambda: NOW)
        assert second.readings == len(later)  # only what is new: positions come from the lake
        positions = lake_positions(platform, platform.source("feed", config), [0, 1, 2])
        streamed = _tables(platform)
        bronze_values = set(read_table(platform, "bronze_feed")["value"].to_pylist())

    assert all(p >= 0 for p in positions.values())
    assert "999" not in bronze_values
    assert streamed == _batch_tables(tmp_path, config, readings + later, "batch")


def test_a_failed_micro_batch_stops_the_stream_and_loses_nothing(
    topic: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.application import stages
    from app.domain.errors import TableStoreError

    servers, name = topic
    config = _config(tmp_path, servers, name)
    readings = _readings(4, range(24))
    _produce(servers, name, readings, per_transaction=24, abort_every=3)
    real_gold = stages.gold
    calls = {"n": 0}

    def gold_failing_on_the_second(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise TableStoreError("the disk is full")
        return real_gold(*args, **kwargs)

    settings = Settings(data_dir=tmp_path / "stream", _env_file=None)  # type: ignore[call-arg]
    with open_platform(settings) as platform:
        monkeypatch.setattr(stages, "gold", gold_failing_on_the_second)
        with pytest.raises(StreamStoppedError, match="the disk is full"):
            run_stream(
                platform, source_name="feed", config_file=config, available_now=True, max_messages=30, now=lambda: NOW
            )
        monkeypatch.undo()
        again = run_stream(
            platform, source_name="feed", config_file=config, available_now=True, max_messages=30, now=lambda: NOW
        )
        assert again.failed == 0
        streamed = _tables(platform)

    assert streamed == _batch_tables(tmp_path, config, readings, "batch")


def test_run_batch_on_a_topic_source_points_to_stream(
    topic: tuple[str, str], tmp_path: Path, platform: LocalPlatform
) -> None:
    from app.domain.errors import ConfigurationError

    servers, name = topic
    with pytest.raises(ConfigurationError, match="energy-platform stream --source feed"):
        run_batch(platform, source_name="feed", config_file=_config(tmp_path, servers, name))


@pytest.mark.slow
def test_a_restart_rolls_a_killed_micro_batch_back_before_it_reads_its_positions(tmp_path: Path) -> None:
    """Reproducer: the killed micro-batch's bronze commit recorded its positions; a restart read
    them before recovery rolled that commit back, so it sought past messages no table kept."""
    import os
    import subprocess
    import sys

    servers = bootstrap_servers()
    with fresh_topic(servers, partitions=1) as name:
        _produce(servers, name, _readings(1, range(20)), per_transaction=20, abort_every=0)
        config = _config(tmp_path, servers, name)
        env = {**os.environ, "DATA_DIR": str(tmp_path / "lake"), "LOG_FORMAT": "json"}
        args = ["stream", "--source", "feed", "--config", str(config), "--available-now", "--max-messages", "10"]
        root = Path(__file__).resolve().parents[2]
        killed = subprocess.run(
            [sys.executable, "-m", "tests.integration.crash_run", "after silver commit", *args],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert killed.returncode == -9, killed.stderr
        again = subprocess.run(
            [sys.executable, "-m", "app.cli", *args], env=env, cwd=root, capture_output=True, text=True, timeout=120
        )
        assert again.returncode == 0, again.stderr

    settings = Settings(data_dir=tmp_path / "lake", _env_file=None)  # type: ignore[call-arg]
    with open_platform(settings) as platform:
        assert sorted(read_table(platform, "bronze_feed")["line_number"].to_pylist()) == list(range(20))
        assert read_table(platform, "silver_readings").num_rows == 20


def test_a_busy_topics_micro_batches_start_a_trigger_interval_apart(
    topic: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trigger is the micro-batch interval, start to start: with more messages waiting than a
    micro-batch takes, the next one still starts a trigger after the one before, not as soon as
    that one is done (what arrives meanwhile joins it); `--available-now` waits for none. The
    start of each is when its poll returned messages."""
    servers, name = topic
    config = _config(tmp_path, servers, name)
    _produce(servers, name, _readings(6, range(24)), per_transaction=48, abort_every=0)
    starts: list[float] = []
    poll = KafkaTopic.poll

    def timed_poll(self: KafkaTopic, *, max_messages: int, timeout_seconds: float) -> list[Message]:
        messages = poll(self, max_messages=max_messages, timeout_seconds=timeout_seconds)
        if messages:
            starts.append(time.monotonic())
        return messages

    monkeypatch.setattr(KafkaTopic, "poll", timed_poll)

    def stream(lake: str, **options: Any) -> StreamSummary:
        settings = Settings(data_dir=tmp_path / lake, _env_file=None)  # type: ignore[call-arg]
        with open_platform(settings) as platform:
            return run_stream(
                platform, source_name="feed", config_file=config, max_messages=20, now=lambda: NOW, **options
            )

    drained = stream("drained", trigger_seconds=60.0, available_now=True)
    # --available-now takes what is there at once: none of its micro-batches waits for the trigger.
    assert len(drained.micro_batches) == 8 and starts[-1] - starts[0] < 60.0, starts
    starts.clear()
    stop = threading.Event()
    results: list[BatchResult] = []

    def on_micro_batch(result: BatchResult) -> None:
        results.append(result)
        if len(results) == 3:
            stop.set()

    trigger = 1.5
    summary = stream("stream", trigger_seconds=trigger, stop=stop, on_micro_batch=on_micro_batch)

    assert [r.status for r in results] == ["succeeded"] * 3 and summary.readings == 60
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert len(gaps) == 2 and min(gaps) >= trigger * 0.95, gaps
