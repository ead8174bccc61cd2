"""Send a CSV file of meter readings to a Kafka topic, one JSON message per row, for a stream to read.

The file's header must name at least `meter_id`, `timestamp`, `value` and `unit`; other columns are
passed through. Each row becomes one message: its key the meter id (so one meter's readings go to
one partition, in file order), its value a JSON object of the row's fields, all as text except
`value`, which is a JSON number when it parses as one, e.g.

    key: MTR-0001    value: {"meter_id": "MTR-0001", "timestamp": "2025-03-01T00:00:00+00:00",
                             "value": 0.412, "unit": "kWh"}

With --transactional the rows go in transactions of --per-transaction rows each, under a
transactional id: a reader at isolation level read_committed (as the platform's) sees a
transaction's rows all at once, or, when it is aborted, never.

Run:
    python examples/produce_readings.py readings.csv --topic readings
    python examples/produce_readings.py readings.csv --bootstrap-servers 127.0.0.1:59092 --topic readings \\
        --create-topic --partitions 3 --transactional --per-transaction 500
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import math
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

REQUIRED_COLUMNS = ("meter_id", "timestamp", "value", "unit")
#: How long the broker has to answer a metadata or admin request, and to commit a transaction.
TIMEOUT_SECONDS = 30.0


class ProduceError(Exception):
    """Why the file could not be sent; printed without a traceback."""


def number_or_text(text: str) -> int | float | str:
    """`text` as a JSON number when it is one (an integer, a decimal, an exponent), else unchanged."""
    stripped = text.strip()
    if not stripped or "_" in stripped:  # Python reads "1_000" as a number; a file means text by it
        return text
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        parsed = float(stripped)
    except ValueError:
        return text
    return parsed if math.isfinite(parsed) else text  # JSON has no NaN or Infinity


def readings(path: Path, *, delimiter: str, encoding: str) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) of each row of the file, as the messages carry them; the header is checked at
    once, before anything is sent."""
    handle = path.open(newline="", encoding=encoding)
    rows = csv.DictReader(handle, delimiter=delimiter)
    try:
        missing = [c for c in REQUIRED_COLUMNS if c not in (rows.fieldnames or [])]
    except BaseException:
        handle.close()
        raise
    if missing:
        handle.close()
        raise ProduceError(f"{path}: the header {rows.fieldnames or []} lacks column(s) {', '.join(missing)}")
    return _records(path, handle, rows)


def _records(path: Path, handle: TextIO, rows: csv.DictReader[str]) -> Iterator[tuple[bytes | None, bytes]]:
    with handle:
        for row in rows:
            if None in row:
                raise ProduceError(f"{path}, line {rows.line_num}: more fields than the header has columns")
            # A short row lacks its last fields: null in JSON, as a missing field is to the reader.
            record: dict[str, Any] = {str(name): field for name, field in row.items()}
            if record["value"] is not None:
                record["value"] = number_or_text(record["value"])
            meter = record["meter_id"]
            yield (meter.encode() if meter else None), json.dumps(record, ensure_ascii=False).encode()


def create_topic(servers: str, topic: str, partitions: int, replication_factor: int) -> None:
    admin = AdminClient({"bootstrap.servers": servers})
    future = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor)],
        operation_timeout=TIMEOUT_SECONDS,
    )[topic]
    try:
        future.result(timeout=TIMEOUT_SECONDS)
    except KafkaException as exc:
        error = exc.args[0]
        if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise ProduceError(f"cannot create topic {topic!r} on {servers}: {error.str()}") from exc
        print(f"topic {topic} exists already; its partitions stay as they are", file=sys.stderr)
    else:
        print(f"created topic {topic} with {partitions} partition(s)", file=sys.stderr)


def check_topic(producer: Producer, servers: str, topic: str) -> None:
    """A producer would wait minutes for a topic that does not exist; say so at once instead."""
    try:
        found = producer.list_topics(topic, timeout=TIMEOUT_SECONDS).topics.get(topic)
    except KafkaException as exc:
        raise ProduceError(f"no Kafka broker at {servers} answered within {TIMEOUT_SECONDS:g}s: {exc}") from exc
    if found is None or found.error is not None:
        detail = found.error.str() if found is not None and found.error is not None else "unknown topic"
        raise ProduceError(
            f"topic {topic!r} is not available on {servers} ({detail}); create it or pass --create-topic"
        )


class Sender:
    """Produces messages, counting those the broker acknowledged and the first failure."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.acknowledged = 0
        self.failure: KafkaError | None = None

    def _delivered(self, error: KafkaError | None, _message: object) -> None:
        if error is None:
            self.acknowledged += 1
        elif self.failure is None:
            self.failure = error

    def send(self, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(self.topic, key=key, value=value, on_delivery=self._delivered)
                return
            except BufferError:  # the local queue is full: let deliveries make room
                self.producer.poll(0.5)


def send_plain(sender: Sender, rows: Iterator[tuple[bytes | None, bytes]]) -> int:
    """Send the rows; returns the messages the broker acknowledged. Rows before a bad line are sent."""
    try:
        for key, value in rows:
            sender.send(key, value)
    except ProduceError as exc:
        sender.producer.flush(TIMEOUT_SECONDS * 10)
        raise ProduceError(f"{sender.acknowledged} message(s) sent, then: {exc}") from exc
    remaining = sender.producer.flush(TIMEOUT_SECONDS * 10)
    if sender.failure is not None or remaining:
        reason = sender.failure.str() if sender.failure is not None else f"{remaining} message(s) still unsent"
        raise ProduceError(f"{sender.acknowledged} message(s) sent, then: {reason}")
    return sender.acknowledged


def send_transactions(sender: Sender, rows: Iterator[tuple[bytes | None, bytes]], per_transaction: int) -> int:
    """Send the rows in transactions of `per_transaction`; returns the messages committed. The
    transactions before a bad line are committed; the one it falls in is never begun."""
    producer, committed, transactions = sender.producer, 0, 0
    producer.init_transactions(TIMEOUT_SECONDS)
    while True:
        try:
            batch = list(itertools.islice(rows, per_transaction))
        except ProduceError as exc:
            raise ProduceError(
                f"{committed} message(s) committed in {transactions} transaction(s), then: {exc}"
            ) from exc
        if not batch:
            return committed
        producer.begin_transaction()
        try:
            for key, value in batch:
                sender.send(key, value)
            producer.commit_transaction(TIMEOUT_SECONDS)
        except KafkaException as exc:
            with contextlib.suppress(KafkaException):  # the commit's error says what went wrong
                producer.abort_transaction(TIMEOUT_SECONDS)
            raise ProduceError(
                f"{committed} message(s) committed in {transactions} transaction(s); the next one was aborted: "
                f"{exc.args[0].str() if exc.args else exc}"
            ) from exc
        committed += len(batch)
        transactions += 1


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Send a CSV of meter readings to a Kafka topic, one JSON message per row, keyed by meter id."
    )
    parser.add_argument("csv", type=Path, help="the readings file; its header names meter_id,timestamp,value,unit")
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
        help="host:port[,host:port...] (default: $KAFKA_BOOTSTRAP_SERVERS or localhost:9092)",
    )
    parser.add_argument("--topic", required=True)
    parser.add_argument("--delimiter", default=",", help="the file's field separator (default ,)")
    parser.add_argument("--encoding", default="utf-8-sig", help="the file's encoding (default UTF-8, BOM or not)")
    parser.add_argument("--transactional", action="store_true", help="send in transactions (read_committed readers)")
    parser.add_argument("--per-transaction", type=int, metavar="N", help="rows per transaction (default 1000)")
    parser.add_argument(
        "--transactional-id", help="the producer's transactional id (default: produce-readings-<random>)"
    )
    parser.add_argument("--create-topic", action="store_true", help="create the topic first if it does not exist")
    parser.add_argument("--partitions", type=int, default=1, metavar="N", help="partitions of a created topic")
    parser.add_argument("--replication-factor", type=int, default=1, metavar="N", help="replicas of a created topic")
    arguments = parser.parse_args(argv)
    if not arguments.transactional and (arguments.transactional_id or arguments.per_transaction is not None):
        parser.error("--per-transaction and --transactional-id need --transactional")
    if arguments.per_transaction is None:
        arguments.per_transaction = 1000
    if arguments.per_transaction < 1 or arguments.partitions < 1 or arguments.replication_factor < 1:
        parser.error("--per-transaction, --partitions and --replication-factor must be at least 1")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    servers, topic = arguments.bootstrap_servers, arguments.topic
    settings: dict[str, Any] = {"bootstrap.servers": servers, "enable.idempotence": True, "linger.ms": 20}
    if arguments.transactional:
        settings["transactional.id"] = arguments.transactional_id or f"produce-readings-{uuid.uuid4().hex}"
    try:
        rows = readings(arguments.csv, delimiter=arguments.delimiter, encoding=arguments.encoding)
        if arguments.create_topic:
            create_topic(servers, topic, arguments.partitions, arguments.replication_factor)
        producer = Producer(settings)
        check_topic(producer, servers, topic)
        sender = Sender(producer, topic)
        if arguments.transactional:
            sent = send_transactions(sender, rows, arguments.per_transaction)
        else:
            sent = send_plain(sender, rows)
    except (ProduceError, OSError, UnicodeDecodeError, csv.Error, KafkaException) as exc:
        print(f"produce_readings: error: {exc}", file=sys.stderr)
        return 1
    mode = f" in transactions of up to {arguments.per_transaction}" if arguments.transactional else ""
    print(f"sent {sent} message(s) to topic {topic} on {servers}{mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
