"""Synthetic `meter_readings` CSV at a chosen size, one file per local day.

    python -m bench.generate --rows 5M --out bench-data/5M [--meters 1000] [--start 2025-01-01]

The files have the bundled sample's layout (``meter_id,timestamp,value,unit``): half-hourly
reads of `--meters` meters, each file one Europe/London calendar day, timestamps in ISO 8601
with the local offset (so the spring-forward and fall-back days have 46 and 50 intervals).
Beside the clean reads:

* about 1% duplicates: a second read of an interval (a corrected value), later in the same file;
* about 0.5% junk values: missing markers, text, negative and physically impossible values,
  and unit typos, which the platform quarantines;
* a unit mix: 90% kWh, 7% Wh and 3% MWh, the value scaled to its unit.

Everything is vectorised (numpy and Arrow): 10M readings are written in about a minute.
The output is deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import math
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

ZONE = ZoneInfo("Europe/London")
INTERVAL = timedelta(minutes=30)
DUPLICATE_SHARE = 0.01
JUNK_SHARE = 0.005
#: (value text, unit) pairs the platform must quarantine, and the rule each one breaks.
JUNK = [
    ("", "kWh"),  # value_missing
    ("N/A", "kWh"),  # value_missing
    ("abc", "kWh"),  # value_unparseable
    ("-0.4", "kWh"),  # negative_import
    ("9e9", "kWh"),  # above_physical_max
    ("0.25", "kwhh"),  # unit_unknown
]
UNITS = [("kWh", 1.0, 0.90), ("Wh", 1000.0, 0.07), ("MWh", 0.001, 0.03)]


def parse_size(text: str) -> int:
    """'5M', '250k', '1000000' -> a number of readings."""
    text = text.strip().lower().replace("_", "")
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if factor > 1 else text
    return int(float(number) * factor)


def _local_day_starts(start: date, days: int) -> list[datetime]:
    """UTC instants of local midnight for `days + 1` consecutive local days."""
    return [
        datetime.combine(start + timedelta(days=d), datetime.min.time(), ZONE).astimezone(ZoneInfo("UTC"))
        for d in range(days + 1)
    ]


def _iso_local(instants: list[datetime]) -> list[str]:
    """UTC instants -> local ISO 8601 with offset, e.g. 2025-04-01T00:30:00+01:00."""
    return [t.astimezone(ZONE).isoformat() for t in instants]


def day_table(day_index: int, day: date, *, meters: int, seed: int) -> pa.Table:
    """All meters' reads for one local day, with duplicates, junk and mixed units."""
    rng = np.random.default_rng([seed, day_index])
    midnight, next_midnight = _local_day_starts(day, 1)
    n = int((next_midnight - midnight) / INTERVAL)
    stamps = pa.array(_iso_local([midnight + i * INTERVAL for i in range(n)]))
    meter_ids = pa.array([f"MTR-{m:06d}" for m in range(meters)])
    meter_index = np.repeat(np.arange(meters), n)
    slot = np.tile(np.arange(n), meters)
    # A daily shape (low at night, evening peak) times a per-meter size, with noise.
    hour = slot * 0.5
    shape = 0.35 + 0.25 * np.sin((hour - 7) / 24 * 2 * math.pi) + 0.4 * np.exp(-(((hour - 18.5) / 2.0) ** 2))
    size = np.random.default_rng([seed, 0]).uniform(0.2, 1.5, meters)[meter_index]
    kwh = np.round(shape * size * rng.uniform(0.8, 1.2, n * meters), 3)
    rows = n * meters

    unit_pick = rng.choice(len(UNITS), size=rows, p=[u[2] for u in UNITS])
    factors = np.array([u[1] for u in UNITS])[unit_pick]
    values = pc.cast(pa.array(np.round(kwh * factors, 6)), pa.string())
    units = pa.array(np.array([u[0] for u in UNITS], dtype=object)[unit_pick], pa.string())

    junk_rows = np.flatnonzero(rng.random(rows) < JUNK_SHARE)
    junk_pick = rng.integers(0, len(JUNK), junk_rows.size)
    values_np = np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)
    units_np = np.asarray(units.to_numpy(zero_copy_only=False), dtype=object)
    values_np[junk_rows] = [JUNK[j][0] for j in junk_pick]
    units_np[junk_rows] = [JUNK[j][1] for j in junk_pick]

    # Duplicates: a corrected read of an earlier interval, appended after the day's reads.
    dup_rows = np.sort(rng.choice(rows, size=int(rows * DUPLICATE_SHARE), replace=False))
    order = np.concatenate([np.arange(rows), dup_rows])
    corrected = np.round(kwh[dup_rows] * rng.uniform(0.9, 1.1, dup_rows.size), 3)
    values_all = np.concatenate([values_np, pc.cast(pa.array(corrected), pa.string()).to_numpy(zero_copy_only=False)])
    units_all = np.concatenate([units_np, np.full(dup_rows.size, "kWh", dtype=object)])
    return pa.table(
        {
            "meter_id": meter_ids.take(pa.array(meter_index[order])),
            "timestamp": stamps.take(pa.array(slot[order])),
            "value": pa.array(values_all, pa.string()),
            "unit": pa.array(units_all, pa.string()),
        }
    )


def generate(rows: int, out: Path, *, meters: int = 1000, start: date = date(2025, 1, 1), seed: int = 7) -> int:
    """Write about `rows` readings (duplicates included) as one CSV per local day; returns rows written."""
    out.mkdir(parents=True, exist_ok=True)
    written, index = 0, 0
    per_day_clean = meters * 48
    while written < rows:
        day = start + timedelta(days=index)
        table = day_table(index, day, meters=meters, seed=seed)
        if written and written + table.num_rows > rows and written + per_day_clean // 2 > rows:
            break
        with (out / f"readings_{day.isoformat()}.csv").open("wb") as sink:
            sink.write((",".join(table.column_names) + "\n").encode())
            pcsv.write_csv(table, sink, write_options=pcsv.WriteOptions(include_header=False, quoting_style="none"))
        written += table.num_rows
        index += 1
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate synthetic meter_readings CSV, one file per local day.")
    parser.add_argument("--rows", type=parse_size, required=True, help="readings to write, e.g. 1M, 5M, 10M")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2025, 1, 1), help="first local day")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    written = generate(args.rows, args.out, meters=args.meters, start=args.start, seed=args.seed)
    print(f"{written:,} readings in {len(list(args.out.glob('*.csv')))} files under {args.out}")


if __name__ == "__main__":
    main()
