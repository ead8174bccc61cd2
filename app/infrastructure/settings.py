"""Settings from the environment and `.env`, validated once at start-up."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from app.domain.audit import KEY_NAME_PATTERN
from app.domain.errors import ConfigurationError
from app.infrastructure.logging import MASK, is_secret_key, mask_url, redact_text, register_secrets, url_password


class SecretUrl(SecretStr):
    """A URL that may carry a password: repr, str and JSON dumps show it with the password masked
    (`postgresql+psycopg://energy:***@db:5432/energy`); `get_secret_value()` gives the real URL."""

    def _display(self) -> str:
        return mask_url(self.get_secret_value())


def masked_conf(conf: dict[str, str]) -> dict[str, str]:
    """Spark settings with the values of secret-named keys (`...secret.key`, `...password`) masked."""
    return {key: MASK if is_secret_key(key) else value for key, value in conf.items()}


#: Fields whose values are never echoed in an error message.
SECRET_FIELDS = frozenset({"metadata_db_url", "api_key", "api_keys", "spark_conf"})


def _key_name(name: str) -> str:
    if not re.fullmatch(KEY_NAME_PATTERN, name):
        raise ValueError(
            f"invalid key name {name!r}: up to 64 letters, digits and _ . @ -, starting with a letter or digit"
        )
    return name


def parse_api_keys(value: object) -> dict[str, str]:
    """API_KEYS: `name=KEY,name2=KEY2` (a key may hold `=`, not `,`), or a JSON object
    `{"name": "KEY"}`; empty: none. Names as `KEY_NAME_PATTERN`, each name and each key once.
    Messages name the names, never a key."""
    if value is None:
        return {}
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"not a valid JSON object (line {error.lineno}, column {error.colno})") from None
        else:
            pairs = [item.partition("=") for item in text.split(",") if item.strip()]
            if any(not sep for _, sep, _ in pairs):
                raise ValueError("expected name=KEY pairs separated by commas, or a JSON object")
            names = [name.strip() for name, _, _ in pairs]
            duplicated = sorted({name for name in names if names.count(name) > 1})
            if duplicated:
                raise ValueError(f"the key name(s) {', '.join(duplicated)} are given more than once")
            value = {name.strip(): key.strip() for name, _, key in pairs}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        keys: dict[str, str] = {}
        for name, key in value.items():
            _key_name(name.strip())
            secret = key.get_secret_value() if isinstance(key, SecretStr) else key
            if not isinstance(secret, str) or not secret.strip():
                raise ValueError(f"the key named {name.strip()!r} is empty or not text")
            keys[name.strip()] = secret.strip()
        secrets = list(keys.values())
        shared = sorted(name for name, key in keys.items() if secrets.count(key) > 1)
        if shared:
            raise ValueError(f"the keys named {', '.join(shared)} are the same key: give each name its own")
        return keys
    raise ValueError("expected name=KEY pairs separated by commas, or a JSON object of names to keys")


class Settings(BaseSettings):
    """Every setting the platform reads; names are the environment variables."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True)

    execution_mode: Literal["local", "databricks"] = Field(
        default="local",
        description="local: this machine, on the LOCAL_ENGINE (DuckDB by default) with Delta tables; "
        "databricks: Spark with Delta Lake (the cluster's session on Databricks, else a local one).",
    )
    processing_mode: Literal["batch", "streaming"] = Field(
        default="batch",
        description="batch: run-batch processes the files it is given; streaming: it runs the source as a stream.",
    )
    local_engine: Literal["duckdb", "pandas"] = Field(
        default="duckdb",
        description="Engine of local mode: duckdb (all cores, spills to disk past LOCAL_MEMORY_LIMIT) or pandas.",
    )
    local_memory_limit: str = Field(
        default="256MB", description="Memory DuckDB may use in local mode before it spills to disk, e.g. 256MB, 1GB."
    )
    data_dir: Path = Field(
        default=Path("data"),
        validation_alias=AliasChoices("DATA_DIR", "STORAGE_PATH"),
        description="Root of the lake: DATA_DIR/<layer>/<table>. STORAGE_PATH is accepted as an alias.",
    )
    metadata_db_url: SecretUrl | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata store; default SQLite in DATA_DIR. Shown with its password masked.",
    )
    metadata_retry_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a metadata call keeps retrying (with backoff) while the database is unreachable.",
    )
    sources_config: Path | None = Field(
        default=None, description="TOML file declaring sources; the built-in sources when unset."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="json: one JSON object per event on stderr; console: for people; auto: json unless stderr "
        "is a terminal, where events are rendered for people from WARNING up (unless LOG_LEVEL is set).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    api_key: SecretStr | None = Field(
        default=None, description="Key for mutating HTTP endpoints (header X-API-Key); unset: they are refused."
    )
    api_key_name: str = Field(
        default="api-key", description="The name requests with API_KEY are recorded under in the audit trail."
    )
    api_keys: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict,
        description="Named keys for mutating HTTP endpoints: `ops=KEY1,billing=KEY2` or a JSON object "
        '{"ops": "KEY1"}; the audit trail records the name of the key a request used, never the key.',
    )
    api_protect_reads: bool = Field(default=False, description="Require the API key on read endpoints too.")
    api_cache_rows: int = Field(
        default=2_000_000,
        ge=0,
        description="The service keeps each table's newest version in memory while it has at most this many "
        "rows (0: scan per request).",
    )
    landing_dir: Path | None = Field(
        default=None, description="Folder that POST /runs input paths must lie in; default DATA_DIR/landing."
    )
    spark_master: str = Field(
        default="local[*]", description="Master of the Spark session started outside a Databricks cluster."
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description='Extra Spark settings as a JSON object, e.g. {"spark.sql.shuffle.partitions": "64"}; '
        "values of secret-named keys are masked when shown.",
    )
    retention_bronze_days: int | None = Field(
        default=None,
        ge=1,
        description="`retention apply` deletes bronze rows ingested more than this many days ago; unset: kept.",
    )
    retention_quarantine_days: int | None = Field(
        default=None,
        ge=1,
        description="`retention apply` deletes quarantined rows of batches run more than this many days ago; "
        "unset: kept.",
    )
    retention_silver_days: int | None = Field(
        default=None,
        ge=1,
        description="`retention apply` deletes silver readings of local days older than this many days; unset: kept.",
    )
    retention_gold_days: int | None = Field(
        default=None,
        ge=1,
        description="`retention apply` deletes gold rows of local days (hours, for the portfolio load) older than "
        "this many days; unset: kept.",
    )
    compact_small_files_threshold: int = Field(
        default=50,
        ge=0,
        description="After a batch, each table it wrote whose small data files number more than this is compacted "
        "(0: never).",
    )

    @field_validator("api_key", "metadata_db_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`API_KEY=` (as compose writes an unset variable) means no key, never an empty one."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "retention_bronze_days",
        "retention_quarantine_days",
        "retention_silver_days",
        "retention_gold_days",
        mode="before",
    )
    @classmethod
    def _empty_retention_is_unset(cls, value: object) -> object:
        """`RETENTION_BRONZE_DAYS=` keeps the layer, like leaving it out."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_key_name")
    @classmethod
    def _key_name_pattern(cls, value: str) -> str:
        return _key_name(value)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _named_keys(cls, value: object, info: ValidationInfo) -> object:
        """API_KEYS parsed, and checked against API_KEY under API_KEY_NAME: each name and each key
        once (validated here, after those two fields, so that an error never echoes a key)."""
        keys = parse_api_keys(value)
        single, single_name = info.data.get("api_key"), info.data.get("api_key_name")
        if isinstance(single, SecretStr):
            if single_name in keys:
                raise ValueError(f"API_KEYS names a key {single_name!r}, the name of API_KEY (API_KEY_NAME)")
            same = [name for name, key in keys.items() if key == single.get_secret_value()]
            if same:
                raise ValueError(f"the key named {same[0]!r} is API_KEY's key: give each name its own key")
        return keys

    @field_validator("spark_conf", mode="before")
    @classmethod
    def _conf_values_as_text(cls, value: object) -> object:
        if isinstance(value, dict):  # {"spark.sql.shuffle.partitions": 64} is as good as "64"
            return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
        return value

    def logging_setup(self, *, terminal: bool) -> tuple[str, str]:
        """(format, level) of the log events: LOG_FORMAT=auto is json, unless stderr is a terminal
        (`terminal`): then events are rendered for people, and only from WARNING up unless
        LOG_LEVEL was set, so that a person's progress and summary are not buried in them."""
        if self.log_format != "auto":
            return self.log_format, self.log_level
        if not terminal:
            return "json", self.log_level
        given = "log_level" in self.model_fields_set
        return "console", self.log_level if given else "WARNING"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_serializer("spark_conf")
    def _masked_spark_conf(self, conf: dict[str, str]) -> dict[str, str]:
        return masked_conf(conf)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """repr/str as pydantic shows them, with the secret values of SPARK_CONF masked (the
        SecretStr fields mask themselves)."""
        for name, value in super().__repr_args__():
            yield name, masked_conf(value) if name == "spark_conf" else value

    @property
    def metadata_url(self) -> str:
        """The configured URL (password included: pass it to the database, never print it), or a
        SQLite file under the data directory."""
        if self.metadata_db_url:
            return self.metadata_db_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'metadata.db').resolve()}"

    def secret_values(self) -> list[str]:
        """Every configured secret: the API key, the metadata URL and its password, and
        secret-named Spark settings."""
        values = [key.get_secret_value() for key in self.named_api_keys.values()]
        if self.metadata_db_url:
            url = self.metadata_db_url.get_secret_value()
            values.append(url)
            values.append(url_password(url))
            values += [value for key, value in parse_qsl(urlsplit(url).query) if is_secret_key(key)]
        values += [value for key, value in self.spark_conf.items() if is_secret_key(key)]
        return values

    @property
    def named_api_keys(self) -> dict[str, SecretStr]:
        """Every key of the HTTP service by the name the audit trail records: API_KEY under
        API_KEY_NAME, and API_KEYS."""
        named = {self.api_key_name: self.api_key} if self.api_key is not None else {}
        return named | self.api_keys

    @property
    def landing_root(self) -> Path:
        """The landing directory, resolved (HTTP-started runs read only below it)."""
        return (self.landing_dir or self.data_dir / "landing").resolve()

    def require_available(self) -> None:
        """Refuse modes this version does not run, before any work starts: both processing modes
        now run in both execution modes (streaming on Databricks as Spark Structured Streaming)."""


def environment_variable_names() -> set[str]:
    """Every environment variable `Settings` reads: field names upper-cased, plus their aliases."""
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        names.add(field_name.upper())
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(choice.upper() for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
    return names


#: Prefixes of setting families whose every member the platform knows: another name with one
#: of them (a layer retention does not have, a misspelt threshold) is refused, never ignored.
CHECKED_PREFIXES = ("RETENTION_", "COMPACT_")


def refuse_unknown_names(names: Iterable[str]) -> None:
    """ConfigurationError naming the variables of a `CHECKED_PREFIXES` family that `Settings`
    does not read (retention of a layer other than bronze, quarantine, silver and gold, say)."""
    known = environment_variable_names()
    unknown = sorted({n.upper() for n in names if n.upper().startswith(CHECKED_PREFIXES) and n.upper() not in known})
    if unknown:
        family = sorted(k for k in known if k.startswith(CHECKED_PREFIXES))
        raise ConfigurationError(
            f"Invalid settings: {', '.join(unknown)}: no such setting; the retention and compaction settings "
            f"are {', '.join(family)}"
        )


def _dotenv_names() -> list[str]:
    from dotenv import dotenv_values

    env_file = Settings.model_config.get("env_file")
    path = Path(str(env_file)) if isinstance(env_file, str) else None
    return list(dotenv_values(path)) if path is not None and path.is_file() else []


def load_settings() -> Settings:
    """Read settings, turning validation errors into one message naming each variable (the values
    of secret settings are never echoed). The secrets read are registered with the log redaction.
    An unknown variable of a `CHECKED_PREFIXES` family is refused by name."""
    refuse_unknown_names([*os.environ, *_dotenv_names()])
    try:
        settings = Settings()
    except SettingsError as error:  # a complex value (SPARK_CONF) that is not valid JSON
        found = re.search(r'field "(\w+)"', str(error))
        variable = found.group(1).upper() if found else "settings"
        raise ConfigurationError(redact_text(f"Invalid settings: {variable}: not valid JSON ({error})")) from None
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else "settings"
            given = "value hidden" if field.lower() in SECRET_FIELDS else f"got {item.get('input')!r}"
            problems.append(f"{field.upper()}: {item['msg']} ({given})")
        raise ConfigurationError(redact_text("Invalid settings: " + "; ".join(problems))) from None
    register_secrets(*settings.secret_values())
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings for this process; tests override it through dependency injection."""
    return load_settings()
