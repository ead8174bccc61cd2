"""The read side: pages from the in-memory snapshot equal pages scanned from the table's files,
for every filter the service uses, and a new commit is seen by the next read."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from app.application import queries
from app.application.runner import run_batch
from app.infrastructure.lake_reader import LakeReader
from app.wiring import LocalPlatform
from tests.integration.conftest import NOW, write_csv

ROWS = [
    "M1,2025-06-10T00:00:00+01:00,0.5,kWh",
    "M1,2025-06-10T00:30:00+01:00,0.7,kWh",
    "M1,2025-06-11T00:30:00+01:00,0.2,kWh",
    "M2,2025-06-10T00:00:00+01:00,1.5,kWh",
    "M2,2025-06-10T00:30:00+01:00,junk,kWh",
    "M3,2025-06-12T23:30:00+01:00,2.5,kWh",
]


def test_cached_and_scanned_pages_agree_and_follow_new_commits(platform: LocalPlatform, tmp_path: Path) -> None:
    result = run_batch(platform, input_path=str(write_csv(tmp_path / "a.csv", ROWS)), now=NOW)
    assert result.batch_id is not None
    cached, scanned = LakeReader(platform.settings.data_dir), LakeReader(platform.settings.data_dir, cache_rows=0)

    def pages(reads: LakeReader) -> list[object]:
        out: list[object] = []
        for meter in ("M1", "M2", "M3", "nobody"):
            for start, end in ((date(2025, 6, 9), date(2025, 6, 30)), (date(2025, 6, 11), date(2025, 6, 11))):
                out.append(queries.meter_daily(reads, meter_id=meter, start=start, end=end, limit=100, offset=0))
        for start, end in ((datetime(2025, 6, 9, 23, tzinfo=UTC), datetime(2025, 6, 10, 1, tzinfo=UTC)),):
            for offset in (0, 3):
                out.append(queries.portfolio_hourly(reads, start=start, end=end, limit=2, offset=offset))
        out.append(queries.quarantined_rows(reads, batch_id=result.batch_id or "", limit=10, offset=0))
        return out

    first = pages(cached)
    assert first == pages(scanned)
    daily = queries.meter_daily(cached, meter_id="M1", start=date(2025, 6, 1), end=date(2025, 6, 30), limit=9, offset=0)
    assert daily is not None and [row["local_date"] for row in daily.items] == [date(2025, 6, 10), date(2025, 6, 11)]
    assert (
        queries.meter_daily(cached, meter_id="nobody", start=date(2025, 6, 1), end=date(2025, 6, 2), limit=9, offset=0)
        is None
    )

    more = ["M1,2025-06-12T00:00:00+01:00,0.9,kWh"]
    assert run_batch(platform, input_path=str(write_csv(tmp_path / "b.csv", more)), now=NOW).status == "succeeded"
    after = queries.meter_daily(cached, meter_id="M1", start=date(2025, 6, 1), end=date(2025, 6, 30), limit=9, offset=0)
    assert after is not None and after.version is not None and daily.version is not None
    assert after.version > daily.version and after.total == 3
    assert pages(cached) == pages(scanned) != first
