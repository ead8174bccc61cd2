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


def _files(seed: int, folder: Path) -> tuple[str, list[Path]]:
    """A source config, and the files of its batches: a history of 12 to 45 days, then one to three
    batches of later days, some with late reads for stored days too."""
    rng = random.Random(seed)
    zone = rng.choice(["UTC", "Europe/London", "America/New_York", "Australia/Sydney"])
    minutes = rng.choice([15, 30, 60])
    first = date(2025, 2, 1) + timedelta(days=rng.randint(0, 70))  # some cross a DST change
    history = rng.randint(12, 45)
    total = history + rng.randint(1, 4)
    reads = {f"M{m}": _series(rng, zone, first, total, minutes) for m in range(rng.randint(1, 3))}
    cut = datetime.combine(first + timedelta(days=history), datetime.min.time(), ZoneInfo(zone)).astimezone(UTC)
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


def _full_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stored day of the look-back as rows, none as a summary."""
    monkeypatch.setattr(stages, "rows_before", lambda params, minutes: 100_000)
    monkeypatch.setattr(stages, "rows_from", lambda store, history, lengths, first, near: near)


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
    starts: list[date] = []
    rows_from = stages.rows_from

    def seen(*args: Any) -> date:
        starts.append(rows_from(*args))
        return starts[-1]

    monkeypatch.setattr(stages, "rows_from", seen)
    summarised = _lake(tmp_path, "summarised", config, files)
    # Rows from the earliest of the three meters' last non-zero reads: C's, two days before the batch.
    assert starts == [first + timedelta(days=8)]
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
    """`stages.rows_from` moves the first day of stored rows up to the earliest of the series' last
    non-zero reads, and keeps the reach of a gap (`near`) when a series has no non-zero read in
    those days, when a stored row there has another interval length, or when the batch has two."""
    first, near = date(2025, 5, 11), date(2025, 5, 3)

    def start(rows: list[tuple[str, int, float | None, int]], lengths: list[int]) -> date:
        table = pa.table(
            {
                "meter_id": [r[0] for r in rows],
                "direction": ["import"] * len(rows),
                "local_date": [first - timedelta(days=r[1]) for r in rows],
                "energy_kwh": pa.array([r[2] for r in rows], pa.float64()),
                "interval_minutes": pa.array([r[3] for r in rows], pa.int32()),
            }
        )
        settings = Settings(data_dir=tmp_path / engine, local_engine=engine, _env_file=None)  # type: ignore[call-arg]
        with open_platform(settings) as platform:
            return stages.rows_from(platform.store, platform.store.frame(table), lengths, first, near)

    read = [("A", 2, 1.0, 60), ("A", 1, 0.0, 60), ("B", 3, 2.0, 60), ("B", 1, None, 60)]
    assert start(read, [60]) == first - timedelta(days=3)  # B's last non-zero read
    assert start([*read, ("A", 12, 5.0, 60)], [60]) == first - timedelta(days=3)  # before `near`: not looked at
    assert start([*read, ("C", 2, 0.0, 60)], [60]) == near  # C has only zeros
    assert start([*read, ("C", 2, 1.0, 30)], [60]) == near  # a stored read of another length
    assert start(read, [60, 30]) == near  # a batch of two lengths
    assert start([], [60]) == near  # nothing stored in those days
