"""CLI commands on what the app keeps in its storage: `runs`, `report`, `rejected`, `changes`,
`lookup`, `describe`, `apply`, `cancel`.

They read and write the same app storage (`AzureWebJobsStorage`, container `activecampaign-export`)
as the function app: a run's report and rejected rows, the stored configuration (`--from-app`), and
the account behind a connection. Exit codes are shared.cli's.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
from typing import TYPE_CHECKING, Any

from shared.config import Config, config_to_document, load_config_file
from shared.settings import Settings, load_settings

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

    from shared.runs import RunRecord

__all__ = [
    "EXIT_OK",
    "EXIT_TERMINAL",
    "EXIT_TRANSIENT",
    "EXIT_USAGE",
    "FROM_APP",
    "add_commands",
    "add_config_source",
    "app_container",
    "cmd_apply",
    "cmd_cancel",
    "cmd_changes",
    "cmd_describe",
    "cmd_lookup",
    "cmd_rejected",
    "cmd_report",
    "cmd_runs",
    "config_store",
    "load_config_source",
]

EXIT_OK, EXIT_TERMINAL, EXIT_USAGE, EXIT_TRANSIENT = 0, 1, 2, 3
FROM_APP = "the app's stored configuration"


def app_container(settings: Settings) -> ContainerClient:
    from azure.core.exceptions import ResourceExistsError

    from shared.storage import blob_service

    container = blob_service(settings.require_storage()).get_container_client(settings.app_container)
    with contextlib.suppress(ResourceExistsError):  # the usual case: the app made it
        container.create_container()
    return container


def config_store(settings: Settings) -> Any:
    from shared.configstore import ConfigStore

    return ConfigStore(
        app_container(settings),
        allowed_suffixes=settings.allowed_host_suffixes,
        allow_loopback=not settings.running_in_azure,
    )


def load_config_source(args: argparse.Namespace, settings: Settings) -> tuple[Config, str]:
    """The configuration named by `--config FILE` or `--from-app`, and how to name it in messages."""
    if getattr(args, "from_app", False):
        return config_store(settings).read().config, FROM_APP
    path = str(args.config)
    config = load_config_file(
        path, allowed_suffixes=settings.allowed_host_suffixes, allow_loopback=not settings.running_in_azure
    )
    return config, path


def add_config_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="path of the configuration JSON")
    source.add_argument(
        "--from-app",
        action="store_true",
        help="use the configuration the function app keeps in AzureWebJobsStorage (what the API edits)",
    )


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _find_run(settings: Settings, export: str, run_id: str | None) -> tuple[ContainerClient, RunRecord] | int:
    from shared.runs import RunStore

    container = app_container(settings)
    runs = RunStore(container)
    if run_id is None:
        newest = runs.list(export, limit=1)
        if not newest:
            _error(f"export {export!r} has no runs in app storage (AzureWebJobsStorage)")
            return EXIT_TERMINAL
        return container, newest[0]
    record = runs.get(export, run_id)
    if record is None:
        _error(f"export {export!r} has no run {run_id!r}: `report {export}` shows the newest run")
        return EXIT_TERMINAL
    return container, record


def _missing(record: RunRecord, what: str, *, when: str = "when it succeeds") -> int:
    if record.active:
        _error(
            f"run {record.run_id} of export {record.export!r} is {record.status}: its {what} is written {when}"
        )
        return EXIT_TRANSIENT
    _error(
        f"run {record.run_id} of export {record.export!r} {record.status} without writing its {what}: "
        f"{record.error or 'no error recorded'}"
    )
    return EXIT_TERMINAL


def cmd_report(args: argparse.Namespace) -> int:
    from azure.core.exceptions import ResourceNotFoundError

    found = _find_run(load_settings(), args.export, args.run)
    if isinstance(found, int):
        return found
    container, record = found
    if not record.report_blob:
        return _missing(record, "report")
    try:
        report = json.loads(container.download_blob(record.report_blob).readall())
    except ResourceNotFoundError:
        return _missing(record, "report")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return EXIT_OK


def cmd_rejected(args: argparse.Namespace) -> int:
    from azure.core.exceptions import ResourceNotFoundError

    found = _find_run(load_settings(), args.export, args.run)
    if isinstance(found, int):
        return found
    container, record = found
    if not record.rejected_blob:
        return _missing(record, "rejected rows")
    try:
        download = container.download_blob(record.rejected_blob)
    except ResourceNotFoundError:
        return _missing(record, "rejected rows")
    # Streamed chunk by chunk: a large file never sits in memory.
    if args.output:
        with open(args.output, "wb") as out:
            for chunk in download.chunks():
                out.write(chunk)
        print(f"wrote the rejected rows of run {record.run_id} to {args.output}", file=sys.stderr)
    else:
        for chunk in download.chunks():
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    return EXIT_OK


def cmd_changes(args: argparse.Namespace) -> int:
    from azure.core.exceptions import ResourceNotFoundError

    found = _find_run(load_settings(), args.export, args.run)
    if isinstance(found, int):
        return found
    container, record = found
    if not record.changes_blob:
        return _missing(record, "change log", when="when it starts sending")
    try:
        download = container.download_blob(record.changes_blob)
    except ResourceNotFoundError:
        return _missing(record, "change log", when="when it starts sending")
    _stream(download.chunks(), args.output, f"the change log of run {record.run_id}")
    return EXIT_OK


def _stream(chunks: Any, output: str | None, what: str) -> None:
    """A blob's chunks to a file or stdout, chunk by chunk: a large file never sits in memory."""
    if output:
        with open(output, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        print(f"wrote {what} to {output}", file=sys.stderr)
    else:
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()


def cmd_runs(args: argparse.Namespace) -> int:
    from shared.runs import RunStore

    records = RunStore(app_container(load_settings())).list(args.export, limit=args.limit)
    if not records:
        _error(f"export {args.export!r} has no runs in app storage (AzureWebJobsStorage)")
        return EXIT_TERMINAL
    columns = ("RUN", "STATUS", "TRIGGER", "STARTED", "FINISHED", "SENT", "ACCEPTED", "FAILED", "REMOVED")
    lines: list[tuple[str, ...]] = [columns]
    for r in records:
        counts = r.counts
        lines.append(
            (
                r.run_id,
                r.status + (" (dry run)" if r.dry_run else ""),
                r.trigger,
                r.started_at or "-",
                r.finished_at or "-",
                *(str(counts.get(k, 0)) for k in ("sent", "accepted", "failed", "removed")),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return EXIT_OK


def cmd_lookup(args: argparse.Namespace) -> int:
    from shared.lookup import lookup
    from shared.mapping import normalize_email
    from shared.runs import RunStore
    from shared.storage import blob_service

    settings = load_settings()
    if args.config is None:
        args.from_app = True
    config, source = load_config_source(args, settings)
    export = config.exports.get(args.export)
    if export is None:
        known = ", ".join(sorted(config.exports)) or "none"
        _error(f"export {args.export!r} is not in {source} (exports: {known})")
        return EXIT_USAGE
    email = normalize_email(args.email)
    if not isinstance(email, str):
        _error(f"EMAIL is not an address ActiveCampaign accepts: {email.detail}")
        return EXIT_USAGE
    container = app_container(settings)
    segments = blob_service(settings.require_segments_storage())
    found = lookup(container, RunStore(container), export, email, segment_blobs=segments)
    print(json.dumps(found, indent=2))
    return EXIT_OK


def cmd_describe(args: argparse.Namespace) -> int:
    from shared.activecampaign import client_for
    from shared.discovery import PAGE_MAX, page_view, total_of
    from shared.secrets import connection_key, secrets_from_settings

    settings = load_settings()
    config, source = load_config_source(args, settings)
    connection = config.connections.get(args.connection)
    if connection is None:
        known = ", ".join(sorted(config.connections)) or "none"
        _error(f"connection {args.connection!r} is not in {source} (connections: {known})")
        return EXIT_USAGE
    key = connection_key(
        secrets_from_settings(settings), connection.name, connection.api_key_secret, connection.hostname
    )
    described: dict[str, Any] = {"connection": connection.name, "hostname": connection.hostname}
    with client_for(connection.hostname, key, settings) as client:
        for resource in ("lists", "fields", "tags"):
            items: list[dict[str, Any]] = []
            while True:
                body = client.page(resource, limit=PAGE_MAX, offset=len(items))
                page = page_view(resource, body)
                items.extend(page)
                total = total_of(body)
                if not page or total is None or len(items) >= total:
                    break
            described[resource] = items
    print(json.dumps(described, indent=2, ensure_ascii=False))
    return EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    """Create or replace, in the app's stored configuration, every connection and export of FILE."""
    settings = load_settings()
    config = load_config_file(
        args.file,
        allowed_suffixes=settings.allowed_host_suffixes,
        allow_loopback=not settings.running_in_azure,
    )
    incoming = config_to_document(config)
    summary: dict[str, dict[str, list[str]]] = {}

    def change(snapshot: Any) -> dict[str, Any]:
        doc = copy.deepcopy(snapshot.document)
        summary.clear()
        for kind in ("connections", "exports"):
            done: dict[str, list[str]] = {"created": [], "replaced": [], "unchanged": []}
            for name, item in sorted(incoming[kind].items()):
                before = doc[kind].get(name)
                done["created" if before is None else "unchanged" if before == item else "replaced"].append(
                    name
                )
                doc[kind][name] = item
            summary[kind] = done
        return dict(doc)

    config_store(settings).update(change)
    for kind, done in summary.items():
        parts = [f"{what} {', '.join(names)}" for what, names in done.items() if names]
        print(f"{kind}: {'; '.join(parts) or 'none in the file'}")
    print(
        "applied to the app's stored configuration; API keys are not part of it: store each connection's "
        "key in Key Vault under its apiKeySecret (or PUT the connection with apiKey through the API)"
    )
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel the export's queued or running run (its newest run): shared/cancel.py."""
    from shared.cancel import RunNotActive, cancel_run
    from shared.runs import RunStore

    settings = load_settings()
    container = app_container(settings)
    runs = RunStore(container, keep=settings.runs_kept_per_export)
    newest = runs.list(args.export, limit=1)
    if not newest:
        _error(f"export {args.export!r} has no runs in app storage (AzureWebJobsStorage): nothing to cancel")
        return EXIT_TERMINAL
    try:
        record = cancel_run(runs, container, newest[0], by="cli")
    except RunNotActive as exc:
        _error(str(exc))
        return EXIT_TERMINAL
    if record.status == "cancelled":
        print(f"run {record.run_id} of export {args.export!r} {record.error}")
    else:
        print(
            f"cancel requested: run {record.run_id} of export {args.export!r} stops at its next batch boundary "
            f"(GET /api/exports/{args.export}/runs/{record.run_id} shows when it has)"
        )
    return EXIT_OK


def add_commands(sub: Any) -> None:
    report = sub.add_parser("report", help="print the report of an export's run (default: the newest)")
    report.add_argument("export", help="name of the export")
    report.add_argument("run", nargs="?", help="run id (default: the newest run)")
    report.set_defaults(func=cmd_report)
    rejected = sub.add_parser("rejected", help="write the rejected rows (CSV, with reasons) of a run")
    rejected.add_argument("export", help="name of the export")
    rejected.add_argument("run", nargs="?", help="run id (default: the newest run)")
    rejected.add_argument("-o", "--output", help="file to write (default: stdout)")
    rejected.set_defaults(func=cmd_rejected)
    changes = sub.add_parser(
        "changes", help="write the change log (CSV: each contact the run acted on, what was sent) of a run"
    )
    changes.add_argument("export", help="name of the export")
    changes.add_argument("run", nargs="?", help="run id (default: the newest run)")
    changes.add_argument("-o", "--output", help="file to write (default: stdout)")
    changes.set_defaults(func=cmd_changes)
    runs = sub.add_parser("runs", help="list an export's runs, newest first")
    runs.add_argument("export", help="name of the export")
    runs.add_argument("--limit", type=int, default=20, help="how many runs (default: 20)")
    runs.set_defaults(func=cmd_runs)
    lookup = sub.add_parser(
        "lookup",
        help="what the export's runs did to one email address (reads the change logs; writes nothing)",
    )
    lookup.add_argument("export", help="name of the export")
    lookup.add_argument("email", help="the address to look up")
    lookup.add_argument(
        "--config", help="configuration JSON naming the export (default: the app's stored configuration)"
    )
    lookup.set_defaults(func=cmd_lookup)
    describe = sub.add_parser("describe", help="list a connection's ActiveCampaign lists, fields and tags")
    describe.add_argument("connection", help="name of the connection")
    add_config_source(describe)
    describe.set_defaults(func=cmd_describe)
    apply = sub.add_parser(
        "apply", help="create or replace FILE's connections and exports in the app's storage"
    )
    apply.add_argument("file", help="configuration JSON to apply")
    apply.set_defaults(func=cmd_apply)
    cancel = sub.add_parser(
        "cancel", help="cancel the export's queued or running run (it keeps its checkpoint)"
    )
    cancel.add_argument("export", help="name of the export")
    cancel.set_defaults(func=cmd_cancel)
