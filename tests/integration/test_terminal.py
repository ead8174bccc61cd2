"""What a person sees running `run-batch` in a terminal, and what a pipe gets: progress and the
summary for people, JSON events for machines, never the two mixed."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.infrastructure.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOG_")}
    return {**env, "DATA_DIR": str(tmp_path / "lake"), "COLUMNS": "120", **extra}


def _in_a_terminal(tmp_path: Path, **extra: str) -> str:
    """`run-batch` on the bundled sample with stdout and stderr a pseudo-terminal; all it wrote."""
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "app.cli", "run-batch"]
    process = subprocess.Popen(
        command, env=_env(tmp_path, **extra), cwd=ROOT, stdin=follower, stdout=follower, stderr=follower
    )
    os.close(follower)
    output = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process has exited
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=120) == 0, output.decode(errors="replace")
    return _ESCAPES.sub("", output.decode(errors="replace")).replace("\r", "\n")


def test_log_format_auto_is_json_in_a_pipe_and_for_people_from_warning_up_in_a_terminal() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.log_format == "auto"
    assert settings.logging_setup(terminal=False) == ("json", "INFO")
    assert settings.logging_setup(terminal=True) == ("console", "WARNING")
    chosen = Settings(_env_file=None, log_level="DEBUG")  # type: ignore[call-arg]
    assert chosen.logging_setup(terminal=True) == ("console", "DEBUG")
    explicit = Settings(_env_file=None, log_format="json")  # type: ignore[call-arg]
    assert explicit.logging_setup(terminal=True) == ("json", "INFO")


@pytest.mark.slow
def test_a_terminal_shows_progress_and_the_summary_without_json_events(tmp_path: Path) -> None:
    seen = _in_a_terminal(tmp_path)

    assert "bronze: reading 2 file(s)" in seen  # the live line: the layer in hand
    assert re.search(r"silver [\d,]+ in, [\d,]+ out, 29 quarantined, [\d.]+s \([\d,]+ rows/s\)", seen)
    assert "succeeded" in seen and "reconciliation:" in seen
    assert not [line for line in seen.splitlines() if line.lstrip().startswith('{"')]


@pytest.mark.slow
def test_log_format_json_in_a_terminal_still_writes_json_events(tmp_path: Path) -> None:
    seen = _in_a_terminal(tmp_path, LOG_FORMAT="json")

    events = [json.loads(line) for line in seen.splitlines() if line.startswith('{"')]
    assert "batch_completed" in {e["event"] for e in events}


@pytest.mark.slow
def test_a_pipe_gets_json_events_on_stderr_and_no_live_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "run-batch"],
        env=_env(tmp_path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert {"batch_started", "layer_completed", "batch_completed"} <= {e["event"] for e in events}
    assert "\x1b[" not in done.stderr  # no cursor movement or colour into a file
    assert "succeeded" in done.stdout
