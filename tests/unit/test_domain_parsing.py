"""Arrow parsing of raw timestamps and values, including both DST transitions."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from app.domain.parsing import parse_timestamps, parse_values
from app.domain.sources import SourceConfig, builtin_meter_readings


def _source(**changes: object) -> SourceConfig:
    return builtin_meter_readings("x").model_copy(update=changes)


def _ts(values: list[str | None], **changes: object) -> list[tuple[datetime | None, str]]:
    instants, status = parse_timestamps(pa.chunked_array([values], pa.string()), _source(**changes))
    return list(zip(instants.to_pylist(), status.to_pylist(), strict=True))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_iso_offsets_and_fractions_become_utc() -> None:
    assert _ts(
        ["2025-06-01T12:00:00Z", "2025-06-01T12:00:00+01:00", "2025-06-01T12:00:00-0530", "2025-06-01 12:00Z"]
    ) == [
        (utc(2025, 6, 1, 12), "ok"),
        (utc(2025, 6, 1, 11), "ok"),
        (utc(2025, 6, 1, 17, 30), "ok"),
        (utc(2025, 6, 1, 12), "ok"),
    ]
    assert _ts(["2025-01-01T00:00:00.5+00:00"]) == [(datetime(2025, 1, 1, 0, 0, 0, 500000, tzinfo=UTC), "ok")]


@pytest.mark.parametrize("raw", ["2025-02-30T00:00:00Z", "2025-06-01T25:00:00Z", "yesterday", "", None])
def test_impossible_or_junk_timestamps_are_unparseable(raw: str | None) -> None:
    assert _ts([raw]) == [(None, "unparseable")]


@pytest.mark.parametrize(
    ("zone", "gap", "repeated", "earliest", "latest"),
    [
        ("Europe/London", "2025-03-30 01:30", "2025-10-26 01:30", utc(2025, 10, 26, 0, 30), utc(2025, 10, 26, 1, 30)),
        ("Europe/Berlin", "2025-03-30 02:30", "2025-10-26 02:30", utc(2025, 10, 26, 0, 30), utc(2025, 10, 26, 1, 30)),
    ],
)
def test_naive_local_times_across_both_transitions(
    zone: str, gap: str, repeated: str, earliest: datetime, latest: datetime
) -> None:
    fmt = {"timestamp_format": "%Y-%m-%d %H:%M", "timestamp_timezone": zone}
    assert _ts([gap, repeated], **fmt) == [(None, "dst_gap"), (None, "ambiguous")]
    assert _ts([repeated], **fmt, ambiguous_time="earliest") == [(earliest, "ok")]
    assert _ts([repeated], **fmt, ambiguous_time="latest") == [(latest, "ok")]
    assert _ts(["2025-07-01 12:00"], **fmt)[0][1] == "ok"


def test_a_non_utc_offset_on_a_wall_time_in_the_gap_is_rejected_but_z_is_trusted() -> None:
    assert _ts(["2025-03-30T01:30:00+01:00", "2025-03-30T01:30:00Z", "2025-03-30T02:30:00+01:00"]) == [
        (None, "dst_gap"),
        (utc(2025, 3, 30, 1, 30), "ok"),
        (utc(2025, 3, 30, 1, 30), "ok"),
    ]


def test_end_labels_fixed_offsets_and_custom_formats() -> None:
    assert _ts(["2025-06-01T00:30:00Z"], timestamp_label="end") == [(utc(2025, 6, 1, 0, 0), "ok")]
    assert _ts(["01/06/2025 10:00"], timestamp_format="%d/%m/%Y %H:%M", timestamp_timezone="+10:00") == [
        (utc(2025, 6, 1, 0, 0), "ok")
    ]


def test_values_tell_missing_from_junk() -> None:
    raw = ["1", " 2.5 ", ".5", "-0", "", "N/A", "NaN", "-", "abc", "12,5", "1e309", None]
    values, status = parse_values(pa.chunked_array([raw], pa.string()), _source())
    assert status.to_pylist() == ["ok"] * 4 + ["missing"] * 4 + ["unparseable"] * 3 + ["missing"]
    assert values.to_pylist()[:4] == [1.0, 2.5, 0.5, 0.0]
    _, custom = parse_values(pa.chunked_array([["x", ""]]), _source(missing_values=("x",)))
    assert custom.to_pylist() == ["missing", "unparseable"]
