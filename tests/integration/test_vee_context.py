"""VEE's stored context: days within a gap's reach of the batch come as rows, older ones as one
summary per day, and the lake ends up exactly as it does when every stored day comes as rows."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from app.application import stages
from app.application.runner import run_batch
from app.infrastructure.settings import Settings
from app.wiring import open_platform
from tests.integration.conftest import NOW, read_table, write_csv

#: Columns that differ between two runs of the same batches (their identifiers and clocks).
_RUN_COLUMNS = {"batch_id", "ingested_at", "quarantined_at"}
TABLES = ("silver_readings", "quarantine_readings", "gold_daily_meter_energy", "gold_hourly_portfolio_load")


def _config(rng: random.Random, zone: str, minutes: int) -> str:
    severity = lambda: rng.choice(["warn", "quarantine"])  # noqa: E731
    return (
        "[sources.meters]\n"
        'path = "in/*.csv"\ncolumns = { unit = "unit" }\n'
        f'series_timezone = "{zone}"\ninterval_minutes = {minutes}\n'
        f'rules = {{ spike = {{ severity = "{severity()}" }}, high_low = {{ severity = "{severity()}" }}, '
        f'zero_run = {{ severity = "{severity()}" }} }}\n'
        f"validation = {{ lookback_days = {rng.randint(5, 28)}, min_lookback_days = {rng.randint(1, 5)} }}\n"
        f"estimation = {{ max_gap_days = {rng.randint(1, 7)}, like_day_weeks = {rng.randint(1, 4)}, "
        f"max_linear_minutes = {rng.choice([60, 120, 180])}, max_flat_minutes = {rng.choice([60, 180, 600])} }}\n"
    )


def _series(rng: random.Random, zone: str, first: date, days: int, minutes: int) -> list[tuple[datetime, float]]:
    """One meter's reads: a daily profile with noise, then gaps, zero runs, spikes, high days and
    negative reads (which a row rule rejects)."""
    start = datetime.combine(first, datetime.min.time(), ZoneInfo(zone)).astimezone(UTC)
    end = datetime.combine(first + timedelta(days=days), datetime.min.time(), ZoneInfo(zone)).astimezone(UTC)
    times = [start + timedelta(minutes=minutes * i) for i in range(int((end - start).total_seconds() // 60 // minutes))]
    values = [round(0.2 + 0.3 * (6 <= t.hour < 22) + rng.random() * 0.1, 4) for t in times]
    per_day = 1440 // minutes
    for _ in range(rng.randint(0, 3)):  # whole days far off the average
        day = rng.randrange(days) * per_day
        factor = rng.choice([4.0, 0.05])
        values[day : day + per_day] = [round(v * factor, 4) for v in values[day : day + per_day]]
    for _ in range(rng.randint(0, 4)):
        at = rng.randrange(len(values))
        values[at] = round(values[at] * 25, 4)
    for _ in range(rng.randint(0, 2)):
        at, length = rng.randrange(len(values)), rng.randint(2, 2 * per_day)
        values[at : at + length] = [0.0] * len(values[at : at + length])
    for _ in range(rng.randint(0, 3)):
        at = rng.randrange(len(values))
        values[at] = -0.5
    reads = list(zip(times, values, strict=True))
    for _ in range(rng.randint(1, 5)):  # gaps: an interval, some hours, some days
        at = rng.randrange(len(reads))
        length = rng.choice([1, 3, per_day // 4, per_day // 2, per_day * rng.randint(1, 3)])
        del reads[at : at + length]
    return reads


def _files(seed: int, folder: Path, *, mid_day: bool = False) -> tuple[str, list[Path]]:
    """A source config, and the files of its batches: a history of 12 to 45 days, then one to three
    batches of later days, some with late reads for stored days too. With `mid_day`, the history
    ends and each later batch begins at an interval within a day, as a stream's micro-batches do."""
    rng = random.Random(seed)
    zone = rng.choice(["UTC", "Europe/London", "America/New_York", "Australia/Sydney"])
    minutes = rng.choice([15, 30, 60])
    first = date(2025, 2, 1) + timedelta(days=rng.randint(0, 70))  # some cross a DST change
    history = rng.randint(12, 45)
    total = history + rng.randint(1, 4)
    reads = {f"M{m}": _series(rng, zone, first, total, minutes) for m in range(rng.randint(1, 3))}
    cut = datetime.combine(first + timedelta(days=history), datetime.min.time(), ZoneInfo(zone)).astimezone(UTC)
    if mid_day:
        cut += timedelta(minutes=minutes * rng.randrange(1, 1440 // minutes))
        ends = sorted(
            cut + timedelta(minutes=minutes * rng.randrange(1, 1440 * (total - history) // minutes))
            for _ in range(rng.randint(1, 3))
        )
        later: list[list[str]] = [[] for _ in range(len(ends) + 1)]
        early: list[str] = []
        for meter, series in reads.items():
            for t, value in series:
                line = f"{meter},{t.isoformat()},{value},kWh"
                if t < cut and rng.random() >= 0.01:
                    early.append(line)
                else:  # later, or a late read for a stored day in the first later batch
                    later[sum(t >= end for end in ends)].append(line)
        return _config(rng, zone, minutes), [
            write_csv(folder / "in" / f"b{i}.csv", rows) for i, rows in enumerate([early, *later]) if rows
        ]
    batches: list[list[str]] = [[], []]
    for meter, series in reads.items():
        for t, value in series:
            late = t < cut and rng.random() < 0.01
            batches[1 if t >= cut or late else 0].append(f"{meter},{t.isoformat()},{value},kWh")
    if rng.random() < 0.5:  # the later days in two batches
        batches.append(batches[1][len(batches[1]) // 2 :])
        batches[1] = batches[1][: len(batches[1]) // 2]
    files = [write_csv(folder / "in" / f"b{i}.csv", rows) for i, rows in enumerate(batches) if rows]
    return _config(rng, zone, minutes), files


def _lake(tmp_path: Path, name: str, config: str, files: list[Path], engine: str = "duckdb") -> dict[str, Any]:
    """Run the batches, each file in turn, into a new lake on the local engine; its tables and each
    batch's counts."""
    (tmp_path / f"{name}.toml").write_text(config, encoding="utf-8")
    tables: dict[str, Any] = {}
    settings = Settings(data_dir=tmp_path / name, local_engine=engine, _env_file=None)  # type: ignore[call-arg]
    with open_platform(settings) as platform:
        counts = []
        for file in files:
            result = run_batch(
                platform,
                source_name="meters",
                config_file=tmp_path / f"{name}.toml",
                input_path=str(file),
                now=NOW,
            )
            assert result.status == "succeeded", result.error
            counts.append(result.rule_counts)
        tables["counts"] = counts
        for table in TABLES:
            if platform.store.exists(table):
                data = read_table(platform, table)
                data = data.drop_columns([c for c in data.column_names if c in _RUN_COLUMNS])
                # Gold's sums depend on the order the engine adds the rows in, to the last bit: compared in
                # billionths.
                for i, f in enumerate(data.schema):
                    if pa.types.is_floating(f.type):
                        nano = pc.round(pc.multiply(data[f.name], 1e9)).cast(pa.int64())
                        data = data.set_column(i, pa.field(f.name, pa.int64()), nano)
                tables[table] = data.sort_by([(c, "ascending") for c in data.column_names])
    return tables


def _contexts(monkeypatch: pytest.MonkeyPatch) -> list[stages.Context]:
    """The contexts `stages.rows_from` gives, in order, as the batches run."""
    contexts: list[stages.Context] = []
    rows_from = stages.rows_from

    def seen(*args: Any) -> stages.Context:
        contexts.append(rows_from(*args))
        return contexts[-1]

    monkeypatch.setattr(stages, "rows_from", seen)
    return contexts


def _full_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stored day of the look-back as rows, none as a summary."""
    monkeypatch.setattr(stages, "rows_before", lambda params, minutes: 100_000)
    monkeypatch.setattr(stages, "rows_from", lambda store, history, lengths, start, near: stages.Context(near))


@pytest.mark.parametrize("seed", range(8))
def test_summarised_days_give_the_lake_that_rows_give(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, files = _files(seed, tmp_path)
    engine = ("duckdb", "pandas")[seed % 2]  # each engine builds the summaries
    summarised = _lake(tmp_path, "summarised", config, files, engine)
    _full_context(monkeypatch)
    full = _lake(tmp_path, "full", config, files, engine)
    assert summarised["counts"] == full["counts"]
    for table in TABLES:
        assert (table in summarised) == (table in full)
        if table in full:
            assert summarised[table].equals(full[table]), table


@pytest.mark.parametrize("seed", range(100, 108))
def test_days_split_within_a_day_give_the_lake_that_rows_give(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches that begin within a day, as a stream's micro-batches do: the reads of a day before
    the last non-zero read before a batch come as that day's head (`ROLE_HEAD`: its three
    highest as rows, the others as their count and total), and the lake and every batch's counts
    equal those that every stored day as rows gives, but for the intervals a batch counts
    missing: not again those of a gap an earlier batch judged."""
    config, files = _files(seed, tmp_path, mid_day=True)
    engine = ("duckdb", "pandas")[seed % 2]
    monkeypatch.setattr(stages, "HEAD_MIN_ROWS", 0)  # every head as a head, however small
    heads = _contexts(monkeypatch)
    summarised = _lake(tmp_path, "summarised", config, files, engine)
    assert any(h.until is not None and (h.until.hour, h.until.minute) != (0, 0) for h in heads), heads
    monkeypatch.undo()
    _full_context(monkeypatch)
    full = _lake(tmp_path, "full", config, files, engine)
    # A gap a batch before judged, before the last read ahead of this batch, is not counted again
    # (its stored estimates stand); every other count is the same.
    for head_counts, full_counts in zip(summarised["counts"], full["counts"], strict=True):
        assert head_counts.get("missing_intervals", 0) <= full_counts.get("missing_intervals", 0)
        head_counts.pop("missing_intervals", None), full_counts.pop("missing_intervals", None)
    assert summarised["counts"] == full["counts"]
    for table in TABLES:
        assert (table in summarised) == (table in full)
        if table in full:
            assert summarised[table].equals(full[table]), table


def _day_rows(meter: str, day: date, values: list[float | None]) -> list[str]:
    start = datetime.combine(day, datetime.min.time(), UTC)
    return [
        f"{meter},{(start + timedelta(hours=h)).isoformat()},{v},kWh" for h, v in enumerate(values) if v is not None
    ]


def test_a_like_day_gap_is_estimated_from_the_weeks_before_as_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hourly reads for 30 days, then a day with six hours missing: like-day estimates them from
    the same hours of the four weeks before, which lie past the days VEE takes as rows. The
    series is judged again with those days as rows, so each estimate is the mean of four
    stored reads (it would be NaN, missing, without them: no day within reach is a like day)."""
    config = (
        '[sources.meters]\npath = "in/*.csv"\ncolumns = { unit = "unit" }\n'
        'series_timezone = "UTC"\ninterval_minutes = 60\n'
        "estimation = { max_gap_days = 2, like_day_weeks = 4, max_linear_minutes = 60 }\n"
    )
    first = date(2025, 5, 1)
    history = [r for d in range(30) for r in _day_rows("M1", first + timedelta(days=d), [float(d % 7 + 1)] * 24)]
    gap_day = first + timedelta(days=30)  # a Saturday, as are days 2, 9, 16 and 23 of the history
    day = [1.0] * 6 + [None] * 6 + [1.0] * 12
    files = [
        write_csv(tmp_path / "in" / "a.csv", history),
        write_csv(tmp_path / "in" / "b.csv", _day_rows("M1", gap_day, day)),
    ]
    summarised = _lake(tmp_path, "summarised", config, files)
    silver = summarised["silver_readings"]
    estimates = silver.filter(pc.equal(silver["quality_flag"], "estimated")).to_pylist()
    same_weekday = ((30 - 7) % 7 + 1) * 10**9  # the days 7, 14, 21 and 28 back share one value (in billionths)
    assert [(r["interval_start_utc"].hour, r["estimation_method"], r["energy_kwh"]) for r in estimates] == [
        (h, "like_day", same_weekday) for h in range(6, 12)
    ]
    _full_context(monkeypatch)
    full = _lake(tmp_path, "full", config, files)
    assert silver.equals(full["silver_readings"])


def test_a_gap_or_zero_run_from_the_days_before_is_judged_from_its_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VEE takes stored days as rows from the earliest of the series' last non-zero reads before
    the batch (`stages.rows_from`), not from the whole reach of a gap, and the days before as
    summaries. A gap or a run of zeros that began before the batch's day still has its start:
    meter A's gap began the evening before, B's zeros too, and C's zeros two days before. The
    lake equals the one that every stored day as rows gives, and the rows start where C's last
    non-zero read is."""
    config = (
        '[sources.meters]\npath = "in/*.csv"\ncolumns = { unit = "unit" }\n'
        'series_timezone = "UTC"\ninterval_minutes = 60\n'
        'rules = { zero_run = { severity = "quarantine" } }\n'
        "validation = { max_zero_intervals = 30 }\n"
        "estimation = { max_gap_days = 3, max_linear_minutes = 600, max_flat_minutes = 600 }\n"
    )
    first = date(2025, 5, 1)
    # Runs of 32 zeros, over the limit of 30: 20 and 30 of them stored (within the limit, so kept),
    # 12 and 2 in the batch. Seen from C's last day before the batch, its run is 26 long: over
    # the limit only when seen from its start, two days before.
    zeros = {"B": {(9, h) for h in range(4, 24)} | {(10, h) for h in range(12)}}
    zeros["C"] = {(8, h) for h in range(18, 24)} | {(9, h) for h in range(24)} | {(10, h) for h in range(2)}
    gaps = {"A": {(9, 21), (9, 22), (9, 23), (10, 0), (10, 1)}}

    def day(meter: str, d: int) -> list[str]:
        values = [
            None if (d, h) in gaps.get(meter, ()) else 0.0 if (d, h) in zeros.get(meter, ()) else 1.0 + h / 100
            for h in range(24)
        ]
        return _day_rows(meter, first + timedelta(days=d), values)

    files = [
        write_csv(tmp_path / "in" / "a.csv", [r for m in "ABC" for d in range(10) for r in day(m, d)]),
        write_csv(tmp_path / "in" / "b.csv", [r for m in "ABC" for r in day(m, 10)]),
    ]
    starts = _contexts(monkeypatch)
    summarised = _lake(tmp_path, "summarised", config, files)
    # Rows from the earliest of the three meters' last non-zero reads: C's, two days before the batch
    # at 17:00; that day's reads before it as its head.
    assert starts == [stages.Context(first + timedelta(days=8), datetime(2025, 5, 9, 17, tzinfo=UTC))]
    silver = summarised["silver_readings"].to_pylist()
    estimated = sorted(
        (r["local_date"], r["interval_start_utc"].hour, r["estimation_method"])
        for r in silver
        if r["meter_id"] == "A" and r["estimation_method"] is not None
    )
    batch_day = first + timedelta(days=10)
    assert [(d, h, m) for d, h, m in estimated if d == batch_day] == [
        (batch_day, 0, "linear"),
        (batch_day, 1, "linear"),
    ]
    rejected = summarised["quarantine_readings"].to_pylist()
    assert {(json.loads(r["raw_record"])["meter_id"], r["rule"]) for r in rejected} == {
        ("B", "zero_run"),
        ("C", "zero_run"),
    }

    monkeypatch.undo()
    _full_context(monkeypatch)
    full = _lake(tmp_path, "full", config, files)
    assert summarised["counts"] == full["counts"]
    for table in TABLES:
        assert summarised[table].equals(full[table]), table


@pytest.mark.parametrize("engine", ["duckdb", "pandas"])
def test_rows_start_at_the_reach_of_a_gap_where_a_later_start_would_miss_a_point(tmp_path: Path, engine: str) -> None:
    """`stages.rows_from` moves the start of stored rows up to the earliest of the series' last
    non-zero reads before the batch's first interval, and keeps the reach of a gap (`near`) when a
    series has no non-zero read in those days, when a stored row there has another interval
    length, or when the batch has two."""
    first, near = date(2025, 5, 11), date(2025, 5, 3)
    start_at = datetime(2025, 5, 11, 6, tzinfo=UTC)  # the batch's first interval

    def start(rows: list[tuple[str, int, float | None, int]], lengths: list[int], hour: int = 12) -> stages.Context:
        """Rows (meter, days before `first`, value, interval length), at `hour` (one a day)."""
        at = [datetime.combine(first - timedelta(days=r[1]), datetime.min.time(), UTC) for r in rows]
        table = pa.table(
            {
                "meter_id": [r[0] for r in rows],
                "direction": ["import"] * len(rows),
                "local_date": [first - timedelta(days=r[1]) for r in rows],
                "interval_start_utc": pa.array([t + timedelta(hours=hour) for t in at], pa.timestamp("us", "UTC")),
                "energy_kwh": pa.array([r[2] for r in rows], pa.float64()),
                "interval_minutes": pa.array([r[3] for r in rows], pa.int32()),
            }
        )
        settings = Settings(data_dir=tmp_path / engine, local_engine=engine, _env_file=None)  # type: ignore[call-arg]
        with open_platform(settings) as platform:
            return stages.rows_from(platform.store, platform.store.frame(table), lengths, start_at, near)

    def at(days: int, hour: int = 12) -> stages.Context:
        day = first - timedelta(days=days)
        return stages.Context(day, datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=hour))

    read = [("A", 2, 1.0, 60), ("A", 1, 0.0, 60), ("B", 3, 2.0, 60), ("B", 1, None, 60)]
    assert start(read, [60]) == at(3)  # B's last non-zero read
    assert start([*read, ("A", 12, 5.0, 60)], [60]) == at(3)  # before `near`: not looked at
    # On the batch's first day: before its first interval, a read; from it on, not.
    assert start([("A", 0, 1.0, 60)], [60], hour=5) == at(0, hour=5)
    assert start([("A", 0, 1.0, 60), ("A", 1, 2.0, 60)], [60], hour=6) == at(1, hour=6)
    assert start([*read, ("C", 2, 0.0, 60)], [60]) == stages.Context(near)  # C has only zeros
    assert start([*read, ("C", 2, 1.0, 30)], [60]) == stages.Context(near)  # a stored read of another length
    assert start(read, [60, 30]) == stages.Context(near)  # a batch of two lengths
    assert start([], [60]) == stages.Context(near)  # nothing stored in those days


@pytest.mark.parametrize("engine", ["duckdb", "pandas"])
def test_a_gap_estimated_again_keeps_the_value_of_the_read_rejected_there(tmp_path: Path, engine: str) -> None:
    """The first batch rejects the meter's negative read at 02:00 and estimates 02:00-03:00, each
    estimate carrying the reported value. A late read for 03:00 shortens the gap, which the
    second batch estimates again without the rejected read (it is in quarantine, not context):
    the new estimate keeps the value the meter reported."""
    config = (
        '[sources.meters]\npath = "in/*.csv"\ncolumns = { unit = "unit" }\n'
        'series_timezone = "UTC"\ninterval_minutes = 60\n'
    )
    day = date(2025, 5, 1)
    files = [
        write_csv(tmp_path / "in" / "a.csv", _day_rows("A", day, [1.0, 1.0, -0.5, None, 2.0])),
        write_csv(tmp_path / "in" / "b.csv", _day_rows("A", day, [None, None, None, 3.0])),
    ]
    silver = _lake(tmp_path, "lake", config, files, engine)["silver_readings"].to_pylist()
    assert [
        (r["interval_start_utc"].hour, r["estimation_method"], r["energy_kwh"], r["reported_kwh"]) for r in silver
    ] == [
        (0, None, 10**9, None),
        (1, None, 10**9, None),
        (2, "linear", 2 * 10**9, -5 * 10**8),  # between 01:00 and 03:00 now
        (3, None, 3 * 10**9, None),
        (4, None, 2 * 10**9, None),
    ]
