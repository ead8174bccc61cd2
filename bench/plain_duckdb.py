"""The plain DuckDB SQL pipeline a user writes in an afternoon, for the `meter_readings` CSV.

    python -m bench.plain_duckdb --input 'bench-data/rows-1000000/*.csv' --out /tmp/plain

A second benchmark baseline for local mode, simpler and faster than `bench.duckdb_reference`:
it reads the CSV as text, ``TRY_CAST``s the ISO 8601 timestamps to ``TIMESTAMPTZ`` and the
values to ``DOUBLE``, converts the unit with one ``CASE`` (kWh, Wh, MWh) and judges each row
with one ``CASE`` of row rules, the first failing rule winning:

* ``timestamp_unparseable``: ``TRY_CAST(... AS TIMESTAMPTZ)`` gives null;
* ``timestamp_off_grid``: the instant is not on the 30-minute grid (Europe/London's offsets
  are whole hours, so the UTC grid is the local one);
* ``timestamp_in_future``: the interval has not ended at ``--now``;
* ``value_missing_or_unparseable``: ``TRY_CAST(... AS DOUBLE)`` gives null, or not finite;
* ``unit_unknown``: a unit other than kWh, Wh, MWh (any case);
* ``negative_import``: below zero;
* ``above_physical_max``: a demand above 1,000 kW (more than 500 kWh in half an hour).

Rows with a rule go to quarantine; the rest are de-duplicated by (meter, interval start), the
last read in file order winning (``arg_max`` over a row number). Gold: energy per meter and
Europe/London day with completeness = intervals / the DST-aware day's expected intervals, and
energy per UTC hour. It writes ``out/{quarantine,silver,gold_daily,gold_hourly}.parquet`` and
prints the time of each step, the row counts and the wall time.

What it leaves out, against the reference and the platform: a bronze copy, lineage columns,
the missing-meter rule, the missing-value markers as their own rule, timestamps without an
offset (read as UTC here, Europe/London wall time there) with the DST gap and ambiguity rules,
units other than kWh/Wh/MWh, VEE, merges, and the metadata store. On `bench.generate`'s files
none of these matter: its silver row count is the reference's, and its silver (meter, interval,
energy) and quarantine counts per rule are local mode's (tests/integration/test_bench.py).

"File order" is the order of the read: the files in the glob's sorted order, each from its
top. ``row_number() OVER ()`` (no partition, no order) numbers the rows as the scan delivers
them, which DuckDB keeps in that order (``preserve_insertion_order``, on by default).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

ZONE = "Europe/London"
TABLES = ("quarantine", "silver", "gold_daily", "gold_hourly")


def statements(input_glob: str, out: Path, *, now: datetime) -> list[tuple[str, str]]:
    """(step, SQL) in the order they run; the input glob, paths and `now` are bound as literals."""
    glob = input_glob.replace("'", "''")
    now_text = now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    target = {name: str(out / f"{name}.parquet").replace("'", "''") for name in TABLES}
    return [
        (
            "read",
            f"""
            CREATE TABLE readings AS
            WITH raw AS (
                SELECT *, row_number() OVER () AS row_number
                FROM read_csv('{glob}', header = true, all_varchar = true, filename = true)
            ), typed AS (
                SELECT *, TRY_CAST("timestamp" AS TIMESTAMPTZ) AS ts, TRY_CAST(value AS DOUBLE) AS number
                FROM raw
            ), converted AS (
                SELECT *, number * CASE lower(unit) WHEN 'kwh' THEN 1 WHEN 'wh' THEN 0.001 WHEN 'mwh' THEN 1000 END
                          AS kwh
                FROM typed
            )
            SELECT meter_id, "timestamp", value, unit, filename, row_number, ts, kwh,
                   CASE
                       WHEN ts IS NULL THEN 'timestamp_unparseable'
                       WHEN epoch_us(ts) % 1800000000 <> 0 THEN 'timestamp_off_grid'
                       WHEN ts + INTERVAL 30 MINUTE > TIMESTAMPTZ '{now_text}+00' THEN 'timestamp_in_future'
                       WHEN number IS NULL OR NOT isfinite(number) THEN 'value_missing_or_unparseable'
                       WHEN kwh IS NULL THEN 'unit_unknown'
                       WHEN kwh < 0 THEN 'negative_import'
                       WHEN kwh * 2 > 1000 THEN 'above_physical_max'
                   END AS rule
            FROM converted
            """,
        ),
        (
            "silver",
            f"""
            COPY (
                SELECT filename AS source_file, row_number, rule, meter_id, "timestamp", value, unit
                FROM readings WHERE rule IS NOT NULL
            ) TO '{target["quarantine"]}' (FORMAT parquet)
            """,
        ),
        (
            "silver",
            """
            CREATE TABLE silver AS
            SELECT meter_id, 'import' AS direction, ts AS interval_start_utc, arg_max(kwh, row_number) AS energy_kwh
            FROM readings WHERE rule IS NULL
            GROUP BY meter_id, ts
            """,
        ),
        ("silver", f"COPY silver TO '{target['silver']}' (FORMAT parquet)"),
        (
            "gold",
            f"""
            COPY (
                SELECT meter_id, direction, local_date, sum(energy_kwh) AS energy_kwh,
                       count(*) AS interval_count,
                       CAST((epoch(timezone('{ZONE}', (local_date + 1)::TIMESTAMP))
                             - epoch(timezone('{ZONE}', local_date::TIMESTAMP))) / 1800 AS BIGINT)
                       AS expected_interval_count,
                       interval_count / expected_interval_count AS completeness
                FROM (SELECT *, timezone('{ZONE}', interval_start_utc)::DATE AS local_date FROM silver)
                GROUP BY meter_id, direction, local_date
            ) TO '{target["gold_daily"]}' (FORMAT parquet)
            """,
        ),
        (
            "gold",
            f"""
            COPY (
                SELECT date_trunc('hour', interval_start_utc) AS hour_utc, direction,
                       sum(energy_kwh) AS energy_kwh, count(DISTINCT meter_id) AS meter_count
                FROM silver GROUP BY ALL
            ) TO '{target["gold_hourly"]}' (FORMAT parquet)
            """,
        ),
    ]


def run_plain(input_glob: str, out: Path, *, now: datetime) -> dict[str, float]:
    """Runs every statement; returns seconds per step and row counts."""
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")  # date_trunc('hour') on UTC hours; offset-less stamps read as UTC
    seconds: dict[str, float] = {}
    for step, sql in statements(input_glob, out, now=now):
        clock = time.perf_counter()
        con.execute(sql)
        seconds[step] = seconds.get(step, 0.0) + time.perf_counter() - clock
    counts = {"read": con.sql("SELECT count(*) FROM readings").fetchall()[0][0]}
    for name in TABLES:
        counts[name] = con.sql(f"SELECT count(*) FROM '{out / name}.parquet'").fetchall()[0][0]
    con.close()
    return {**{f"{k}_seconds": v for k, v in seconds.items()}, **{f"{k}_rows": float(v) for k, v in counts.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the plain DuckDB SQL pipeline and time it.")
    parser.add_argument("--input", required=True, help="CSV folder, path or glob, e.g. 'bench-data/rows-1000000/*.csv'")
    parser.add_argument("--out", type=Path, required=True, help="output folder; use a fresh one per run")
    parser.add_argument("--now", type=datetime.fromisoformat, default=None, help="run time, ISO 8601 (default: now)")
    args = parser.parse_args(argv)
    now = args.now or datetime.now(UTC)
    source = Path(args.input)
    input_glob = str(source / "*.csv") if source.is_dir() else args.input
    clock = time.perf_counter()
    result = run_plain(input_glob, args.out, now=now if now.tzinfo else now.replace(tzinfo=UTC))
    total = time.perf_counter() - clock
    for name, value in result.items():
        print(f"{name:>20}: {value:,.3f}" if name.endswith("seconds") else f"{name:>20}: {int(value):,}")
    print(f"{'total_seconds':>20}: {total:.3f}")


if __name__ == "__main__":
    main()
