"""Benchmark of `energy-platform stream` over a Kafka topic: sustained readings/s into silver and
event-to-silver latency (p50, p95).

    python -m bench.stream_throughput [--readings 1500000] [--meters 20000] [--rate 0] [--trigger 5]
        [--partitions 3] [--bootstrap HOST:PORT] [--topic NAME] [--max-messages N] [--compact-every N]
        [--consumer KEY=VALUE ...] [--keep DIR]

What runs. A fresh lake in a temporary folder, a `format = "kafka"` source over a new topic of
`--partitions` partitions (created here and deleted at the end; `--topic` takes an existing, empty
topic instead and leaves it), and the stream as users run it: `python -m app.cli stream --trigger
T` in its own process, JSON logs on its stderr. This process is the producer: one JSON reading
per message, as the README's event schema has it (`{"meter_id", "timestamp", "value", "unit"}`,
key = the meter id), 15-minute intervals of `--meters` meters, interval by interval, oldest
first, ending with the last interval that has ended (so none is in the future), e.g. 1.5M
readings of 20,000 meters are the last 75 intervals (18.75 h). `--rate R` sends R readings per
second (paced every 500 messages), `--rate 0` as fast as the producer can (the stream then
works through a backlog: that measures its capacity, not latency at a rate).

Warm-up. One interval of every meter (the one before the measured ones) goes first; the
measurement starts once the stream has committed it, so process start-up, the first consumer
fetch and the creation of the tables are not counted, and the measured micro-batches have
stored silver as VEE context, as a running stream does.

Figures.
- readings/s = measured readings / seconds, where seconds runs from the first measured
  message's produce time to the silver commit of the last micro-batch holding measured
  messages. With `--rate R` below capacity it tends to R; a stream that keeps up shows a flat
  latency over the run (the table's latency by fifths of the run), one that does not a growing one.
- steady readings/s = readings of the measured micro-batches after the first / time between
  the first's and the last's silver commits: the rate at which silver grows once running.
- latency of a message = the timestamp of the silver commit of the micro-batch that took it
  minus its Kafka message timestamp. The message timestamp is its CreateTime, which librdkafka
  sets when `produce()` is called here, read back from the delivery report with the
  partition and offset the broker gave it. The micro-batch of each (partition, offset) is
  read from the bronze table afterwards (lineage: `source_file` = `kafka:<topic>/<partition>`,
  `line_number` = offset, `batch_id`). The silver commit of a batch is its entry in the silver
  table's Delta log (`DeltaTable.history()`: the commit's `timestamp`, tagged with its
  `batch_id`): the moment the readings are in silver for a reader (gold and the metadata
  store's `finished_at` come after). All clocks are this machine's, so the difference is sound.
  Time in the producer's queue (linger), in Kafka and waiting for the next micro-batch counts,
  as it does for a user.
- micro-batches and their mean duration come from the stream's `batch_completed` log events
  (the pipeline's own time, from its metadata record to its finish); `cycle` is the mean time
  between the silver commits of consecutive micro-batches, which adds polling, the lock,
  recovery checks and the gap between batches.

The stream, the producer and the single Kafka broker share this machine's cores: the figures are
for the whole set-up on this machine, and the load average before and after is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from deltalake import DeltaTable

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "bench_feed"
INTERVAL = timedelta(minutes=15)
TARGET_READINGS_PER_SECOND = 25_000
TARGET_P95_SECONDS = 30.0
ADMIN_TIMEOUT = 30.0


def parse_count(text: str) -> int:
    """1500000, 1.5M, 200k."""
    text = text.strip().lower().replace("_", "").replace(",", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


# -- the topic --------------------------------------------------------------------------------


@contextmanager
def bench_topic(servers: str, name: str | None, partitions: int) -> Iterator[str]:
    """`name` as given (left as it is afterwards), or a new uniquely named topic, deleted afterwards."""
    if name:
        yield name
        return
    name = f"bench-stream-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": servers})
    future = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)], operation_timeout=ADMIN_TIMEOUT
    )[name]
    future.result(timeout=ADMIN_TIMEOUT)
    try:
        deadline = time.monotonic() + ADMIN_TIMEOUT
        while True:  # every partition with a leader before anything is produced
            found = admin.list_topics(name, timeout=ADMIN_TIMEOUT).topics.get(name)
            if (
                found is not None
                and found.error is None
                and len(found.partitions) == partitions
                and all(p.leader >= 0 for p in found.partitions.values())
            ):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"topic {name} has no leader for every partition after {ADMIN_TIMEOUT:g}s")
            time.sleep(0.05)
        yield name
    finally:
        future = admin.delete_topics([name], operation_timeout=ADMIN_TIMEOUT)[name]
        try:
            future.result(timeout=ADMIN_TIMEOUT)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                print(f"could not delete topic {name}: {exc}", file=sys.stderr)


# -- the producer -----------------------------------------------------------------------------


class Deliveries:
    """Partition, offset and Kafka timestamp (ms) of each message the broker acknowledged."""

    def __init__(self) -> None:
        self.partitions = array("q")
        self.offsets = array("q")
        self.timestamps = array("q")
        self.failures = 0
        self.first_error: str | None = None

    def __call__(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self.failures += 1
            self.first_error = self.first_error or error.str()
            return
        self.partitions.append(message.partition())
        self.offsets.append(message.offset())
        self.timestamps.append(message.timestamp()[1])

    def __len__(self) -> int:
        return len(self.offsets)


def readings(meters: int, slots: list[datetime]) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) per reading: every meter's reading of one interval, then the next interval's."""
    ids = [f"MTR-{m:06d}" for m in range(meters)]
    keys = [i.encode() for i in ids]
    for slot_index, slot in enumerate(slots):
        stamp = slot.strftime("%Y-%m-%dT%H:%M:%SZ")
        for m in range(meters):
            value = 0.05 + ((m * 7919 + slot_index * 104_729) % 1500) / 1000  # 0.05-1.55 kWh
            text = f'{{"meter_id": "{ids[m]}", "timestamp": "{stamp}", "value": {value:.3f}, "unit": "kWh"}}'
            yield keys[m], text.encode()


def produce(producer: Producer, topic: str, messages: Iterator[tuple[bytes, bytes]], rate: float) -> float:
    """Send every message, `rate` per second (0: as fast as possible); wait until all are
    acknowledged; return the seconds the sending took."""
    start = time.monotonic()
    for i, (key, value) in enumerate(messages):
        if i % 500 == 0:
            if rate:
                ahead = start + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            producer.poll(0)
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:  # the local queue is full: let deliveries make room
                producer.poll(0.05)
    remaining = producer.flush(120)
    if remaining:
        raise SystemExit(f"{remaining} message(s) still unsent after 120 s")
    return time.monotonic() - start


# -- the stream -------------------------------------------------------------------------------


@dataclass
class StreamLog:
    """What the stream's JSON log said, read line by line from its stderr on a thread."""

    path: Path
    completed: dict[str, dict[str, Any]] = field(default_factory=dict)
    layers: dict[str, dict[str, float]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    readings: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)

    def follow(self, stream: Any) -> None:
        with self.path.open("w", encoding="utf-8") as copy:
            for line in stream:
                copy.write(line)
                copy.flush()
                if not line.startswith("{"):
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                name, batch = event.get("event"), event.get("batch_id")
                with self.changed:
                    if name == "batch_completed":
                        self.completed[batch] = event
                        self.readings += int(event.get("record_count") or 0)
                    elif name == "layer_completed":
                        self.layers.setdefault(batch, {})[event["layer"]] = float(event["duration_seconds"])
                    elif name == "batch_failed":
                        self.failed.append(f"{batch}: {event.get('error')}")
                    self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def source_config(path: Path, servers: str, topic: str, consumer: dict[str, str]) -> Path:
    """The source's TOML: the topic's readings, 15-minute intervals; `consumer`: librdkafka settings."""
    settings = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in consumer.items())
    path.write_text(
        f'[sources.{SOURCE}]\nformat = "kafka"\nbootstrap_servers = "{servers}"\ntopic = "{topic}"\n'
        'interval_minutes = 15\ncolumns = { unit = "unit" }\n' + (f"consumer = {{ {settings} }}\n" if consumer else ""),
        encoding="utf-8",
    )
    return path


def stream_env(lake: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATA_DIR", "STORAGE_PATH", "METADATA_DB"))}
    env.update(
        DATA_DIR=str(lake),
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        EXECUTION_MODE="local",
        PROCESSING_MODE="batch",
        PYTHONPATH=str(ROOT),
        COLUMNS="200",
    )
    return env


def wait_for(log: StreamLog, process: subprocess.Popen[str], readings: int, timeout: float) -> None:
    """Until the stream's completed micro-batches hold `readings`; SystemExit if it fails or stops."""
    deadline = time.monotonic() + timeout
    with log.changed:
        while log.readings < readings:
            if log.failed:
                raise SystemExit(f"a micro-batch failed: {log.failed[0]}\n{log.tail()}")
            if process.poll() is not None:
                raise SystemExit(f"the stream ended with {process.returncode}:\n{log.tail()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the stream stored {log.readings:,} of {readings:,} readings in {timeout:g}s")
            log.changed.wait(1.0)


# -- the figures ------------------------------------------------------------------------------


def silver_commits(lake: Path) -> dict[str, float]:
    """Per batch id, the time (epoch seconds) of its last commit to silver_readings."""
    commits: dict[str, float] = {}
    for entry in DeltaTable(str(lake / "silver" / "silver_readings")).history():
        batch = entry.get("batch_id") or entry.get("userMetadata")
        if batch and "timestamp" in entry:
            commits[batch] = max(commits.get(batch, 0.0), entry["timestamp"] / 1000)
    return commits


def message_batches(lake: Path) -> pa.Table:
    """(partition, offset, batch_id) of every message in bronze."""
    bronze = DeltaTable(str(lake / "bronze" / f"bronze_{SOURCE}")).to_pyarrow_table(
        columns=["source_file", "line_number", "batch_id"]
    )
    partition = pc.cast(pc.replace_substring_regex(bronze["source_file"], r"^.*/", ""), pa.int64())
    return pa.table(
        {"partition": partition, "offset": pc.cast(bronze["line_number"], pa.int64()), "batch_id": bronze["batch_id"]}
    )


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least `q` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Figures:
    readings: int
    meters: int
    seconds: float
    readings_per_second: float
    steady_readings_per_second: float
    produced_per_second: float
    p50: float
    p95: float
    p99: float
    max_latency: float
    latency_by_fifth: list[tuple[float, float]]
    micro_batches: int
    mean_micro_batch_seconds: float
    mean_micro_batch_readings: float
    mean_cycle_seconds: float
    mean_layer_seconds: dict[str, float]
    stream_cpu_seconds: float
    stream_peak_rss_mib: float
    producer_cpu_seconds: float


def figures(
    lake: Path,
    timed: Deliveries,
    log: StreamLog,
    *,
    meters: int,
    produce_seconds: float,
    stream_usage: resource.struct_rusage,
    producer_cpu: float,
) -> Figures:
    sent = pa.table(
        {
            "partition": pa.array(timed.partitions, pa.int64()),
            "offset": pa.array(timed.offsets, pa.int64()),
            "produced": pa.array(timed.timestamps, pa.int64()),
        }
    )
    joined = sent.join(message_batches(lake), ["partition", "offset"], join_type="left outer")
    missing = joined["batch_id"].null_count
    if missing:
        raise SystemExit(f"{missing:,} acknowledged message(s) are not in bronze")
    commits = silver_commits(lake)
    batches = sorted({b for b in joined["batch_id"].to_pylist()}, key=lambda b: commits[b])
    committed = pa.array([commits[b] for b in joined["batch_id"].to_pylist()], pa.float64())
    produced = pc.divide(pc.cast(joined["produced"], pa.float64()), 1000.0)
    latency = pc.subtract(committed, produced).to_pylist()
    order = pc.sort_indices(produced).to_pylist()
    fifths = [[latency[i] for i in order[k * len(order) // 5 : (k + 1) * len(order) // 5]] for k in range(5)]
    first_produced = pc.min(produced).as_py()
    last_commit = commits[batches[-1]]
    seconds = last_commit - first_produced
    per_batch = {b: int(log.completed[b]["record_count"]) for b in batches}
    steady_span = last_commit - commits[batches[0]]
    steady = sum(per_batch[b] for b in batches[1:]) / steady_span if len(batches) > 1 and steady_span > 0 else 0.0
    layer_names = sorted({name for b in batches for name in log.layers.get(b, {})})
    return Figures(
        readings=joined.num_rows,
        meters=meters,
        seconds=seconds,
        readings_per_second=joined.num_rows / seconds,
        steady_readings_per_second=steady,
        produced_per_second=joined.num_rows / produce_seconds,
        p50=percentile(latency, 0.50),
        p95=percentile(latency, 0.95),
        p99=percentile(latency, 0.99),
        max_latency=max(latency),
        latency_by_fifth=[(percentile(f, 0.5), percentile(f, 0.95)) for f in fifths if f],
        micro_batches=len(batches),
        mean_micro_batch_seconds=statistics.fmean(float(log.completed[b]["duration_seconds"]) for b in batches),
        mean_micro_batch_readings=statistics.fmean(per_batch.values()),
        mean_cycle_seconds=steady_span / (len(batches) - 1) if len(batches) > 1 else 0.0,
        mean_layer_seconds={
            n: statistics.fmean(log.layers.get(b, {}).get(n, 0.0) for b in batches) for n in layer_names
        },
        stream_cpu_seconds=stream_usage.ru_utime + stream_usage.ru_stime,
        stream_peak_rss_mib=stream_usage.ru_maxrss / 1024,
        producer_cpu_seconds=producer_cpu,
    )


def report(f: Figures, command: str) -> None:
    print()
    header = ("readings", "meters", "seconds", "readings/s", "p50 s", "p95 s", "micro-batches", "mean batch s")
    row = (
        f"{f.readings:,}",
        f"{f.meters:,}",
        f"{f.seconds:.1f}",
        f"{f.readings_per_second:,.0f}",
        f"{f.p50:.1f}",
        f"{f.p95:.1f}",
        f"{f.micro_batches}",
        f"{f.mean_micro_batch_seconds:.2f}",
    )
    widths = [max(len(h), len(v)) for h, v in zip(header, row, strict=True)]
    print("| " + " | ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("| " + " | ".join("-" * (w - 1) + ":" for w in widths) + " |")
    print("| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |")
    print()
    print(
        f"steady (silver growth after the first measured micro-batch): {f.steady_readings_per_second:,.0f} readings/s; "
        f"producer sent {f.produced_per_second:,.0f} readings/s"
    )
    print(
        f"micro-batch: {f.mean_micro_batch_readings:,.0f} readings on average, {f.mean_micro_batch_seconds:.2f}s "
        f"in the pipeline ("
        + ", ".join(f"{n} {s:.2f}s" for n, s in f.mean_layer_seconds.items())
        + f"), one every {f.mean_cycle_seconds:.2f}s"
    )
    print(
        f"latency p99 {f.p99:.1f}s, max {f.max_latency:.1f}s; by fifths of the run (p50/p95 s): "
        + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in f.latency_by_fifth)
    )
    print(
        f"CPU: stream {f.stream_cpu_seconds:.0f}s ({f.stream_cpu_seconds / f.seconds:.2f} cores over the run, "
        f"{1e6 * f.stream_cpu_seconds / max(f.readings, 1):.0f} us/reading, peak RSS {f.stream_peak_rss_mib:.0f} MiB); "
        f"producer {f.producer_cpu_seconds:.0f}s"
    )
    met = f.readings_per_second >= TARGET_READINGS_PER_SECOND and f.p95 <= TARGET_P95_SECONDS
    print(
        f"target >= {TARGET_READINGS_PER_SECOND:,} readings/s with p95 <= {TARGET_P95_SECONDS:g}s: "
        + ("met" if met else "NOT met")
    )
    print(f"command: {command}")


# -- the run ----------------------------------------------------------------------------------


@contextmanager
def work_folder(keep: Path | None) -> Iterator[Path]:
    """A new folder for the lake, the source config and the stream's log: `keep` (left there, for
    a look or a profile afterwards), or a temporary one, deleted afterwards."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="bench-stream-") as work:
            yield Path(work)
        return
    keep.mkdir(parents=True, exist_ok=False)
    yield keep


def default_bootstrap() -> str:
    return (
        os.environ.get("TEST_KAFKA_BOOTSTRAP") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:59092"
    ).strip()


def run(args: argparse.Namespace) -> Figures:
    servers = args.bootstrap
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    last_ended = midnight + (now - midnight) // INTERVAL * INTERVAL - INTERVAL  # the last interval that has ended
    per_meter = -(-args.readings // args.meters)
    slots = [last_ended - INTERVAL * k for k in range(per_meter, -1, -1)]  # the warm-up's slot first
    readings_total = per_meter * args.meters
    with (
        bench_topic(servers, args.topic, args.partitions) as topic,
        work_folder(args.keep) as work,
    ):
        lake = work / "lake"
        config = source_config(work / "sources.toml", servers, topic, args.consumer)
        command = [sys.executable, "-m", "app.cli", "stream", "--source", SOURCE, "--config", str(config)]
        command += ["--trigger", f"{args.trigger:g}", "--max-messages", str(args.max_messages)]
        command += ["--compact-every", str(args.compact_every)]
        print(f"stream: DATA_DIR={lake} {' '.join(command)}", flush=True)
        log = StreamLog(work / "stream.log")
        process = subprocess.Popen(
            command, env=stream_env(lake), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        reader = threading.Thread(target=log.follow, args=(process.stderr,), daemon=True)
        reader.start()
        stream_usage: resource.struct_rusage | None = None
        try:
            warm_up, timed = Deliveries(), Deliveries()
            deliveries: list[Deliveries] = [warm_up]
            producer = Producer(
                {
                    "bootstrap.servers": servers,
                    "enable.idempotence": True,
                    "linger.ms": 20,
                    "on_delivery": lambda error, message: deliveries[0](error, message),
                }
            )
            produce(producer, topic, readings(args.meters, slots[:1]), 0)
            wait_for(log, process, args.meters, timeout=180)
            print(f"warm-up: {args.meters:,} readings in silver; sending {readings_total:,}", flush=True)
            deliveries[0] = timed
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            produce_seconds = produce(producer, topic, readings(args.meters, slots[1:]), args.rate)
            cpu_after = resource.getrusage(resource.RUSAGE_SELF)
            if timed.failures or warm_up.failures:
                raise SystemExit(f"{timed.failures + warm_up.failures} message(s) failed: {timed.first_error}")
            print(f"sent in {produce_seconds:.1f}s; waiting for the stream", flush=True)
            wait_for(log, process, args.meters + readings_total, timeout=args.timeout)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                _, status, stream_usage = os.wait4(process.pid, 0)
                process.returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                pass
            reader.join(timeout=30)
        if process.returncode != 0:
            raise SystemExit(f"the stream ended with {process.returncode}:\n{log.tail()}")
        assert stream_usage is not None
        return figures(
            lake,
            timed,
            log,
            meters=args.meters,
            produce_seconds=produce_seconds,
            stream_usage=stream_usage,
            producer_cpu=(cpu_after.ru_utime + cpu_after.ru_stime) - (cpu.ru_utime + cpu.ru_stime),
        )


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--readings", type=parse_count, default=parse_count("1.5M"), help="measured readings")
    parser.add_argument("--meters", type=parse_count, default=20_000, help="meters (readings per interval)")
    parser.add_argument("--rate", type=float, default=0.0, help="readings per second sent (0: as fast as possible)")
    parser.add_argument("--trigger", type=float, default=5.0, help="the stream's --trigger seconds")
    parser.add_argument("--partitions", type=int, default=3, help="partitions of the topic created")
    parser.add_argument("--bootstrap", default=default_bootstrap(), help="HOST:PORT of the Kafka broker")
    parser.add_argument("--topic", help="an existing empty topic to use (default: a new one, deleted afterwards)")
    parser.add_argument("--max-messages", type=int, default=200_000, help="the stream's --max-messages")
    parser.add_argument("--compact-every", type=int, default=20, help="the stream's --compact-every")
    parser.add_argument(
        "--consumer",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka setting of the source's consumer (its `consumer` table), e.g. queued.min.messages=400000",
    )
    parser.add_argument("--keep", type=Path, metavar="DIR", help="a new folder to keep the lake and log in")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the stream to catch up")
    args = parser.parse_args(argv)
    try:
        args.consumer = dict(item.split("=", 1) for item in args.consumer)
    except ValueError:
        parser.error("--consumer takes KEY=VALUE")
    if args.readings < 1 or args.meters < 1 or args.partitions < 1 or args.rate < 0:
        parser.error("--readings, --meters and --partitions must be at least 1, --rate 0 or more")
    return args


def code_version() -> str:
    """The commit the figures are of, and how many files differ from it in the working tree."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head}" + (f" with {len(changed)} changed file(s)" if changed else "")


def main(argv: Sequence[str] | None = None) -> Figures:
    args = parse_arguments(argv)
    shown = " ".join(sys.argv[1:] if argv is None else argv)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    print(f"code: {code_version()}", flush=True)
    result = run(args)
    report(result, f"python -m bench.stream_throughput {shown}".strip())
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return result


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        main()
