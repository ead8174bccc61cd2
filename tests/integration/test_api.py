"""The HTTP service's health and run routes, over a real SQLite metadata file."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.application.runner import open_platform, run_batch
from app.infrastructure.settings import Settings, get_settings
from app.main import app
from tests.integration.conftest import NOW, write_csv


def _client(settings: Settings) -> TestClient:
    app.dependency_overrides[get_settings] = lambda: settings
    return TestClient(app)


def test_health_reports_a_database_round_trip(settings: Settings) -> None:
    response = _client(settings).get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["checks"]["metadata_database"]["status"] == "ok"
    assert body["checks"]["execution_mode"] == "local"


def test_health_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder", encoding="utf-8")
    settings = Settings(data_dir=tmp_path, metadata_db_url=f"sqlite:///{blocked}/x/metadata.db", _env_file=None)  # type: ignore[call-arg]
    response = _client(settings).get("/health")
    assert response.status_code == 503
    assert response.json()["checks"]["metadata_database"]["status"] == "failed"


def test_runs_list_and_detail(settings: Settings, tmp_path: Path) -> None:
    with open_platform(settings) as platform:
        path = write_csv(tmp_path / "a.csv", ["M1,2025-06-10T00:00:00+01:00,0.5,kWh"])
        result = run_batch(platform, input_path=str(path), now=NOW)
    client = _client(settings)

    runs = client.get("/runs").json()
    assert [r["batch_id"] for r in runs] == [result.batch_id]
    detail = client.get(f"/runs/{result.batch_id}").json()
    assert detail["status"] == "succeeded" and [m["layer"] for m in detail["layers"]] == ["bronze", "silver", "gold"]
    assert detail["reconciliation"]["rows_read"] == 1
    assert client.get("/runs/nope").status_code == 404
