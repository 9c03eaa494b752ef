"""Run the sandbox as a process: `python -m sandbox --port 8765 --api-key KEY [--list 1:Newsletter ...]`.

Prints one line `READY <hostname>` on stdout once listening, serves until SIGTERM or SIGINT,
then exits 0. Admin routes (`/__sandbox/stats`, `/__sandbox/lists/<id>/members`, ...) let the
demo read what arrived.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from sandbox.limits import Limits
from sandbox.model import FieldSpec
from sandbox.server import SandboxServer


def _list_arg(value: str) -> tuple[int, str]:
    ident, sep, name = value.partition(":")
    if not sep or not ident.isdigit() or not name:
        raise argparse.ArgumentTypeError(f"expected ID:NAME such as 1:Newsletter, got {value!r}")
    return int(ident), name


def _field_arg(value: str) -> FieldSpec | str:
    ident, sep, rest = value.partition(":")
    perstag, _, typed = rest.partition(":")
    kind, _, options = typed.partition(":")
    if sep and ident.isdigit() and perstag:
        choices = tuple(o for o in options.split(",") if o) if options else ()
        return FieldSpec(int(ident), perstag, "", kind or "text", choices)
    if sep or not value:
        raise argparse.ArgumentTypeError(
            f"expected PERSTAG or ID:PERSTAG[:TYPE[:OPTION,...]] such as 7:TIER:dropdown:gold,silver, got {value!r}"
        )
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description="Local ActiveCampaign API sandbox")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free port, see READY line)")
    parser.add_argument("--api-key", required=True, help="the Api-Token the sandbox accepts")
    parser.add_argument(
        "--list",
        dest="lists",
        action="append",
        type=_list_arg,
        default=[],
        metavar="ID:NAME",
        help="a list of the account (repeatable; default 1:Newsletter)",
    )
    parser.add_argument(
        "--field",
        dest="fields",
        action="append",
        type=_field_arg,
        default=[],
        metavar="[ID:]PERSTAG",
        help="a custom field of the account (repeatable)",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the rate limits (benchmark: 10)")
    parser.add_argument(
        "--processing-delay", type=float, default=0.0, help="seconds before a batch is applied"
    )
    parser.add_argument(
        "--time-zone", default="UTC", help="the account's time zone (date-times are stored as its local time)"
    )
    parser.add_argument(
        "--no-field-options-sideload",
        action="store_true",
        help="GET /fields without fieldOptions (options only from GET /fields/{id}/options)",
    )
    parser.add_argument(
        "--info-false-window", type=float, default=0.0, help="import/info answers status false this soon"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    limits = Limits(processing_delay=args.processing_delay, info_false_window=args.info_false_window)
    if args.scale != 1.0:
        limits = limits.scaled(args.scale)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = SandboxServer(
        args.api_key,
        limits=limits,
        lists=dict(args.lists) if args.lists else None,
        fields=args.fields,
        host=args.host,
        port=args.port,
        time_zone=args.time_zone,
        field_options_sideload=not args.no_field_options_sideload,
    )
    with server:
        print(f"READY {server.hostname}", flush=True)
        # Event.wait returns when the signal handler sets the event (the wait is interruptible).
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
