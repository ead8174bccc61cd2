"""`batches undo` and `tables restore` in Databricks mode: Delta Lake on a real local Spark,
through the same use cases as local mode (tests/integration/test_undo.py), in one test because
every Spark batch takes seconds.

The lake that never saw the undone batches is a second Spark lake that ran only the others; the
one that saw only the first batch is that lake read as of its first batch's versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from app.application.runner import run_batch
from app.application.undo import restore_table, undo_batch
from app.domain.errors import ConfigurationError
from app.infrastructure.settings import Settings
from app.wiring import LocalPlatform, open_platform
from tests.integration.conftest import NOW, write_csv
from tests.integration.test_undo import CONFIG, FILES, TABLES

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _rows(platform: LocalPlatform, table: str, version: int | None = None) -> list[dict[str, Any]]:
    """A table's rows (of a version, if given), sorted, floats rounded."""
    if not platform.store.exists(table):
        return []
    data = DeltaTable(platform.store.location(table), version=version).to_pyarrow_table()
    rows = data.sort_by([(c, "ascending") for c in data.column_names]).to_pylist()
    return [{k: round(v, 9) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def _run(platform: LocalPlatform, root: Path, batch_id: str, *, as_id: str | None = None) -> Any:
    result = run_batch(
        platform,
        source_name="feed",
        config_file=root / "sources.toml",
        input_path=str(root / "in" / f"{batch_id}.csv"),
        now=NOW,
        batch_id=as_id or batch_id,
    )
    assert result.status == "succeeded", result.error
    return result


def test_undo_with_and_without_cascade_and_restore_on_spark(tmp_path: Path, spark: Any) -> None:
    (tmp_path / "sources.toml").write_text(CONFIG, encoding="utf-8")
    for batch_id, rows in FILES.items():
        write_csv(tmp_path / "in" / f"{batch_id}.csv", rows, header="meter_id,timestamp,value")

    def settings(name: str) -> Settings:
        return Settings(execution_mode="databricks", data_dir=tmp_path / name, _env_file=None)  # type: ignore[call-arg]

    with open_platform(settings("undone")) as undone, open_platform(settings("control")) as control:
        for batch_id in ("b1", "b2", "b3", "b4"):
            _run(undone, tmp_path, batch_id)
        for batch_id in ("b1", "b2", "b4"):
            _run(control, tmp_path, batch_id)

        # b3 is between b2 and b4, and neither depends on it: undone alone.
        assert undo_batch(undone, "b3").undone == ["b3"]
        for table in TABLES:
            assert _rows(undone, table) == _rows(control, table), table

        with pytest.raises(ConfigurationError, match=r"later batches depend on it: b4 \(wrote meter\(s\) D"):
            undo_batch(undone, "b2")
        result = undo_batch(undone, "b2", cascade=True)
        assert result.undone == ["b4", "b2"]
        for table in TABLES:
            tagged = (
                [v.version for v in control.store.history(table) if v.batch_id == "b1"]
                if control.store.exists(table)
                else []
            )
            only_b1 = _rows(control, table, max(tagged)) if tagged else []
            assert _rows(undone, table) == only_b1, table
        assert undone.store.history("silver_readings", limit=1)[0].batch_id == result.undo_id

        again = _run(undone, tmp_path, "b2", as_id="b2-again")
        assert again.skipped_files == [] and again.reconciliation is not None
        assert again.reconciliation.rows_read == len(FILES["b2"])

        first = min(v.version for v in undone.store.history("silver_readings"))
        # The undone batches go with their undos; only b2-again's rows would leave silver alone.
        with pytest.raises(ConfigurationError, match=r"disagreeing: batch b2-again \(its rows stay in [^;]*\)\. Undo"):
            restore_table(undone, "silver_readings", version=first)
        restored = restore_table(undone, "silver_readings", version=first, force=True)
        assert _rows(undone, "silver_readings") == _rows(undone, "silver_readings", first)
        latest = undone.store.history("silver_readings", limit=1)[0]
        assert (latest.operation, latest.batch_id, latest.restored_to) == ("RESTORE", restored.restore_id, first)
