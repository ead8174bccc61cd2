"""The service as users run it: uvicorn in a subprocess, and generated requests against its own schema."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from app.api.dependencies import current_settings
from app.application.runner import run_batch
from app.infrastructure.settings import Settings
from app.main import app
from app.wiring import open_platform
from tests.integration.conftest import NOW, write_csv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_uvicorn_serves_health_on_a_loopback_port(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path / "lake"), "LOG_FORMAT": "json"}
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    body = response.read().decode()
                    assert response.status == 200 and '"metadata_database"' in body
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    output = server.stdout.read().decode() if server.stdout else ""
                    pytest.fail(f"uvicorn did not serve /health: {output}")
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=10)


schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A lake with one small batch, so generated requests reach real data as well as 404s."""
    root = tmp_path_factory.mktemp("schemathesis")
    lake_settings = Settings(data_dir=root / "lake", api_key="k" * 16, _env_file=None)  # type: ignore[call-arg]
    with open_platform(lake_settings) as platform:
        path = write_csv(root / "in.csv", ["M1,2025-06-10T00:00:00+01:00,0.5,kWh", "M1,x,1,kWh"])
        run_batch(platform, input_path=str(path), now=NOW)
    app.dependency_overrides[current_settings] = lambda: lake_settings
    yield
    app.dependency_overrides.clear()


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(case: schemathesis.Case, lake: None) -> None:
    response = case.call()
    assert response.status_code < 500, (case.method, case.formatted_path, case.query, response.text[:300])
