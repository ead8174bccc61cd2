"""Streaming mode over a landing folder: each file once, in arrival order, through the batch stages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from app.application.runner import run_batch
from app.application.streaming import StreamSummary, run_stream
from app.domain.errors import InputFileError
from app.infrastructure.settings import Settings
from app.wiring import LocalPlatform, open_platform
from tests.integration.conftest import NOW, read_table, write_csv

CONFIG = '[sources.feed]\npath = "landing"\nunit = "kWh"\ninterval_minutes = 60\n'
HEADER = "meter_id,timestamp,value"


def _day(meter: str, day: int, scale: float = 1.0) -> list[str]:
    return [f"{meter},2025-06-{day:02d}T{h:02d}:00Z,{(h + 1) * scale:g}" for h in range(24)]


def _drop(folder: Path, name: str, rows: list[str], *, mtime: float | None = None) -> Path:
    """A file arrives atomically: written under a hidden name, then renamed into the folder."""
    hidden = write_csv(folder / f".{name}", rows, header=HEADER)
    path = hidden.rename(folder / name)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _available_now(platform: LocalPlatform, tmp_path: Path, **options: Any) -> StreamSummary:
    """Stream source `feed` of `tmp_path/sources.toml` until what its folder holds now is taken."""
    return run_stream(
        platform,
        source_name="feed",
        config_file=tmp_path / "sources.toml",
        available_now=True,
        now=lambda: NOW,
        **options,
    )


def _tables(platform: LocalPlatform) -> dict[str, list[dict[str, object]]]:
    dropped = {"batch_id", "ingested_at", "updated_at", "quarantined_at", "source_file"}
    return {
        name: [{k: v for k, v in row.items() if k not in dropped} for row in read_table(platform, name).to_pylist()]
        for name in ("silver_readings", "gold_daily_meter_energy", "gold_hourly_portfolio_load")
    }


def test_available_now_takes_each_file_once_in_micro_batches_equal_to_one_batch(tmp_path: Path) -> None:
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    landing = tmp_path / "landing"
    start = time.time() - 100
    # Arrival order differs from name order; the later file corrects meter A's first day.
    _drop(landing, "b.csv", _day("A", 1), mtime=start)
    _drop(landing, "a.csv", _day("A", 1, scale=2), mtime=start + 10)
    _drop(landing, "c.csv", _day("B", 2), mtime=start + 20)

    streamed = Settings(data_dir=tmp_path / "stream", _env_file=None)  # type: ignore[call-arg]
    with open_platform(streamed) as platform:
        summary = _available_now(platform, tmp_path, max_files=2)
        again = _available_now(platform, tmp_path)
        batches = platform.metadata.list_batches(limit=10)
        streamed_tables = _tables(platform)

    assert [len(r.files) for r in summary.micro_batches] == [2, 1]
    assert [Path(f.path).name for r in summary.micro_batches for f in r.files] == ["b.csv", "a.csv", "c.csv"]
    assert summary.readings == 72 and summary.failed == 0
    assert again.micro_batches == []  # nothing new: every file was taken once
    assert {b.kind for b in batches} == {"stream"} and len(batches) == 2

    batch = Settings(data_dir=tmp_path / "batch", _env_file=None)  # type: ignore[call-arg]
    with open_platform(batch) as platform:
        for name in ("b.csv", "a.csv", "c.csv"):
            result = run_batch(
                platform,
                source_name="feed",
                config_file=tmp_path / "sources.toml",
                input_path=str(landing / name),
                now=NOW,
            )
            assert result.status == "succeeded", result.error
        assert _tables(platform) == streamed_tables
    silver = {
        (r["meter_id"], r["interval_start_utc"].hour): r["energy_kwh"] for r in streamed_tables["silver_readings"]
    }
    assert silver[("A", 0)] == 2.0  # the later arrival won


def _rounded(tables: dict[str, list[dict[str, object]]]) -> dict[str, list[dict[str, object]]]:
    """Rows in key order with floats to 1e-9 (a sum's last bit depends on the order it adds in),
    without the line a read came from (one file or two)."""
    return {
        name: sorted(
            (
                {k: round(v, 9) if isinstance(v, float) else v for k, v in row.items() if k != "line_number"}
                for row in rows
            ),
            key=repr,
        )
        for name, rows in tables.items()
    }


def test_a_gap_a_later_micro_batch_ends_is_estimated_as_one_batch_of_all_the_reads_would(tmp_path: Path) -> None:
    """Reproducer: the first file stops at 21:00 and its last two hours were flat-filled; the
    second starts at 01:00 the next day. One batch of both estimates 22:00-01:00 linearly on
    both days; the stream kept the flat fill on the first day."""
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    landing = tmp_path / "landing"
    start = time.time() - 100
    first = [f"A,2025-06-01T{h:02d}:00Z,{h + 1}" for h in range(22)]
    second = [f"A,2025-06-02T{h:02d}:00Z,{30 - h}" for h in range(1, 24)]
    _drop(landing, "1.csv", first, mtime=start)
    _drop(landing, "2.csv", second, mtime=start + 10)

    with open_platform(Settings(data_dir=tmp_path / "stream", _env_file=None)) as platform:  # type: ignore[call-arg]
        summary = _available_now(platform, tmp_path, max_files=1)
        streamed = _tables(platform)
    assert len(summary.micro_batches) == 2 and summary.failed == 0

    everything = write_csv(tmp_path / "all" / "all.csv", first + second, header=HEADER)
    with open_platform(Settings(data_dir=tmp_path / "batch", _env_file=None)) as platform:  # type: ignore[call-arg]
        result = run_batch(
            platform, source_name="feed", config_file=tmp_path / "sources.toml", input_path=str(everything), now=NOW
        )
        assert result.status == "succeeded", result.error
        at_once = _tables(platform)

    estimates = {
        r["interval_start_utc"].isoformat(): (r["estimation_method"], r["energy_kwh"])
        for r in streamed["silver_readings"]
        if r["estimation_method"]
    }
    assert estimates == {
        "2025-06-01T22:00:00+00:00": ("linear", pytest.approx(22 + 7 / 4)),
        "2025-06-01T23:00:00+00:00": ("linear", pytest.approx(22 + 14 / 4)),
        "2025-06-02T00:00:00+00:00": ("linear", pytest.approx(22 + 21 / 4)),
    }
    assert _rounded(streamed) == _rounded(at_once)


def test_a_running_stream_takes_files_as_they_arrive_and_stops_on_request(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    landing = tmp_path / "landing"
    landing.mkdir()
    stop = threading.Event()
    results = []
    done: list[object] = []

    def stream() -> None:
        done.append(
            run_stream(
                platform,
                source_name="feed",
                config_file=tmp_path / "sources.toml",
                trigger_seconds=0.1,
                stop=stop,
                on_micro_batch=results.append,
                now=lambda: NOW,
            )
        )

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        for day in (1, 2, 3):
            _drop(landing, f"day{day}.csv", _day("A", day))
            deadline = time.monotonic() + 30
            while len(results) < day and time.monotonic() < deadline:
                time.sleep(0.05)
        write_csv(landing / ".partial.csv", _day("A", 9), header=HEADER)  # still being written: not taken
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive() and done
    assert [[Path(f.path).name for f in r.files] for r in results] == [["day1.csv"], ["day2.csv"], ["day3.csv"]]
    assert all(r.status == "succeeded" for r in results)
    assert read_table(platform, "silver_readings").num_rows == 72


def test_a_bad_file_fails_its_micro_batch_and_the_stream_goes_on(platform: LocalPlatform, tmp_path: Path) -> None:
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    landing = tmp_path / "landing"
    start = time.time() - 100
    _drop(landing, "bad.csv", ["A,2025-06-01T00:00Z"], mtime=start)  # too few fields: fails its batch as in batch mode
    (landing / "bad.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    os.utime(landing / "bad.csv", (start, start))
    _drop(landing, "good.csv", _day("A", 1), mtime=start + 10)

    summary = _available_now(platform, tmp_path, max_files=1)

    assert [r.status for r in summary.micro_batches] == ["failed", "succeeded"]
    assert summary.failed_files == [str(landing / "bad.csv")]
    assert "bad.csv" in (summary.micro_batches[0].error or "")
    assert read_table(platform, "silver_readings").num_rows == 24


def test_a_missing_landing_folder_is_an_error_naming_it(platform: LocalPlatform, tmp_path: Path) -> None:
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    with pytest.raises(InputFileError, match="landing"):
        _available_now(platform, tmp_path)


@pytest.mark.slow
def test_sigterm_finishes_the_micro_batch_and_exits_zero(tmp_path: Path) -> None:
    """PROCESSING_MODE=streaming run-batch runs the stream; SIGTERM stops it cleanly."""
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    landing = tmp_path / "landing"
    _drop(landing, "day1.csv", _day("A", 1))
    environment = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "lake"),
        "PROCESSING_MODE": "streaming",
        "LOG_FORMAT": "json",
        "SOURCES_CONFIG": str(tmp_path / "sources.toml"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "run-batch", "--source", "feed"],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        lake_log = tmp_path / "lake" / "silver" / "silver_readings" / "_delta_log"
        while not (lake_log.exists() and any(lake_log.glob("*.json"))) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "stopping: SIGTERM" in err
    assert "Stream of feed stopped: 1 micro-batch(es), 24 readings, 0 failed" in out


def test_the_stream_compacts_and_checkpoints_what_it_writes_without_changing_a_row(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    from deltalake import DeltaTable

    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    landing = tmp_path / "landing"
    start = time.time() - 100
    for day in range(1, 5):
        _drop(landing, f"day{day}.csv", _day(f"M{day}", 1), mtime=start + day)
    summary = _available_now(platform, tmp_path, max_files=1, compact_every=0)
    silver = DeltaTable(platform.store.location("silver_readings"))
    before_rows = read_table(platform, "silver_readings")
    files_before = len(silver.file_uris())
    assert len(summary.micro_batches) == 4 and summary.compactions == [] and files_before >= 4

    for day in range(5, 7):
        _drop(landing, f"day{day}.csv", _day(f"M{day}", 1), mtime=start + day)
    summary = _available_now(platform, tmp_path, max_files=1, compact_every=2)

    assert len(summary.compactions) == 1
    files = summary.compactions[0]
    assert set(files) >= {"silver_readings", "gold_daily_meter_energy", "quarantine_readings"}
    assert files["silver_readings"][0] > files_before and files["silver_readings"][1] == 1
    after = read_table(platform, "silver_readings")
    assert after.num_rows == before_rows.num_rows + 48
    assert after.filter(pc.is_in(after["meter_id"], value_set=pa.array(["M1", "M2", "M3", "M4"]))).equals(before_rows)
    assert list((Path(platform.store.location("silver_readings")) / "_delta_log").glob("*.checkpoint.parquet"))
    # A batch after the compaction still commits and rolls back as before.
    _drop(landing, "day7.csv", _day("M7", 1), mtime=start + 7)
    again = _available_now(platform, tmp_path)
    assert [r.status for r in again.micro_batches] == ["succeeded"]


def test_a_read_older_than_the_allowed_lateness_is_stored_and_counted_late(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    (tmp_path / "sources.toml").write_text(CONFIG + 'allowed_lateness = "P7D"\n', encoding="utf-8")
    landing = tmp_path / "landing"
    start = time.time() - 100
    _drop(landing, "recent.csv", _day("A", 20), mtime=start)
    _drop(landing, "backlog.csv", _day("B", 10) + _day("A", 15), mtime=start + 10)

    summary = _available_now(platform, tmp_path, max_files=1)

    recent, backlog = summary.micro_batches
    assert "late_beyond_horizon" not in recent.rule_counts
    # The watermark is 2025-06-20 23:00: day 10 is older than 7 days before it, day 15 is not.
    assert backlog.rule_counts["late_beyond_horizon"] == 24
    silver = read_table(platform, "silver_readings").to_pylist()
    late = [r for r in silver if "late_beyond_horizon" in r["validation_flags"]]
    assert {(r["meter_id"], r["local_date"].day) for r in late} == {("B", 10)} and len(late) == 24
    assert len(silver) == 72
