"""Databricks-mode settings and the message when Spark is not installed (no Spark started here)."""

from __future__ import annotations

import sys

import pytest

from app.domain.errors import ConfigurationError, NotAvailableError
from app.infrastructure.settings import environment_variable_names, load_settings
from app.infrastructure.spark import spark_session


def test_without_pyspark_databricks_mode_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(NotAvailableError, match=r'pip install "energy-platform\[spark\]"') as error:
        spark_session("local[1]", {})
    assert "pyspark.sql is missing" in str(error.value)


def test_spark_conf_is_a_json_object_of_text_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARK_CONF", '{"spark.sql.shuffle.partitions": 64, "spark.sql.adaptive.enabled": true}')
    monkeypatch.setenv("EXECUTION_MODE", "databricks")
    settings = load_settings()
    assert settings.execution_mode == "databricks"
    assert settings.spark_conf == {"spark.sql.shuffle.partitions": "64", "spark.sql.adaptive.enabled": "true"}


@pytest.mark.parametrize("value", ["64", "not json", "[1, 2]"])
def test_spark_conf_that_is_not_a_json_object_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SPARK_CONF", value)
    with pytest.raises(ConfigurationError, match="SPARK_CONF"):
        load_settings()


def test_the_databricks_cli_variables_are_not_settings() -> None:
    """DATABRICKS_HOST and DATABRICKS_TOKEN belong to `databricks bundle deploy`; the job uses the cluster's session."""
    assert not {"DATABRICKS_HOST", "DATABRICKS_TOKEN"} & environment_variable_names()
