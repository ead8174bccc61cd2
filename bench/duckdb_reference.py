"""Hand-written DuckDB SQL reference of the batch pipeline for the `meter_readings` source.

    python -m bench.duckdb_reference --input 'bench-data/5M/*.csv' --out /tmp/reference

A benchmark baseline for local mode: the same layers in plain DuckDB SQL, no Python per row.
It writes ``out/{bronze,silver,quarantine,gold_daily,gold_hourly}.parquet`` (the Parquet a
Delta table's data files hold, without the transaction log) and prints the row counts.

Semantics follow `bench.spark_reference` (the Databricks-mode reference) and the project's
built-in source: ISO 8601 timestamps labelling the interval start, with an offset or as a
Europe/London wall time; 30-minute intervals; direction ``import``; maximum demand 1000 kW;
the project's missing-value markers; the rules in the project's order, first failing wins;
the last read of a key wins. What it leaves out, and the platform does: series rules and
estimation (VEE), merges into existing tables, per-line malformed-row detection, and the
metadata store. `line_number` is the row's position in its file plus one (the header), which
is the physical line when the file has no blank lines.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb

ZONE = "Europe/London"
INTERVAL_MINUTES = 30
MAX_DEMAND_KW = 1000.0
MISSING_VALUES = ("", "N/A", "NA", "n/a", "?", "-", "null", "NULL", "NaN", "nan")
UNIT_TO_KWH = {"wh": 0.001, "kwh": 1.0, "mwh": 1000.0, "gwh": 1_000_000.0, "w": 0.0005, "kw": 0.5, "mw": 500.0}
ISO_TIMESTAMP = (
    r"^\s*(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?(?:\.\d{1,6})?)"
    r"\s*(Z|[+-](?:[01]\d|2[0-3])(?::?[0-5]\d)?)?\s*$"
)
NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
TABLES = ("bronze", "silver", "quarantine", "gold_daily", "gold_hourly")


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _unit_case() -> str:
    cases = " ".join(f"WHEN '{unit}' THEN number * {factor}" for unit, factor in UNIT_TO_KWH.items())
    return f"CASE unit {cases} END"


def statements(input_glob: str, out: Path, *, batch_id: str, now: datetime) -> list[tuple[str, str]]:
    """(layer, SQL) in the order they run; the input glob and paths are bound as literals here."""
    glob = input_glob.replace("'", "''")
    now_text = now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    target = {name: str(out / f"{name}.parquet").replace("'", "''") for name in TABLES}
    return [
        (
            "bronze",
            f"""
            CREATE TABLE bronze AS
            SELECT coalesce(meter_id, '') AS meter_id, coalesce("timestamp", '') AS "timestamp",
                   coalesce(value, '') AS value, coalesce(unit, '') AS unit,
                   '{batch_id}' AS batch_id, 'meter_readings' AS source, filename AS source_file,
                   row_number() OVER (PARTITION BY filename ORDER BY read_order) + 1 AS line_number,
                   TIMESTAMPTZ '{now_text}+00' AS ingested_at
            -- Numbered in the order read first: a window partitioned by file alone keeps no order,
            -- and "the last read wins" needs each row's line.
            FROM (SELECT *, row_number() OVER () AS read_order
                  FROM read_csv('{glob}', header = true, all_varchar = true, filename = true,
                                columns = {{'meter_id': 'VARCHAR', 'timestamp': 'VARCHAR',
                                            'value': 'VARCHAR', 'unit': 'VARCHAR'}}))
            """,
        ),
        ("bronze", f"COPY bronze TO '{target['bronze']}' (FORMAT parquet)"),
        (
            "silver",
            f"""
            CREATE TABLE typed AS
            WITH text AS (
                SELECT trim(meter_id) AS meter_id,
                       regexp_extract("timestamp", '{ISO_TIMESTAMP}', 1) AS wall_text,
                       regexp_extract("timestamp", '{ISO_TIMESTAMP}', 2) AS "offset",
                       trim(value) AS value_text, lower(trim(unit)) AS unit,
                       source_file, line_number, meter_id AS raw_meter_id, "timestamp" AS raw_timestamp,
                       value AS raw_value, unit AS raw_unit
                FROM bronze
            ), parts AS (
                SELECT *, TRY_CAST(replace(wall_text, 'T', ' ') AS TIMESTAMP) AS wall,
                       "offset" <> '' AS has_offset,
                       CASE WHEN "offset" IN ('', 'Z') THEN 0
                            ELSE (CASE WHEN left("offset", 1) = '-' THEN -1 ELSE 1 END)
                                 * (CAST(substr(replace("offset", ':', ''), 2, 2) AS INTEGER) * 3600
                                    + coalesce(TRY_CAST(substr(replace("offset", ':', ''), 4, 2) AS INTEGER), 0) * 60)
                       END AS offset_seconds,
                       TRY_CAST(value_text AS DOUBLE) AS number,
                       CASE WHEN value_text IN ({_sql_list(MISSING_VALUES)}) THEN 'missing'
                            WHEN regexp_full_match(value_text, '{NUMBER}')
                                 AND isfinite(TRY_CAST(value_text AS DOUBLE)) THEN 'ok'
                            ELSE 'unparseable' END AS value_status
                FROM text
            ), located AS (
                SELECT *,
                       CASE WHEN has_offset THEN (wall - to_seconds(offset_seconds)) AT TIME ZONE 'UTC'
                            ELSE wall AT TIME ZONE '{ZONE}' END AS instant
                FROM parts
            ), statused AS (
                SELECT *, instant AT TIME ZONE '{ZONE}' AS local,
                       CASE WHEN wall IS NULL THEN 'unparseable'
                            WHEN (instant AT TIME ZONE '{ZONE}') <> wall
                                 AND ((wall AT TIME ZONE '{ZONE}') AT TIME ZONE '{ZONE}') <> wall
                                 AND (NOT has_offset OR offset_seconds <> 0) THEN 'dst_gap'
                            WHEN NOT has_offset
                                 AND ((instant + INTERVAL 1 HOUR) AT TIME ZONE '{ZONE}') = wall THEN 'ambiguous'
                            ELSE 'ok' END AS timestamp_status
                FROM located
            )
            SELECT meter_id, 'import' AS direction,
                   CASE WHEN timestamp_status = 'ok' THEN instant END AS interval_start_utc,
                   CASE WHEN timestamp_status = 'ok' THEN local END AS interval_start_local,
                   timestamp_status, CASE WHEN value_status = 'ok' THEN number END AS value, value_status,
                   unit, CASE WHEN value_status = 'ok' THEN {_unit_case()} END AS energy_kwh,
                   source_file, line_number, raw_meter_id, raw_timestamp, raw_value, raw_unit
            FROM statused
            """,
        ),
        (
            "silver",
            f"""
            CREATE TABLE validated AS
            SELECT *, CASE
                WHEN meter_id = '' THEN 'meter_id_missing'
                WHEN timestamp_status = 'unparseable' THEN 'timestamp_unparseable'
                WHEN timestamp_status = 'dst_gap' THEN 'timestamp_in_dst_gap'
                WHEN timestamp_status = 'ambiguous' THEN 'timestamp_ambiguous'
                WHEN (hour(interval_start_local) * 3600 + minute(interval_start_local) * 60
                      + second(interval_start_local)) % {INTERVAL_MINUTES * 60} <> 0
                     OR epoch_us(interval_start_utc) % 1000000 <> 0 THEN 'timestamp_off_grid'
                WHEN interval_start_utc > TIMESTAMPTZ '{now_text}+00' - INTERVAL {INTERVAL_MINUTES} MINUTE
                    THEN 'timestamp_in_future'
                WHEN value_status = 'missing' THEN 'value_missing'
                WHEN value_status = 'unparseable' THEN 'value_unparseable'
                WHEN energy_kwh IS NULL THEN 'unit_unknown'
                WHEN energy_kwh < 0 AND direction = 'import' THEN 'negative_import'
                WHEN abs(energy_kwh) * {60 / INTERVAL_MINUTES} > {MAX_DEMAND_KW} THEN 'above_physical_max'
            END AS rejection_rule
            FROM typed
            """,
        ),
        (
            "silver",
            f"""
            COPY (
                SELECT '{batch_id}' AS batch_id, 'meter_readings' AS source, source_file, line_number,
                       rejection_rule AS rule,
                       to_json({{'meter_id': raw_meter_id, 'timestamp': raw_timestamp, 'value': raw_value,
                                'unit': raw_unit}}) AS raw_record,
                       TIMESTAMPTZ '{now_text}+00' AS quarantined_at
                FROM validated WHERE rejection_rule IS NOT NULL
            ) TO '{target["quarantine"]}' (FORMAT parquet)
            """,
        ),
        (
            "silver",
            f"""
            CREATE TABLE silver AS
            SELECT meter_id, direction, interval_start_utc, {INTERVAL_MINUTES} AS interval_minutes, energy_kwh,
                   'actual' AS quality_flag, CAST(interval_start_local AS DATE) AS local_date,
                   '{ZONE}' AS timezone, 'meter_readings' AS source, '{batch_id}' AS batch_id,
                   source_file, line_number
            FROM validated WHERE rejection_rule IS NULL
            QUALIFY row_number() OVER (PARTITION BY meter_id, interval_start_utc, direction
                                       ORDER BY source_file DESC, line_number DESC) = 1
            """,
        ),
        ("silver", f"COPY silver TO '{target['silver']}' (FORMAT parquet)"),
        (
            "gold",
            f"""
            COPY (
                SELECT meter_id, direction, local_date, timezone, sum(energy_kwh) AS energy_kwh,
                       max(energy_kwh * 60 / interval_minutes) AS peak_demand_kw, count(*) AS interval_count,
                       sum(interval_minutes) AS covered_minutes,
                       epoch(CAST(local_date + 1 AS TIMESTAMP) AT TIME ZONE '{ZONE}')
                       - epoch(CAST(local_date AS TIMESTAMP) AT TIME ZONE '{ZONE}') AS day_seconds,
                       CAST(day_seconds / 60 / {INTERVAL_MINUTES} AS BIGINT) AS expected_interval_count,
                       covered_minutes / (day_seconds / 60) AS completeness
                FROM silver GROUP BY meter_id, direction, local_date, timezone
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


def run_reference(input_glob: str, out: Path, *, now: datetime, memory_limit: str | None = None) -> dict[str, float]:
    """Runs every statement; returns seconds per layer and row counts."""
    out.mkdir(parents=True, exist_ok=True)
    batch_id = f"{now:%Y%m%d_%H%M%S}_{uuid.uuid4().hex[:6]}"
    config = {"memory_limit": memory_limit} if memory_limit else {}
    con = duckdb.connect(":memory:", config=config)
    con.execute("SET TimeZone = 'UTC'")
    seconds: dict[str, float] = {}
    for layer, sql in statements(input_glob, out, batch_id=batch_id, now=now):
        clock = time.perf_counter()
        con.execute(sql)
        seconds[layer] = seconds.get(layer, 0.0) + time.perf_counter() - clock
    counts = {name: con.sql(f"SELECT count(*) FROM '{out / name}.parquet'").fetchall()[0][0] for name in TABLES}
    con.close()
    return {**{f"{k}_seconds": v for k, v in seconds.items()}, **{f"{k}_rows": float(v) for k, v in counts.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the hand-written DuckDB SQL reference pipeline and time it.")
    parser.add_argument("--input", required=True, help="CSV path or glob, e.g. 'bench-data/5M/*.csv'")
    parser.add_argument("--out", type=Path, required=True, help="output folder; use a fresh one per run")
    parser.add_argument("--now", type=datetime.fromisoformat, default=None, help="run time, ISO 8601 (default: now)")
    parser.add_argument("--memory-limit", default=None, help="DuckDB memory_limit, e.g. 1GB (default: DuckDB's)")
    args = parser.parse_args(argv)
    now = args.now or datetime.now(UTC)
    clock = time.perf_counter()
    result = run_reference(args.input, args.out, now=now if now.tzinfo else now.replace(tzinfo=UTC))
    total = time.perf_counter() - clock
    for name, value in result.items():
        print(f"{name:>20}: {value:,.3f}" if name.endswith("seconds") else f"{name:>20}: {int(value):,}")
    print(f"{'total_seconds':>20}: {total:.3f}")


if __name__ == "__main__":
    main()
