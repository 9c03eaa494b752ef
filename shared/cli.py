"""Command line: `python -m shared.cli validate --config FILE` and `... run EXPORT --config FILE [--dry-run]`.

`run` shows a progress bar on stderr and prints the run report as one JSON object on the last line
of stdout; the exit code is 0 only when the run succeeded. It uses the same settings, storage and
pipeline as the queue worker, so a run from the CLI is recorded like any other.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from tqdm import tqdm

from shared.config import Config, ConfigError, load_config_file
from shared.redact import install_redaction
from shared.settings import Settings, SettingsError, load_settings

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE = 0, 1, 2


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


def cmd_run(args: argparse.Namespace) -> int:
    # Imported here so `validate` stays fast and works without storage settings.
    from shared.pipeline import AccountBusy, RunContext, run_export
    from shared.runs import RunActive, RunStore, utc_now
    from shared.secrets import secrets_from_settings
    from shared.storage import blob_service

    settings = load_settings()
    config = _load_config(args.config, settings)
    if args.export not in config.exports:
        known = ", ".join(sorted(config.exports)) or "none"
        print(f"error: export {args.export!r} is not in {args.config} (exports: {known})", file=sys.stderr)
        return EXIT_USAGE
    ctx = RunContext(
        settings=settings,
        config=config,
        secrets=secrets_from_settings(settings),
        app_blobs=blob_service(settings.require_storage()),
        segment_blobs=blob_service(settings.require_segments_storage()),
    )
    runs = RunStore(ctx.app_container(), keep=settings.runs_kept_per_export)
    try:
        record = runs.create(
            args.export, trigger="cli", dry_run=args.dry_run, full=args.full, force=args.force
        )
    except RunActive as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    record.status = "running"
    record.started_at = utc_now()
    runs.update(record)
    bars = _Bars(sys.stderr, enabled=not args.no_progress)
    try:
        outcome = run_export(ctx, record, runs=runs, progress=bars)
    except AccountBusy as exc:
        record.status, record.error, record.finished_at = "failed", str(exc), utc_now()
        runs.update(record)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    finally:
        bars.close()
    record.status = "succeeded" if outcome.status == "succeeded" else "failed"
    record.finished_at = outcome.report.finished_at or utc_now()
    record.counts = outcome.report.counts()
    record.error = outcome.error
    runs.update(record)
    if outcome.error:
        print(f"error: {outcome.error}", file=sys.stderr)
    print(json.dumps(outcome.report.to_dict(), separators=(",", ":")))
    return EXIT_OK if outcome.status == "succeeded" else EXIT_RUN_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="check a configuration file and exit")
    validate.add_argument("--config", required=True, help="path of the configuration JSON")
    validate.set_defaults(func=cmd_validate)
    run = sub.add_parser("run", help="run one export now")
    run.add_argument("export", help="name of the export in the configuration")
    run.add_argument("--config", required=True, help="path of the configuration JSON")
    run.add_argument("--dry-run", action="store_true", help="read, map, validate and report; send nothing")
    run.add_argument("--full", action="store_true", help="send every contact, not only new and changed ones")
    run.add_argument("--force", action="store_true", help="allow mirror removals above maxRemovalShare")
    run.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    run.set_defaults(func=cmd_run)
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


if __name__ == "__main__":
    sys.exit(main())
