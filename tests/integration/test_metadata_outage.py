"""The metadata database going away mid-run: calls retry with backoff, and the run completes.

Stops and starts the real PostgreSQL test server of scripts/postgres-test-server.sh (the one
TEST_POSTGRES_URL names), so it runs only where that script runs the server.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from app.application.runner import run_batch
from app.infrastructure.settings import Settings
from app.wiring import open_platform
from tests.integration.conftest import NOW
from tests.integration.postgres import fresh_database, server_url
from tests.integration.test_reliability import day_rows, write_day

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "postgres-test-server.sh"
DOWN_SECONDS = 3.0


def _server(*args: str) -> None:
    subprocess.run(["bash", str(SCRIPT), *args], check=True, capture_output=True, timeout=120)


@pytest.fixture
def database() -> Iterator[str]:
    server = server_url()
    if server.port != 55432 or server.host != "127.0.0.1":
        pytest.skip("needs the server of scripts/postgres-test-server.sh, which this test stops and starts")
    with fresh_database(server) as url:
        yield url


def test_a_refused_connection_is_not_retried(database: str) -> None:
    """A database that does not exist (like a wrong password) fails at once, not after the retry time."""
    from sqlalchemy import make_url

    from app.domain.errors import MetadataStoreError
    from app.infrastructure.repositories.metadata import SqlMetadataStore

    url = make_url(database).set(database="no_such_database").render_as_string(hide_password=False)
    store = SqlMetadataStore(url, retry_seconds=30)
    started = time.monotonic()
    try:
        with pytest.raises(MetadataStoreError, match="does not exist"):
            store.migrate()
    finally:
        store.dispose()
    assert time.monotonic() - started < 5


class _Outage:
    """Stops the server when the run reports its first step, and starts it again DOWN_SECONDS later."""

    def __init__(self, when: str) -> None:
        self.when = when
        self.stopped_at: float | None = None
        self.restarted = threading.Event()

    def __call__(self, layer: str, message: str) -> None:
        if self.stopped_at is None and layer == self.when:
            _server("stop")
            self.stopped_at = time.monotonic()
            threading.Thread(target=self._restart, daemon=True).start()

    def _restart(self) -> None:
        time.sleep(DOWN_SECONDS)
        _server()
        self.restarted.set()


@pytest.mark.parametrize("when", ["before", "bronze", "silver"])
def test_a_run_completes_and_records_itself_across_a_server_restart(database: str, tmp_path: Path, when: str) -> None:
    settings = Settings(data_dir=tmp_path / "lake", metadata_db_url=database, _env_file=None)  # type: ignore[call-arg]
    outage = _Outage(when)
    day = write_day(tmp_path / "in" / "day1.csv", day_rows(1))
    try:
        with structlog.testing.capture_logs() as logs, open_platform(settings) as platform:
            outage("before", "the run starts")  # stops the server now only in the "before" case
            result = run_batch(platform, input_path=str(day), now=NOW, progress=outage)
            assert result.status == "succeeded", result.error
            assert result.batch_id is not None
            record = platform.metadata.get_batch(result.batch_id)
    finally:
        assert outage.restarted.wait(60), "the server did not come back"
    assert outage.stopped_at is not None
    retries = [entry for entry in logs if entry["event"] == "metadata_retry"]
    assert retries, "no metadata call met the outage"
    operations = {entry["operation"] for entry in retries}
    if when == "before":
        assert operations & {"running_batches", "successful_checksums", "start_batch"}
    else:
        assert operations == {"finish_batch"}
    assert record is not None and record.status == "succeeded"
    assert record.reconciliation == result.reconciliation
    assert [layer.layer for layer in record.layers] == ["bronze", "silver", "gold"]
