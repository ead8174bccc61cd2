"""The bad-input corpus (`tests/bad_inputs/`): every file through the real CLI, against its manifest entry.

For every file: no traceback, exit code as expected; a failure names the file and the line and
leaves a lake seeded with a good batch exactly as it was; a success reconciles (rows read =
accepted + quarantined + duplicates) and quarantine holds each rejected line under its number.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import shutil
import tomllib
import zipfile
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import structlog
from deltalake import DeltaTable
from typer.testing import CliRunner, Result

from app.cli import app
from app.domain.batches import BatchRecord
from app.domain.sources import DEFAULT_SEVERITIES
from app.infrastructure.settings import Settings
from app.wiring import open_platform
from tests.integration.test_cli import OUTER_SETTINGS, cli

CORPUS = Path(__file__).resolve().parents[1] / "bad_inputs"
MANIFEST: dict[str, Any] = tomllib.loads((CORPUS / "expected.toml").read_text(encoding="utf-8"))
COMMITTED: dict[str, dict[str, Any]] = MANIFEST["files"]
GENERATED: dict[str, dict[str, Any]] = MANIFEST["generated"]
ENTRIES = {**COMMITTED, **GENERATED}
NOT_INPUTS = {"expected.toml", "README.md"}

TABLES = (
    "bronze_meter_readings",
    "silver_readings",
    "quarantine_readings",
    "gold_daily_meter_energy",
    "gold_hourly_portfolio_load",
)
QUARANTINE_RULES = sorted(rule for rule, severity in DEFAULT_SEVERITIES.items() if severity == "quarantine")
RECONCILIATION = re.compile(
    r"reconciliation: ([\d,]+) read = ([\d,]+) accepted \+ ([\d,]+) quarantined \+ ([\d,]+) duplicates replaced"
)
#: Settings from the outer environment that would point the CLI elsewhere.
UNSET = OUTER_SETTINGS

# --- Generated inputs ---------------------------------------------------------------------------

HEADER = b"meter_id,timestamp,value,unit\n"
MIB = 1 << 20


def huge_field(path: Path) -> None:
    """A good row, a row whose value is one 100 MiB field, a good row."""
    with path.open("wb") as out:
        out.write(HEADER + b"M1,2025-06-10T00:00:00+01:00,0.5,kWh\n")
        out.write(b"M1,2025-06-10T00:30:00+01:00,")
        for _ in range(100):
            out.write(b"9" * MIB)
        out.write(b",kWh\nM1,2025-06-10T01:00:00+01:00,0.5,kWh\n")


def huge_first_line(path: Path) -> None:
    """A header line of 1 MiB (one more column with a very long name), then a good row."""
    path.write_bytes(b"meter_id,timestamp,value,unit," + b"x" * MIB + b"\nM1,2025-06-10T00:00:00+01:00,0.5,kWh,\n")


GENERATORS: dict[str, Callable[[Path], None]] = {"huge_field": huge_field, "huge_first_line": huge_first_line}


def _input(name: str, tmp_path: Path) -> Path:
    if name in COMMITTED:
        return CORPUS / name
    path = tmp_path / "generated" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    GENERATORS[GENERATED[name]["generator"]](path)
    return path


# --- Running the CLI and reading the lake -------------------------------------------------------


def _cli(lake: Path, *args: str) -> Result:
    env: dict[str, str | None] = {"DATA_DIR": str(lake), "LOG_FORMAT": "json", "COLUMNS": "200"}
    env.update(dict.fromkeys(UNSET))
    logging = structlog.get_config()
    try:
        return CliRunner().invoke(app, list(args), env=env)
    finally:  # the CLI sends logs to the runner's stderr, closed once it returns: later tests must not
        structlog.configure(**logging)


def _settings(lake: Path) -> Settings:
    return Settings(data_dir=lake, execution_mode="local", metadata_db_url=None, _env_file=None)  # type: ignore[call-arg]


def _batches(lake: Path) -> list[BatchRecord]:
    with open_platform(_settings(lake)) as platform:
        return platform.metadata.list_batches(limit=100)


def _tables(lake: Path) -> dict[str, tuple[int, pa.Table]]:
    """Each table of the lake that exists: its Delta version (any write, even of no rows, makes
    a new one) and its rows, sorted."""
    with open_platform(_settings(lake)) as platform:
        locations = {name: platform.store.location(name) for name in TABLES if platform.store.exists(name)}
    tables = {}
    for name, location in locations.items():
        delta = DeltaTable(location)
        table = delta.to_pyarrow_table()
        tables[name] = (delta.version(), table.sort_by([(c, "ascending") for c in table.column_names]))
    return tables


def _rows(lake: Path) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows ([] for a table not written yet), by name."""
    tables = _tables(lake)
    return {name: tables[name][1].to_pylist() if name in tables else [] for name in TABLES}


def _no_crash(result: Result) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    # CliRunner catches what escapes the command: only the CLI's own exit may.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


@pytest.fixture(scope="session")
def seeded_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake holding one good batch, copied for each failing file."""
    root = tmp_path_factory.mktemp("seeded")
    good = root / "good.csv"
    good.write_bytes(HEADER + b"S1,2025-06-10T00:00:00+01:00,0.5,kWh\nS1,2025-06-10T00:30:00+01:00,0.7,kWh\n")
    result = _cli(root / "lake", "run-batch", "--input", str(good))
    assert result.exit_code == 0, result.stderr
    assert set(_tables(root / "lake")) == set(TABLES)
    return root / "lake"


# --- The manifest -------------------------------------------------------------------------------


def test_the_manifest_covers_every_file_and_enough_cases() -> None:
    assert len(ENTRIES) >= 30
    on_disk = {p.name for p in CORPUS.iterdir() if p.is_file()} - NOT_INPUTS
    assert on_disk == set(COMMITTED), "every corpus file needs an entry, and every entry a file"
    assert not set(GENERATED) & on_disk, "generated files are not committed"
    for name in on_disk:
        assert (CORPUS / name).stat().st_size < 10_000, f"{name}: committed files stay small"
    for name, entry in GENERATED.items():
        assert entry["generator"] in GENERATORS, name


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_the_manifest_entry_is_consistent(name: str) -> None:
    entry = ENTRIES[name]
    assert entry["case"] and entry["outcome"] in ("fails", "succeeds"), name
    if entry["outcome"] == "fails":
        assert entry["message"]
        assert set(entry) <= {"case", "outcome", "message", "line", "generator"}
        return
    accepted, duplicates = entry["accepted_lines"], entry.get("duplicate_lines", [])
    quarantined = [q["line"] for q in entry.get("quarantine", [])]
    assert len(accepted) == entry["accepted"]
    assert len(quarantined) == entry["quarantined"]
    assert len(duplicates) == entry["duplicates"]
    assert entry["rows_read"] == entry["accepted"] + entry["quarantined"] + entry["duplicates"]
    every = accepted + quarantined + duplicates
    assert len(set(every)) == len(every), "a line has one outcome"
    assert min(every, default=2) >= 2, "line 1 is the header"
    assert {s["line"] for s in entry.get("silver", [])} <= set(accepted)


# --- Every file through the CLI -----------------------------------------------------------------


def _check_failure(entry: dict[str, Any], path: Path, lake: Path, result: Result, before: Any) -> None:
    assert result.exit_code == 1, result.stdout + result.stderr
    where = f"{path}, line {entry['line']}: " if "line" in entry else f"{path}: "
    assert f"error: {where}" in result.stderr, result.stderr
    assert entry["message"] in result.stderr, result.stderr
    if "line" not in entry:
        assert f"{path}, line " not in result.stderr
    batches = _batches(lake)
    assert len(batches) == 2  # the seeded batch and this one
    failed = next(b for b in batches if b.status != "succeeded")
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.startswith(where) and entry["message"] in failed.error
    assert failed.reconciliation is None
    assert _tables(lake) == before, "a failed batch writes nothing"


def _physical_lines(path: Path) -> list[str]:
    """The file's lines as received (CRLF, LF and bare CR end lines); [0] is line 1."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # compressed files are read as their unpacked text
        data = gzip.decompress(data)
    elif data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            [member] = archive.namelist()
            data = archive.read(member)
    return re.split(r"\r\n|\n|\r", data.decode("utf-8-sig"))


def _check_quarantine(entry: dict[str, Any], path: Path, rows: list[dict[str, Any]]) -> None:
    expected = sorted((q["line"], q["rule"]) for q in entry.get("quarantine", []))
    assert sorted((r["line_number"], r["rule"]) for r in rows) == expected
    assert {r["source_file"] for r in rows} <= {str(path)}
    lines = _physical_lines(path)
    for row in rows:  # each quarantined row is its line as received
        text, record = lines[row["line_number"] - 1], json.loads(row["raw_record"])
        if row["rule"] == "malformed_row":
            assert record == {"line": text}
        else:
            assert list(record.values()) == next(csv.reader([text])), row


def _check_silver(entry: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    assert sorted(r["line_number"] for r in rows) == sorted(entry["accepted_lines"])
    by_line = {r["line_number"]: r for r in rows}
    for check in entry.get("silver", []):
        row = by_line[check["line"]]
        if "meter_id" in check:
            assert row["meter_id"] == check["meter_id"], check
        if "meter_id_length" in check:
            assert len(row["meter_id"]) == check["meter_id_length"], check
        if "start_utc" in check:
            assert row["interval_start_utc"] == datetime.fromisoformat(check["start_utc"]), check
        if "energy_kwh" in check:
            assert row["energy_kwh"] == pytest.approx(check["energy_kwh"]), check
            assert math.copysign(1.0, row["energy_kwh"]) == math.copysign(1.0, check["energy_kwh"]), check


def _check_success(entry: dict[str, Any], path: Path, lake: Path, result: Result) -> None:
    assert result.exit_code == 0, result.stdout + result.stderr
    expected = (entry["rows_read"], entry["accepted"], entry["quarantined"], entry["duplicates"])
    printed = RECONCILIATION.search(result.stdout)
    assert printed is not None, result.stdout
    assert tuple(int(n.replace(",", "")) for n in printed.groups()) == expected

    (batch,) = _batches(lake)
    rec = batch.reconciliation
    assert batch.status == "succeeded" and rec is not None and rec.balanced
    assert (rec.rows_read, rec.rows_accepted, rec.rows_quarantined, rec.duplicates_replaced) == expected
    assert rec.rows_read == rec.rows_accepted + rec.rows_quarantined + rec.duplicates_replaced
    per_rule = Counter(q["rule"] for q in entry.get("quarantine", []))
    assert {r: batch.rule_counts.get(r, 0) for r in QUARANTINE_RULES} == {r: per_rule[r] for r in QUARANTINE_RULES}
    assert batch.rule_counts.get("duplicate_replaced", 0) == entry["duplicates"]

    tables = _rows(lake)
    _check_quarantine(entry, path, tables["quarantine_readings"])
    _check_silver(entry, [r for r in tables["silver_readings"] if r["line_number"] is not None])
    # Bronze keeps every line that fits the header: accepted, replaced, or rejected by a rule.
    fits = [q["line"] for q in entry.get("quarantine", []) if q["rule"] != "malformed_row"]
    fits += entry["accepted_lines"] + entry.get("duplicate_lines", [])
    assert sorted(r["line_number"] for r in tables["bronze_meter_readings"]) == sorted(fits)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_bad_input_through_the_cli(
    name: str, tmp_path: Path, seeded_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no `.env` of the working folder
    entry = ENTRIES[name]
    path = _input(name, tmp_path)
    lake = tmp_path / "lake"
    before = None
    if entry["outcome"] == "fails":
        shutil.copytree(seeded_lake, lake)
        before = _tables(lake)

    result = _cli(lake, "run-batch", "--input", str(path))

    _no_crash(result)
    if entry["outcome"] == "fails":
        _check_failure(entry, path, lake, result, before)
    else:
        _check_success(entry, path, lake, result)


# --- A few as a user runs them: a real process ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bare_cr_line_endings.csv", "unterminated_quote.csv", "binary_png.csv"])
def test_bad_input_in_a_real_process(name: str, tmp_path: Path) -> None:
    entry = COMMITTED[name]
    path = CORPUS / name
    run = cli(tmp_path, "run-batch", "--input", str(path))

    assert "Traceback" not in run.stdout + run.stderr
    if entry["outcome"] == "fails":
        assert run.returncode == 1
        assert f"error: {path}, line {entry['line']}: " in run.stderr and entry["message"] in run.stderr
    else:
        assert run.returncode == 0, run.stderr
        printed = RECONCILIATION.search(run.stdout)
        assert printed is not None
        assert tuple(int(n) for n in printed.groups()) == (
            entry["rows_read"],
            entry["accepted"],
            entry["quarantined"],
            entry["duplicates"],
        )
