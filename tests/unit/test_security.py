"""Security: secrets masked in settings and logs, input paths confined to landing, names validated,
and outside values reaching the engines as values, never as SQL text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import structlog

from app.api.runs import check_inputs_confined, confined_input
from app.domain.errors import ConfigurationError, ForbiddenPathError, TableStoreError
from app.domain.schemas import GOLD_DAILY_METER_ENERGY
from app.infrastructure.logging import configure_logging, get_logger, redact_text, register_secrets
from app.infrastructure.repositories.duckdb_repository import DuckDBDeltaStore
from app.infrastructure.repositories.pandas_repository import PandasDeltaStore
from app.infrastructure.settings import Settings, environment_variable_names, load_settings

PASSWORD = "pg-S3cret-pw"
URL = f"postgresql+psycopg://energy:{PASSWORD}@db.internal:5432/energy"
TOKEN = "dapi-0123456789abcdef"
API_KEY = "api-key-0123456789"
STORAGE_KEY = "storage-account-key-0123456789"


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def secret_settings(tmp_path: Path) -> Settings:
    return _settings(
        data_dir=tmp_path,
        metadata_db_url=URL,
        databricks_token=TOKEN,
        api_key=API_KEY,
        spark_conf={"fs.azure.account.key.lake.dfs.core.windows.net": STORAGE_KEY, "spark.sql.shuffle.partitions": 8},
    )


# --- settings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "show",
    [repr, str, lambda s: str(s.model_dump()), lambda s: s.model_dump_json(), lambda s: repr(s.metadata_db_url)],
    ids=["repr", "str", "model_dump", "model_dump_json", "field_repr"],
)
def test_settings_never_show_a_secret(secret_settings: Settings, show: Any) -> None:
    shown = show(secret_settings)
    for secret in (PASSWORD, TOKEN, API_KEY, STORAGE_KEY):
        assert secret not in shown
    assert "spark.sql.shuffle.partitions" in str(secret_settings.model_dump())  # only secrets are hidden


def test_the_metadata_url_shows_where_it_points_but_not_its_password(secret_settings: Settings) -> None:
    assert str(secret_settings.metadata_db_url) == "postgresql+psycopg://energy:***@db.internal:5432/energy"


def test_callers_still_get_the_real_values(secret_settings: Settings) -> None:
    assert secret_settings.metadata_url == URL
    assert secret_settings.api_key is not None and secret_settings.api_key.get_secret_value() == API_KEY
    assert secret_settings.spark_conf["fs.azure.account.key.lake.dfs.core.windows.net"] == STORAGE_KEY


def test_an_unset_metadata_url_is_still_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    assert _settings(data_dir=tmp_path, metadata_db_url="").metadata_url.startswith("sqlite:///")


def test_a_settings_error_never_echoes_a_secret_value(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable in environment_variable_names():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("SPARK_CONF", json.dumps([STORAGE_KEY]))  # valid JSON, but not an object
    with pytest.raises(ConfigurationError, match="SPARK_CONF") as error:
        load_settings()
    assert STORAGE_KEY not in str(error.value)


# --- logs ------------------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_log_line_never_contains_a_secret(
    log_format: str, capsys: pytest.CaptureFixture[str], restore_logging: None, secret_settings: Settings
) -> None:
    configure_logging(log_format=log_format, level="DEBUG")
    log = get_logger(source="meter_readings")
    log.info(
        "connecting",
        url=URL,  # a URL: its password goes
        databricks_token=TOKEN,  # a secret-named key: its value goes
        headers={"Authorization": f"Bearer {TOKEN}", "X-API-Key": API_KEY},
        detail=f"retrying with password={PASSWORD}; Bearer {TOKEN}",
    )
    try:
        raise RuntimeError(f"could not connect to {URL}")
    except RuntimeError:
        log.exception("metadata_failed")
    err = capsys.readouterr().err
    assert "connecting" in err and "metadata_failed" in err and "db.internal" in err
    for secret in (PASSWORD, TOKEN, API_KEY):
        assert secret not in err


def test_configured_secrets_are_masked_wherever_they_appear(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], restore_logging: None, tmp_path: Path
) -> None:
    """Settings register their secrets when loaded: a bare password or key in free text goes too."""
    for variable in environment_variable_names():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    bare_password = "only-in-text-7f3a9"
    monkeypatch.setenv("METADATA_DB_URL", f"postgresql+psycopg://energy:{bare_password}@db/energy")
    monkeypatch.setenv("API_KEY", "bare-api-key-5d1e")
    settings = load_settings()
    configure_logging(log_format=settings.log_format, level=settings.log_level)
    get_logger().warning("odd", note=f"driver said: authentication failed ({bare_password}) for bare-api-key-5d1e")
    err = capsys.readouterr().err
    assert "authentication failed" in err
    assert bare_password not in err and "bare-api-key-5d1e" not in err


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("postgresql://u:p%40ss@h/db", "p%40ss"),
        ("see mysql+pymysql://root:hunter2@10.0.0.1:3306/x for details", "hunter2"),
        ("host=db user=energy password=hunter2 dbname=energy", "hunter2"),
        ('{"client_secret": "abc-123-def"}', "abc-123-def"),
        ("https://x/?sslpassword=zz9&access_token=tok-42", "tok-42"),
        ("Authorization: Bearer eyJhbGciOi.payload", "eyJhbGciOi.payload"),
    ],
)
def test_redaction_masks_secrets_in_free_text(text: str, secret: str) -> None:
    assert secret not in redact_text(text)


def test_redaction_leaves_ordinary_text_alone() -> None:
    text = "bronze 105,870 in, 105,870 out at https://example.com:8443/x; mail ops@example.com"
    assert redact_text(text) == text


def test_a_registered_secret_shorter_than_four_characters_does_not_mask_everything() -> None:
    register_secrets("ab")
    assert redact_text("table about abc") == "table about abc"


# --- input paths -----------------------------------------------------------------------------------


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    root = (tmp_path / "landing").resolve()
    (root / "meters").mkdir(parents=True)
    (root / "meters" / "a.csv").write_text("meter_id,timestamp,value,unit\n", encoding="utf-8")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.csv").write_text("meter_id,timestamp,value,unit\n", encoding="utf-8")
    return root


@pytest.mark.parametrize(
    "requested",
    [
        "../outside/secret.csv",
        "meters/../../outside/secret.csv",
        "/etc/passwd",
        "%2e%2e/outside/secret.csv",  # percent-encoded ..
        "%2E%2E%2Foutside%2Fsecret.csv",  # and the slashes too
        "%252e%252e/outside/secret.csv",  # encoded twice
        "..%2foutside/secret.csv",
        "%2fetc%2fpasswd",
        "..\\outside\\secret.csv",  # backslashes
        "meters/a.csv\x00.txt",  # NUL byte
        "meters/\nx.csv",
    ],
)
def test_traversal_in_any_spelling_is_refused(landing: Path, requested: str) -> None:
    with pytest.raises(ForbiddenPathError, match=r"landing directory|control characters"):
        confined_input(landing, requested)


@pytest.mark.parametrize("requested", ["meters/*.csv", "meters/a.csv", "meters", "./meters/*.csv", "100%.csv"])
def test_paths_below_landing_are_accepted(landing: Path, requested: str) -> None:
    assert Path(confined_input(landing, requested)).is_relative_to(landing)


def test_a_symlinked_folder_in_the_path_is_refused(landing: Path) -> None:
    (landing / "link").symlink_to(landing.parent / "outside")
    with pytest.raises(ForbiddenPathError, match="outside the landing directory"):
        confined_input(landing, "link/secret.csv")


def test_a_symlinked_file_matched_by_a_glob_is_refused(landing: Path) -> None:
    (landing / "meters" / "b.csv").symlink_to(landing.parent / "outside" / "secret.csv")
    pattern = confined_input(landing, "meters/*.csv")  # the folder itself is inside
    with pytest.raises(ForbiddenPathError, match=r"outside the landing directory.*b\.csv"):
        check_inputs_confined(landing, pattern, "csv")


def test_a_symlinked_folder_below_a_glob_is_refused(landing: Path) -> None:
    (landing / "meters" / "sub").symlink_to(landing.parent / "outside")
    pattern = confined_input(landing, "*/*/*.csv")
    with pytest.raises(ForbiddenPathError, match="outside the landing directory"):
        check_inputs_confined(landing, pattern, "csv")


def test_files_inside_landing_pass_the_match_check(landing: Path) -> None:
    check_inputs_confined(landing, confined_input(landing, "meters/*.csv"), "csv")
    check_inputs_confined(landing, confined_input(landing, "nothing/*.csv"), "csv")  # the run reports it


# --- table names -----------------------------------------------------------------------------------


BAD_TABLE_NAMES = ["../../etc", "gold_x/../../y", "/abs", "x'; DROP TABLE t; --", 'a"b', "a b", "", "1abc", "a.b"]


@pytest.mark.parametrize("name", BAD_TABLE_NAMES)
def test_a_table_name_with_path_or_sql_metacharacters_is_refused(tmp_path: Path, name: str) -> None:
    store = DuckDBDeltaStore(tmp_path)
    with pytest.raises(TableStoreError, match="invalid table name"):
        store.location(name)
    with pytest.raises(TableStoreError, match="invalid table name"):
        store.exists(name)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", BAD_TABLE_NAMES)
def test_the_spark_store_refuses_the_same_table_names(name: str) -> None:
    from app.infrastructure.repositories.spark_repository import SparkDeltaStore

    store = SparkDeltaStore(None, "/lake")  # type: ignore[arg-type]  # location() needs no session
    with pytest.raises(TableStoreError, match="invalid table name"):
        store.location(name)
    assert store.location("silver_readings") == "/lake/silver/silver_readings"


def test_spark_merge_conditions_quote_column_names() -> None:
    from app.infrastructure.repositories.spark_repository import _column

    assert _column("t", "meter_id") == "t.`meter_id`"
    assert _column("s", "we`ird") == "s.`we``ird`"


# --- values reach the engines as values ------------------------------------------------------------

TRICKY_IDS = ["O'Brien", "x' OR '1'='1", 'M"1', "M1'); DROP TABLE t; --", "back\\slash"]


def _gold_rows(meter_ids: list[str]) -> pa.Table:
    spec = GOLD_DAILY_METER_ENERGY
    defaults = {pa.string(): "x", pa.float64(): 1.0, pa.int64(): 1, pa.date32(): date(2025, 3, 5)}
    rows = [
        {f.name: defaults.get(f.type) for f in spec.schema} | {"meter_id": m, "direction": "import"} for m in meter_ids
    ]
    return pa.Table.from_pylist(rows, schema=spec.schema)


@pytest.fixture(params=["duckdb", "pandas", pytest.param("spark", marks=pytest.mark.spark)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "duckdb":
        duck = DuckDBDeltaStore(tmp_path)
        yield duck
        duck.release()
    elif request.param == "pandas":
        yield PandasDeltaStore(tmp_path)
    else:
        from app.infrastructure.repositories.spark_repository import SparkDeltaStore

        yield SparkDeltaStore(request.getfixturevalue("spark"), str(tmp_path))


def test_a_filter_value_with_quotes_matches_exactly_its_rows(store: Any) -> None:
    spec = GOLD_DAILY_METER_ENERGY
    store.append(spec, store.frame(_gold_rows([*TRICKY_IDS, "M2"])), batch_id="b1")
    for meter_id in TRICKY_IDS:
        where = [("meter_id", "in", [meter_id]), ("local_date", ">=", date(2025, 3, 1))]
        got = store.to_arrow(store.read(spec, where=where))
        assert got["meter_id"].to_pylist() == [meter_id], meter_id
    everything = store.to_arrow(store.read(spec, where=[("meter_id", "in", ["' OR 1=1 --"])]))
    assert everything.num_rows == 0


def test_an_upsert_matches_keys_with_quotes_as_values(store: Any) -> None:
    spec = GOLD_DAILY_METER_ENERGY
    store.upsert(spec, store.frame(_gold_rows(TRICKY_IDS)), compare=spec.value_columns, batch_id="b1")
    changed = _gold_rows(TRICKY_IDS[:2]).set_column(
        spec.schema.get_field_index("energy_kwh"), "energy_kwh", pa.array([5.0, 5.0])
    )
    counts = store.upsert(spec, store.frame(changed), compare=spec.value_columns, batch_id="b2")
    assert (counts.inserted, counts.updated) == (0, 2)
    got = store.to_arrow(store.read(spec)).sort_by("meter_id")
    assert dict(zip(got["meter_id"].to_pylist(), got["energy_kwh"].to_pylist(), strict=True)) == {
        **dict.fromkeys(TRICKY_IDS, 1.0),
        **dict.fromkeys(TRICKY_IDS[:2], 5.0),
    }


def test_grouping_by_a_column_whose_name_has_quotes_and_dots(tmp_path: Path) -> None:
    """Column names reach DuckDB as names (expression API), not pasted into SQL text."""
    store = DuckDBDeltaStore(tmp_path)
    key = 'we"ird.key'
    rows = pa.table({key: ["a", "b", "a", "c"], "value": [1, 2, 3, 4]})
    schema = pa.schema([(key, pa.string()), ("value_sum", pa.int64())])

    def per_group(table: pa.Table) -> pa.Table:
        return table.group_by([key]).aggregate([("value", "sum")])

    result = store.to_arrow(store.map_groups(store.frame(rows), [key], per_group, schema))
    store.release()
    assert sorted(result.to_pylist(), key=str) == [
        {key: "a", "value_sum": 4},
        {key: "b", "value_sum": 2},
        {key: "c", "value_sum": 4},
    ]
