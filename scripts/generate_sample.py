"""Generate the bundled `meter_readings` sample: 36 meters, half-hourly, March-April 2025.

The meters are in Europe/London, so the sample crosses the spring-forward day
(2025-03-30 has 46 half-hours). Like real exports it carries mess on purpose:
exact and corrected duplicates, junk values, a unit mix (Wh, kWh, MWh), a
two-day gap on one meter, and one row for every first-set validation rule.

Run: python scripts/generate_sample.py [OUT_DIR]
"""

from __future__ import annotations

import csv
import math
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")
METERS = [f"MTR-{n:04d}" for n in range(1, 37)]
START = datetime(2025, 3, 1, tzinfo=LONDON)
END = datetime(2025, 5, 1, tzinfo=LONDON)
STEP = timedelta(minutes=30)
GAP_METER, GAP_START, GAP_END = "MTR-0007", datetime(2025, 4, 10, 9), datetime(2025, 4, 11, 15)


def iso(instant: datetime) -> str:
    return instant.astimezone(LONDON).isoformat(timespec="seconds")


def load_kwh(rng: random.Random, meter_index: int, local: datetime) -> float:
    """Household half-hour energy: base load, morning and evening peaks, weekend lift."""
    hour = local.hour + local.minute / 60
    size = 0.6 + (meter_index % 7) * 0.15
    shape = 0.12 + 0.35 * math.exp(-((hour - 7.5) ** 2) / 2) + 0.6 * math.exp(-((hour - 19) ** 2) / 4)
    if local.weekday() >= 5:
        shape *= 1.15
    return max(0.0, size * shape * rng.uniform(0.8, 1.2))


def unit_for(meter_index: int) -> tuple[str, float]:
    if meter_index % 9 == 4:
        return "Wh", 1000.0
    if meter_index == 30:
        return "MWh", 0.001
    return "kWh", 1.0


def rows_for_month(rng: random.Random, month: int) -> list[list[str]]:
    rows: list[list[str]] = []
    for index, meter in enumerate(METERS):
        unit, factor = unit_for(index)
        instant = START.astimezone(UTC)
        while instant < END.astimezone(UTC):
            local = instant.astimezone(LONDON)
            skip = meter == GAP_METER and GAP_START <= local.replace(tzinfo=None) < GAP_END
            if local.month == month and not skip:
                value = round(load_kwh(rng, index, local) * factor, 6 if unit == "MWh" else 3)
                rows.append([meter, iso(instant), f"{value:g}" if unit != "MWh" else f"{value:.6f}", unit])
            instant += STEP
    return rows


def add_mess(rng: random.Random, rows: list[list[str]], month: int) -> list[list[str]]:
    """Duplicates, corrections and one bad row per rule, at seeded positions."""
    out = list(rows)
    for row in rng.sample(rows, k=len(rows) // 200):
        out.insert(rng.randrange(len(out)), list(row))  # exact re-send
    for row in rng.sample(rows, k=20):
        corrected = list(row)
        corrected[2] = f"{float(row[2]) * 1.1:g}"
        out.append(corrected)  # a correction later in the file wins
    junk_values = ["", "N/A", "abc", "-", "1e309", "12,5"]
    for value in junk_values:
        row = list(rng.choice(rows))
        row[2] = value
        out.insert(rng.randrange(len(out)), row)
    day = f"2025-{month:02d}-15"
    bad = [
        ["MTR-0003", "not-a-timestamp", "0.4", "kWh"],
        ["MTR-0003", f"{day}T25:00:00+00:00", "0.4", "kWh"],
        ["MTR-0004", f"{day}T10:17:00+01:00", "0.4", "kWh"],  # off the half-hour grid
        ["MTR-0005", "2031-01-01T00:00:00+00:00", "0.4", "kWh"],  # in the future
        ["MTR-0006", f"{day}T11:00:00+01:00", "0.4", "kwhh"],  # unit typo
        ["MTR-0008", f"{day}T12:00:00+01:00", "-0.25", "kWh"],  # negative on import
        ["MTR-0009", f"{day}T13:00:00+01:00", "99999", "kWh"],  # above physical maximum
        ["", f"{day}T14:00:00+01:00", "0.4", "kWh"],  # no meter id
    ]
    if month == 3:
        bad.append(["MTR-0010", "2025-03-30T01:30:00+01:00", "0.4", "kWh"])  # in the DST gap
    for row in bad:
        out.insert(rng.randrange(len(out)), row)
    return out


def main(out_dir: Path) -> None:
    rng = random.Random(20250301)
    out_dir.mkdir(parents=True, exist_ok=True)
    for month in (3, 4):
        rows = add_mess(rng, rows_for_month(rng, month), month)
        path = out_dir / f"readings_2025-{month:02d}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["meter_id", "timestamp", "value", "unit"])
            writer.writerows(rows)
        print(f"{path}: {len(rows)} rows")


if __name__ == "__main__":
    default = Path(__file__).resolve().parent.parent / "app" / "sample_data" / "meter_readings"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
