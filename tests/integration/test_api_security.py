"""The HTTP service's security: confined run inputs, validated ids, values as values, no secret in
a response or a log line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from fastapi.testclient import TestClient

from app.api import runs
from app.api.dependencies import current_settings, run_service
from app.application.runner import run_batch
from app.infrastructure.settings import Settings
from app.main import app
from app.wiring import open_platform
from tests.integration.conftest import NOW, write_csv

KEY = "test-key-security-1234"
PASSWORD = "pg-S3cret-pw"


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(data_dir=tmp_path / "lake", api_key=KEY, _env_file=None)  # type: ignore[call-arg]
    app.dependency_overrides[current_settings] = lambda: settings
    yield settings
    app.dependency_overrides.clear()
    structlog.reset_defaults()


def _post_run(settings: Settings, input_path: str) -> Any:
    return TestClient(app).post("/runs", json={"input_path": input_path}, headers={"X-API-Key": KEY})


# --- run inputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "../outside.csv",
        "%2e%2e/outside.csv",
        "%2e%2e%2foutside.csv",
        "%252e%252e/outside.csv",
        "..\\outside.csv",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        "meters/../../outside.csv",
        "meters/a.csv\x00",
    ],
)
def test_a_run_with_a_traversal_path_is_refused_with_a_clear_message(keyed: Settings, path: str) -> None:
    write_csv(keyed.landing_root / "meters" / "a.csv", ["M1,2025-06-10T00:00:00+01:00,0.5,kWh"])
    response = _post_run(keyed, path)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "input_path" in detail and ("landing directory" in detail or "control characters" in detail)
    assert run_service().running is None  # nothing was started


def test_a_run_whose_glob_matches_a_symlink_out_of_landing_is_refused(keyed: Settings, tmp_path: Path) -> None:
    outside = write_csv(tmp_path / "private" / "x.csv", ["M1,2025-06-10T00:00:00+01:00,0.5,kWh"])
    write_csv(keyed.landing_root / "meters" / "a.csv", ["M1,2025-06-10T00:00:00+01:00,0.5,kWh"])
    (keyed.landing_root / "meters" / "b.csv").symlink_to(outside)
    response = _post_run(keyed, "meters/*.csv")
    assert response.status_code == 422 and "outside the landing directory" in response.json()["detail"]


def test_a_symlink_placed_after_submission_fails_the_run_before_it_reads(keyed: Settings, tmp_path: Path) -> None:
    write_csv(keyed.landing_root / "meters" / "a.csv", ["M1,2025-06-10T00:00:00+01:00,0.5,kWh"])
    service = run_service()
    run = service.submit(keyed, source="meter_readings", input_path="meters/*.csv")
    outside = write_csv(tmp_path / "private" / "x.csv", ["M1,2025-06-10T00:00:00+01:00,0.5,kWh"])
    (keyed.landing_root / "meters" / "b.csv").symlink_to(outside)
    service.execute(keyed, run)
    assert run.status == "failed" and "outside the landing directory" in (run.error or "")
    with open_platform(keyed) as platform:
        assert platform.metadata.list_batches() == []  # nothing was ingested


# --- ids and values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/batches/x'; DROP TABLE batches; --", {}),
        ("/batches/.hidden", {}),
        ("/runs/a b", {}),
        ("/quality", {"batch_id": "../../etc/passwd"}),
        ("/quality", {"batch_id": "b1' OR '1'='1"}),
        ("/quarantine", {"batch_id": 'b1"; --'}),
        ("/quarantine", {"batch_id": "x" * 129}),
    ],
)
def test_a_batch_id_with_path_or_sql_metacharacters_is_refused(
    keyed: Settings, path: str, params: dict[str, str]
) -> None:
    response = TestClient(app).get(path, params=params)
    assert response.status_code == 422, response.text
    assert "pattern" in response.text


TRICKY_METERS = ["O'Brien", "x' OR '1'='1"]


@pytest.fixture
def tricky_lake(keyed: Settings, tmp_path: Path) -> TestClient:
    rows = [f"{meter},2025-06-10T00:00:00+01:00,{i + 1}.5,kWh" for i, meter in enumerate(TRICKY_METERS)]
    rows.append("M3,2025-06-10T00:00:00+01:00,9.5,kWh")
    with open_platform(keyed) as platform:
        result = run_batch(platform, input_path=str(write_csv(tmp_path / "in.csv", rows)), now=NOW)
    assert result.status == "succeeded", result.error
    return TestClient(app)


@pytest.mark.parametrize("meter_id", TRICKY_METERS)
def test_a_meter_id_with_quotes_is_looked_up_as_a_value(tricky_lake: TestClient, meter_id: str) -> None:
    body = tricky_lake.get(f"/meters/{meter_id}/daily", params={"start": "2025-06-01", "end": "2025-06-30"}).json()
    assert body["total"] == 1 and body["items"][0]["meter_id"] == meter_id


def test_an_injection_attempt_matches_no_meter(tricky_lake: TestClient) -> None:
    response = tricky_lake.get("/meters/M3' OR '1'='1/daily", params={"start": "2025-06-01", "end": "2025-06-30"})
    assert response.status_code == 404


# --- secrets ---------------------------------------------------------------------------------------


def test_a_failed_run_shows_no_password_in_its_error_or_the_log(
    keyed: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql+psycopg://energy:{PASSWORD}@db.internal:5432/energy"

    def unreachable(_settings: Settings) -> Any:
        raise RuntimeError(f"could not connect to {url}")

    monkeypatch.setattr(runs, "open_platform", unreachable)
    with TestClient(app) as client:  # the service's start-up configures the redacting log
        run_id = client.post("/runs", json={}, headers={"X-API-Key": KEY}).json()["run_id"]
        detail = client.get(f"/runs/{run_id}").json()
    assert detail["status"] == "failed" and "db.internal" in detail["error"]
    assert PASSWORD not in detail["error"]
    err = capsys.readouterr().err
    assert "run_failed" in err and PASSWORD not in err


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://energy:{PASSWORD}@127.0.0.1:1/energy",
        f"postgresql+psycopg://energy@127.0.0.1:1/energy?password={PASSWORD}",  # libpq's query form
    ],
)
def test_health_never_shows_the_database_password(tmp_path: Path, url: str) -> None:
    settings = Settings(data_dir=tmp_path, metadata_db_url=url, _env_file=None)  # type: ignore[call-arg]
    app.dependency_overrides[current_settings] = lambda: settings
    try:
        response = TestClient(app).get("/health")
    finally:
        app.dependency_overrides.clear()
    assert response.status_code == 503 and "127.0.0.1" in response.text
    assert PASSWORD not in response.text
