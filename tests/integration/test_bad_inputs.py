"""Bad input files: a clear message naming file (and line), a failed batch, and no table touched."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from app.application.runner import run_batch
from app.domain.errors import InputFileError
from app.wiring import LocalPlatform
from tests.integration.conftest import NOW, read_table, write_csv

GOOD = ["M1,2025-06-10T00:00:00+01:00,0.5,kWh", "M1,2025-06-10T00:30:00+01:00,0.5,kWh"]


@pytest.fixture
def seeded(platform: LocalPlatform, tmp_path: Path) -> LocalPlatform:
    """A lake that already holds one good batch, to prove bad input leaves it as it was."""
    assert run_batch(platform, input_path=str(write_csv(tmp_path / "good.csv", GOOD)), now=NOW).status == "succeeded"
    return platform


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


CASES = {
    "empty": (lambda d: _write_bytes(d / "empty.csv", b""), "is empty", None),
    "header_only": (lambda d: write_csv(d / "header.csv", []), "header but no data rows", 1),
    "missing_column": (
        lambda d: write_csv(d / "nounit.csv", ["M1,2025-06-10T00:00:00Z,1"], header="meter_id,timestamp,value"),
        "missing required column(s) unit",
        1,
    ),
    "wrong_delimiter": (
        lambda d: write_csv(d / "semi.csv", ["M1;2025-06-10T00:00:00Z;1;kWh"], header="meter_id;timestamp;value;unit"),
        "wrong delimiter",
        1,
    ),
    "not_utf8": (
        lambda d: _write_bytes(
            d / "latin.csv", b"meter_id,timestamp,value,unit\nM1,2025-06-10T00:00:00Z,1,kWh\nZ\xe4hler,x,1,kWh\n"
        ),
        "not valid UTF-8",
        3,
    ),
    "gzip_named_csv": (
        lambda d: _write_bytes(d / "packed.csv", gzip.compress(b"meter_id,timestamp,value,unit\n")),
        "gzip",
        1,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_fails_the_batch_with_file_and_line_and_writes_nothing(
    seeded: LocalPlatform, tmp_path: Path, case: str
) -> None:
    make, message, line = CASES[case]
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    path = make(bad_dir)
    before = {n: read_table(seeded, n) for n in ("bronze_meter_readings", "silver_readings", "gold_daily_meter_energy")}

    result = run_batch(seeded, input_path=str(path), now=NOW)

    assert result.status == "failed"
    assert result.error is not None and str(path) in result.error and message in result.error
    if line is not None:
        assert f"line {line}" in result.error
    for name, table in before.items():
        assert read_table(seeded, name).equals(table), name
    record = seeded.metadata.get_batch(result.batch_id or "")
    assert record is not None and record.status == "failed" and record.error == result.error


def test_one_bad_file_in_a_glob_stops_the_good_ones_too(seeded: LocalPlatform, tmp_path: Path) -> None:
    write_csv(tmp_path / "mix" / "a.csv", ["M9,2025-06-11T00:00:00+01:00,0.5,kWh"])
    write_csv(tmp_path / "mix" / "b.csv", [])
    before = read_table(seeded, "silver_readings")

    result = run_batch(seeded, input_path=str(tmp_path / "mix" / "*.csv"), now=NOW)

    assert result.status == "failed" and "b.csv" in (result.error or "")
    assert read_table(seeded, "silver_readings").equals(before)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("does/not/exist.csv", "no such file or folder"), ("nowhere/*.csv", "no file matches this glob")],
)
def test_missing_inputs_are_named(platform: LocalPlatform, tmp_path: Path, pattern: str, message: str) -> None:
    with pytest.raises(InputFileError, match=message) as error:
        run_batch(platform, input_path=str(tmp_path / pattern), now=NOW)
    assert str(tmp_path / pattern) in str(error.value)


def test_ragged_and_blank_lines_are_quarantined_or_skipped_with_their_line(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    rows = [GOOD[0], "", "M1,2025-06-10T01:00:00+01:00,0.5", GOOD[1], "M1,2025-06-10T01:30:00+01:00,0.5,kWh,extra"]
    path = write_csv(tmp_path / "ragged.csv", rows)

    result = run_batch(platform, input_path=str(path), now=NOW)

    assert result.status == "succeeded"
    assert result.rule_counts == {"malformed_row": 2, "missing_intervals": 46}  # 48 half-hours, 2 read
    rec = result.reconciliation
    assert rec is not None and (rec.rows_read, rec.rows_accepted, rec.rows_quarantined) == (4, 2, 2)
    quarantine = read_table(platform, "quarantine_readings").to_pylist()
    assert sorted(r["line_number"] for r in quarantine) == [4, 6]
    assert sorted(r["line_number"] for r in read_table(platform, "silver_readings").to_pylist()) == [2, 5]
