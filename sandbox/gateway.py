"""What happens to every API request before and after its route: faults, auth, rate limit, log."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable

from sandbox.api import Api
from sandbox.faults import LOGIN_PAGE, Fault, FaultQueue
from sandbox.limits import Limits, SlidingWindow
from sandbox.messages import ApiRequest, Reply
from sandbox.model import RequestRecord
from sandbox.state import SandboxState


class Gateway:
    def __init__(
        self,
        state: SandboxState,
        api: Api,
        faults: FaultQueue,
        limits: Callable[[], Limits],
        api_key: Callable[[], str],
        stopping: threading.Event,
    ) -> None:
        self._state = state
        self._api = api
        self._faults = faults
        self._limits = limits
        self._api_key = api_key
        self._stopping = stopping
        self._account_window = SlidingWindow(1.0)

    def serve(self, request: ApiRequest, token: str | None, received: float) -> Reply | None:
        """The answer to send, or None to close the connection without answering."""
        reply = self._answer(request, token)
        self._state.record(
            RequestRecord(
                at=received,
                method=request.method,
                path=request.path,
                query="&".join(f"{k}={v}" for k, vs in request.query.items() for v in vs),
                status=reply.status if reply else 0,
                outcome=reply.outcome if reply else "fault:drop",
                contacts=reply.contacts if reply else 0,
                body_bytes=len(request.body),
                response=reply.body if reply else None,
            )
        )
        return reply

    def _answer(self, request: ApiRequest, token: str | None) -> Reply | None:
        fault = self._faults.take_http(request.path)
        if fault is not None:
            if fault.kind == "delay":
                self._state.count("delayed")
                # Waiting on the stop event lets stop() end a held request at once.
                self._stopping.wait(fault.delay)
            elif fault.kind == "hold" and fault.gate is not None and fault.arrived is not None:
                fault.arrived.set()
                while not fault.gate.wait(0.05) and not self._stopping.is_set():
                    pass
            else:
                return _fault_reply(fault)
        if not self._authorised(token):
            return Reply(403, {"message": "Forbidden"}, outcome="forbidden")
        action = self._state.denied_action(request.path)
        if action is not None:
            # A valid key whose user lacks the permission: 403 too, with the reference's wording.
            body = {"message": "Forbidden", "detail": f"You do not have permission to {action}."}
            return Reply(403, body, outcome="permission_denied")
        limit = self._limits().requests_per_second
        decision = self._account_window.try_acquire(time.monotonic(), limit)
        headers = {"RateLimit-Limit": str(limit), "RateLimit-Remaining": str(decision.remaining)}
        if not decision.allowed:
            headers["Retry-After"] = str(decision.retry_after)
            body = {"message": f"Rate limit exceeded: {limit} requests per second per account."}
            return Reply(429, body, headers=headers, outcome="rate_limited")
        reply = self._api.handle(request)
        reply.headers.update(headers)
        return reply

    def _authorised(self, token: str | None) -> bool:
        if not token:
            return False
        return hmac.compare_digest(
            token.encode("utf-8", "replace"), self._api_key().encode("utf-8", "replace")
        )


def _fault_reply(fault: Fault) -> Reply | None:
    if fault.kind == "drop":
        return None
    if fault.kind == "login_page":
        return Reply(200, LOGIN_PAGE, content_type="text/html; charset=UTF-8", outcome="fault:login_page")
    headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
    if fault.body is None:
        body: object = {"message": f"Injected fault: HTTP {fault.status}"}
        content_type = "application/json"
    else:
        body = fault.body
        content_type = "text/plain; charset=UTF-8" if isinstance(fault.body, str) else "application/json"
    return Reply(fault.status, body, content_type=content_type, headers=headers, outcome="fault:status")
