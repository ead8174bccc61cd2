"""Loading source declarations from TOML, on top of the built-in `meter_readings` source."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.domain.errors import ConfigurationError
from app.domain.sources import SourceConfig, builtin_meter_readings

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"


def builtin_sources() -> dict[str, SourceConfig]:
    """Sources that need no config file; `meter_readings` reads the bundled sample by default."""
    source = builtin_meter_readings(str(SAMPLE_DIR / "meter_readings" / "*.csv"))
    return {source.name: source}


def _describe(error: ValidationError, prefix: str) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in (prefix, *item["loc"]))
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def load_sources(config_file: Path | None) -> dict[str, SourceConfig]:
    """Built-in sources, overridden and extended by the `[sources.NAME]` tables of a TOML file."""
    sources = builtin_sources()
    if config_file is None:
        return sources
    try:
        document: dict[str, Any] = tomllib.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"{config_file}: source config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"{config_file}: not valid TOML: {error}") from None
    declared = document.get("sources")
    if not isinstance(declared, dict) or not declared:
        raise ConfigurationError(f"{config_file}: declares no [sources.NAME] table")
    for name, body in declared.items():
        if not isinstance(body, dict):
            raise ConfigurationError(f"{config_file}: sources.{name} must be a table")
        fields = {"name": name, **body}
        if "path" in fields and not Path(fields["path"]).is_absolute():
            fields["path"] = str((config_file.parent / fields["path"]).resolve())
        try:
            sources[name] = SourceConfig.model_validate(fields)
        except ValidationError as error:
            raise ConfigurationError(f"{config_file}: {_describe(error, f'sources.{name}')}") from None
    return sources
