"""Exactly once from Kafka, under chaos: a stream of `energy-platform stream` processes killed with
SIGKILL at random moments and restarted, over a topic written by a transactional producer that
repeats messages, sends reads late and aborts transactions, ends with the tables one batch run of
the committed readings gives; and a stream outlives its broker going away and coming back.

Reproduce a chaos run with CHAOS_SEED=<the seed it printed> (pytest -s shows the print).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from app.infrastructure.settings import Settings
from app.wiring import open_platform
from tests.integration.kafka import (
    Record,
    bootstrap_servers,
    fresh_topic,
    private_broker,
    produce_transactions,
)

pytestmark = pytest.mark.slow  # producers, CLI processes killed and restarted, a broker stopped and started

ROOT = Path(__file__).resolve().parents[2]

# -- the chaos run's readings ------------------------------------------------------------------

METERS = 200
#: Hourly reads over one week of local days: 200 meters x 168 intervals = 33,600 readings.
INTERVAL_MINUTES = 60
DAYS = 7
ZONE = "Europe/Berlin"
#: Local midnight starting the week; June has no clock change, so every local day has 24 hours.
START = datetime(2025, 6, 2, tzinfo=ZoneInfo(ZONE))
INTERVALS = DAYS * 24 * 60 // INTERVAL_MINUTES
#: Shares of the readings sent twice (the same message again) and sent late (after later reads of their meter).
REPEAT_SHARE = LATE_SHARE = 0.01
#: Committed messages per transaction; every ABORT_EVERY-th transaction is aborted.
PER_TRANSACTION = 200
ABORT_EVERY = 10
#: A ghost meter's readings are sent in aborted transactions only, so none of them may land.
GHOST = "GHOST"
#: Messages one micro-batch takes at most: small, so a run makes many micro-batches.
MAX_MESSAGES = 1000
#: SIGKILLs of the stream; each waits for a micro-batch to start, then a random delay of at most
#: KILL_WINDOW seconds, so kills land while it reads, judges (VEE), writes and commits, and between.
KILLS = 12
KILL_WINDOW = 3.0
#: A stream that has started no micro-batch this long after it started (its start takes 2-4 s here)
#: is taken to be idle, the topic drained (a fast machine may drain it before the last kill): the
#: kill comes anyway, while it polls.
IDLE_SECONDS = 8.0
#: Lineage that differs between two lakes given the same readings: batch ids, clock times, offsets.
LINEAGE = {"batch_id", "ingested_at", "updated_at", "quarantined_at", "source_file", "line_number"}


@dataclass
class Topic:
    """What the producer sent: every transaction, committed or not, in order."""

    transactions: list[tuple[list[dict[str, Any]], bool]] = field(default_factory=list)

    @property
    def committed(self) -> list[dict[str, Any]]:
        return [reading for readings, commit in self.transactions if commit for reading in readings]

    @property
    def aborted(self) -> list[dict[str, Any]]:
        return [reading for readings, commit in self.transactions if not commit for reading in readings]


def _timestamp(interval: int) -> str:
    """ISO 8601 with the local offset, e.g. 2025-06-02T05:00:00+02:00."""
    return (START + timedelta(minutes=INTERVAL_MINUTES * interval)).isoformat()


def _value(meter: int, interval: int) -> float:
    """A smooth load between 0.2 and 1.2 kWh: no spike, zero run or high/low day for VEE to flag."""
    return round(0.2 + (meter % 20) * 0.04 + 0.1 * ((interval * 7 + meter) % 5) / 4, 3)


def _reading(meter: str, interval: int, value: float) -> dict[str, Any]:
    return {"meter_id": meter, "timestamp": _timestamp(interval), "value": value, "unit": "kWh"}


def chaos_topic(rng: random.Random) -> Topic:
    """Every interval of every meter once, in time order, but 1% sent late (after 2 to 6 later
    intervals of their meter) and 1% of the messages sent again a little later; in transactions
    of PER_TRANSACTION, and every ABORT_EVERY-th transaction aborted. An aborted transaction holds
    readings that would show if they landed: other values for intervals committed before it (a
    later read wins), and readings of a meter that no committed message has."""
    keyed: list[tuple[float, dict[str, Any]]] = []
    for interval in range(INTERVALS):
        for meter in range(METERS):
            reading = _reading(f"M{meter:03d}", interval, _value(meter, interval))
            position = float(interval * METERS + meter)
            if interval < INTERVALS - 6 and rng.random() < LATE_SHARE:
                position += rng.randint(2, 6) * METERS + 0.5  # after a later interval of the same meter
            keyed.append((position, reading))
    keyed.sort(key=lambda item: item[0])
    for index in range(len(keyed)):
        if rng.random() < REPEAT_SHARE:  # the same message again, up to 300 messages later
            keyed.append((index + rng.randint(1, 300) + 0.25, keyed[index][1]))
    sent = [reading for _, reading in sorted(keyed, key=lambda item: item[0])]

    topic = Topic()
    chunks = [sent[i : i + PER_TRANSACTION] for i in range(0, len(sent), PER_TRANSACTION)]
    ghost_interval = 0
    for chunk in chunks:
        if len(topic.transactions) % ABORT_EVERY == ABORT_EVERY - 1:
            earlier = rng.sample(topic.committed[-2 * PER_TRANSACTION :], PER_TRANSACTION // 2)
            poison = [{**r, "value": round(r["value"] * 3 + 5, 3)} for r in earlier]
            ghosts = [_reading(GHOST, ghost_interval + i, 0.5) for i in range(PER_TRANSACTION // 2)]
            ghost_interval += PER_TRANSACTION // 2
            topic.transactions.append((poison + ghosts, False))
        topic.transactions.append((chunk, True))
    return topic


def _records(readings: list[dict[str, Any]]) -> list[Record]:
    return [(r["meter_id"].encode(), json.dumps(r).encode()) for r in readings]


# -- the stream as a process --------------------------------------------------------------------


def _env(lake: Path) -> dict[str, str]:
    """The CLI's environment: the lake and its metadata store under `lake`, JSON logs."""
    inherited = ("STORAGE_PATH", "DATA_DIR", "METADATA_DB", "SOURCES_CONFIG", "PROCESSING_MODE", "EXECUTION_MODE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env.update(DATA_DIR=str(lake), LOG_FORMAT="json", PYTHONPATH=str(ROOT))
    return env


class Cli:
    """`energy-platform ARGS` as a subprocess whose output threads gather line by line, so the
    test can wait for a line without blocking and the pipes never fill."""

    def __init__(self, lake: Path, cwd: Path, *args: str) -> None:
        self.args = args
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            env=_env(lake),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._gather, args=(pipe, lines), daemon=True)
            for pipe, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _gather(pipe: Any, lines: list[str]) -> None:
        for line in pipe:
            lines.append(line.rstrip("\n"))

    def age(self) -> float:
        """Seconds since the process started."""
        return time.monotonic() - self.started

    def wait_for(self, found: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
        """Poll until `found()`; fail naming `what` if the process ends first or the deadline passes."""
        deadline = time.monotonic() + timeout
        while not found():
            if self.process.poll() is not None:
                self.finish(0)
                pytest.fail(f"{' '.join(self.args)} exited {self.process.returncode} before {what}:\n{self.stderr}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout:g}s; stderr so far:\n{self.stderr[-5000:]}")
            time.sleep(0.02)

    def finish(self, timeout: float) -> int:
        """Wait for the process to end (killing it after `timeout`) and for its output."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        for reader in self._readers:
            reader.join(timeout=30)
        return self.process.returncode

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)

    @property
    def stdout(self) -> str:
        return "\n".join(self.out)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.finish(30)


def _busy(cli: Cli) -> bool:
    """Whether the stream has started a micro-batch (the CLI prints `bronze N message(s) ...`),
    or has been running IDLE_SECONDS without starting one."""
    started = any(line.lstrip().startswith("bronze ") and "message(s)" in line for line in cli.err)
    return started or cli.age() > IDLE_SECONDS


def _phase(lines: list[str]) -> str:
    """Where a stream stood by its last progress line (the CLI prints one as each stage ends)."""
    for line in reversed(lines):
        text = line.strip()
        if text.startswith("micro-batch "):
            return "between micro-batches (positions committed, polling)"
        if text.startswith("gold "):
            return "after gold, finishing the batch"
        if text.startswith("silver "):
            return "writing gold"
        if text.startswith("bronze ") and " in, " in text:
            return "writing quarantine and silver"
        if text.startswith("bronze "):
            return "reading, VEE, writing bronze"
        if text.startswith("streaming source"):
            return "starting: recovery, seek, first poll"
    return "starting the process"


# -- the lakes' tables --------------------------------------------------------------------------


def _table(lake: Path, layer: str, name: str) -> pa.Table:
    return DeltaTable(str(lake / layer / name)).to_pyarrow_table()


def _comparable(table: pa.Table) -> list[dict[str, Any]]:
    """Rows without lineage, sorted, floats rounded to 1e-9 (a sum's last bits depend on the order
    of its terms) by Python's round, which gives the nearest float; Arrow's round can differ in
    the last bit for two numbers that round alike."""
    table = table.drop_columns([c for c in table.column_names if c in LINEAGE])
    rows = table.sort_by([(c, "ascending") for c in table.column_names]).to_pylist()
    return [{k: round(v, 9) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def _config(path: Path, source: str) -> Path:
    """Source `chaos`: the same columns, unit, interval and time zones whichever way it is read."""
    path.write_text(
        f"[sources.chaos]\n{source}\ninterval_minutes = {INTERVAL_MINUTES}\n"
        f'series_timezone = "{ZONE}"\ncolumns = {{ unit = "unit" }}\n',
        encoding="utf-8",
    )
    return path


def _seed() -> int:
    given = os.environ.get("CHAOS_SEED", "").strip()
    return int(given) if given else random.SystemRandom().randrange(2**32)


def test_a_stream_killed_again_and_again_stores_each_committed_reading_exactly_once(tmp_path: Path) -> None:
    servers = bootstrap_servers()
    seed = _seed()
    print(f"\nchaos seed {seed} (rerun with CHAOS_SEED={seed})")
    rng = random.Random(seed)
    plan = chaos_topic(rng)
    committed, aborted = plan.committed, plan.aborted
    print(
        f"{len(committed):,} committed messages ({METERS} meters x {INTERVALS} intervals of {INTERVAL_MINUTES} min, "
        f"{len(committed) - METERS * INTERVALS} repeats) and {len(aborted):,} aborted, in "
        f"{len(plan.transactions)} transactions"
    )
    lake, batch_lake = tmp_path / "stream-lake", tmp_path / "batch-lake"
    clock = time.monotonic()

    def took(what: str) -> None:
        nonlocal clock
        print(f"{what}: {time.monotonic() - clock:.1f}s")
        clock = time.monotonic()

    with fresh_topic(servers, partitions=3) as topic:
        sent = produce_transactions(
            servers,
            topic,
            ((_records(readings), commit) for readings, commit in plan.transactions),
            transactional_id=f"chaos-{topic}",
        )
        assert sent == (len(committed), len(aborted))
        took("produced")
        config = _config(
            tmp_path / "stream.toml", f'format = "kafka"\nbootstrap_servers = "{servers}"\ntopic = "{topic}"'
        )
        stream = ("stream", "--source", "chaos", "--config", str(config), "--max-messages", str(MAX_MESSAGES))

        kills: list[tuple[float, str]] = []
        for _ in range(KILLS):
            delay = round(rng.uniform(0.0, KILL_WINDOW), 2)
            cli = Cli(lake, tmp_path, *stream, "--trigger", "0.2")
            try:
                # Once a micro-batch has started, or the stream has had IDLE_SECONDS without
                # one (the topic is drained: the kill lands while it polls).
                cli.wait_for(partial(_busy, cli), "a micro-batch started (or the stream idle)")
                time.sleep(delay)
                assert cli.process.poll() is None, f"the stream ended by itself:\n{cli.stderr}"
                phase = _phase(cli.err)
            finally:
                cli.kill()
            assert cli.process.returncode == -signal.SIGKILL, cli.stderr
            kills.append((delay, phase))
        took("killed and restarted")
        print(f"{len(kills)} SIGKILLs, each this long after a micro-batch started, and where the stream stood:")
        for number, (delay, phase) in enumerate(kills, start=1):
            print(f"  kill {number:2d}: {delay:.2f}s, {phase}")

        # What is left, until a run finds nothing more (an --available-now run ends when no
        # message came for 2 s, which a slow first fetch can make it do early).
        for _ in range(5):
            final = Cli(lake, tmp_path, *stream, "--available-now")
            assert final.finish(600) == 0, final.stderr
            assert "Traceback" not in final.stderr
            if "stopped: 0 micro-batch(es)" in final.stdout:
                break
        else:
            pytest.fail(f"--available-now still found messages after 5 runs:\n{final.stdout}")
        took("the rest, --available-now")

    with open_platform(Settings(data_dir=lake, _env_file=None)) as platform:  # type: ignore[call-arg]
        batches = platform.metadata.list_batches(limit=100_000)
    assert {b.status for b in batches} <= {"succeeded", "failed"}
    failed = [b for b in batches if b.status == "failed"]
    assert all((b.error or "").startswith("interrupted") for b in failed), [b.error for b in failed]
    assert len(failed) <= KILLS
    print(f"{len(batches)} micro-batches, {len(failed)} of them killed and rolled back")

    # Exactly once into bronze: bronze keeps each message as received, a repeated message too
    # (it has an offset of its own), so it holds the committed messages, each once.
    bronze = _table(lake, "bronze", "bronze_chaos")
    assert bronze.num_rows == len(committed), f"bronze holds {bronze.num_rows:,} of {len(committed):,} messages"
    offsets = Counter(zip(bronze["source_file"].to_pylist(), bronze["line_number"].to_pylist(), strict=True))
    assert max(offsets.values()) == 1, "a message landed twice in bronze"
    landed = Counter(
        zip(bronze["meter_id"].to_pylist(), bronze["timestamp"].to_pylist(), bronze["value"].to_pylist(), strict=True)
    )
    assert landed == Counter((r["meter_id"], r["timestamp"], str(r["value"])) for r in committed)
    assert GHOST not in set(bronze["meter_id"].to_pylist())

    # The same readings in one file, run as one batch into another lake.
    landing = tmp_path / "in" / "readings.csv"
    landing.parent.mkdir()
    landing.write_text(
        "meter_id,timestamp,value,unit\n"
        + "".join(f"{r['meter_id']},{r['timestamp']},{r['value']},{r['unit']}\n" for r in committed),
        encoding="utf-8",
    )
    batch_config = _config(tmp_path / "batch.toml", 'path = "in/readings.csv"')
    batch = Cli(batch_lake, tmp_path, "run-batch", "--source", "chaos", "--config", str(batch_config))
    assert batch.finish(600) == 0, batch.stderr
    took("one run-batch of the committed readings")

    silver = _comparable(_table(lake, "silver", "silver_readings"))
    assert len(silver) == METERS * INTERVALS  # every interval, once
    assert {(r["quality_flag"], r["validation_flags"]) for r in silver} == {("actual", "")}
    expected = {(f"M{m:03d}", _timestamp(i)): _value(m, i) for m in range(METERS) for i in range(INTERVALS)}
    stored = {
        (r["meter_id"], r["interval_start_utc"].astimezone(ZoneInfo(ZONE)).isoformat()): r["energy_kwh"] for r in silver
    }
    assert stored == expected  # no reading lost, none of an aborted transaction
    assert silver == _comparable(_table(batch_lake, "silver", "silver_readings"))
    for gold in ("gold_daily_meter_energy", "gold_hourly_portfolio_load"):
        assert _comparable(_table(lake, "gold", gold)) == _comparable(_table(batch_lake, "gold", gold)), gold
    quarantine = lake / "quarantine" / "quarantine_readings"
    assert not quarantine.exists() or DeltaTable(str(quarantine)).to_pyarrow_table().num_rows == 0


# -- the broker goes away and comes back --------------------------------------------------------

#: The outage test's backlog: 5 meters x 96 hours, 20 messages per micro-batch (24 micro-batches,
#: some 15 s), so the stream is still working through what it fetched when the broker is gone
#: (stopping it takes some 3 s), and commits offsets to no broker.
OUTAGE_METERS, OUTAGE_HOURS, OUTAGE_MAX_MESSAGES = 5, 96, 20
#: How long the broker stays away, at least: longer when the stream takes longer to drain its backlog.
OUTAGE_SECONDS = 10.0


def _hours(hours: range) -> list[dict[str, Any]]:
    return [_reading(f"M{m:03d}", i, _value(m, i)) for i in hours for m in range(OUTAGE_METERS)]


def _micro_batches(cli: Cli) -> int:
    return sum(line.startswith("micro-batch ") and ": succeeded" in line for line in cli.err)


def test_a_stream_waits_out_a_broker_outage_and_goes_on(tmp_path: Path) -> None:
    bootstrap_servers()  # where Kafka's tests are off, this one is too; it never uses the shared broker
    lake = tmp_path / "lake"
    backlog, later = _hours(range(OUTAGE_HOURS)), _hours(range(OUTAGE_HOURS, OUTAGE_HOURS + 24))
    with private_broker(tmp_path / "broker") as broker, fresh_topic(broker.bootstrap, partitions=3) as topic:
        config = _config(
            tmp_path / "stream.toml", f'format = "kafka"\nbootstrap_servers = "{broker.bootstrap}"\ntopic = "{topic}"'
        )
        produce_transactions(broker.bootstrap, topic, [(_records(backlog), True)], transactional_id=f"outage-{topic}")
        cli = Cli(
            lake,
            tmp_path,
            *("stream", "--source", "chaos", "--config", str(config)),
            *("--trigger", "0.2", "--max-messages", str(OUTAGE_MAX_MESSAGES)),
        )
        try:
            cli.wait_for(lambda: _silver_rows(lake) > 0, "the first readings in silver")
            stopping = time.monotonic()
            broker.stop()
            # The broker is away: the stream works through what it had fetched (committing offsets
            # to no broker after each micro-batch), then polls a broker that is not there.
            down, before = time.monotonic(), _micro_batches(cli)
            stopped_in = down - stopping
            cli.wait_for(lambda: _silver_rows(lake) == len(backlog), "the fetched backlog in silver")
            while time.monotonic() - down < OUTAGE_SECONDS:
                assert cli.process.poll() is None, f"the stream died with the broker:\n{cli.stderr}"
                time.sleep(0.1)
            during = _micro_batches(cli) - before
            idle = time.monotonic() - down
            broker.start()
            produce_transactions(broker.bootstrap, topic, [(_records(later), True)], transactional_id=f"outage-{topic}")
            cli.wait_for(lambda: _silver_rows(lake) == len(backlog) + len(later), "every reading in silver")
            cli.process.send_signal(signal.SIGTERM)
            assert cli.finish(120) == 0, cli.stderr
        finally:
            cli.kill()
    warnings = Counter(json.loads(line).get("event") for line in cli.err if line.startswith("{") and "warning" in line)
    print(
        f"\nthe broker took {stopped_in:.1f}s to stop, was away {idle:.1f}s, and the stream ran {during} "
        f"micro-batch(es) meanwhile; "
        f"warnings it logged: {dict(warnings)}"
    )
    assert "Traceback" not in cli.stderr, cli.stderr
    assert "stopping: SIGTERM" in cli.stderr
    assert during >= 1, "no micro-batch ran while the broker was away: the test did not commit offsets to no broker"


def _silver_rows(lake: Path) -> int:
    table = lake / "silver" / "silver_readings"
    if not (table / "_delta_log").is_dir():
        return 0
    try:
        return int(DeltaTable(str(table)).to_pyarrow_table(columns=["meter_id"]).num_rows)
    except Exception:  # a commit in progress: read again on the next poll
        return 0
