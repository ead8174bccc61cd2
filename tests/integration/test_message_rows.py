"""A stream's micro-batch of messages runs through the same stages as a file, to the same tables."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import structlog

from app.application import stages
from app.application.pipeline import BatchPipeline, BatchResult, new_batch_id
from app.application.ports import Message
from app.application.row_sources import MessageRows
from app.application.runner import run_batch
from app.domain.sources import SourceConfig
from app.infrastructure.settings import Settings
from app.wiring import LocalPlatform, open_platform
from tests.integration.conftest import NOW, read_table

CONFIG = '[sources.feed]\npath = "in"\ninterval_minutes = 60\ncolumns = { unit = "unit" }\n'


def _readings() -> list[dict[str, object]]:
    return [
        {"meter_id": meter, "timestamp": f"2025-06-01T{h:02d}:00Z", "value": (h + 1) * scale, "unit": "kWh"}
        for meter, scale in (("A", 1.0), ("B", 0.5))
        for h in range(24)
    ]


def _run_messages(
    platform: LocalPlatform, source: SourceConfig, messages: list[Message], stream_id: str = ""
) -> BatchResult:
    pipeline = BatchPipeline(
        store=platform.store,
        metadata=platform.metadata,
        reader=platform.reader,
        execution_mode="local",
        logger=structlog.get_logger(),
        lake=platform.lake,
    )
    result = BatchResult(batch_id=new_batch_id(NOW), source=source.name, status="skipped")
    rows = MessageRows(topic="readings", messages=messages, stream_id=stream_id)
    return pipeline.execute(source, rows, result, NOW)


def _without_lineage(platform: LocalPlatform, table: str) -> list[dict[str, object]]:
    dropped = {"batch_id", "ingested_at", "updated_at", "quarantined_at", "source_file", "line_number"}
    return [{k: v for k, v in r.items() if k not in dropped} for r in read_table(platform, table).to_pylist()]


def test_messages_reach_the_tables_a_file_of_the_same_readings_does(tmp_path: Path) -> None:
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    readings = _readings()
    messages = []
    for offset, reading in enumerate(readings):
        meter = str(reading["meter_id"])
        value = {k: v for k, v in reading.items() if not (meter == "B" and k == "meter_id")}  # B's meter: the key
        messages.append(
            Message(partition=offset % 3, offset=offset, key=meter.encode(), value=json.dumps(value).encode())
        )
    messages.append(Message(partition=0, offset=100, key=b"A", value=b"not json"))
    messages.append(Message(partition=1, offset=101, key=b"A", value=b"[1, 2]"))

    streamed = Settings(data_dir=tmp_path / "stream", _env_file=None)  # type: ignore[call-arg]
    with open_platform(streamed) as platform:
        source = platform.source("feed", tmp_path / "sources.toml")
        result = _run_messages(platform, source, messages)
        assert result.status == "succeeded", result.error
        stream_tables = {t: _without_lineage(platform, t) for t in ("silver_readings", "gold_daily_meter_energy")}
        quarantine = read_table(platform, "quarantine_readings").to_pylist()
        silver = read_table(platform, "silver_readings").to_pylist()
        batch = platform.metadata.get_batch(result.batch_id or "")

    assert result.reconciliation is not None and result.reconciliation.rows_read == 50
    assert result.rule_counts.get("malformed_row") == 2
    assert sorted((r["source_file"], r["line_number"], json.loads(r["raw_record"])["line"]) for r in quarantine) == [
        ("kafka:readings/0", 100, "not json"),
        ("kafka:readings/1", 101, "[1, 2]"),
    ]
    first = next(r for r in silver if r["meter_id"] == "A" and r["interval_start_utc"].hour == 0)
    assert first["source_file"] == "kafka:readings/0" and first["line_number"] == 0
    assert batch is not None and batch.kind == "stream"

    csv = tmp_path / "in" / "readings.csv"
    csv.parent.mkdir()
    csv.write_text(
        "meter_id,timestamp,value,unit\n"
        + "".join(f"{r['meter_id']},{r['timestamp']},{r['value']},{r['unit']}\n" for r in readings),
        encoding="utf-8",
    )
    batched = Settings(data_dir=tmp_path / "batch", _env_file=None)  # type: ignore[call-arg]
    with open_platform(batched) as platform:
        run = run_batch(platform, source_name="feed", config_file=tmp_path / "sources.toml", now=NOW)
        assert run.status == "succeeded", run.error
        assert {t: _without_lineage(platform, t) for t in stream_tables} == stream_tables


def test_a_repeated_message_in_a_later_micro_batch_changes_nothing(platform: LocalPlatform, tmp_path: Path) -> None:
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    source = platform.source("feed", tmp_path / "sources.toml")
    messages = [
        Message(partition=0, offset=i, key=b"A", value=json.dumps(r).encode()) for i, r in enumerate(_readings()[:24])
    ]
    assert _run_messages(platform, source, messages).status == "succeeded"
    before = _without_lineage(platform, "silver_readings")

    again = _run_messages(platform, source, messages[5:6])

    assert again.status == "succeeded" and again.reconciliation is not None
    assert again.reconciliation.silver_inserted == 0 and again.reconciliation.silver_updated == 0
    assert _without_lineage(platform, "silver_readings") == before


def _messages(first: int, count: int, partitions: int = 2) -> list[Message]:
    readings = _readings()
    return [
        Message(partition=i % partitions, offset=i, key=b"A", value=json.dumps(readings[i]).encode())
        for i in range(first, first + count)
    ]


def test_the_bronze_commit_records_the_positions_and_a_rollback_sets_them_back(
    platform: LocalPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.application import stages
    from app.domain.errors import TableStoreError

    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    source = platform.source("feed", tmp_path / "sources.toml")
    stream = "energy-platform-stream:feed:readings"

    def run(messages: list[Message]) -> BatchResult:
        return _run_messages(platform, source, messages, stream)

    def positions() -> list[int | None]:
        return [platform.store.position("bronze_feed", f"{stream}:{p}") for p in (0, 1)]

    assert run(_messages(0, 10)).status == "succeeded"
    assert positions() == [8, 9]
    assert run([Message(partition=0, offset=10, key=b"A", value=b"not json")]).status == "succeeded"
    assert positions() == [10, 9]  # a micro-batch of malformed messages only still moves its position

    def failing_gold(*_args: object, **_kwargs: object) -> None:
        raise TableStoreError("gold is down")

    monkeypatch.setattr(stages, "gold", failing_gold)
    failed = run(_messages(11, 6))
    assert failed.status == "failed" and "rolled back" in (failed.error or "")
    assert positions() == [10, 9]  # back to before the failed micro-batch

    monkeypatch.undo()
    assert run(_messages(11, 6)).status == "succeeded"
    assert positions() == [16, 15]
    silver = read_table(platform, "silver_readings").to_pylist()
    # 16 reads, and an estimate for hour 10, whose message was not JSON.
    assert sorted((r["interval_start_utc"].hour, r["estimation_method"] is None) for r in silver) == [
        (h, h != 10) for h in range(17)
    ]


def test_a_first_micro_batch_rolled_back_leaves_no_position(
    platform: LocalPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.application import stages
    from app.domain.errors import TableStoreError

    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    source = platform.source("feed", tmp_path / "sources.toml")

    def failing_gold(*_args: object, **_kwargs: object) -> None:
        raise TableStoreError("gold is down")

    monkeypatch.setattr(stages, "gold", failing_gold)
    assert _run_messages(platform, source, _messages(0, 4), "s:feed:readings").status == "failed"
    assert platform.store.position("bronze_feed", "s:feed:readings:0") is None


def test_a_meter_id_sent_as_a_long_json_number_keeps_every_digit(platform: LocalPlatform, tmp_path: Path) -> None:
    """A 24-digit number is past 64 bits: read as a float it would become 1.2345678901234568e+23,
    another meter. It must arrive as the digits the message holds, like a file's text would."""
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    source = platform.source("feed", tmp_path / "sources.toml")
    values = [
        b'{"meter_id": 123456789012345678901234, "timestamp": "2025-06-01T00:00Z", "value": 1.50, "unit": "kWh"}',
        b'{"meter_id": 9007199254740993, "timestamp": "2025-06-01T00:00Z", "value": 2, "unit": "kWh"}',
    ]
    messages = [Message(partition=0, offset=i, key=None, value=v) for i, v in enumerate(values)]

    assert _run_messages(platform, source, messages).status == "succeeded"

    silver = {r["meter_id"]: r["energy_kwh"] for r in read_table(platform, "silver_readings").to_pylist()}
    assert silver == {"123456789012345678901234": 1.5, "9007199254740993": 2.0}


def test_a_stream_does_not_estimate_intervals_later_than_any_read_it_has_seen(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    """Reads up to the interval starting 21:00 reach a stream at midnight. A batch of the same
    reads at that time flat-fills 22:00 and 23:00 (ended, within max_flat_minutes of the last
    read); a stream has seen no read after 22:00 for any meter, so those intervals are still to
    come: nothing is estimated there for the next micro-batch to replace."""
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    source = platform.source("feed", tmp_path / "sources.toml")
    assert (NOW.day, NOW.hour, NOW.minute) == (1, 0, 0)  # the readings end 2025-10-31T22:00Z
    readings = [
        {"meter_id": "A", "timestamp": f"2025-10-31T{h:02d}:00Z", "value": 1.0, "unit": "kWh"} for h in range(22)
    ]
    messages = [Message(partition=0, offset=i, key=b"A", value=json.dumps(r).encode()) for i, r in enumerate(readings)]

    assert _run_messages(platform, source, messages).status == "succeeded"
    streamed = read_table(platform, "silver_readings")
    assert streamed.num_rows == 22 and set(streamed["quality_flag"].to_pylist()) == {"actual"}

    file = tmp_path / "in" / "a.csv"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(
        "meter_id,timestamp,value,unit\n" + "".join(f"A,{r['timestamp']},1.0,kWh\n" for r in readings), encoding="utf-8"
    )
    with open_platform(Settings(data_dir=tmp_path / "batch-lake", _env_file=None)) as batch_platform:  # type: ignore[call-arg]
        result = run_batch(
            batch_platform, source_name="feed", config_file=tmp_path / "sources.toml", input_path=str(file), now=NOW
        )
        assert result.status == "succeeded", result.error
        batched = read_table(batch_platform, "silver_readings")
    assert batched.num_rows == 24 and batched["estimation_method"].to_pylist().count("flat") == 2


def test_a_stream_does_not_estimate_the_newest_interval_for_a_meter_whose_read_is_still_coming(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    """Meter A's reads reach 21:00, meter B's 20:00: B's 21:00 read is still on its way (reads of
    one interval come from each meter in turn). Nothing is estimated for B at 21:00, which the
    read, a moment later, would replace."""
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    source = platform.source("feed", tmp_path / "sources.toml")
    readings = [
        {"meter_id": meter, "timestamp": f"2025-10-31T{h:02d}:00Z", "value": 1.0, "unit": "kWh"}
        for meter, hours in (("A", 22), ("B", 21))
        for h in range(hours)
    ]
    messages = [
        Message(partition=0, offset=i, key=r["meter_id"].encode(), value=json.dumps(r).encode())
        for i, r in enumerate(readings)
    ]
    assert _run_messages(platform, source, messages).status == "succeeded"
    streamed = read_table(platform, "silver_readings")
    assert streamed.num_rows == 43
    assert set(streamed["quality_flag"].to_pylist()) == {"actual"}


def _texts_of(platform: LocalPlatform, messages: list[Message]) -> tuple[list[str], list[dict[str, object]]]:
    read = MessageRows(topic="readings", messages=messages).read(SimpleNamespace(store=platform.store))  # type: ignore[arg-type]
    rows = platform.store.collect(stages.concat([read.rows, read.malformed])).sort_by("row_order")
    kept = [*read.header, "kind", "detail", "source_file", "line_number"]
    return read.header, rows.select(kept).to_pylist()


@pytest.mark.parametrize("long_id", [False, True], ids=["orjson", "json"])
def test_each_field_reaches_bronze_as_the_text_a_file_would_hold_whatever_the_other_messages_hold(
    platform: LocalPlatform, long_id: bool
) -> None:
    """Messages of different shapes in one micro-batch: fields missing from some, numbers as
    integers in one and decimals in another, a NaN and a nested value (which orjson refuses or
    does not keep as text), values that are not objects. Each field is the text its own message
    gives it, read the same whether or not another message holds a long number (which sends the
    whole micro-batch the slower, exact way)."""
    values = [
        b'{"meter_id": "A", "timestamp": "2025-06-01T00:00Z", "value": 1.50, "unit": "kWh"}',
        b'{"timestamp": "2025-06-01T01:00Z", "value": 2, "unit": "Wh"}',
        b'{"meter_id": null, "timestamp": "2025-06-01T02:00Z", "value": NaN}',
        b'{"meter_id": "A", "timestamp": "2025-06-01T03:00Z", "value": 1e3, "quality": ["E", 1]}',
        b"[1, 2]",
        b"not json",
        b'{"meter_id": "A", "timestamp": "2025-06-01T04:00Z", "value": true, "unit": {"x": 1}}',
    ]
    if long_id:
        values.append(b'{"meter_id": 123456789012345678901234, "timestamp": "2025-06-01T05:00Z", "value": 0.25}')
    messages = [Message(partition=i % 2, offset=10 + i, key=b"K", value=v) for i, v in enumerate(values)]

    header, rows = _texts_of(platform, messages)

    assert header == ["meter_id", "timestamp", "value", "unit", "quality"]
    fields = [{c: r[c] for c in header} for r in rows]
    blank = dict.fromkeys(header)
    expected = [
        {**blank, "meter_id": "A", "timestamp": "2025-06-01T00:00Z", "value": "1.5", "unit": "kWh"},
        {**blank, "meter_id": "K", "timestamp": "2025-06-01T01:00Z", "value": "2", "unit": "Wh"},
        {**blank, "meter_id": "K", "timestamp": "2025-06-01T02:00Z", "value": "NaN"},
        {**blank, "meter_id": "A", "timestamp": "2025-06-01T03:00Z", "value": "1000.0", "quality": '["E", 1]'},
        blank,
        blank,
        {**blank, "meter_id": "A", "timestamp": "2025-06-01T04:00Z", "value": "true", "unit": '{"x": 1}'},
    ]
    if long_id:
        expected.append(
            {**blank, "meter_id": "123456789012345678901234", "timestamp": "2025-06-01T05:00Z", "value": "0.25"}
        )
    assert fields == expected
    assert [r["kind"] for r in rows] == ["row" if e is not blank else "malformed" for e in expected]
    assert [r["detail"] for r in rows if r["kind"] == "malformed"] == ["[1, 2]", "not json"]
    assert [r["source_file"] for r in rows] == [f"kafka:readings/{i % 2}" for i in range(len(values))]
    assert [r["line_number"] for r in rows] == [10 + i for i in range(len(values))]
