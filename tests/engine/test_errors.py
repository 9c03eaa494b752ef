"""The failure taxonomy, versioned stored formats and the run state machine (pure: no servers)."""

from __future__ import annotations

import importlib
import io
import json
import pkgutil

import numpy as np
import pytest

import shared
from shared.error_text import describe
from shared.errors import (
    EngineError,
    StoredFormatTooNew,
    TerminalError,
    TransientError,
    classify,
)
from shared.outcomes import BATCH_INTERRUPTED, REJECTED, RESUBSCRIBE_FAILED, UNCONFIRMED, Failure, Outcome
from shared.runs import IllegalTransition, RunRecord
from shared.state import CHECKPOINT_FORMAT, Checkpoint, DeliveredState, build_state

# Families group errors for `except`; they are not kinds and are never raised as such on purpose.
FAMILIES = {"EngineError", "TerminalError", "TransientError", "ActiveCampaignError"}


def _all_subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    sub: type
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


def test_every_engine_error_is_exactly_one_kind() -> None:
    for module in pkgutil.iter_modules(shared.__path__):
        importlib.import_module(f"shared.{module.name}")
    errors = [c for c in _all_subclasses(EngineError) if c.__module__.startswith("shared.")]
    assert len(errors) > 20  # the walk found the engine's errors, not just the roots
    for cls in errors:
        if cls.__name__ in FAMILIES:
            continue
        kinds = issubclass(cls, TerminalError), issubclass(cls, TransientError)
        assert kinds in ((True, False), (False, True)), f"{cls.__module__}.{cls.__name__} is {kinds}"


def test_errors_the_issue_named_are_classified_as_it_says() -> None:
    from shared.activecampaign import InvalidApiKey, ListNotFound, RateLimited, Unavailable
    from shared.config import ConfigError
    from shared.errors import AccountBusy, StoredStateCorrupt
    from shared.segments import SegmentError

    terminal = [
        ConfigError(["x"]),
        ListNotFound("gone", list_id=3),
        InvalidApiKey("no"),
        StoredStateCorrupt("state/x/checkpoint.json", "is not JSON", export="x", what="checkpoint"),
        SegmentError("bad"),
    ]
    transient = [
        Unavailable("down", status=503, attempts=8),
        RateLimited("busy", attempts=3, retry_after=60),
        AccountBusy("busy"),
    ]
    assert [classify(e) for e in terminal] == ["terminal"] * len(terminal)
    assert [classify(e) for e in transient] == ["transient"] * len(transient)
    assert RateLimited("busy", attempts=3, retry_after=60).retry_after == 60
    assert classify(RecursionError("deep")) == "unexpected"
    assert describe(KeyError("k")) == "unexpected KeyError: 'k'"
    assert describe(ListNotFound("list 3 is gone", list_id=3)) == "list 3 is gone"


def test_a_corrupt_blob_error_names_the_blob_and_the_reset() -> None:
    from shared.errors import StoredStateCorrupt

    err = StoredStateCorrupt("state/vip/checkpoint.json", "is not JSON", export="vip", what="checkpoint")
    text = str(err)
    assert "'state/vip/checkpoint.json'" in text
    assert "python -m shared.cli reset vip --config FILE --what checkpoint" in text
    assert "POST /api/exports/vip/reset" in text


# ------------------------------------------------------------------ versioned formats


def _checkpoint() -> Checkpoint:
    return Checkpoint(
        run_id="r1",
        snapshot_id="s",
        plan_digest="d",
        state_etag=None,
        next_index=500,
        pending={"b1": [250, 251]},
        failed={
            3: Failure(REJECTED, "bad"),
            7: Failure(UNCONFIRMED, "ActiveCampaign did not report this batch"),
        },
        counts={"accepted": 247},
        rejoin_next=4,
    )


def test_checkpoint_round_trips_with_its_format_version() -> None:
    cp = _checkpoint()
    doc = json.loads(cp.to_json())
    assert doc["format"] == CHECKPOINT_FORMAT
    assert Checkpoint.from_json(cp.to_json()) == cp


# What the app wrote before typed outcomes (checkpoint format 3, verbatim but for brevity): failures
# as "code: detail" strings.
FORMAT_3_CHECKPOINT = (
    '{"format":3,"run_id":"r1","snapshot_id":"s","plan_digest":"d","state_etag":null,"next_index":500,'
    '"pending":{"b1":[250,251]},"failed":{"3":"rejected: bad","7":"unconfirmed: ActiveCampaign did not '
    'report this batch","9":"batch_interrupted: ActiveCampaign did not import the batch","12":'
    '"resubscribe_failed: the contact was not found after its import"},"resent":[],"counts":'
    '{"accepted":247},"started_at":null,"rejoin_next":4,"rejoin_after":0,"rejoin_paged":false,'
    '"rejoin_ids":{}}'
)


def test_a_format_3_checkpoint_is_migrated_to_typed_failures() -> None:
    migrated = Checkpoint.from_json(FORMAT_3_CHECKPOINT)
    assert migrated.failed == {
        3: Failure(REJECTED, "bad"),
        7: Failure(UNCONFIRMED, "ActiveCampaign did not report this batch"),
        9: Failure(BATCH_INTERRUPTED, "ActiveCampaign did not import the batch"),
        12: Failure(RESUBSCRIBE_FAILED, "the contact was not found after its import"),
    }
    assert [f.outcome for f in migrated.failed.values()] == [
        Outcome.REJECTED,
        Outcome.UNCONFIRMED,
        Outcome.FAILED,
        Outcome.FAILED,
    ]
    assert (migrated.next_index, migrated.pending, migrated.rejoin_next) == (500, {"b1": [250, 251]}, 4)
    # Written back in the current format, it reads the same.
    assert json.loads(migrated.to_json())["failed"]["3"] == ["rejected", "bad"]
    assert Checkpoint.from_json(migrated.to_json()) == migrated


def test_a_format_1_checkpoint_is_migrated() -> None:
    doc = json.loads(FORMAT_3_CHECKPOINT)
    del doc["format"], doc["rejoin_next"], doc["rejoin_after"], doc["rejoin_paged"], doc["rejoin_ids"]
    migrated = Checkpoint.from_json(json.dumps(doc))  # what format 1 wrote
    assert (migrated.next_index, migrated.rejoin_next) == (500, 0)
    assert migrated.failed[3] == Failure(REJECTED, "bad")


def test_a_current_checkpoint_with_a_malformed_failure_is_refused() -> None:
    doc = json.loads(_checkpoint().to_json())
    doc["failed"] = {"3": "rejected: bad"}  # the old string form under the new format number
    with pytest.raises(ValueError, match="malformed value"):
        Checkpoint.from_json(json.dumps(doc))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"run_id": "r1", "snapshot_id"', "is not JSON"),
        ("[1, 2]", "is not a JSON object"),
        (
            '{"run_id": "r", "snapshot_id": "s", "plan_digest": "d", "state_etag": null, "extra": 1}',
            "unknown keys",
        ),
        ('{"run_id": "r", "snapshot_id": "s"}', "lacks"),
        (
            '{"run_id": "r", "snapshot_id": "s", "plan_digest": "d", "state_etag": null, "next_index": "x"}',
            "malformed",
        ),
    ],
)
def test_an_unreadable_checkpoint_is_refused_with_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Checkpoint.from_json(text)


def test_a_newer_checkpoint_or_state_format_is_refused() -> None:
    doc = json.loads(_checkpoint().to_json())
    doc["format"] = CHECKPOINT_FORMAT + 1
    with pytest.raises(ValueError, match=f"format {CHECKPOINT_FORMAT + 1}"):
        Checkpoint.from_json(json.dumps(doc))
    state = build_state(
        np.array([5], dtype=np.uint64),
        np.array([6], dtype=np.uint64),
        [b"a@b.c"],
        snapshot_id="s",
        last_full_sync=None,
    )
    with np.load(io.BytesIO(state.to_bytes())) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["meta"] = np.frombuffer(json.dumps({"format": 99}).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with pytest.raises(ValueError, match="format 99"):
        DeliveredState.from_bytes(buf.getvalue())


def test_a_format_1_state_without_removals_is_migrated() -> None:
    state = build_state(
        np.array([5, 7], dtype=np.uint64),
        np.array([6, 8], dtype=np.uint64),
        [b"a@b.c", b"d@e.f"],
        snapshot_id="s",
        last_full_sync=None,
    )
    buf = io.BytesIO()
    meta = json.dumps({"format": 1, "snapshot_id": "s", "last_full_sync": None})
    np.savez(
        buf,
        keys=state.keys,
        fingerprints=state.fingerprints,
        email_offsets=state.email_offsets,
        email_data=np.frombuffer(state.email_data, dtype=np.uint8),
        meta=np.frombuffer(meta.encode(), dtype=np.uint8),
    )
    migrated = DeliveredState.from_bytes(buf.getvalue())
    assert (len(migrated), migrated.removed.tolist(), migrated.target) == (2, [], None)
    assert migrated.email(1) == "d@e.f"


def test_a_truncated_state_is_refused_not_read_as_empty() -> None:
    state = build_state(
        np.array([5], dtype=np.uint64),
        np.array([6], dtype=np.uint64),
        [b"a@b.c"],
        snapshot_id="s",
        last_full_sync=None,
    )
    with pytest.raises(ValueError, match="unreadable"):
        DeliveredState.from_bytes(state.to_bytes()[:100])


def test_format_too_new_is_a_corrupt_state_error_that_says_to_upgrade() -> None:
    err = StoredFormatTooNew("state/vip/delivered.npz", 3, 2, export="vip", what="state")
    assert classify(err) == "terminal"
    assert "newer than the 2 this version reads" in str(err)
    assert "--what state" in str(err)


# ------------------------------------------------------------------ run state machine


def _record() -> RunRecord:
    return RunRecord(run_id="r1", export="vip", status="queued", trigger="cli")


def test_runs_move_only_along_the_state_machine() -> None:
    record = _record()
    record.start()
    assert (record.status, record.attempts) == ("running", 1)
    record.wait("continues in invocation 2", continuation=1)
    assert (record.status, record.continuations) == ("queued", 1)
    record.start()
    record.start()  # a new process takes over a run whose owner died
    assert record.attempts == 3
    record.succeed()
    assert record.status == "succeeded"
    assert record.finished_at
    for move in (record.start, record.succeed, lambda: record.fail("x"), lambda: record.wait("x")):
        with pytest.raises(IllegalTransition, match="cannot go from succeeded"):
            move()


def test_a_queued_run_cannot_succeed_and_status_is_never_assigned() -> None:
    record = _record()
    with pytest.raises(IllegalTransition, match="cannot go from queued to succeeded"):
        record.succeed()
    with pytest.raises(IllegalTransition, match="not assigned"):
        record.status = "running"
    record.fail("could not queue the run")
    assert record.status == "failed"


def test_a_record_says_who_started_it_and_round_trips() -> None:
    record = RunRecord(
        run_id="r1", export="vip", status="queued", trigger="api", started_by="api:j***@example.com"
    )
    again = RunRecord.from_document(record.to_document())
    assert again == record
    assert record.to_document()["startedBy"] == "api:j***@example.com"


def test_the_taxonomy_imports_nothing_of_the_project():
    """shared/errors.py is the root every module imports: importing anything of ours would make cycles."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(shared.__file__).with_name("errors.py").read_text(encoding="utf-8"))
    imported = {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] in {"shared", "functions", "scripts"}}
