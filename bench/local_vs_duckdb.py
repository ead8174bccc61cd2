"""Local mode against a hand-written DuckDB SQL pipeline, at chosen sizes.

    python -m bench.local_vs_duckdb --rows 1M 5M 10M [--rounds 3] [--work bench-data] [--incremental]
        [--no-reference] [--no-plain]

For each size it generates synthetic `meter_readings` CSV (`bench.generate`, kept under
`--work` and reused), then runs, each as its own process in a fresh folder:

1. ``energy-platform run-batch`` in local mode: wall time, the time of each layer (from the
   JSON log), rows per second and the peak RSS of the process;
2. `bench.duckdb_reference` on the same files: wall time and peak RSS;
3. `bench.plain_duckdb`, the plain SQL pipeline a user writes in an afternoon: wall time and
   peak RSS.

It first times `energy-platform --help` (start-up), then prints one line per run and the
ratios local/reference and local/plain of the wall times (of the median runs with
`--rounds N`), and whether the two SQL pipelines' silver row counts agree. With `--incremental`, it
then loads one more day of files into each size's lake and prints what that costs: it should
depend on the day's rows, not on the rows already stored.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from bench.generate import day_table, generate, parse_size

LAYERS = ("bronze", "silver", "gold")


@dataclass
class Run:
    """One process: its wall time, peak RSS, and what it reported."""

    wall_seconds: float
    peak_rss_mib: float
    layers: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    output: str = ""
    #: Rows the SQL pipelines printed as written to silver.
    silver_rows: int = 0


def _run(command: list[str], env: dict[str, str]) -> Run:
    """Run `command` to the end; its peak RSS is the kernel's maximum for that process (wait4)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        clock = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - clock
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-4000:]}")
    run = Run(wall_seconds=wall, peak_rss_mib=usage.ru_maxrss / 1024, output=stdout)
    for line in stderr.splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event.get("event") == "layer_completed":
            run.layers[event["layer"]] = float(event["duration_seconds"])
        elif event.get("event") == "batch_completed":
            run.rows = int(event["record_count"])
    return run


def _platform_run(inputs: Path, lake: Path) -> Run:
    env = {**os.environ, "DATA_DIR": str(lake), "LOG_FORMAT": "json", "EXECUTION_MODE": "local"}
    env.pop("METADATA_DB_URL", None)
    command = [sys.executable, "-c", "from app.cli import main; main()", "run-batch", "--input", str(inputs)]
    return _run(command, env)


def _sql_run(module: str, inputs: Path, out: Path, rows_read: str) -> Run:
    """A SQL pipeline's process; its steps' seconds and the rows read from what it prints."""
    command = [sys.executable, "-m", module, "--input", str(inputs / "*.csv"), "--out", str(out)]
    run = _run(command, dict(os.environ))
    for line in run.output.splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name.endswith("_seconds") and name != "total_seconds":
            run.layers[name.removesuffix("_seconds")] = float(value.replace(",", ""))
        elif name == rows_read:
            run.rows = int(value.replace(",", ""))
        elif name == "silver_rows":
            run.silver_rows = int(value.replace(",", ""))
    return run


def _reference_run(inputs: Path, out: Path) -> Run:
    return _sql_run("bench.duckdb_reference", inputs, out, "bronze_rows")


def _plain_run(inputs: Path, out: Path) -> Run:
    return _sql_run("bench.plain_duckdb", inputs, out, "read_rows")


def _inputs(work: Path, rows: int) -> Path:
    """Generated files for `rows`, reused when already there."""
    folder = work / f"rows-{rows}"
    marker = folder / ".complete"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        clock = time.perf_counter()
        written = generate(rows, folder)
        marker.write_text(str(written))
        print(f"generated {written:,} readings in {time.perf_counter() - clock:.1f}s under {folder}", flush=True)
    return folder


def _next_day(inputs: Path, work: Path) -> Path:
    """One more day of files after the last day in `inputs`."""
    last = max(date.fromisoformat(p.stem.removeprefix("readings_")) for p in inputs.glob("readings_*.csv"))
    day = last + timedelta(days=1)
    folder = work / f"day-after-{inputs.name}"
    if not (folder / ".complete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        import pyarrow.csv as pcsv

        index = len(list(inputs.glob("readings_*.csv")))
        table = day_table(index, day, meters=1000, seed=7)
        with (folder / f"readings_{day.isoformat()}.csv").open("wb") as sink:
            sink.write((",".join(table.column_names) + "\n").encode())
            pcsv.write_csv(table, sink, write_options=pcsv.WriteOptions(include_header=False, quoting_style="none"))
        (folder / ".complete").write_text(str(table.num_rows))
    return folder


def _median(runs: list[Run]) -> Run:
    """The run with the median wall time (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r.wall_seconds)[(len(runs) - 1) // 2]


def _line(label: str, run: Run) -> str:
    # The plain pipeline's steps are read / silver / gold (it keeps no bronze copy).
    names = LAYERS if set(run.layers) <= set(LAYERS) else tuple(run.layers)
    layers = "  ".join(f"{name} {run.layers.get(name, 0.0):6.2f}s" for name in names)
    rate = run.rows / run.wall_seconds if run.wall_seconds else 0.0
    return (
        f"{label:<22} {run.rows:>12,} rows  wall {run.wall_seconds:7.2f}s  {layers}  "
        f"{rate:>10,.0f} rows/s  peak RSS {run.peak_rss_mib:7.0f} MiB"
    )


def _load_average() -> str:
    """The 1, 5 and 15 minute load averages: figures from a busy machine are not comparable."""
    one, five, fifteen = os.getloadavg()
    return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Benchmark local mode against a DuckDB SQL reference.")
    parser.add_argument("--rows", type=parse_size, nargs="+", default=[parse_size("1M")], help="e.g. 1M 5M 10M")
    parser.add_argument("--work", type=Path, default=Path("bench-data"), help="generated files and lakes")
    parser.add_argument("--incremental", action="store_true", help="then add one more day to each lake")
    parser.add_argument("--no-reference", action="store_true", help="skip the DuckDB reference")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain DuckDB SQL pipeline")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side per size; medians are compared")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}", flush=True)
    startup = _run([sys.executable, "-c", "from app.cli import main; main()", "--help"], dict(os.environ))
    print(f"energy-platform --help: {startup.wall_seconds:.2f}s", flush=True)
    print(_load_average(), flush=True)

    lakes: dict[int, Path] = {}
    results: list[tuple[int, Run]] = []
    for rows in args.rows:
        inputs = _inputs(work, rows)
        lake = work / f"lake-{rows}"
        local_runs: list[Run] = []
        reference_runs: list[Run] = []
        plain_runs: list[Run] = []
        for round_number in range(1, args.rounds + 1):
            shutil.rmtree(lake, ignore_errors=True)
            local_runs.append(_platform_run(inputs, lake))
            print(_line(f"local {rows:,} #{round_number}", local_runs[-1]), flush=True)
            if not args.no_reference:
                out = work / f"reference-{rows}"
                shutil.rmtree(out, ignore_errors=True)
                reference_runs.append(_reference_run(inputs, out))
                print(_line(f"reference {rows:,} #{round_number}", reference_runs[-1]), flush=True)
            if not args.no_plain:
                out = work / f"plain-{rows}"
                shutil.rmtree(out, ignore_errors=True)
                plain_runs.append(_plain_run(inputs, out))
                print(_line(f"plain {rows:,} #{round_number}", plain_runs[-1]), flush=True)
        local = _median(local_runs)
        lakes[rows] = lake
        results.append((rows, local))
        if reference_runs:
            reference = _median(reference_runs)
            print(
                f"{rows:,} rows, median of {args.rounds}: local {local.wall_seconds:.2f}s, "
                f"reference {reference.wall_seconds:.2f}s, ratio {local.wall_seconds / reference.wall_seconds:.2f}x",
                flush=True,
            )
        if plain_runs:
            plain = _median(plain_runs)
            print(
                f"{rows:,} rows, median of {args.rounds}: local {local.wall_seconds:.2f}s, "
                f"plain {plain.wall_seconds:.2f}s, ratio {local.wall_seconds / plain.wall_seconds:.2f}x",
                flush=True,
            )
        if reference_runs and plain_runs:
            reference_silver, plain_silver = reference_runs[-1].silver_rows, plain_runs[-1].silver_rows
            verdict = "equal" if reference_silver == plain_silver else "DIFFERENT"
            print(f"{rows:,} rows: silver rows reference {reference_silver:,}, plain {plain_silver:,} ({verdict})")

    if len(results) > 1:
        (first_rows, first), (last_rows, last) = results[0], results[-1]
        wall = last.wall_seconds / first.wall_seconds
        rss = last.peak_rss_mib / first.peak_rss_mib
        growth = last_rows / first_rows
        print(f"scaling {first_rows:,} -> {last_rows:,} rows ({growth:.1f}x): wall {wall:.2f}x, peak RSS {rss:.2f}x")

    if args.incremental:
        for rows, lake in lakes.items():
            day = _next_day(_inputs(work, rows), work)
            added = _platform_run(day, lake)
            print(_line(f"+1 day onto {rows:,}", added), flush=True)
    print(_load_average(), flush=True)


if __name__ == "__main__":
    main()
