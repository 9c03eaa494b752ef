"""Command line: `python -m shared.cli validate|run|reset|report|rejected|describe|apply` (README).

`run` shows a progress bar on stderr and prints the run report as one JSON object on the last line
of stdout. It uses the same settings, storage and pipeline as the queue worker, so a run from the
CLI is recorded like any other. A wait the engine asks for (a sustained rate limit) is waited out
here, then the run goes on from its checkpoint.

Exit codes, decided from the error's class alone (shared.errors):
  0 succeeded; 1 terminal: a person must fix something (the message says what);
  2 usage: bad arguments, configuration file or settings; 3 transient: try again later
  (another run is active, the account is busy, ActiveCampaign unavailable);
  4 unexpected: a bug or an outage, reported with the exception's type; 5 cancelled: someone cancelled
  the run (`cancel EXPORT`, or the API) and it stopped at a batch boundary, its checkpoint kept.
Storage that cannot be reached at all is transient (3), said in one line naming the setting and
endpoint within seconds (shared/reachability.py), as is an ActiveCampaign that cannot be connected to.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

from shared.cli_app import add_commands, add_config_source, load_config_source
from shared.config import Config, ConfigError, load_config_file
from shared.redact import install_redaction
from shared.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from shared.ownership import Heartbeat
    from shared.pipeline import RunContext, RunOutcome
    from shared.runs import RunRecord, RunStore

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_OK",
    "EXIT_RUN_FAILED",
    "EXIT_TERMINAL",
    "EXIT_TRANSIENT",
    "EXIT_UNEXPECTED",
    "EXIT_USAGE",
    "MAX_WAITS",
    "build_parser",
    "cmd_feedback",
    "cmd_reset",
    "cmd_run",
    "cmd_validate",
    "main",
]

EXIT_OK, EXIT_TERMINAL, EXIT_USAGE, EXIT_TRANSIENT, EXIT_UNEXPECTED, EXIT_CANCELLED = 0, 1, 2, 3, 4, 5
EXIT_RUN_FAILED = EXIT_TERMINAL  # the name before the taxonomy
_EXIT_OF_KIND = {"terminal": EXIT_TERMINAL, "transient": EXIT_TRANSIENT, "unexpected": EXIT_UNEXPECTED}
# Waits (rate limit, busy account) the CLI sits out in one run before giving up with EXIT_TRANSIENT.
MAX_WAITS = 10


def _load_config(path: str, settings: Settings) -> Config:
    return load_config_file(
        path, allowed_suffixes=settings.allowed_host_suffixes, allow_loopback=not settings.running_in_azure
    )


class _Bars:
    """Two bars on stderr: rows read (pass 1), then operations handed to ActiveCampaign (pass 2)."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self._stream, self._enabled = stream, enabled
        self._read: tqdm[Any] | None = None
        self._send: tqdm[Any] | None = None

    def __call__(self, counts: dict[str, int]) -> None:
        if not self._enabled:
            return
        total = counts.get("toSend", 0) + counts.get("toRemove", 0)
        if self._send is None and (total or counts.get("contacts")):
            if self._read is not None:
                self._read.n = counts.get("rowsRead", 0)
                self._read.close()
            self._send = tqdm(total=total, desc="sending", unit="contact", file=self._stream, leave=True)
        if self._send is not None:
            self._send.n = counts.get("sent", 0)
            self._send.refresh()
            return
        read = self._read
        if read is None:
            read = self._read = tqdm(desc="reading", unit="row", file=self._stream, leave=True)
        read.n = counts.get("rowsRead", 0)
        read.refresh()

    def close(self) -> None:
        for bar in (self._read, self._send):
            if bar is not None:
                bar.close()


def cmd_validate(args: argparse.Namespace) -> int:
    settings = load_settings()
    config = _load_config(args.config, settings)
    print(f"configuration OK: {len(config.connections)} connection(s), {len(config.exports)} export(s)")
    return EXIT_OK


def _context(settings: Settings, config: Config) -> RunContext:
    from shared.pipeline import RunContext
    from shared.secrets import secrets_from_settings
    from shared.storage import blob_service, queue_service

    return RunContext(
        settings=settings,
        config=config,
        secrets=secrets_from_settings(settings),
        app_blobs=blob_service(settings.require_storage()),
        segment_blobs=blob_service(settings.require_segments_storage()),
        lease_seconds=settings.run_lease_seconds,
        # A CLI run that releases an account wakes the queued run waiting for it (shared/handover.py).
        run_queue=queue_service(settings.require_storage()).get_queue_client(settings.runs_queue),
    )


def _unknown_export(args: argparse.Namespace, config: Config, source: str) -> bool:
    if args.export in config.exports:
        return False
    known = ", ".join(sorted(config.exports)) or "none"
    print(f"error: export {args.export!r} is not in {source} (exports: {known})", file=sys.stderr)
    return True


def cmd_run(args: argparse.Namespace) -> int:
    # Imported here so `validate` stays fast and works without storage settings.
    from shared.error_text import describe
    from shared.faults import arm
    from shared.ownership import Heartbeat
    from shared.runs import RunStore

    settings = load_settings()
    arm(settings.test_crash_at)
    config, source = load_config_source(args, settings)
    if _unknown_export(args, config, source):
        return EXIT_USAGE
    if args.withdraw and args.full:
        print("error: a withdraw run sends nothing but unsubscriptions: leave out --full", file=sys.stderr)
        return EXIT_USAGE
    ctx = _context(settings, config)
    runs = RunStore(ctx.app_container(), keep=settings.runs_kept_per_export)
    try:
        # A run whose process died (a killed CLI) still holds the export for up to one lease period:
        # wait that long, then take over from its checkpoint.
        holder = runs.active(args.export)
        if holder is not None and holder.status == "running":
            print(
                f"run {holder.run_id} of export {args.export!r} is running; waiting up to "
                f"{settings.run_lease_seconds + 5}s in case its process died, then taking over",
                file=sys.stderr,
            )
        with Heartbeat(settings.run_lease_seconds) as heartbeat:
            # The marker stays leased from its claim on: no message is sent, this process is the run.
            record = runs.create(
                args.export,
                trigger="cli",
                dry_run=args.dry_run,
                full=args.full,
                force=args.force,
                takeover_wait=settings.run_lease_seconds + 5,
                withdraw=args.withdraw,
                holder=heartbeat,
            )
            runs.own(record, heartbeat)
            how = "taken over" if record.status == "running" else "started"
            record.start(instance=settings.instance_id)
            runs.update(record)
            logging.getLogger(__name__).info(
                "run %s of export %s %s on instance %s", record.run_id, record.export, how, record.instance
            )
            outcome = _run_until_done(ctx, record, runs, heartbeat, not args.no_progress)
            record.counts = outcome.report.counts()
            if outcome.status == "succeeded":
                record.succeed()
            elif outcome.status == "cancelled":
                from shared.cancel import KEPT, STOPPED, cancelled_note, read_request

                request = read_request(ctx.app_container(), record.export, record.run_id)
                record.cancel(cancelled_note(request, f"it stopped at a batch boundary; {STOPPED}; {KEPT}"))
            else:
                record.fail(outcome.error or "failed")
            runs.finish(record, heartbeat)
    except _Ended as ended:
        return ended.code
    except Exception as exc:
        print(f"error: {describe(exc)}", file=sys.stderr)
        return _exit_code(exc)
    if outcome.error:
        print(f"error: {outcome.error}", file=sys.stderr)
    if outcome.status == "cancelled":
        print(f"run {record.run_id} was {record.error}", file=sys.stderr)
    print(json.dumps(outcome.report.to_dict(), separators=(",", ":")))
    if outcome.status == "cancelled":
        return EXIT_CANCELLED
    return EXIT_OK if outcome.status == "succeeded" else EXIT_TERMINAL


class _Ended(Exception):
    """The run ended with an error already reported and recorded; `code` is the exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _run_until_done(
    ctx: RunContext, record: RunRecord, runs: RunStore, heartbeat: Heartbeat, bars_enabled: bool
) -> RunOutcome:
    """The run, waiting out the waits the engine asks for (each resumes from the checkpoint)."""
    from shared.error_text import describe
    from shared.errors import classify
    from shared.pipeline import run_export

    bars = _Bars(sys.stderr, enabled=bars_enabled)
    waits = 0
    try:
        while True:
            try:
                return run_export(ctx, record, runs=runs, progress=bars, heartbeat=heartbeat)
            except Exception as exc:
                kind, retry_after = classify(exc), getattr(exc, "retry_after", None)
                if kind == "transient" and retry_after is not None and waits < MAX_WAITS:
                    waits += 1
                    print(f"waiting {retry_after:.0f}s, then going on: {describe(exc)}", file=sys.stderr)
                    time.sleep(retry_after)
                    continue
                record.fail(describe(exc))
                runs.finish(record, heartbeat)
                print(f"error: {describe(exc)}", file=sys.stderr)
                raise _Ended(_exit_code(exc)) from None
    finally:
        bars.close()


def cmd_feedback(args: argparse.Namespace) -> int:
    """Write the export's feedback folder now: the changes since its last refresh, or `--full`."""
    from shared.pipeline import feedback_after_run

    settings = load_settings()
    config, source = load_config_source(args, settings)
    if _unknown_export(args, config, source):
        return EXIT_USAGE
    export = config.exports[args.export]
    if export.feedback is None:
        print(
            f"error: export {args.export!r} has no feedback folder: set its 'feedback' to "
            '{"container": ..., "folder": ...} (README, Feedback folder)',
            file=sys.stderr,
        )
        return EXIT_USAGE
    result = feedback_after_run(_context(settings, config), export, full=args.full)
    print(json.dumps(result, indent=2))
    if "error" in result:
        print(f"error: feedback of export {args.export!r} not written: {result['error']}", file=sys.stderr)
        return EXIT_TERMINAL
    return EXIT_OK


def cmd_reset(args: argparse.Namespace) -> int:
    """Delete the export's checkpoint (or its delivered state too): the way out of StoredStateCorrupt."""
    from shared.runs import RunStore
    from shared.state import StateStore

    settings = load_settings()
    config, source = load_config_source(args, settings)
    if _unknown_export(args, config, source):
        return EXIT_USAGE
    container = _context(settings, config).app_container()
    active = RunStore(container).active(args.export)
    if active is not None:
        print(
            f"error: export {args.export!r} has run {active.run_id} {active.status}; reset it once that run has ended",
            file=sys.stderr,
        )
        return EXIT_TRANSIENT
    deleted = StateStore(container, args.export).reset(args.what)
    print(
        f"reset {args.what} of export {args.export!r}: deleted {', '.join(deleted) or 'nothing (none stored)'}"
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="check a configuration file and exit")
    validate.add_argument("--config", required=True, help="path of the configuration JSON")
    validate.set_defaults(func=cmd_validate)
    run = sub.add_parser("run", help="run one export now")
    run.add_argument("export", help="name of the export in the configuration")
    add_config_source(run)
    run.add_argument("--dry-run", action="store_true", help="read, map, validate and report; send nothing")
    run.add_argument("--full", action="store_true", help="send every contact, not only new and changed ones")
    run.add_argument(
        "--force", action="store_true", help="allow removals above maxRemovalShare (mirror mode, --withdraw)"
    )
    run.add_argument(
        "--withdraw",
        action="store_true",
        help="unsubscribe everyone this export subscribed (not those who unsubscribed themselves); try --dry-run first",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    run.set_defaults(func=cmd_run)
    feedback = sub.add_parser(
        "feedback", help="write the export's feedback folder now (list statuses changed in ActiveCampaign)"
    )
    feedback.add_argument("export", help="name of the export")
    feedback.add_argument("--full", action="store_true", help="a Full refresh: every sent contact's status")
    add_config_source(feedback)
    feedback.set_defaults(func=cmd_feedback)
    reset = sub.add_parser("reset", help="forget an export's checkpoint, or its delivered state too")
    reset.add_argument("export", help="name of the export in the configuration")
    add_config_source(reset)
    reset.add_argument(
        "--what",
        choices=("checkpoint", "state"),
        required=True,
        help="checkpoint: the next run plans again; state: the next run sends every contact",
    )
    reset.set_defaults(func=cmd_reset)
    add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    install_redaction()
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except (SettingsError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from shared.error_text import describe
        from shared.errors import classify
        from shared.reachability import storage_unreachable

        unreachable = storage_unreachable(exc, _settings_or_none())
        if unreachable is not None:
            print(f"error: {unreachable}", file=sys.stderr)
            return EXIT_TRANSIENT
        logging.getLogger(__name__).debug("command failed", exc_info=True)
        print(f"error: {describe(exc)}", file=sys.stderr)
        return _EXIT_OF_KIND[classify(exc)]


def _exit_code(exc: BaseException) -> int:
    from shared.errors import classify
    from shared.reachability import storage_unreachable

    if storage_unreachable(exc) is not None:
        return EXIT_TRANSIENT  # nothing is wrong with the run: the storage was not there
    return _EXIT_OF_KIND[classify(exc)]


def _settings_or_none() -> Settings | None:
    try:
        return load_settings()
    except SettingsError:
        return None


if __name__ == "__main__":
    sys.exit(main())
