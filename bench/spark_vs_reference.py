"""Databricks mode against a hand-written PySpark pipeline, on the same files and Spark session.

    python -m bench.spark_vs_reference [--input GLOB] [--copies N] [--rounds 3] [--master local[2]]

Each round runs the platform's Spark mode (fresh lake, fresh metadata database) and then
`bench.spark_reference` (fresh output folder); a first, untimed round of each warms the JVM.
Prints the wall time of every timed round, the medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from app.application.pipeline import BatchPipeline
from app.infrastructure import readers
from app.infrastructure.logging import configure_logging, get_logger
from app.infrastructure.readers import resolve_inputs
from app.infrastructure.repositories.metadata import SqlMetadataStore
from app.infrastructure.repositories.spark_repository import SparkDeltaStore
from app.infrastructure.source_config import SAMPLE_DIR, load_sources
from app.infrastructure.spark import spark_session
from bench.spark_reference import run_reference

NOW = datetime(2025, 11, 1, tzinfo=UTC)


def run_platform(spark: object, input_glob: str, work: Path) -> tuple[float, int]:
    """One batch in Databricks mode into a fresh lake; (seconds, silver rows)."""
    source = load_sources(None)["meter_readings"]
    metadata = SqlMetadataStore(f"sqlite:///{work / 'metadata.db'}")
    metadata.migrate()
    store = SparkDeltaStore(spark, str(work / "lake"))  # type: ignore[arg-type]
    pipeline = BatchPipeline(
        store=store, metadata=metadata, reader=readers, execution_mode="databricks", logger=get_logger()
    )
    try:
        clock = time.perf_counter()
        result = pipeline.run(source, resolve_inputs(input_glob), force=True, now=NOW)
        seconds = time.perf_counter() - clock
    finally:
        metadata.dispose()
    if result.status != "succeeded" or result.reconciliation is None:
        raise SystemExit(f"platform run failed: {result.error}")
    return seconds, result.reconciliation.rows_accepted


def run_hand_written(spark: object, input_glob: str, work: Path) -> tuple[float, int]:
    clock = time.perf_counter()
    counts = run_reference(spark, input_glob, str(work / "reference"), now_utc=NOW)  # type: ignore[arg-type]
    return time.perf_counter() - clock, counts["silver"]


def replicate(input_glob: str, copies: int, folder: Path) -> str:
    """`copies` copies of the input files, each copy's meter ids renamed (MTR-0001 -> C2-MTR-0001)."""
    for copy in range(1, copies + 1):
        for path in resolve_inputs(input_glob):
            with path.open(encoding="utf-8") as src, (folder / f"c{copy}_{path.name}").open("w") as out:
                out.write(next(src))
                for line in src:
                    out.write(f"C{copy}-{line}" if line.strip() else line)
    return str(folder / "*.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(SAMPLE_DIR / "meter_readings" / "*.csv"))
    parser.add_argument("--copies", type=int, default=1, help="replicate the input with renamed meters")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    configure_logging(log_format="console", level="WARNING")
    if args.copies > 1:
        args.input = replicate(args.input, args.copies, Path(tempfile.mkdtemp(prefix="bench-input-")))
    spark = spark_session(args.master, {"spark.sql.shuffle.partitions": os.environ.get("SHUFFLE_PARTITIONS", "4")})
    files = resolve_inputs(args.input)
    rows = sum(1 for p in files for _ in p.open(encoding="utf-8")) - len(files)
    print(f"input: {args.input} ({rows:,} data lines); master {args.master}; {os.cpu_count()} CPUs")
    timings: dict[str, list[float]] = {"platform": [], "hand-written": []}
    for round_number in range(args.rounds + 1):
        for name, run in (("platform", run_platform), ("hand-written", run_hand_written)):
            work = Path(tempfile.mkdtemp(prefix="bench-spark-"))
            try:
                seconds, silver = run(spark, args.input, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            label = "warm-up" if round_number == 0 else f"round {round_number}"
            print(f"{label:8s} {name:13s} {seconds:7.2f} s  silver rows {silver:,}", flush=True)
            if round_number:
                timings[name].append(seconds)
    platform, reference = (statistics.median(timings[n]) for n in ("platform", "hand-written"))
    print(f"median: platform {platform:.2f} s, hand-written {reference:.2f} s, ratio {platform / reference:.2f}x")
    spark.stop()


if __name__ == "__main__":
    main()
