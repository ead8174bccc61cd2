"""Hand-written PySpark reference of the batch pipeline for the `meter_readings` source.

Used only as a benchmark baseline for the project's own Spark mode: plain DataFrame API,
no pandas, no Python UDFs, no collect of a table. It writes Delta tables to
``out_dir/{bronze,silver,quarantine,gold_daily,gold_hourly}`` in overwrite mode and returns
row counts read from the Delta commit metrics.

Semantics follow the project's built-in source (see ``app/domain``): ISO 8601 timestamps
labelling the interval start, with an offset (``Z``, ``+01:00``, ``+0100``, ``+01``) or
without one, then a wall time in Europe/London; 30-minute intervals; series zone
Europe/London; direction always ``import``; maximum demand 1000 kW. Rules, first failing
wins: meter_id_missing, timestamp_unparseable, timestamp_in_dst_gap, timestamp_ambiguous,
timestamp_off_grid, timestamp_in_future, value_missing, value_unparseable, unit_unknown,
negative_import, above_physical_max.

Where the brief and the project differ, the project wins: the missing-value markers are the
project's defaults (``""``, ``N/A``, ``NA``, ``n/a``, ``?``, ``-``, ``null``, ``NULL``, ``NaN``,
``nan``, matched exactly after trimming) and ``GWh`` is a known unit.

How it is built, and known differences from the project's pipeline:

* Timestamps: the text must match the project's ISO 8601 pattern (two ``regexp_extract``);
  the wall time is Spark's string-to-timestamp cast (which rejects impossible dates such as
  2025-02-30), a written offset is subtracted as seconds, a naive wall time goes through
  ``to_utc_timestamp(wall, 'Europe/London')``.
* DST checks (written for Europe/London's one-hour shift): a wall time is in the
  spring-forward gap when ``from_utc_timestamp(to_utc_timestamp(wall))`` does not give it
  back, and ambiguous when the instant one hour later shows the same wall time. As in the
  project, a gap wall time is rejected unless its written offset is zero, and an ambiguous one
  only when it carries no offset (``to_utc_timestamp`` would take the earlier instant).
* Rows whose field count differs from the header are not quarantined as ``malformed_row``:
  Spark's PERMISSIVE CSV reader pads missing fields with null (the rules then reject the
  row) and drops extra ones. Blank lines are skipped, as in the project.
* ``line_number`` is ``input_file_block_start() + row index within the input partition + 2``:
  the physical line when each file is read as its own partition(s) (true for the sample), and
  otherwise still increasing with the line (so "last read wins" keeps its order) but offset
  when Spark packs several small files into one partition.
* ``trim`` strips spaces only (the project strips all Unicode whitespace).
* ``raw_record`` is Spark's compact ``to_json`` (the project writes ``json.dumps`` spacing).
* Each layer is cached as it is written and the next is computed from the cache (the project
  re-reads silver from its Delta table for gold, limited to the meter-days the batch touched;
  here the output is fresh, so both give the same gold).

The session time zone must be UTC (``spark.sql.session.timeZone``): naive wall times are cast
as UTC before ``to_utc_timestamp`` moves them out of Europe/London, and ``to_date`` /
``date_trunc`` work in the session zone.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

SOURCE = "meter_readings"
ZONE = "Europe/London"
INTERVAL_MINUTES = 30
DIRECTION = "import"
MAX_DEMAND_KW = 1000.0
FILE_COLUMNS = ("meter_id", "timestamp", "value", "unit")
SILVER_KEYS = ("meter_id", "interval_start_utc", "direction")
# The project's default missing-value markers, matched exactly after trimming.
MISSING_VALUES = ("", "N/A", "NA", "n/a", "?", "-", "null", "NULL", "NaN", "nan")
# Unit (lower case) -> factor to kWh over one interval; power units are averages over the interval.
_HOURS = INTERVAL_MINUTES / 60
UNIT_TO_KWH = {
    "wh": 0.001,
    "kwh": 1.0,
    "mwh": 1000.0,
    "gwh": 1_000_000.0,
    "w": 0.001 * _HOURS,
    "kw": 1.0 * _HOURS,
    "mw": 1000.0 * _HOURS,
}
# The project's ISO 8601 pattern: group 1 the wall time, group 2 the offset (may be empty).
ISO_TIMESTAMP = (
    r"^\s*(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?(?:\.\d{1,6})?)"
    r"\s*(Z|[+-](?:[01]\d|2[0-3])(?::?[0-5]\d)?)?\s*$"
)
NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
TABLES = ("bronze", "silver", "quarantine", "gold_daily", "gold_hourly")
CSV_SCHEMA = StructType([StructField(name, StringType(), nullable=True) for name in FILE_COLUMNS])


def read_bronze(spark: SparkSession, input_glob: str, *, batch_id: str, ingested_at: datetime) -> DataFrame:
    """Every CSV field as a string (empty, not null, when blank) plus lineage."""
    rows_in_partition = F.monotonically_increasing_id() - F.shiftleft(F.spark_partition_id().cast("long"), 33)
    raw = spark.read.csv(input_glob, schema=CSV_SCHEMA, header=True, mode="PERMISSIVE")
    return raw.select(
        *[F.coalesce(F.col(c), F.lit("")).alias(c) for c in FILE_COLUMNS],
        F.lit(batch_id).alias("batch_id"),
        F.lit(SOURCE).alias("source"),
        F.input_file_name().alias("source_file"),
        (F.input_file_block_start() + rows_in_partition + 2).alias("line_number"),
        F.lit(ingested_at).alias("ingested_at"),
    )


def _offset_seconds(offset: Column) -> Column:
    """``Z``, ``+HH``, ``+HHMM`` or ``+HH:MM`` -> signed seconds east of UTC (0 when absent or ``Z``)."""
    sign = F.substring(offset, 1, 1)
    digits = F.translate(offset, ":", "")
    hours = F.substring(digits, 2, 2).try_cast("int")
    minutes = F.coalesce(F.substring(digits, 4, 2).try_cast("int"), F.lit(0))
    seconds = hours * 3600 + minutes * 60
    return F.when(sign == "+", seconds).when(sign == "-", -seconds).otherwise(0)


def _typed(bronze: DataFrame) -> DataFrame:
    """Trimmed text, the wall time and written offset of the timestamp, and the value with its status.

    Each step is its own projection and later steps refer to earlier columns, so Spark evaluates
    the regexes, casts and zone conversions once per row rather than once per use.
    """
    text = bronze.select(
        F.trim("meter_id").alias("meter_id"),
        F.regexp_extract("timestamp", ISO_TIMESTAMP, 1).alias("wall_text"),
        F.regexp_extract("timestamp", ISO_TIMESTAMP, 2).alias("offset"),
        F.trim("value").alias("value_text"),
        F.lower(F.trim("unit")).alias("unit"),
        "source_file",
        "line_number",
        F.struct(*FILE_COLUMNS).alias("raw"),
    )
    typed = text.select(
        "meter_id",
        F.col("wall_text").try_cast("timestamp").alias("wall"),  # naive: cast in the (UTC) session zone
        (F.col("offset") != "").alias("has_offset"),
        _offset_seconds(F.col("offset")).alias("offset_seconds"),
        "value_text",
        F.col("value_text").try_cast("double").alias("value"),
        "unit",
        "source_file",
        "line_number",
        "raw",
    )
    finite = F.col("value_text").rlike(NUMBER) & (F.abs("value") < F.lit(float("inf")))
    value_status = F.when(F.col("value_text").isin(*MISSING_VALUES), "missing").when(finite, "ok")
    return typed.withColumn("value_status", value_status.otherwise("unparseable"))


def _energy_kwh(value: Column, unit: Column) -> Column:
    """Value in its unit -> kWh over the interval; null for an unknown unit."""
    expr = None
    for name, factor in UNIT_TO_KWH.items():
        expr = (F.when if expr is None else expr.when)(unit == name, value * factor)
    assert expr is not None
    return expr


def parse(bronze: DataFrame) -> DataFrame:
    """Typed rows: UTC interval start and its London wall time (null unless the timestamp is ok),
    statuses for the timestamp and the value, and the energy in kWh; the raw fields stay for quarantine.
    """
    wall, has_offset = F.col("wall"), F.col("has_offset")
    from_offset = F.timestamp_micros(F.unix_micros(wall) - F.col("offset_seconds").cast("long") * 1_000_000)
    instant = F.when(has_offset, from_offset).otherwise(F.to_utc_timestamp(wall, ZONE))  # earlier when ambiguous
    located = _typed(bronze).withColumn("instant", instant).withColumn("local", F.from_utc_timestamp("instant", ZONE))
    # A wall time in the spring-forward gap never comes back from a round trip through the zone;
    # `local != wall` first, so the round trip runs only on rows whose offset disagrees with the zone.
    in_gap = (F.col("local") != wall) & (F.from_utc_timestamp(F.to_utc_timestamp(wall, ZONE), ZONE) != wall)
    ambiguous = ~has_offset & (F.from_utc_timestamp(F.col("instant") + F.expr("INTERVAL 1 HOUR"), ZONE) == wall)
    status = (
        F.when(wall.isNull(), "unparseable")
        .when(in_gap & (~has_offset | (F.col("offset_seconds") != 0)), "dst_gap")
        .when(ambiguous, "ambiguous")
        .otherwise("ok")
    )
    ok = F.col("timestamp_status") == "ok"
    return (
        located.withColumn("timestamp_status", status)
        .select(
            "meter_id",
            F.lit(DIRECTION).alias("direction"),
            F.when(ok, F.col("instant")).alias("interval_start_utc"),
            F.when(ok, F.col("local")).alias("interval_start_local"),
            "timestamp_status",
            F.when(F.col("value_status") == "ok", F.col("value")).alias("value"),
            "value_status",
            "unit",
            "source_file",
            "line_number",
            "raw",
        )
        .withColumn("energy_kwh", _energy_kwh(F.col("value"), F.col("unit")))
    )


def rule_checks(now_utc: datetime) -> list[tuple[str, Column]]:
    """The rules in the order they are tried; each column is true where a row fails."""
    start, local = F.col("interval_start_utc"), F.col("interval_start_local")
    seconds_of_day = F.hour(local) * 3600 + F.minute(local) * 60 + F.second(local)
    energy = F.col("energy_kwh")
    return [
        ("meter_id_missing", F.col("meter_id") == ""),
        ("timestamp_unparseable", F.col("timestamp_status") == "unparseable"),
        ("timestamp_in_dst_gap", F.col("timestamp_status") == "dst_gap"),
        ("timestamp_ambiguous", F.col("timestamp_status") == "ambiguous"),
        (
            "timestamp_off_grid",
            (seconds_of_day % (INTERVAL_MINUTES * 60) != 0) | (F.unix_micros(start) % 1_000_000 != 0),
        ),
        ("timestamp_in_future", start > F.lit(now_utc - timedelta(minutes=INTERVAL_MINUTES))),
        ("value_missing", F.col("value_status") == "missing"),
        ("value_unparseable", F.col("value_status") == "unparseable"),
        ("unit_unknown", energy.isNull()),
        ("negative_import", (energy < 0) & (F.col("direction") == "import")),
        ("above_physical_max", F.abs(energy) * (60 / INTERVAL_MINUTES) > MAX_DEMAND_KW),
    ]


def validate(parsed: DataFrame, now_utc: datetime) -> DataFrame:
    """Parsed rows + ``rejection_rule``: the first failing rule's name, null when all pass."""
    chain = None
    for name, failed in rule_checks(now_utc):
        chain = (F.when if chain is None else chain.when)(failed, F.lit(name))
    assert chain is not None
    return parsed.withColumn("rejection_rule", chain)


def silver(validated: DataFrame, *, batch_id: str) -> DataFrame:
    """Accepted rows, one per meter, interval and direction: the row read last wins."""
    last_read = Window.partitionBy(*SILVER_KEYS).orderBy(F.desc("source_file"), F.desc("line_number"))
    return (
        validated.filter(F.col("rejection_rule").isNull())
        .withColumn("_rank", F.row_number().over(last_read))
        .filter(F.col("_rank") == 1)
        .select(
            "meter_id",
            "direction",
            "interval_start_utc",
            F.lit(INTERVAL_MINUTES).cast("int").alias("interval_minutes"),
            "energy_kwh",
            F.lit("actual").alias("quality_flag"),
            F.to_date("interval_start_local").alias("local_date"),
            F.lit(ZONE).alias("timezone"),
            F.lit(SOURCE).alias("source"),
            F.lit(batch_id).alias("batch_id"),
            "source_file",
            "line_number",
        )
    )


def quarantine(validated: DataFrame, *, batch_id: str, at: datetime) -> DataFrame:
    """Rejected rows with their rule and the raw record as JSON, keys as in the file header."""
    return validated.filter(F.col("rejection_rule").isNotNull()).select(
        F.lit(batch_id).alias("batch_id"),
        F.lit(SOURCE).alias("source"),
        "source_file",
        "line_number",
        F.col("rejection_rule").alias("rule"),
        F.to_json("raw").alias("raw_record"),
        F.lit(at).alias("quarantined_at"),
    )


def _local_midnight_utc(day: Column) -> Column:
    return F.to_utc_timestamp(day.cast("timestamp"), ZONE)


def gold_daily(silver_rows: DataFrame) -> DataFrame:
    """Energy, peak demand and DST-aware completeness per meter and local day."""
    day_minutes = (
        F.unix_seconds(_local_midnight_utc(F.date_add("local_date", 1)))
        - F.unix_seconds(_local_midnight_utc(F.col("local_date")))
    ) / 60
    return (
        silver_rows.groupBy("meter_id", "direction", "local_date", "timezone")
        .agg(
            F.sum("energy_kwh").alias("energy_kwh"),
            F.max(F.col("energy_kwh") * 60 / F.col("interval_minutes")).alias("peak_demand_kw"),
            F.count(F.lit(1)).alias("interval_count"),
            F.sum(F.col("interval_minutes").cast("long")).alias("covered_minutes"),
        )
        .withColumn("day_minutes", day_minutes)
        .select(
            "meter_id",
            "direction",
            "local_date",
            "timezone",
            "energy_kwh",
            "peak_demand_kw",
            "interval_count",
            (F.col("day_minutes") / INTERVAL_MINUTES).cast("long").alias("expected_interval_count"),
            (F.col("covered_minutes") / F.col("day_minutes")).alias("completeness"),
        )
    )


def gold_hourly(silver_rows: DataFrame) -> DataFrame:
    """Energy and number of reporting meters per UTC hour and direction."""
    return (
        silver_rows.groupBy(F.date_trunc("hour", "interval_start_utc").alias("hour_utc"), "direction")
        .agg(F.sum("energy_kwh").alias("energy_kwh"), F.countDistinct("meter_id").alias("meter_count"))
        .select("hour_utc", "direction", "energy_kwh", "meter_count")
    )


def _write(frame: DataFrame, path: str) -> None:
    frame.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)


def _written_rows(spark: SparkSession, path: str) -> int:
    """Rows written by the table's last commit, from the Delta log (no scan of the data)."""
    from delta.tables import DeltaTable

    last = DeltaTable.forPath(spark, path).history(1).select("operationMetrics").first()
    assert last is not None
    return int(last["operationMetrics"]["numOutputRows"])


def run_reference(spark: SparkSession, input_glob: str, out_dir: str, *, now_utc: datetime) -> dict[str, int]:
    """Bronze -> silver + quarantine -> gold for `input_glob`; returns the row counts."""
    if spark.conf.get("spark.sql.session.timeZone") != "UTC":
        raise ValueError("the reference needs spark.sql.session.timeZone=UTC")
    now_utc = now_utc if now_utc.tzinfo else now_utc.replace(tzinfo=UTC)
    batch_id = f"{now_utc:%Y%m%d_%H%M%S}_{uuid.uuid4().hex[:6]}"
    paths = {name: str(Path(out_dir) / name) for name in TABLES}

    # Each layer is cached as it is written and the next one is computed from the cache: the
    # CSV is parsed once, rows are typed and validated once, and gold reads silver from memory.
    cached: list[DataFrame] = []

    def keep(frame: DataFrame) -> DataFrame:
        cached.append(frame.persist())
        return frame

    try:
        bronze = keep(read_bronze(spark, input_glob, batch_id=batch_id, ingested_at=now_utc))
        _write(bronze, paths["bronze"])
        validated = keep(validate(parse(bronze), now_utc))
        _write(quarantine(validated, batch_id=batch_id, at=now_utc), paths["quarantine"])
        silver_rows = keep(silver(validated, batch_id=batch_id))
        _write(silver_rows, paths["silver"])
        _write(gold_daily(silver_rows), paths["gold_daily"])
        _write(gold_hourly(silver_rows), paths["gold_hourly"])
    finally:
        for frame in cached:
            frame.unpersist()

    counts = {name: _written_rows(spark, paths[name]) for name in TABLES}
    counts["rows_read"] = counts.pop("bronze")
    counts["duplicates_replaced"] = counts["rows_read"] - counts["quarantine"] - counts["silver"]
    return counts


def build_session(master: str, shuffle_partitions: int) -> SparkSession:
    """A local session with Delta; the jars resolve from Maven Central on first use."""
    from delta import configure_spark_with_delta_pip

    builder = (
        SparkSession.builder.master(master)
        .appName("spark-reference")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        # Delta rebuilds a snapshot with 50 tasks by default: far too many on one machine.
        .config("spark.databricks.delta.snapshotPartitions", "2")
    )
    return configure_spark_with_delta_pip(builder).getOrCreate()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the hand-written PySpark reference pipeline and time it.")
    parser.add_argument("--input", required=True, help="CSV path or glob, e.g. 'app/sample_data/meter_readings/*.csv'")
    parser.add_argument("--out", required=True, help="output folder; use a fresh one per run")
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--shuffle-partitions", type=int, default=4)
    parser.add_argument("--now", type=datetime.fromisoformat, default=None, help="run time, ISO 8601 (default: now)")
    args = parser.parse_args(argv)

    clock = time.perf_counter()
    spark = build_session(args.master, args.shuffle_partitions)
    spark.sparkContext.setLogLevel("ERROR")
    startup = time.perf_counter() - clock
    clock = time.perf_counter()
    counts = run_reference(spark, args.input, args.out, now_utc=args.now or datetime.now(UTC))
    seconds = time.perf_counter() - clock
    for name, count in counts.items():
        print(f"{name:>20}: {count:,}")
    print(f"{'session start':>20}: {startup:.2f}s")
    print(f"{'pipeline':>20}: {seconds:.2f}s")
    spark.stop()


if __name__ == "__main__":
    main()
