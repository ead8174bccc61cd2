"""KafkaTopic (app/infrastructure/kafka_topic.py), the TopicReader over Kafka, against a real broker.

The tests that need a broker take it from TEST_KAFKA_BOOTSTRAP (see tests/integration/kafka.py and
scripts/kafka-test-server.sh); without it they skip, except in CI, where they fail. Each creates its
own topic, so offsets start at 0 and the tests can say exactly which messages come back.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from app.application.ports import Message, TopicReader
from app.domain.errors import ConfigurationError, PlatformError
from app.infrastructure.kafka_topic import KafkaTopic
from tests.integration.kafka import bootstrap_servers, delete_topic, fresh_topic, unique_topic

ROOT = Path(__file__).resolve().parents[2]
#: A (partition, offset, key, value) of a message, as the broker acknowledged it or the reader read it.
Row = tuple[int, int, bytes | None, bytes | None]


@pytest.fixture
def servers() -> str:
    return bootstrap_servers()


@pytest.fixture
def topic(servers: str) -> Iterator[str]:
    """A new topic of 3 partitions."""
    with fresh_topic(servers, partitions=3) as name:
        yield name


@pytest.fixture
def readers() -> Iterator[list[KafkaTopic]]:
    """KafkaTopics a test opens, closed after it."""
    opened: list[KafkaTopic] = []
    yield opened
    for reader in opened:
        reader.close()


def _reader(readers: list[KafkaTopic], servers: str, topic: str, **kwargs: object) -> KafkaTopic:
    reader = KafkaTopic(servers, topic, group_id=f"energy-test-{uuid.uuid4().hex}", **kwargs)  # type: ignore[arg-type]
    readers.append(reader)
    return reader


def _produce(
    servers: str, topic: str, transactions: list[tuple[bool, list[tuple[int, str]]]], *, transactional: bool = True
) -> tuple[list[Row], list[Row]]:
    """Send each transaction's (partition, value) messages, keyed by the value's text before its
    first "-", and commit the transaction (True) or abort it (False); without `transactional`, plain
    idempotent sends, every group committed. Returns the messages of the committed transactions and
    of the aborted ones, as the broker acknowledged them (with their offsets)."""
    settings: dict[str, object] = {"bootstrap.servers": servers, "enable.idempotence": True, "linger.ms": 5}
    if transactional:
        settings["transactional.id"] = f"energy-test-{uuid.uuid4().hex}"
    producer = Producer(settings)
    acknowledged: list[Row] = []

    def acknowledge(error: object, message: Any) -> None:
        assert error is None, error
        acknowledged.append((message.partition(), message.offset(), message.key(), message.value()))

    committed: list[Row] = []
    aborted: list[Row] = []
    if transactional:
        producer.init_transactions(20)
    for commit, messages in transactions:
        if transactional:
            producer.begin_transaction()
        for partition, value in messages:
            key = value.split("-")[0].encode()
            producer.produce(topic, key=key, value=value.encode(), partition=partition, on_delivery=acknowledge)
        # Every delivery report (with its offset) before the transaction ends.
        assert producer.flush(20) == 0
        if transactional:
            (producer.commit_transaction if commit else producer.abort_transaction)(20)
        (committed if commit else aborted).extend(acknowledged)
        acknowledged.clear()
    return committed, aborted


def _read_all(reader: TopicReader, count: int, *, max_messages: int = 5, deadline_seconds: float = 15.0) -> list[Row]:
    """Poll until `count` messages came (or the deadline passed), then once more to show that no more come."""
    rows: list[Message] = []
    deadline = time.monotonic() + deadline_seconds
    while len(rows) < count and time.monotonic() < deadline:
        batch = reader.poll(max_messages=max_messages, timeout_seconds=2.0)
        assert len(batch) <= max_messages
        rows += batch
    rows += reader.poll(max_messages=max_messages, timeout_seconds=0.5)
    for partition in {m.partition for m in rows}:
        offsets = [m.offset for m in rows if m.partition == partition]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), f"partition {partition}: {offsets}"
    return [(m.partition, m.offset, m.key, m.value) for m in rows]


def test_only_committed_transactions_are_read_with_their_partitions_and_offsets(
    servers: str, topic: str, readers: list[KafkaTopic]
) -> None:
    transactions = [
        (True, [(p, f"first-{p}-{i}") for p in range(3) for i in range(2)]),
        (False, [(p, f"aborted-{p}-{i}") for p in range(3) for i in range(2)]),
        (True, [(p, f"second-{p}-{i}") for p in range(3) for i in range(3)]),
        # The last transaction of partition 1 is aborted: nothing of it may leak at the end of the log.
        (False, [(1, f"tail-1-{i}") for i in range(2)]),
    ]
    committed, aborted = _produce(servers, topic, transactions)
    assert len(committed) == 15 and len(aborted) == 8
    reader = _reader(readers, servers, topic)
    assert reader.topic == topic
    assert reader.partitions() == [0, 1, 2]

    reader.seek({})
    started = time.monotonic()
    first = reader.poll(max_messages=1000, timeout_seconds=10)
    # The first poll returns once messages are there, not when the timeout runs out.
    assert first and time.monotonic() - started < 8
    # Each carries its produce time, from which a stream measures event-to-silver latency.
    stamps = [m.timestamp for m in first]
    assert all(s is not None and s.tzinfo is not None and abs(time.time() - s.timestamp()) < 120 for s in stamps)
    rows = [(m.partition, m.offset, m.key, m.value) for m in first] + _read_all(reader, 15 - len(first))

    assert sorted(rows) == sorted(committed)
    assert not {value for *_, value in rows} & {value for *_, value in aborted}
    # The broker put the commit markers and the aborted messages between: the offsets have gaps.
    assert sorted(offset for partition, offset, *_ in rows if partition == 0) == [0, 1, 6, 7, 8]
    assert reader.poll(max_messages=10, timeout_seconds=0.2) == []


def test_seek_resumes_after_the_positions(servers: str, topic: str, readers: list[KafkaTopic]) -> None:
    committed, _ = _produce(
        servers, topic, [(True, [(p, f"m{p}-{i}") for p in range(3) for i in range(5)])], transactional=False
    )
    reader = _reader(readers, servers, topic)
    positions = {0: 2, 1: 4}  # partition 1 was read to its end; partition 2 not at all

    reader.seek(positions)
    rows = _read_all(reader, 2 + 0 + 5)

    assert sorted(rows) == sorted(r for r in committed if r[1] > positions.get(r[0], -1))
    assert {(p, o) for p, o, *_ in rows} == {(0, 3), (0, 4), *((2, o) for o in range(5))}
    # Without transactions there are no markers: read to the end is a lag of 0.
    assert reader.lag() == {0: 0, 1: 0, 2: 0}

    # Seeking again goes back.
    reader.seek({0: 3})
    again = _read_all(reader, 1 + 5 + 5)
    assert sorted(again) == sorted(r for r in committed if r[0] != 0 or r[1] > 3)

    with pytest.raises(ConfigurationError, match=r"partition\(s\) \[7\]"):
        reader.seek({7: 0})


def test_a_missing_topic_is_a_configuration_error_naming_it(servers: str, readers: list[KafkaTopic]) -> None:
    name = unique_topic("energy-test-missing")
    reader = _reader(readers, servers, name)
    expected = rf"{re.escape(name)}.*does not exist on {re.escape(servers)}"
    with pytest.raises(ConfigurationError, match=expected):
        reader.partitions()
    with pytest.raises(ConfigurationError, match=expected):
        reader.seek({})


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"isolation.level": "read_uncommitted"}, "isolation.level"),
        ({"enable.auto.commit": True}, "enable.auto.commit"),
        ({"enable.auto.commit": "true"}, "enable.auto.commit"),
        ({"enable.auto.offset.store": 1}, "enable.auto.offset.store"),
        ({"group.id": "other"}, "group.id"),
        ({"bootstrap.servers": "other:9092"}, "bootstrap.servers"),
        ({"metadata.broker.list": "other:9092"}, "metadata.broker.list"),
        ({"no.such.setting": "1"}, "no.such.setting"),
    ],
)
def test_consumer_settings_that_would_change_the_reading_are_refused_by_name(
    settings: dict[str, str | int | bool], named: str
) -> None:
    # Refused before any broker is asked: this test needs none.
    with pytest.raises(ConfigurationError, match=re.escape(named)):
        KafkaTopic("127.0.0.1:1", "readings", group_id="energy-test", consumer=settings)


def test_consumer_settings_that_keep_the_reading_are_taken() -> None:
    settings: dict[str, str | int | bool] = {
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "fetch.max.bytes": 1048576,
    }
    KafkaTopic("127.0.0.1:1", "readings", group_id="energy-test", consumer=settings).close()


def test_a_broker_out_of_reach_is_a_platform_error_naming_it() -> None:
    reader = KafkaTopic("127.0.0.1:1", "readings", group_id="energy-test", timeout_seconds=1)
    try:
        with pytest.raises(PlatformError, match=r"no Kafka broker at 127\.0\.0\.1:1 answered") as raised:
            reader.partitions()
        assert not isinstance(raised.value, ConfigurationError)
    finally:
        reader.close()
        reader.close()  # closing twice is harmless


@pytest.mark.slow
@pytest.mark.parametrize("transactional", [True, False], ids=["transactional", "plain"])
def test_produce_readings_example_writes_json_a_reader_reads_back(
    servers: str, tmp_path: Path, readers: list[KafkaTopic], transactional: bool
) -> None:
    csv_file = tmp_path / "readings.csv"
    csv_file.write_text(
        "meter_id,timestamp,value,unit,quality\n"
        "MTR-0001,2025-03-01T00:00:00+00:00,0.412,kWh,actual\n"
        "MTR-0002,2025-03-01T00:00:00+00:00,12,Wh,actual\n"
        "MTR-0001,2025-03-01T00:30:00+00:00,n/a,kWh,estimated\n"
        "MTR-0003,2025-03-01T00:00:00+00:00,,kWh,missing\n"
        "MTR-0002,2025-03-01T00:30:00+00:00,1.5e3,Wh,actual\n",
        encoding="utf-8",
    )
    name = unique_topic("energy-test-example")
    command = [sys.executable, str(ROOT / "examples" / "produce_readings.py"), str(csv_file)]
    command += ["--bootstrap-servers", servers, "--topic", name, "--create-topic", "--partitions", "2"]
    if transactional:
        command += ["--transactional", "--per-transaction", "2"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"sent 5 message(s) to topic {name}"), done.stdout

        reader = _reader(readers, servers, name)
        assert reader.partitions() == [0, 1]
        reader.seek({})
        rows = _read_all(reader, 5)
    finally:
        delete_topic(servers, name)

    assert len(rows) == 5
    records = [(key, json.loads(value or b"")) for _, _, key, value in rows]
    assert all(key == record["meter_id"].encode() for key, record in records)
    # One meter's readings are in one partition, in file order.
    assert len({(key, partition) for (key, _), (partition, *_) in zip(records, rows, strict=True)}) == 3
    by_time = {(r["meter_id"], r["timestamp"]): r for _, r in records}
    assert by_time[("MTR-0001", "2025-03-01T00:00:00+00:00")] == {
        "meter_id": "MTR-0001",
        "timestamp": "2025-03-01T00:00:00+00:00",
        "value": 0.412,
        "unit": "kWh",
        "quality": "actual",
    }
    assert by_time[("MTR-0002", "2025-03-01T00:00:00+00:00")]["value"] == 12
    assert by_time[("MTR-0001", "2025-03-01T00:30:00+00:00")]["value"] == "n/a"  # not a number: text
    assert by_time[("MTR-0003", "2025-03-01T00:00:00+00:00")]["value"] == ""
    assert by_time[("MTR-0002", "2025-03-01T00:30:00+00:00")]["value"] == 1500.0


def test_lag_is_near_zero_when_read_and_counts_what_is_not(servers: str, topic: str, readers: list[KafkaTopic]) -> None:
    committed, _ = _produce(servers, topic, [(True, [(p, f"a{p}-{i}") for p in range(3) for i in range(4)])])
    reader = _reader(readers, servers, topic)
    reader.seek({})
    assert sum(reader.lag().values()) >= 12
    rows = _read_all(reader, len(committed))
    assert sorted(rows) == sorted(committed)

    read = reader.lag()
    assert set(read) == {0, 1, 2}
    # The high watermark counts the commit marker, which is never delivered: up to 2, not 0.
    assert all(0 <= lag <= 2 for lag in read.values()), read

    _produce(servers, topic, [(True, [(i % 3, f"b{i % 3}-{i}") for i in range(10)])])
    unread = reader.lag()
    assert sum(unread.values()) >= 10, unread
    assert all(unread[p] >= read[p] for p in unread)


def test_commit_records_the_positions_as_the_groups_offsets(
    servers: str, topic: str, readers: list[KafkaTopic]
) -> None:
    reader = _reader(readers, servers, topic)
    reader.seek({})
    reader.commit({0: 4, 2: 0})
    reader.commit({})  # nothing to record

    probe = Consumer({"bootstrap.servers": servers, "group.id": reader.group_id})
    try:
        deadline = time.monotonic() + 15
        offsets: dict[int, int] = {}
        while time.monotonic() < deadline and offsets != {0: 5, 1: -1001, 2: 1}:
            reader.poll(max_messages=1, timeout_seconds=0.2)  # serves the commit's callback
            found = probe.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
            offsets = {tp.partition: tp.offset for tp in found}
    finally:
        probe.close()
    assert offsets == {0: 5, 1: -1001, 2: 1}  # -1001: nothing committed for partition 1
