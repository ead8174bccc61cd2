"""The Spark session for Databricks mode: the cluster's own, or a local one with Delta Lake."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from app.domain.errors import NotAvailableError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: Settings every session gets: UTC instants, and the Delta Lake catalog.
REQUIRED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}

#: Defaults for a session started here (not on a cluster), overridable by SPARK_CONF.
LOCAL_DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    # Delta rebuilds a table's snapshot with this many tasks (50 by default): far too many
    # for one machine, where each task costs more than the work it does.
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.adaptive.enabled": "true",
    "spark.driver.memory": "4g",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


def spark_session(master: str, conf: dict[str, str]) -> SparkSession:
    """The active session (inside a Databricks job), else a local one with the Delta jars.

    On a cluster only session-level settings from `conf` are applied; locally `conf`
    overrides LOCAL_DEFAULTS. The Delta jars are resolved from Maven Central by the
    coordinates that match the installed `delta-spark` (the `spark` extra pins it with the
    PySpark of the job's Databricks runtime); on a cluster the runtime brings both.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as error:
        raise _missing(error) from None
    active = SparkSession.getActiveSession()
    if active is not None:  # a Databricks cluster: its runtime brings Delta Lake
        for key, value in {**conf, "spark.sql.session.timeZone": "UTC"}.items():
            active.conf.set(key, value)
        return active
    try:
        from delta import configure_spark_with_delta_pip
    except ImportError as error:
        raise _missing(error) from None
    # A local driver: Python workers must use this interpreter.
    os.environ.setdefault("PYSPARK_PYTHON", _python())
    builder = SparkSession.builder.master(master).appName("energy-platform")
    for key, value in {**LOCAL_DEFAULTS, **conf, **REQUIRED_CONF}.items():
        builder = builder.config(key, value)
    session = configure_spark_with_delta_pip(builder).getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def _missing(error: ImportError) -> NotAvailableError:
    return NotAvailableError(
        f"EXECUTION_MODE=databricks needs PySpark and Delta Lake ({error.name} is missing); "
        'install them with: pip install "energy-platform[spark]" (on a Databricks cluster the runtime provides them)'
    )


def _python() -> str:
    import sys

    return sys.executable
