"""`make bench`: throughput and memory figures of the export, each next to its target.

Scenarios:

1. local pipeline, 1,000,000 rows generated lazily as byte chunks: the pipeline's pass 1
   (pipeline.collect_contacts over read_csv_batches), then pipeline.plan_run
   against an empty delivered state, in a fresh subprocess pinned to one core, five times; the
   median rows/s (and the range) and the highest peak RSS (ru_maxrss at the end of each subprocess),
   next to the peak RSS of an idle interpreter with the same imports. One more subprocess times
   read_csv_batches alone and with check_batch, to locate the cost, and pass 1 over the same rows
   with every 100th address invalid (the rows-with-rejections path), and pass 1 of rows whose five
   custom fields are typed (date, datetime, dropdown, checkbox, number: converted and checked).
2. incremental re-run of the unchanged 1,000,000-profile segment (state built with advance_state
   from scenario 1's plan in one subprocess and written in its blob encoding; the re-runs in a fresh
   one, which loads it): pass 1 + plan must plan 0 sends, and its peak RSS is a re-run's; then with
   every 100th row's first name changed it must plan exactly 10,000 sends. Local time is loading the
   state, pass 1, plan and pass 2 up to the sender (planned_rows, map_row and the payload of each
   planned row), CSV generation excluded.
3. send phase: Azurite and the sandbox at 10x ActiveCampaign's limits (50 requests/s, 1000 bulk
   imports/min: ceiling 250,000 contacts/min), a 100,000-profile Customer Insights snapshot, the real
   `run_export`; contacts/min over the send phase as a share of the ceiling, and zero lost (the
   sandbox list holds exactly the 100,000 emails and the report says accepted == 100,000).
4. the same at ActiveCampaign's real limits (5 requests/s, 100 bulk imports/min) with 50,000
   profiles, about 2 minutes: the real-limit throughput measured rather than extrapolated
   (`--skip-real` leaves it out).
0. cold start: `import function_app` in a fresh interpreter (what the Functions host does before the
   first invocation of a new instance), median of 7, next to `import azure.functions` alone, the
   floor no change here can go under (`--cold-start` runs only this scenario).
5. freshness (scripts/bench_freshness.py): the local host `scripts.serve`, an onRefresh export and a
   real-schema BlobCreated event put on the queue as a 10,000-profile snapshot's model.json is
   uploaded; seconds from the upload to the first contact queued at ActiveCampaign
   (`--skip-freshness` leaves it out).
7. change log (`--only-changes` runs it alone, `--skip-changes` leaves it out): the 1,000,000-profile
   first run's local work (pass 1, plan, pass 2 up to the sender) in a fresh subprocess pinned to one
   core, without and with a change log row for every contact (shared/changes.py's
   ChangeLog.log_ops, streamed as a dry run logs its planned operations; its chunks written to a
   local file: in a run the checkpoint writer's thread appends them to storage). Pass 2 alternates
   without / with, twice, the faster of each counted, in CPU time of the subprocess. The rows/s
   with the log must stay within 10% of those without, and the subprocess's peak RSS within the 1M
   target.
8. feedback (scripts/bench_feedback.py): the feedback folder of a list of 100,000 contacts with 1%
   changed: the Full refresh's requests (and its time at real limits, implied), then the change
   refresh at ActiveCampaign's real limits, requests and seconds measured (`--only-feedback` runs it
   alone, `--skip-feedback` leaves it out).

Exit code 0 unless something errors or contacts are lost; a missed target prints MISS, nothing more.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import IO, Any

import numpy as np
from azure.storage.blob import BlobServiceClient

from scripts.demo import DEMO_API_KEY, PROCESSING_DELAY_S, ROOT, azurite, sandbox
from shared.changes import ChangeLog
from shared.config import FieldFormat, FieldMapping
from shared.mapping import RowMapper, field_converters
from shared.outcomes import Outcome
from shared.pipeline import RunContext, collect_contacts, plan_run, run_export
from shared.runs import RunStore
from shared.secrets import EnvSecrets
from shared.segments import Partition, SourceRow, read_csv_batches
from shared.send import planned_operations
from shared.settings import DEFAULT_REQUEST_SHARE, load_settings
from shared.state import DeliveredState
from shared.sync import (
    Plan,
    SnapshotContacts,
    advance_state,
    planned_rows,
)
from tests.support.exports import make_config
from tests.support.segments import COLUMNS, profiles, write_ci_snapshot

LOCAL_ROWS = 1_000_000
LOCAL_REPEATS = 5
STATE_FILE_ENV = "BENCH_STATE_FILE"  # where scenario 2's first subprocess leaves the delivered state
SEND_ROWS = 100_000
ROWS_PER_CHUNK = 8_192
LIST_ID = 1
TAGS = ("segment-vip",)
MAPPING = FieldMapping(
    email="EmailAddress",
    first_name="FirstName",
    last_name="LastName",
    phone="Phone",
    fields={"LOYALTY_TIER": "LoyaltyTier"},
    tags=TAGS,
)
FIELD_IDS = {"LoyaltyTier": 1}  # column -> ActiveCampaign field id (the sandbox's LOYALTY_TIER)
PARTITION = Partition(blob_name="bench/Vip_1.csv", has_header=False)
# The export the local scenarios plan for (what the demo configures), with the mapping above.
EXPORT = replace(make_config("127.0.0.1:1", "bench").exports["vip"], mapping=MAPPING)

SCALE = 10
REAL_REQUESTS_PER_SECOND = 5  # ActiveCampaign's documented limits
REAL_BULK_PER_MINUTE = 100
REQUESTS_PER_SECOND = REAL_REQUESTS_PER_SECOND * SCALE
BULK_PER_MINUTE = REAL_BULK_PER_MINUTE * SCALE
REAL_ROWS = 50_000  # 200 bulk imports: about 2 minutes at the real limits
CONTACTS_PER_BULK = 250
CEILING_PER_MIN = BULK_PER_MINUTE * CONTACTS_PER_BULK  # 250,000 at 10x
REAL_CEILING_PER_MIN = CEILING_PER_MIN // SCALE  # 25,000 at ActiveCampaign's real limits

TARGET_ROWS_PER_S = 200_000
TARGET_PEAK_MB = 400.0
TARGET_RERUN_S = 30.0
TARGET_SHARE = 0.95
TARGET_CHANGES_COST = 0.10  # writing the change log costs at most this share of the local rows/s
PEAK_WINDOW_S = 10.0  # the app's busiest window, as a share of the account's requests in it
TARGET_IMPORT_S = 0.3
IMPORT_REPEATS = 7


# ------------------------------------------------------------------------------ data


class TimedChunks:
    """Byte chunks of a headerless Customer Insights CSV (QUOTE_ALL, CRLF), generated lazily.

    `seconds` accumulates the time spent generating, so it can be subtracted from the pipeline's.
    `changed_every`: every n-th row (row index % n == 0) gets an altered first name.
    `invalid_every`: every n-th row (row index % n == 1) gets an address with two '@'.
    """

    def __init__(
        self,
        rows: int,
        *,
        changed_every: int = 0,
        invalid_every: int = 0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._clock = clock
        self._rows = rows
        self._changed_every = changed_every
        self._invalid_every = invalid_every
        self._next = 0
        self.seconds = 0.0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._next >= self._rows:
            raise StopIteration
        t0 = self._clock()
        start, stop = self._next, min(self._next + ROWS_PER_CHUNK, self._rows)
        every, invalid = self._changed_every, self._invalid_every
        lines = [
            f'"{i}","person{i}@{"@" if invalid and i % invalid == 1 else ""}example.com",'
            f'"First{i}{"x" if every and i % every == 0 else ""}",'
            f'"Last{i}","+1555{i:07d}","gold"\r\n'
            for i in range(start, stop)
        ]
        self._next = stop
        chunk = "".join(lines).encode("utf-8")
        self.seconds += self._clock() - t0
        return chunk


@dataclass
class Pass1:
    contacts: SnapshotContacts
    rows: int
    seconds: float  # pass 1 only, generation excluded
    generation_s: float


def pass1(
    rows: int,
    *,
    changed_every: int = 0,
    invalid_every: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> Pass1:
    """The pipeline's pass 1 (`pipeline.collect_contacts`) over generated chunks; only the rows made
    invalid by `invalid_every` may be rejected."""
    chunks = TimedChunks(rows, changed_every=changed_every, invalid_every=invalid_every, clock=clock)
    mapper = RowMapper(MAPPING, COLUMNS, FIELD_IDS)
    rejected = 0

    def reject(row: SourceRow, reason: str, detail: str) -> None:
        nonlocal rejected
        rejected += 1

    t0 = clock()
    contacts, read = collect_contacts(
        read_csv_batches(chunks, PARTITION, COLUMNS), mapper, EXPORT, on_reject=reject
    )
    elapsed = clock() - t0
    expected_rejections = len(range(1, rows, invalid_every)) if invalid_every else 0
    if read != rows or rejected != expected_rejections:
        raise RuntimeError(f"pass 1 read {read:,} rows of {rows:,} and rejected {rejected:,}")
    return Pass1(contacts, read, elapsed - chunks.seconds, chunks.seconds)


def pass2(
    rows: int,
    plan: Plan,
    contacts: SnapshotContacts,
    *,
    changed_every: int = 0,
    changes: ChangeLog | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float]:
    """The pipeline's pass 2 up to the sender: `planned_rows` over the same rows and
    `send.planned_operations` building each bulk-import operation, as `SendStage` hands them to the
    sender, and with `changes` each one's change log row as SendStage logs an accepted operation;
    (seconds with generation excluded, generation)."""
    chunks = TimedChunks(rows, changed_every=changed_every, clock=clock)
    mapper = RowMapper(MAPPING, COLUMNS, FIELD_IDS)
    duplicates = 0

    def duplicate(row: SourceRow) -> None:
        nonlocal duplicates
        duplicates += 1

    t0 = clock()
    batches = read_csv_batches(chunks, PARTITION, COLUMNS)
    planned = planned_rows(
        batches, mapper.check_batch, plan, contacts=len(contacts.keys), on_duplicate=duplicate
    )
    built = 0
    if changes is None:
        built = sum(1 for _ in planned_operations(planned, mapper, EXPORT))
    else:
        # As a dry run logs its planned operations (SendStage: ChangeLog.log_ops, streamed). In a
        # sending run the same rows are logged batch by batch as ActiveCampaign reports them.
        changes.log_ops(planned_operations(planned, mapper, EXPORT), plan.actions, Outcome.PLANNED)
        changes.flush()
        built = changes.rows  # one row per operation built
    elapsed = clock() - t0 - chunks.seconds
    if built != len(plan.send) or duplicates:
        raise RuntimeError(
            f"pass 2 built {built:,} payloads for {len(plan.send):,} sends, {duplicates:,} duplicates"
        )
    return elapsed, chunks.seconds


@dataclass(frozen=True)
class _TypedField:
    id: int
    perstag: str
    type: str
    options: tuple[str, ...] = ()


TYPED_COLUMNS = (*COLUMNS, "Birthday", "LastSeen", "Interests", "Spend")
TYPED_FIELDS = (
    _TypedField(1, "LOYALTY_TIER", "dropdown", ("gold", "silver", "platinum")),
    _TypedField(106, "BIRTHDAY", "date"),
    _TypedField(107, "LAST_SEEN", "datetime"),
    _TypedField(108, "INTERESTS", "checkbox", ("Books", "Music", "Travel")),
    _TypedField(109, "SPEND", "number"),
)
TYPED_MAPPING = replace(
    MAPPING,
    fields={f.perstag: column for f, column in zip(TYPED_FIELDS, TYPED_COLUMNS[5:], strict=True)},
    formats={"BIRTHDAY": FieldFormat(input_format="%m/%d/%Y"), "INTERESTS": FieldFormat(delimiter=";")},
)
TYPED_IDS = {column: f.id for f, column in zip(TYPED_FIELDS, TYPED_COLUMNS[5:], strict=True)}


def typed_chunks(rows: int) -> Iterator[bytes]:
    """Rows with every typed field mapped: a dropdown, a US-format date (20,160 distinct: 12 months x
    28 days x 60 years, in turn), an ISO timestamp (distinct on every row), a ';'-delimited checkbox
    and a number (1,000 distinct)."""
    # Each part advances when the one before has gone round (an odometer): parts taken as `i % n`
    # side by side repeat together every lcm of the n rows (420 dates, 25,200 timestamps).
    for start in range(0, rows, ROWS_PER_CHUNK):
        yield "".join(
            f'"{i}","person{i}@example.com","First{i}","Last{i}","+1555{i:07d}","gold",'
            f'"{1 + i % 12}/{1 + i // 12 % 28}/{1940 + i // 336 % 60}",'
            f'"2023-06-{1 + i // 86_400 % 28:02d}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",'
            f'"Books;Music","{i % 1000}.50"\r\n'
            for i in range(start, min(start + ROWS_PER_CHUNK, rows))
        ).encode()


def typed_pass1_rows_per_s(rows: int) -> float:
    """Pass 1 (`collect_contacts`) with five typed custom fields converted and checked (the CSV is
    generated beforehand)."""
    chunks = list(typed_chunks(rows))
    converters = field_converters(TYPED_MAPPING, TYPED_FIELDS, TYPED_IDS)
    mapper = RowMapper(TYPED_MAPPING, TYPED_COLUMNS, TYPED_IDS, converters=converters)
    rejected: list[str] = []

    def reject(row: SourceRow, reason: str, detail: str) -> None:
        rejected.append(reason)

    export = replace(EXPORT, mapping=TYPED_MAPPING)
    t0 = time.perf_counter()
    _contacts, read = collect_contacts(
        read_csv_batches(chunks, PARTITION, TYPED_COLUMNS), mapper, export, on_reject=reject
    )
    elapsed = time.perf_counter() - t0
    if read != rows or rejected or mapper.field_problems():
        raise RuntimeError(
            f"typed pass 1 read {read:,} rows, rejected {len(rejected):,}: {mapper.field_problems()}"
        )
    return rows / elapsed


def parse_only_rows_per_s(rows: int, *, check_rows: bool) -> float:
    """Diagnostic: rows/s of read_csv_batches alone, or with RowMapper.check_batch (generation excluded)."""
    chunks = TimedChunks(rows)
    mapper = RowMapper(MAPPING, COLUMNS, FIELD_IDS)
    t0 = time.perf_counter()
    for batch in read_csv_batches(chunks, PARTITION, COLUMNS):
        if check_rows:
            mapper.check_batch(batch.rows)
    return rows / (time.perf_counter() - t0 - chunks.seconds)


def plan(contacts: SnapshotContacts, old: DeliveredState, snapshot_id: str) -> tuple[Plan, float]:
    t0 = time.perf_counter()
    result = plan_run(contacts, old, EXPORT, full=False, force=False, snapshot_id=snapshot_id)
    return result, time.perf_counter() - t0


# ------------------------------------------------------------------------------ subprocess workers


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _pin_one_core() -> int:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def worker_baseline() -> dict[str, float]:
    return {"peak_rss_mb": _peak_rss_mb()}


def worker_local() -> dict[str, float]:
    cpu = _pin_one_core()
    first = pass1(LOCAL_ROWS)
    result, plan_s = plan(first.contacts, DeliveredState.empty(), "bench-1")
    sends = int(result.send.shape[0])
    if sends != LOCAL_ROWS:
        raise RuntimeError(f"the first plan has {sends:,} sends, expected {LOCAL_ROWS:,}")
    local_s = first.seconds + plan_s
    return {
        "cpu": cpu,
        "rows": first.rows,
        "pass1_s": first.seconds,
        "plan_s": plan_s,
        "generation_s": first.generation_s,
        "rows_per_s": first.rows / local_s,
        "rows_per_s_with_generation": first.rows / (local_s + first.generation_s),
        "sends": sends,
        "peak_rss_mb": _peak_rss_mb(),
    }


def worker_diagnostics() -> dict[str, float]:
    _pin_one_core()
    return {
        "parse_rows_per_s": parse_only_rows_per_s(LOCAL_ROWS, check_rows=False),
        "parse_map_rows_per_s": parse_only_rows_per_s(LOCAL_ROWS, check_rows=True),
        "invalid_rows_per_s": LOCAL_ROWS / pass1(LOCAL_ROWS, invalid_every=100).seconds,
        "typed_rows_per_s": typed_pass1_rows_per_s(LOCAL_ROWS),
    }


def worker_state() -> dict[str, float]:
    """The delivered state after a first run of the segment, written where `worker_incremental` reads it."""
    first = pass1(LOCAL_ROWS)
    first_plan, _ = plan(first.contacts, DeliveredState.empty(), "bench-1")
    none = np.zeros(0, dtype=np.int64)
    state = advance_state(
        DeliveredState.empty(),
        first.contacts,
        first_plan,
        send_failed=none,
        removals_done=none,
        snapshot_id="bench-1",
        last_full_sync=None,
    )
    blob = state.to_bytes()  # what the pipeline stores; a re-run starts by loading it
    with open(os.environ[STATE_FILE_ENV], "wb") as out:
        out.write(blob)
    return {"state_bytes": len(blob)}


def worker_incremental() -> dict[str, float]:
    """Re-runs as the pipeline does them, in a process that did nothing before (so its peak RSS is a
    re-run's): load the state blob, pass 1, plan, pass 2 up to the sender; unchanged, then with 1% of
    the rows changed."""
    cpu = _pin_one_core()
    with open(os.environ[STATE_FILE_ENV], "rb") as state_file:
        blob = state_file.read()
    t0 = time.perf_counter()
    old = DeliveredState.from_bytes(blob)
    del blob
    again = pass1(LOCAL_ROWS)
    unchanged_plan, _ = plan(again.contacts, old, "bench-2")
    rerun_pass2_s, generated = pass2(LOCAL_ROWS, unchanged_plan, again.contacts)
    rerun_s = time.perf_counter() - t0 - again.generation_s - generated
    unchanged_sends = int(unchanged_plan.send.shape[0])
    rerun_peak = _peak_rss_mb()
    del again, unchanged_plan

    t1 = time.perf_counter()
    changed = pass1(LOCAL_ROWS, changed_every=100)
    changed_plan, _ = plan(changed.contacts, old, "bench-3")
    changed_pass2_s, generated = pass2(LOCAL_ROWS, changed_plan, changed.contacts, changed_every=100)
    changed_s = time.perf_counter() - t1 - changed.generation_s - generated
    changed_sends = int(changed_plan.send.shape[0])
    return {
        "cpu": cpu,
        "rerun_s": rerun_s,
        "rerun_pass2_s": rerun_pass2_s,
        "changed_pass2_s": changed_pass2_s,
        "unchanged_sends": unchanged_sends,
        "changed_s": changed_s,
        "changed_sends": changed_sends,
        "changed_changed": changed_plan.changed,
        "rerun_peak_rss_mb": rerun_peak,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _writer_of(sink: IO[bytes]) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        sink.write(data)

    return write


def worker_changes() -> dict[str, float]:
    """Scenario 7: a 1M-profile first run's local work without and with its change log, in CPU time
    of this process (pinned to one core): on a shared host the wall time of the same work varies by
    more than the 10% measured, the CPU time by a few percent."""
    cpu = _pin_one_core()
    clock = time.process_time
    first = pass1(LOCAL_ROWS, clock=clock)
    t0 = clock()
    result, _ = plan(first.contacts, DeliveredState.empty(), "bench-1")
    plan_s = clock() - t0
    without: list[float] = []
    with_log: list[float] = []
    logged = 0
    with tempfile.TemporaryFile() as sink:
        for _ in range(2):
            without.append(pass2(LOCAL_ROWS, result, first.contacts, clock=clock)[0])
            sink.seek(0)
            sink.truncate()
            changes = ChangeLog([(1, "Loyalty tier")], _writer_of(sink))
            with_log.append(pass2(LOCAL_ROWS, result, first.contacts, changes=changes, clock=clock)[0])
            if changes.rows != LOCAL_ROWS:
                raise RuntimeError(f"the change log has {changes.rows:,} rows, expected {LOCAL_ROWS:,}")
            logged = changes.logged
    local_s = first.seconds + plan_s
    base_s, log_s = min(without), min(with_log)
    return {
        "cpu": cpu,
        "local_s": local_s,
        "pass2_s": base_s,
        "pass2_log_s": log_s,
        "rows_per_s": LOCAL_ROWS / (local_s + base_s),
        "rows_per_s_log": LOCAL_ROWS / (local_s + log_s),
        "log_us_per_row": (log_s - base_s) / LOCAL_ROWS * 1e6,
        "log_bytes": logged,
        "peak_rss_mb": _peak_rss_mb(),
    }


WORKERS: dict[str, Callable[[], dict[str, float]]] = {
    "changes": worker_changes,
    "baseline": worker_baseline,
    "local": worker_local,
    "diagnostics": worker_diagnostics,
    "state": worker_state,
    "incremental": worker_incremental,
}


def run_worker(name: str, env: dict[str, str] | None = None, *, timeout: float = 300) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.bench", "--worker", name],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        text=True,
        check=False,
        timeout=timeout,
    )
    if proc.returncode:
        raise RuntimeError(f"worker {name!r} exited {proc.returncode}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------------ scenario 3


def send_scenario(send_rows: int = SEND_ROWS, scale: int = SCALE) -> dict[str, Any]:
    # ActiveCampaign processes each batch seconds after it is queued: so does the sandbox here.
    with azurite() as storage, sandbox(scale, processing_delay=PROCESSING_DELAY_S) as hostname:
        service = BlobServiceClient.from_connection_string(storage)
        segments = service.create_container("customer-insights")
        rows = profiles(send_rows)
        t0 = time.perf_counter()
        write_ci_snapshot(segments, "Vip", rows, partitions=4)
        upload_s = time.perf_counter() - t0
        expected = {row[1] for row in rows}
        del rows

        config = make_config(hostname, "customer-insights")
        settings = load_settings(
            {
                "AzureWebJobsStorage": storage,
                "ACTIVECAMPAIGN_REQUESTS_PER_SECOND": str(REAL_REQUESTS_PER_SECOND * scale),
                "ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE": str(REAL_BULK_PER_MINUTE * scale),
            }
        )
        ctx = RunContext(
            settings=settings,
            config=config,
            secrets=EnvSecrets({"ACTIVECAMPAIGN_KEY": DEMO_API_KEY}),
            app_blobs=service,
            segment_blobs=service,
        )
        runs = RunStore(ctx.app_container())
        record = runs.create("vip", trigger="cli")
        record.start()
        runs.update(record)
        t1 = time.perf_counter()
        outcome = run_export(ctx, record, runs=runs)
        wall_s = time.perf_counter() - t1
        report = outcome.report
        if outcome.status != "succeeded":
            raise RuntimeError(f"the export run {outcome.status}: {outcome.error}")

        with urllib.request.urlopen(f"http://{hostname}/__sandbox/lists/1/members", timeout=60) as answer:
            members = json.loads(answer.read())["members"]
        with urllib.request.urlopen(f"http://{hostname}/__sandbox/stats", timeout=60) as answer:
            stats = json.loads(answer.read())
        with urllib.request.urlopen(
            f"http://{hostname}/__sandbox/peak?window={PEAK_WINDOW_S}", timeout=60
        ) as answer:
            peak = json.loads(answer.read())["requests"]
        landed = set(members)
        send_s = float(report.timings["send_s"])
        queue_s = float(report.timings["queue_s"])
        return {
            "queue_s": queue_s,
            "confirm_s": float(report.timings.get("confirm_s", 0.0)),
            # The send phase: pass 2 until ActiveCampaign queued the last batch (confirmations after).
            "per_min_queue": report.accepted / queue_s * 60,
            "peak_share": peak / (REAL_REQUESTS_PER_SECOND * scale * PEAK_WINDOW_S),
            "peak_requests": peak,
            "per_1000": {kind: n * 1000 / max(report.accepted, 1) for kind, n in report.requests.items()},
            "upload_s": upload_s,
            "wall_s": wall_s,
            "plan_s": float(report.timings.get("plan_s", 0.0)),
            "send_s": send_s,
            "accepted": report.accepted,
            "failed": report.failed,
            "unconfirmed": report.unconfirmed,
            "batches": report.batches,
            "members": len(landed),
            "missing": len(expected - landed),
            "unexpected": len(landed - expected),
            "per_min_send": report.accepted / send_s * 60,
            "per_min_wall": report.accepted / wall_s * 60,
            "requests": stats["requests"],
            # Refusals for going over a limit (429s, bulk-import 400s): pacing at the ceiling, not over it.
            "over_limit": stats["rate_limited"] + stats["bulk_rate_limited"],
        }


# ------------------------------------------------------------------------------ table


@dataclass
class Row:
    scenario: str
    figure: str
    value: str
    target: str
    verdict: str  # PASS, MISS, or "" for information


def _import_seconds(module: str) -> float:
    """Seconds `import module` takes in a fresh interpreter without app settings (median of runs)."""
    code = (
        f"import time\nstarted = time.perf_counter()\nimport {module}\nprint(time.perf_counter() - started)"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    times = sorted(
        float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                             check=True).stdout)
        for _ in range(IMPORT_REPEATS)
    )  # fmt: skip
    return times[len(times) // 2]


def cold_start_rows() -> list[Row]:
    app = _import_seconds("function_app")
    floor = _import_seconds("azure.functions")
    s0 = "0 cold start"
    return [
        Row(s0, f"import function_app, median of {IMPORT_REPEATS} fresh interpreters", f"{app:.3f} s",
            f"<= {TARGET_IMPORT_S} s", verdict(app <= TARGET_IMPORT_S)),
        Row(s0, "  of which import azure.functions (the floor)", f"{floor:.3f} s", "", ""),
    ]  # fmt: skip


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_table(rows: list[Row]) -> None:
    headers = Row("scenario", "figure", "value", "target", "result")
    table = [headers, *rows]
    widths = [max(len(getattr(r, f)) for r in table) for f in ("scenario", "figure", "value", "target")]

    def line(r: Row) -> str:
        cells = [r.scenario, r.figure, r.value, r.target]
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " | " + r.verdict

    print(line(headers))
    print("-+-".join("-" * w for w in widths) + "-+-------")
    for r in rows:
        print(line(r))


def _loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def send_rows(label: str, send: dict[str, Any], expected: int, ceiling: int) -> list[Row]:
    """The table rows of a send scenario (3 at 10x, 4 at the real limits)."""
    share = send["per_min_queue"] / ceiling
    whole = send["per_min_send"] / ceiling
    peak_ok = send["peak_share"] <= DEFAULT_REQUEST_SHARE
    out = [
        Row(label, "send phase: contacts/min until the last batch is queued",
            f"{send['per_min_queue']:,.0f} ({share:.1%} of {ceiling:,})", f">= {TARGET_SHARE:.0%}",
            verdict(share >= TARGET_SHARE)),
        Row(label, "  queue_s / confirm_s (batches processed after queuing)",
            f"{send['queue_s']:.1f} s / {send['confirm_s']:.1f} s", "", ""),
        Row(label, "  pass 2 with confirmations: contacts/min over send_s",
            f"{send['per_min_send']:,.0f} ({whole:.1%})", "", ""),
        Row(label, "  whole run: wall time, contacts/min",
            f"{send['wall_s']:.1f} s, {send['per_min_wall']:,.0f} ({send['per_min_wall'] / ceiling:.1%})", "", ""),
        Row(label, f"app's peak requests in any {PEAK_WINDOW_S:.0f} s, share of the account's limit",
            f"{int(send['peak_requests'])} ({send['peak_share']:.1%})", f"<= {DEFAULT_REQUEST_SHARE:.0%}",
            verdict(peak_ok)),
        Row(label, "  batches / all requests", f"{int(send['batches']):,} / {int(send['requests']):,}", "", ""),
    ]  # fmt: skip
    for kind, n in sorted(send["per_1000"].items(), key=lambda kv: -kv[1]):
        out.append(Row(label, f"  requests per 1,000 contacts: {kind}", f"{n:.2f}", "", ""))
    out += [
        Row(label, "refused for going over a limit", f"{int(send['over_limit']):,}", "0",
            verdict(send["over_limit"] == 0)),
        Row(label, "accepted (report)", f"{int(send['accepted']):,}", f"{expected:,}",
            verdict(int(send["accepted"]) == expected)),
        Row(label, "lost (not in the sandbox list)", f"{int(send['missing']):,}", "0", verdict(send["missing"] == 0)),
        Row(label, "  list members / unexpected", f"{int(send['members']):,} / {int(send['unexpected']):,}", "", ""),
    ]  # fmt: skip
    return out


def only_send(started: float, *, real_limits: bool) -> int:
    """`--only-real` / `--only-send`: scenario 4 (or 3) alone, to work on the send phase without the rest."""
    rows, scale, ceiling = (
        (REAL_ROWS, 1, REAL_CEILING_PER_MIN) if real_limits else (SEND_ROWS, SCALE, CEILING_PER_MIN)
    )
    label = f"4 send {rows // 1000}k @1x" if real_limits else f"3 send {rows // 1000}k @{scale}x"
    print(
        f"[{label[0]}] send {rows:,} profiles at {scale}x ActiveCampaign's limits, batches processed "
        f"{PROCESSING_DELAY_S:.0f} s after queuing ...",
        flush=True,
    )
    real = send_scenario(rows, scale)
    print()
    print_table(send_rows(label, real, rows, ceiling))
    print(f"\nbench took {time.perf_counter() - started:.0f} s; load average at the end {_loadavg()}")
    return 1 if real["missing"] or int(real["accepted"]) != rows or real["unexpected"] else 0


def scaleout_rows() -> list[Row]:
    """Scenario 6 (scripts/bench_scaleout.py): the send phase of several accounts over its ideal."""
    from scripts.bench_scaleout import (
        ACCOUNTS,
        EXPORTS_PER_ACCOUNT,
        HOSTS,
        ROWS_PER_EXPORT,
        SCALE,
        TARGET_RATIO,
        scaleout_scenario,
    )

    print(
        f"[6] scale-out: {HOSTS} hosts, {ACCOUNTS} accounts x {EXPORTS_PER_ACCOUNT} exports of "
        f"{ROWS_PER_EXPORT:,} profiles at {SCALE}x the limits ...",
        flush=True,
    )
    out = scaleout_scenario()
    s6 = "6 scale-out"
    complete = out["accepted"] == out["expected"]
    return [
        Row(s6, "send phase / ideal (each account's contacts at its ceiling, the largest)",
            f"{out['ratio']:.2f} ({out['send_s']:.1f} s / {out['ideal_s']:.1f} s)", f"<= {TARGET_RATIO}",
            verdict(out["ratio"] <= TARGET_RATIO)),
        Row(s6, "  handover: account idle between runs, median / max",
            f"{out['gap_median_s']:.1f} s / {out['gap_max_s']:.1f} s", "", ""),
        Row(s6, "  runs' own pace: contacts/min while holding the account, median share of the ceiling",
            f"{out['pace_share']:.0%}", "", ""),
        Row(s6, "  runs on one account at once (most)", f"{int(out['overlap'])}", "1", verdict(out["overlap"] <= 1)),
        Row(s6, "accepted", f"{int(out['accepted']):,}", f"{int(out['expected']):,}", verdict(complete)),
    ]  # fmt: skip


def changes_rows() -> list[Row]:
    print("[7] change log: the 1,000,000-profile first run's local work, without and with it ...", flush=True)
    c = run_worker("changes", timeout=1200)  # pass 1 and four passes 2 over 1M rows
    cost = 1 - c["rows_per_s_log"] / c["rows_per_s"]
    s7 = "7 change log 1M"
    return [
        Row(s7, "rows/s (CPU time), local work (pass 1+plan+pass 2) with / without the log",
            f"{c['rows_per_s_log']:,.0f} / {c['rows_per_s']:,.0f}", "", ""),
        Row(s7, "cost of writing the change log (1M rows, every contact logged)", f"{cost:.1%}",
            f"<= {TARGET_CHANGES_COST:.0%}", verdict(cost <= TARGET_CHANGES_COST)),
        Row(s7, "  per row / pass 2 without, with", f"{c['log_us_per_row']:.2f} us / "
            f"{c['pass2_s']:.2f} s, {c['pass2_log_s']:.2f} s", "", ""),
        Row(s7, "  per row, next to a contact's time in the send phase at the real ceiling / at 10x",
            f"{c['log_us_per_row'] / (60e6 / REAL_CEILING_PER_MIN):.2%} / {c['log_us_per_row'] / (60e6 / CEILING_PER_MIN):.2%}",
            "", ""),
        Row(s7, "  the log's time next to pass 1 + plan alone",
            f"{c['log_us_per_row'] * LOCAL_ROWS / 1e6 / c['local_s']:.1%}", "", ""),
        Row(s7, "  change log size", f"{c['log_bytes'] / 1e6:.0f} MB", "", ""),
        Row(s7, "peak RSS, 1M first run with the change log", f"{c['peak_rss_mb']:.0f} MB",
            f"<= {TARGET_PEAK_MB:.0f} MB", verdict(c["peak_rss_mb"] <= TARGET_PEAK_MB)),
    ]  # fmt: skip


def feedback_rows() -> list[Row]:
    """Scenario 8 (scripts/bench_feedback.py): the feedback read and write, 100,000 contacts, 1% changed."""
    from scripts.bench_feedback import FEEDBACK_CONTACTS, feedback_scenario

    print(f"[8] feedback: {FEEDBACK_CONTACTS:,} contacts on the list, 1% changed ...", flush=True)
    out = feedback_scenario()
    s8 = "8 feedback 100k"
    exact = out["changes_rows"] == out["changed"]
    return [
        Row(s8, "change refresh, real limits: requests", f"{int(out['changes_requests'])}", "", ""),
        Row(s8, "change refresh, real limits: seconds (read + write)", f"{out['changes_s']:.1f} s", "", ""),
        Row(s8, "  rows (unsubscribed / bounced)",
            f"{int(out['changes_rows']):,} ({int(out['changes_unsubscribed'])} / {int(out['changes_bounced'])})",
            f"{int(out['changed']):,}", verdict(exact)),
        Row(s8, "Full refresh: requests", f"{int(out['full_requests']):,}", "", ""),
        Row(s8, "  Full refresh at real limits (implied: requests / paced rate)",
            f"{out['full_s_real_implied']:.0f} s", "", ""),
        Row(s8, "  429s during the change refresh", f"{int(out['over_limit'])}", "0", verdict(out["over_limit"] == 0)),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--skip-send", action="store_true", help="skip scenarios 3 and 4 (Azurite + sandbox)")
    parser.add_argument(
        "--skip-real", action="store_true", help="skip scenario 4 (about 2 minutes at real limits)"
    )
    parser.add_argument(
        "--only-real",
        action="store_true",
        help="run scenario 4 alone (the send phase at real limits, with the processing delay)",
    )
    parser.add_argument(
        "--only-send", action="store_true", help="run scenario 3 alone (the send phase at 10x the limits)"
    )
    parser.add_argument("--skip-changes", action="store_true", help="skip scenario 7 (the change log's cost)")
    parser.add_argument(
        "--only-changes",
        action="store_true",
        help="run scenario 7 alone (the change log's cost on the 1M first run's local work, and its memory)",
    )
    parser.add_argument(
        "--cold-start", action="store_true", help="run only scenario 0 (import function_app), a few seconds"
    )
    parser.add_argument(
        "--skip-freshness",
        action="store_true",
        help="skip scenario 5 (refresh event to first contact queued)",
    )
    parser.add_argument(
        "--skip-scaleout",
        action="store_true",
        help="skip scenario 6 (several hosts and accounts, ~2 minutes)",
    )
    parser.add_argument("--skip-feedback", action="store_true", help="skip scenario 8 (the feedback folder)")
    parser.add_argument(
        "--only-feedback", action="store_true", help="run scenario 8 alone (feedback folder, 100k contacts)"
    )
    parser.add_argument(
        "--only-scaleout", action="store_true", help="run scenario 6 alone (several hosts, accounts, exports)"
    )
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker]()))
        return 0

    started = time.perf_counter()
    rows: list[Row] = []
    lost = False
    print(
        f"bench: python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average {_loadavg()}",
        flush=True,
    )

    if args.only_real or args.only_send:
        return only_send(started, real_limits=args.only_real)
    if args.only_scaleout or args.only_changes or args.only_feedback:
        rows = (
            scaleout_rows()
            if args.only_scaleout
            else changes_rows()
            if args.only_changes
            else feedback_rows()
        )
        print()
        print_table(rows)
        print(f"\nbench took {time.perf_counter() - started:.0f} s; load average at the end {_loadavg()}")
        return 0

    print("[0] cold start: import function_app in fresh interpreters ...", flush=True)
    rows += cold_start_rows()
    if args.cold_start:
        print()
        print_table(rows)
        return 0

    print("[1/4] local pipeline, 1,000,000 rows (fresh subprocess, one core) ...", flush=True)
    base = run_worker("baseline")
    # CPU-bound figures vary by 15-25% between identical runs on a shared VM: the median of several
    # fresh subprocesses is reported, with the range.
    runs = sorted((run_worker("local") for _ in range(LOCAL_REPEATS)), key=lambda r: r["rows_per_s"])
    local = {**runs[len(runs) // 2], **run_worker("diagnostics")}
    peak = max(r["peak_rss_mb"] for r in runs)
    s1 = "1 local 1M"
    rows += [
        Row(s1, f"rows/s (read+map+collect+plan), median of {LOCAL_REPEATS}", f"{local['rows_per_s']:,.0f}",
            f">= {TARGET_ROWS_PER_S:,}", verdict(local["rows_per_s"] >= TARGET_ROWS_PER_S)),
        Row(s1, "  slowest / fastest run", f"{runs[0]['rows_per_s']:,.0f} / {runs[-1]['rows_per_s']:,.0f}", "", ""),
        Row(s1, "  pass 1 / plan_sync", f"{local['pass1_s']:.2f} s / {local['plan_s']:.2f} s", "", ""),
        Row(s1, "  rows/s, read_csv_batches alone", f"{local['parse_rows_per_s']:,.0f}", "", ""),
        Row(s1, "  rows/s, read_csv_batches + check_batch", f"{local['parse_map_rows_per_s']:,.0f}", "", ""),
        Row(s1, "  rows/s of pass 1, 1% invalid addresses", f"{local['invalid_rows_per_s']:,.0f}", "", ""),
        Row(s1, "rows/s of pass 1, typed fields (date, datetime, dropdown, checkbox, number)",
            f"{local['typed_rows_per_s']:,.0f}", f">= {TARGET_ROWS_PER_S:,}",
            verdict(local["typed_rows_per_s"] >= TARGET_ROWS_PER_S)),
        Row(s1, "  rows/s incl. CSV generation", f"{local['rows_per_s_with_generation']:,.0f}", "", ""),
        Row(s1, "peak RSS, 1M profiles (highest run)", f"{peak:.0f} MB", f"<= {TARGET_PEAK_MB:.0f} MB",
            verdict(peak <= TARGET_PEAK_MB)),
        Row(s1, "  idle interpreter, same imports", f"{base['peak_rss_mb']:.0f} MB", "", ""),
        Row(s1, "  growth over idle", f"{peak - base['peak_rss_mb']:.0f} MB", "", ""),
    ]  # fmt: skip

    print("[2/4] incremental re-runs of the 1,000,000-profile segment ...", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        env = {STATE_FILE_ENV: os.path.join(scratch, "delivered.npz")}
        inc = {**run_worker("state", env), **run_worker("incremental", env)}
    s2 = "2 re-run 1M"
    unchanged_ok = int(inc["unchanged_sends"]) == 0
    changed_ok = int(inc["changed_sends"]) == LOCAL_ROWS // 100
    rows += [
        Row(s2, "unchanged: local time (load+pass 1+plan+pass 2)", f"{inc['rerun_s']:.2f} s",
            f"< {TARGET_RERUN_S:.0f} s", verdict(inc["rerun_s"] < TARGET_RERUN_S)),
        Row(s2, "  of which pass 2", f"{inc['rerun_pass2_s']:.2f} s", "", ""),
        Row(s2, "unchanged: planned sends", f"{int(inc['unchanged_sends']):,}", "0", verdict(unchanged_ok)),
        Row(s2, "1% changed: planned sends", f"{int(inc['changed_sends']):,}", f"{LOCAL_ROWS // 100:,}",
            verdict(changed_ok)),
        Row(s2, "  1% changed: local time, of which pass 2", f"{inc['changed_s']:.2f} s, {inc['changed_pass2_s']:.2f} s",
            "", ""),
        Row(s2, "  delivered state blob", f"{inc['state_bytes'] / 1e6:.1f} MB", "", ""),
        Row(s2, "peak RSS, unchanged 1M re-run", f"{inc['rerun_peak_rss_mb']:.0f} MB", f"<= {TARGET_PEAK_MB:.0f} MB",
            verdict(inc["rerun_peak_rss_mb"] <= TARGET_PEAK_MB)),
        Row(s2, "  peak RSS after the 1% re-run too", f"{inc['peak_rss_mb']:.0f} MB", "", ""),
    ]  # fmt: skip
    if not (unchanged_ok and changed_ok):
        print("error: the incremental plans are wrong", file=sys.stderr)
        print_table(rows)
        return 1

    if not args.skip_send and not args.only_real:
        print(
            f"[3/4] send {SEND_ROWS:,} profiles: Azurite + sandbox at 10x limits, batches processed "
            f"{PROCESSING_DELAY_S:.0f} s after queuing, run_export ...",
            flush=True,
        )
        send = send_scenario()
        s3 = "3 send 100k @10x"
        lost = send["missing"] > 0 or int(send["accepted"]) != SEND_ROWS or send["unexpected"] > 0
        rows += send_rows(s3, send, SEND_ROWS, CEILING_PER_MIN)
        share = send["per_min_queue"] / CEILING_PER_MIN
        rows.append(
            Row("real limits", "implied time for 1M profiles", f"{LOCAL_ROWS / (share * REAL_CEILING_PER_MIN):.1f} min",
                "ceiling 40 min; built-in: up to 90 min", "")
        )  # fmt: skip

    if not args.skip_send and not args.skip_real:
        print(
            f"[4/4] send {REAL_ROWS:,} profiles at ActiveCampaign's real limits, batches processed "
            f"{PROCESSING_DELAY_S:.0f} s after queuing (about 2 minutes) ...",
            flush=True,
        )
        real = send_scenario(REAL_ROWS, 1)
        s4 = f"4 send {REAL_ROWS // 1000}k @1x"
        lost = lost or real["missing"] > 0 or int(real["accepted"]) != REAL_ROWS or real["unexpected"] > 0
        rows += send_rows(s4, real, REAL_ROWS, REAL_CEILING_PER_MIN)
        rows.append(
            Row("real limits", "measured time for 1M profiles", f"{LOCAL_ROWS / real['per_min_queue']:.1f} min",
                "ceiling 40 min; built-in: up to 90 min", "")
        )  # fmt: skip

    if not args.skip_freshness:
        from scripts.bench_freshness import FRESH_ROWS, TARGET_FRESHNESS_S, freshness_scenario

        print(
            f"[5] freshness: model.json of a {FRESH_ROWS:,}-profile snapshot uploaded -> first contact queued ...",
            flush=True,
        )
        fresh = freshness_scenario()
        s5 = "5 freshness"
        rows += [
            Row(s5, "model.json upload -> first contact queued", f"{fresh['freshness_s']:.1f} s",
                f"< {TARGET_FRESHNESS_S:.0f} s", verdict(fresh["freshness_s"] < TARGET_FRESHNESS_S)),
            Row(s5, "  -> run queued by the event / worker started",
                f"{fresh['run_queued_s']:.1f} s / {fresh['worker_started_s']:.1f} s", "", ""),
            Row(s5, "run started by the event, landing time recorded",
                "yes" if fresh["trigger_event"] and fresh["landed_recorded"] else "no", "yes",
                verdict(bool(fresh["trigger_event"] and fresh["landed_recorded"]))),
        ]  # fmt: skip

    if not args.skip_scaleout:
        rows += scaleout_rows()

    if not args.skip_changes:
        rows += changes_rows()
    if not args.skip_feedback:
        rows += feedback_rows()
    print()
    print_table(rows)
    print(f"\nbench took {time.perf_counter() - started:.0f} s; load average at the end {_loadavg()}")
    if lost:
        print("error: contacts were lost", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
