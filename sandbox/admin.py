"""Admin routes under /__sandbox/ so another process (the demo) can inspect the sandbox as JSON.

No API key: they are served to loopback clients only (the HTTP layer refuses anyone else).
"""

from __future__ import annotations

import re

from sandbox.messages import ApiRequest, Reply, message, parse_json
from sandbox.model import ContactRecord
from sandbox.state import SandboxState

PREFIX = "/__sandbox/"
_MEMBERS = re.compile(r"/__sandbox/lists/(\d+)/members")
_MAX_IDLE_WAIT = 60.0


def contact_summary(record: ContactRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "email": record.email,
        "first_name": record.first_name,
        "last_name": record.last_name,
        "phone": record.phone,
        "customer_acct_name": record.customer_acct_name,
        "fields": {str(k): v for k, v in sorted(record.fields.items())},
        "tags": sorted(record.tags),
    }


def handle_admin(state: SandboxState, request: ApiRequest) -> Reply:
    path, method = request.path, request.method
    if method == "GET" and path == "/__sandbox/stats":
        return Reply(200, state.counters())
    if method == "GET" and path == "/__sandbox/peak":
        # Most API requests in any `window` seconds (default 10), and the busiest second: what other
        # integrations on the account were left with.
        try:
            window = float(request.param("window") or "10")
        except ValueError:
            return message(400, "window must be a number of seconds")
        return Reply(200, {"window": window, "requests": state.peak_in_window(window)})
    if method == "GET" and (match := _MEMBERS.fullmatch(path)):
        list_id = int(match.group(1))
        if state.get_list(list_id) is None:
            return message(404, f"No list {list_id}")
        return Reply(200, {"list": list_id, "members": state.list_members(list_id)})
    if method == "GET" and path == "/__sandbox/contacts":
        return Reply(200, {"contacts": [contact_summary(c) for c in state.contacts()]})
    if method == "GET" and path == "/__sandbox/resubscriptions":
        return Reply(
            200, {"resubscriptions": [{"list": lid, "email": e} for lid, e in state.resubscriptions]}
        )
    if method == "GET" and path == "/__sandbox/idle":
        raw = request.param("timeout") or "0"
        try:
            timeout = min(max(float(raw), 0.0), _MAX_IDLE_WAIT)
        except ValueError:
            return message(400, "timeout must be a number of seconds")
        return Reply(200, {"idle": state.wait_until_idle(timeout)})
    if method == "POST" and path == "/__sandbox/opt-out":
        try:
            doc = parse_json(request.body)
            if not isinstance(doc, dict):
                raise TypeError("body is not a JSON object")
            list_id, email = int(doc["list"]), str(doc["email"])
            state.opt_out(list_id, email)
        except (ValueError, KeyError, TypeError) as exc:
            return message(400, f"expected {{'list': <id>, 'email': <address>}} of a known list: {exc}")
        return Reply(200, {"list": list_id, "email": email.lower(), "status": 2})
    if method == "POST" and path == "/__sandbox/bounce":
        try:
            doc = parse_json(request.body)
            if not isinstance(doc, dict):
                raise TypeError("body is not a JSON object")
            record = state.bounce(str(doc["email"]))
        except (ValueError, KeyError, TypeError) as exc:
            return message(400, f"expected {{'email': <address of a contact>}}: {exc}")
        return Reply(200, {"contact": record.id, "bounced_hard": record.bounced_hard})
    return message(404, f"No sandbox admin route {method} {path}")
