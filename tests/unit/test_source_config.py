"""Source declarations: TOML loading and the validation messages users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.domain.errors import ConfigurationError
from app.infrastructure.source_config import load_sources


def _load(tmp_path: Path, body: str) -> dict[str, object]:
    config = tmp_path / "sources.toml"
    config.write_text(body, encoding="utf-8")
    return dict(load_sources(config))


def test_declared_source_resolves_its_path_from_the_config_folder(tmp_path: Path) -> None:
    sources = _load(tmp_path, '[sources.grid]\npath = "in/*.csv"\nunit = "MWh"\ninterval_minutes = 60\n')
    assert set(sources) == {"meter_readings", "grid"}
    assert sources["grid"].path == str(tmp_path / "in" / "*.csv")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('path = "a.csv"\nunit = "kWh"\nseries_timezone = "Mars/Base"', "sources.bad.series_timezone"),
        ('path = "a.csv"\nunit = "kWh"\ninterval_minutes = 7', "sources.bad.interval_minutes"),
        ('path = "a.csv"', "exactly one of 'unit'"),
        ('path = "a.csv"\nunit = "kWhh"', "unknown unit"),
        ('path = "a.csv"\nunit = "kWh"\ncolour = "red"', "sources.bad.colour"),
    ],
)
def test_invalid_declarations_name_the_file_and_field(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=r"sources\.toml") as error:
        _load(tmp_path, f"[sources.bad]\n{body}\n")
    assert message in str(error.value)


def test_missing_or_broken_config_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        load_sources(tmp_path / "nope.toml")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        _load(tmp_path, "[sources.x\n")


def test_kafka_sources_need_their_topic_and_refuse_file_keys_by_name() -> None:
    from pydantic import ValidationError

    from app.domain.sources import SourceConfig

    kafka = {"name": "feed", "format": "kafka", "bootstrap_servers": "b:9092", "topic": "t", "unit": "kWh"}
    assert SourceConfig.model_validate(kafka).topic == "t"
    for missing in ("topic", "bootstrap_servers"):
        with pytest.raises(ValidationError, match=f"a kafka source needs {missing}"):
            SourceConfig.model_validate({k: v for k, v in kafka.items() if k != missing})
    for key, value in (("path", "in/*.csv"), ("delimiter", ";"), ("encoding", "latin-1")):
        with pytest.raises(ValidationError, match=f"'{key}'"):
            SourceConfig.model_validate({**kafka, key: value})
    with pytest.raises(ValidationError, match="'topic'"):
        SourceConfig.model_validate({"name": "files", "path": "in", "unit": "kWh", "topic": "t"})
    with pytest.raises(ValidationError, match="path is required"):
        SourceConfig.model_validate({"name": "files", "unit": "kWh"})
