"""The pure parts of `batches undo` and `tables restore`: which later batches depend on a batch,
what a batch wrote to silver according to the change data feed, which batches a table's
versions hold, and which batches a restore would leave in one layer and not in another."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa

from app.application.ports import TableVersion
from app.application.undo import (
    Disagreement,
    Footprint,
    batches_in_effect,
    dependents,
    few,
    restore_disagreements,
    silver_writes,
)

AT = datetime(2025, 6, 1, tzinfo=UTC)


def _fp(batch_id: str, meters: str = "", quarantine_of: str | None = None) -> Footprint:
    return Footprint(batch_id, frozenset(meters.split()) if meters else frozenset(), quarantine_of or batch_id)


def test_later_batches_of_the_same_meters_depend_directly_or_through_one_another() -> None:
    target = _fp("b2", "C D")
    later = [_fp("b3", "A B"), _fp("b4", "D"), _fp("b5", "E B"), _fp("b6", "D F"), _fp("b7", "F"), _fp("b8", "G")]

    found = dependents(target, later)

    assert list(found) == ["b4", "b6", "b7"]
    assert found["b4"] == "wrote meter(s) D, which batch b2 wrote before"
    assert found["b7"] == "wrote meter(s) F, which batch b6 wrote before"
    assert dependents(target, [_fp("b3", "A")]) == {}


def test_a_replay_of_the_batch_or_of_the_batch_it_replayed_depends_on_it_without_a_shared_meter() -> None:
    assert dependents(_fp("b2", "C"), [_fp("r1", "", quarantine_of="b2")]) == {
        "r1": "rewrote the quarantine of batch b2 after b2"
    }
    # Two replays of one batch: the second rewrote what the first left in its quarantine.
    assert list(dependents(_fp("r1", "", quarantine_of="b2"), [_fp("r2", "", quarantine_of="b2")])) == ["r2"]
    assert dependents(_fp("b2", "C"), [_fp("r1", "", quarantine_of="b9")]) == {}


def test_a_stream_micro_batch_that_judged_reads_late_depends_on_the_batch_that_moved_its_watermark() -> None:
    target = Footprint("s1", frozenset({"F"}), "s1", "feed")
    late = Footprint("s2", frozenset({"G"}), "s2", "feed", late_reads=3)
    other_source = Footprint("s3", frozenset({"H"}), "s3", "grid", late_reads=2)
    asked: list[str] = []

    def moved(batch_id: str) -> bool:
        asked.append(batch_id)
        return batch_id == "s1"

    assert dependents(target, [late, other_source], moved) == {
        "s2": "judged 3 read(s) late_beyond_horizon against a stream watermark batch s1 moved"
    }
    assert asked == ["s1"]  # asked only where a later micro-batch of the source judged reads late
    assert dependents(target, [late], lambda _: False) == {}
    assert dependents(target, [late]) == {}


def test_few_names_five_and_counts_the_rest() -> None:
    assert few({"b", "a"}) == "a, b"
    assert few([f"m{i}" for i in range(8)]) == "m0, m1, m2, m3, m4 and 3 more"


def _feed(rows: list[tuple[str, int, str, str, int]]) -> pa.Table:
    meter, day, change, batch, version = zip(*rows, strict=True)
    return pa.table(
        {
            "meter_id": pa.array(meter),
            "local_date": pa.array([date(2025, 6, d) for d in day], pa.date32()),
            "interval_start_utc": pa.array(
                [datetime(2025, 6, d, 12, tzinfo=UTC) for d in day], pa.timestamp("us", "UTC")
            ),
            "batch_id": pa.array(batch),
            "_change_type": pa.array(change),
            "_commit_version": pa.array(version, pa.int64()),
        }
    )


def test_silver_writes_are_the_rows_each_commit_changed_and_the_rows_naming_their_writer() -> None:
    feed = _feed(
        [
            ("A", 1, "insert", "b1", 0),
            ("D", 1, "insert", "b1", 0),
            ("C", 2, "insert", "b2", 1),
            # b2 updated a row of meter D that b1 wrote on day 1: before and after are b2's.
            ("D", 1, "update_preimage", "b1", 1),
            ("D", 3, "update_postimage", "b2", 1),
            # An undo put b2's row of meter C back (version 3): it names b2, the undo wrote it.
            ("C", 4, "insert", "b2", 3),
            ("A", 5, "delete", "b1", 2),
        ]
    )

    found = silver_writes(feed, {0: "b1", 1: "b2", 2: "b3", 3: "undo_1"})

    assert found["b1"].meters == {"A", "D"} and (found["b1"].first_day, found["b1"].last_day) == (
        date(2025, 6, 1),
        date(2025, 6, 1),
    )
    assert found["b2"].meters == {"C", "D"}
    assert (found["b2"].first_day, found["b2"].last_day) == (date(2025, 6, 1), date(2025, 6, 4))
    assert found["b3"].meters == {"A"} and found["undo_1"].meters == {"C"}
    # The latest interval of the rows a batch's own commits wrote; an undo or a delete writes none of its own.
    assert found["b2"].last_interval == datetime(2025, 6, 3, 12, tzinfo=UTC)
    assert found["b1"].last_interval == datetime(2025, 6, 1, 12, tzinfo=UTC)
    assert found["b3"].last_interval is None and found["undo_1"].last_interval is None
    assert silver_writes(feed.slice(0, 0), {}) == {}


def _v(version: int, batch: str | None, operation: str = "WRITE", restored_to: int | None = None) -> TableVersion:
    return TableVersion(version, AT, operation, batch, 0, 0, 0, restored_to=restored_to)


def test_batches_in_effect_follow_commits_and_restores() -> None:
    history = [
        _v(0, "b1"),
        _v(1, "b2", "MERGE"),
        _v(2, None, "OPTIMIZE"),
        _v(3, "b3", "MERGE"),
        _v(4, "rollback of b3", "RESTORE", restored_to=2),
        _v(5, "b4", "MERGE"),
        _v(6, "restore_x", "RESTORE", restored_to=1),
        _v(7, "restore_y", "RESTORE", restored_to=5),
    ]

    held = batches_in_effect(list(reversed(history)))  # any order

    assert held[3] == {"b1", "b2", "b3"}
    assert held[4] == {"b1", "b2"}
    assert held[5] == {"b1", "b2", "b4"}
    assert held[6] == {"b1", "b2"}
    assert held[7] == {"b1", "b2", "b4"}


def test_a_restore_disagrees_where_other_tables_keep_or_lack_the_batches_it_changes() -> None:
    histories = {
        "silver": [_v(0, "b1"), _v(1, "b2", "MERGE"), _v(2, None, "OPTIMIZE")],
        "gold": [_v(0, "b1"), _v(1, "b2", "MERGE")],
        "bronze": [_v(0, "b1"), _v(1, "b2", "WRITE")],
        "other": [_v(0, "b9")],
    }

    assert restore_disagreements("silver", 1, histories) == []  # only the compaction goes
    assert restore_disagreements("silver", 0, histories) == [
        Disagreement("b2", removed=True, tables=("bronze", "gold"))
    ]
    # Once silver is restored to before b2, going back to b2's version brings b2 back: gold and
    # bronze hold it, so they agree; but if gold was restored too, gold would then lack it.
    histories["silver"].append(_v(3, "restore_x", "RESTORE", restored_to=0))
    assert restore_disagreements("silver", 2, histories) == []
    histories["gold"].append(_v(2, "restore_y", "RESTORE", restored_to=0))
    [disagreement] = restore_disagreements("silver", 2, histories)
    assert disagreement == Disagreement("b2", removed=False, tables=("gold",))
    assert disagreement.describe() == "batch b2 (its rows would come back, while they are missing from gold)"


def test_a_batch_and_the_undo_that_undid_it_cancel_out_and_a_restore_between_them_brings_it_back() -> None:
    histories = {
        "silver": [_v(0, "b1"), _v(1, "b2", "MERGE"), _v(2, "b3", "MERGE"), _v(3, "undo_1", "MERGE")],
        "gold": [_v(0, "b1"), _v(1, "b2", "MERGE"), _v(2, "b3", "MERGE"), _v(3, "undo_1", "MERGE")],
    }
    undos = {"undo_1": ["b2"]}

    # Before b2: b3 goes (gold keeps it); b2 and its undo go together, which changes nothing.
    assert restore_disagreements("silver", 0, histories, undos) == [Disagreement("b3", removed=True, tables=("gold",))]
    assert restore_disagreements("silver", 2, histories, undos) == [Disagreement("b2", removed=False, tables=("gold",))]
    # Without knowing of the undo, b2 and undo_1 would both look like rows gold keeps.
    assert [d.batch_id for d in restore_disagreements("silver", 0, histories)] == ["b2", "b3", "undo_1"]
