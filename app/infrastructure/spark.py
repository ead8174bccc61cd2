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

#: The setting naming Maven packages a local session resolves when it starts.
PACKAGES = "spark.jars.packages"

#: Defaults for a session started here (not on a cluster), overridable by SPARK_CONF.
LOCAL_DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    # Delta rebuilds a table's snapshot with this many tasks (50 by default): far too many
    # for one machine, where each task costs more than the work it does.
    "spark.databricks.delta.snapshotPartitions": "2",
    # Delta's VACUUM lists and matches the table's files with this many tasks (10,000 by
    # default): a minute per table on one machine, two seconds with a few.
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "4",
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
    settings = {**LOCAL_DEFAULTS, **conf, **REQUIRED_CONF}
    # Delta's helper sets spark.jars.packages to its own jars: packages named in `conf` (say,
    # Spark's Kafka connector) go with them rather than being replaced.
    packages = [p.strip() for p in settings.pop(PACKAGES, "").split(",") if p.strip()]
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = configure_spark_with_delta_pip(builder, extra_packages=packages).getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def on_databricks() -> bool:
    """Whether this process runs on a Databricks cluster (its runtime sets DATABRICKS_RUNTIME_VERSION)."""
    return bool(os.environ.get("DATABRICKS_RUNTIME_VERSION"))


#: Structured Streaming's Kafka source, in the version of the session's Spark, and the helper
#: module it depends on (delegation tokens). The helper is resolved on its own: not every Maven
#: mirror carries it for every patch release (4.0.1 is missing from some), and any release of the
#: same minor line serves the connector, so the session's version is tried first, then `<minor>.0`.
KAFKA_CONNECTOR = "org.apache.spark:spark-sql-kafka-0-10_2.13"
KAFKA_TOKEN_PROVIDER = "org.apache.spark:spark-token-provider-kafka-0-10_2.13"


def require_kafka(spark: SparkSession) -> None:
    """Make Structured Streaming's Kafka source available in `spark`, when a stream needs it.

    On Databricks the runtime brings it. A local session gets the connector from Maven Central
    (Spark's Ivy, cached under ~/.ivy2) the first time a stream needs it, with `ADD JAR ivy://...`,
    which works on a running session: the CLI's session is started before it knows the command
    streams a topic, and every other session never resolves the connector at all.
    """
    if on_databricks() or _has_kafka(spark):
        return
    version = spark.version
    minor = ".".join(version.split(".")[:2])
    try:
        spark.sql(f"ADD JAR 'ivy://{KAFKA_CONNECTOR}:{version}?transitive=true&exclude={KAFKA_TOKEN_PROVIDER}'")
        errors = []
        for helper in dict.fromkeys((version, f"{minor}.0")):
            try:
                spark.sql(f"ADD JAR 'ivy://{KAFKA_TOKEN_PROVIDER}:{helper}?transitive=false'")
                break
            except Exception as error:  # not on the mirror: the next candidate
                errors.append(f"{helper}: {_first_line(error)}")
        else:
            raise RuntimeError("; ".join(errors))
    except Exception as error:
        raise NotAvailableError(
            f"streaming from Kafka in EXECUTION_MODE=databricks needs Spark's Kafka connector "
            f"{KAFKA_CONNECTOR}:{version}, which could not be fetched from Maven Central: {_first_line(error)}. "
            f'Start the session with it instead: SPARK_CONF=\'{{"{PACKAGES}": "{KAFKA_CONNECTOR}:{version}"}}\''
        ) from None
    if not _has_kafka(spark):
        raise NotAvailableError(f"Spark's Kafka connector {KAFKA_CONNECTOR}:{version} was added but cannot be loaded")


def _has_kafka(spark: SparkSession) -> bool:
    """Whether the session finds the `kafka` streaming source (defining a stream connects to nothing)."""
    try:
        reader = spark.readStream.format("kafka").option("kafka.bootstrap.servers", "127.0.0.1:9")
        reader.option("subscribe", "energy-platform-probe").load()
    except Exception:
        return False
    return True


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _missing(error: ImportError) -> NotAvailableError:
    return NotAvailableError(
        f"EXECUTION_MODE=databricks needs PySpark and Delta Lake ({error.name} is missing); "
        'install them with: pip install "energy-platform[spark]" (on a Databricks cluster the runtime provides them)'
    )


def _python() -> str:
    import sys

    return sys.executable
