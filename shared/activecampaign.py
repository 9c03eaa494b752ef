"""The one ActiveCampaign API v3 client: pacing, retries and typed errors.

Every call goes through `ActiveCampaignClient._call`, which paces it (`Pacer`), retries what is
worth retrying (tenacity) and turns every other answer into a typed error. The API key only ever
travels in the `Api-Token` header to the validated host: redirects are not followed and no message
or log line contains it. See /docs/architecture.md for the contract and the reference notes on
ActiveCampaign's limits (5 requests/s per account, 100 bulk imports/min).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

from shared import refusals
from shared.apikey import check_api_key
from shared.errors import EngineError, TerminalError, TransientError
from shared.hosts import base_url, validate_hostname
from shared.redact import MASK, register_secret_value, scrub

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger(__name__)

MAX_BULK_CONTACTS = 250
MAX_BULK_BODY_BYTES = 400_000  # ActiveCampaign wants the payload strictly under this
FIELDS_PAGE_SIZE = 100  # the largest page /fields serves
CONTACTS_PAGE_SIZE = 100  # the largest page /contacts serves
BULK_WINDOW_SECONDS = 60.0  # ActiveCampaign counts bulk imports over a minute
DEFAULT_SAFETY_MARGIN = 0.02  # bulk: 1.2 s a minute of slack for jitter, at 2% of throughput
# Requests/s: below the app's share of the account's rate (ACTIVECAMPAIGN_REQUEST_SHARE), which is
# what other integrations are promised; 5% keeps a burst-1 bucket's count in any 10 s window within
# share * limit * 10 (at 4 requests/s: 38 + 1 of 40), and leaves the polls room beside the bulk imports.
DEFAULT_REQUEST_SAFETY_MARGIN = 0.05
DEFAULT_MAX_RETRY_SECONDS = 180.0
SETTINGS_HINT = "Settings > Developer"
# Custom field types whose values must be among the field's options.
CHOICE_FIELD_TYPES = ("dropdown", "radio", "checkbox", "listbox", "multiselect")
_BULK_RATE_LIMIT_MESSAGE = "rate limit exceeded"
_MESSAGE_LIMIT = 300


# --------------------------------------------------------------------------------------------- errors


class ActiveCampaignError(EngineError):
    """ActiveCampaign refused or failed a request; `status` is the HTTP status when there was one.

    A family: each concrete error below is terminal or transient (shared.errors).
    """

    code = "ActiveCampaignError"
    http_status = 502

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Refused(ActiveCampaignError, TerminalError):
    """ActiveCampaign refused the request (a 4xx without a more specific meaning)."""

    code = "ActiveCampaignRefused"
    http_status = 502


class RequestNotSent(ActiveCampaignError, TerminalError):
    """httpx refused to send the request (a header or URL it cannot encode): sending again cannot help."""

    code = "RequestNotSent"


class InvalidApiKey(ActiveCampaignError, TerminalError):
    """The API key is wrong, revoked, or its user was deleted (HTTP 401/403)."""

    code = "InvalidApiKey"
    http_status = 502


class PermissionDenied(ActiveCampaignError, TerminalError):
    """HTTP 403 for a valid key whose user lacks a permission ("You do not have permission to view
    lists."): not a wrong key, so re-reading or replacing the key does not help."""

    code = "PermissionDenied"
    http_status = 502


class ListNotFound(ActiveCampaignError, TerminalError):
    """The list does not exist on the account (HTTP 404 on GET /lists/{id})."""

    code = "ListNotFound"
    http_status = 422

    def __init__(self, message: str, *, list_id: int, status: int | None = 404) -> None:
        super().__init__(message, status=status)
        self.list_id = list_id


class Unavailable(ActiveCampaignError, TransientError):
    """Retries ran out: ActiveCampaign kept rate limiting, failing, or not answering."""

    code = "ActiveCampaignUnavailable"
    http_status = 503

    def __init__(self, message: str, *, status: int | None, attempts: int) -> None:
        super().__init__(message, status=status)
        self.attempts = attempts


class RateLimited(Unavailable):
    """The account's bulk-import budget stayed spent through every retry (another tool importing into
    the same account): a wait, not a failure. The run checkpoints and continues after `retry_after`."""

    code = "RateLimited"

    def __init__(self, message: str, *, attempts: int, retry_after: float) -> None:
        super().__init__(message, status=400, attempts=attempts)
        self.retry_after = retry_after


class BatchNotFound(ActiveCampaignError, TransientError):
    """import/info answered 404 for a batch bulk_import queued: its result is unknown (unconfirmed)."""

    code = "BatchNotFound"


class UnexpectedResponse(ActiveCampaignError, TerminalError):
    """Neither a success nor a documented error: a redirect, a non-JSON body, a body of the wrong shape."""

    code = "UnexpectedResponse"


class BulkImportRejected(ActiveCampaignError, TerminalError):
    """HTTP 400 on bulk_import: one or more contacts are malformed and nothing was queued.

    `failures` holds (index of the contact in the request, reason) pairs.
    """

    def __init__(self, message: str, *, failures: list[tuple[int, str]]) -> None:
        super().__init__(message, status=400)
        self.failures = failures


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CustomField:
    """A custom contact field: `type` as ActiveCampaign names it (text, textarea, date, datetime,
    dropdown, radio, checkbox, listbox, hidden, ...; "" when not given) and, for choice fields, the
    option values in ActiveCampaign's order (`fieldOptions` of GET /fields)."""

    id: int
    perstag: str
    title: str
    type: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class BulkImportQueued:
    batch_id: str
    queued: int


@dataclass(frozen=True)
class ImportInfo:
    status: str | None  # None: ActiveCampaign has not registered the batch yet (it answers `false`)
    success: list[int]  # contact ids
    failure: list[str]  # emails: never log them unmasked


# --------------------------------------------------------------------------------------------- pacing


class _Bucket:
    """A token bucket kept as the time the next token is due (GCRA), so a caller can reserve a slot
    under a lock and sleep outside it."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.interval = 1.0 / per_second
        self.tolerance = (burst - 1) * self.interval
        self.due = -math.inf

    def reserve(self, now: float) -> float:
        """Take the next token; return when it may be used (>= now)."""
        due = max(self.due, now)
        start = max(now, due - self.tolerance)
        self.due = due + self.interval
        return start

    def hold_until(self, until: float) -> None:
        self.due = max(self.due, until + self.tolerance)


class Pacer:
    """Thread-safe token buckets for one ActiveCampaign account: all requests, and bulk imports.

    Every bucket stays a margin below the published limit, so network jitter cannot make
    ActiveCampaign's sliding window count one request too many. Bulk imports are spaced evenly
    (burst 1) because ActiveCampaign counts them over a whole minute: a burst at the start of one
    minute followed by steady sending would overrun the next window. Single-contact imports have
    their own, lower limit at ActiveCampaign and so their own bucket.
    """

    def __init__(
        self,
        requests_per_second: float = 5.0,
        bulk_imports_per_minute: float = 100.0,
        *,
        request_share: float = 1.0,
        single_imports_per_minute: float = 20.0,
        safety_margin: float = DEFAULT_SAFETY_MARGIN,
        request_safety_margin: float = DEFAULT_REQUEST_SAFETY_MARGIN,
        request_burst: int = 1,
        bulk_window_seconds: float = BULK_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if min(requests_per_second, bulk_imports_per_minute, single_imports_per_minute) <= 0:
            raise ValueError("requests_per_second and the bulk imports per minute must be positive")
        if not (0 <= safety_margin < 1 and 0 <= request_safety_margin < 1):
            raise ValueError("safety margins must be in [0, 1)")
        if request_burst < 1:
            raise ValueError("request_burst must be at least 1")
        if not 0 < request_share <= 1:
            raise ValueError("request_share must be in (0, 1]")
        self.requests_per_second = requests_per_second
        self.bulk_imports_per_minute = bulk_imports_per_minute
        self.bulk_window_seconds = bulk_window_seconds
        # The app's share of the account's rate: requests are spaced at least 1/rate apart (burst 1),
        # so any window of W seconds holds at most rate * W + 1 of them: within share * limit * W for
        # windows of 10 s and more (the margin pays for the + 1), and within the share rounded up
        # for a single second.
        self.request_share = request_share
        self._requests = _Bucket(
            requests_per_second * request_share * (1 - request_safety_margin), request_burst
        )
        keep = (1 - safety_margin) / bulk_window_seconds
        self._bulk = _Bucket(bulk_imports_per_minute * keep, 1)
        self._single = _Bucket(single_imports_per_minute * keep, 1)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()

    def acquire(self, bulk: bool = False, *, single: bool = False) -> None:
        """Block until a request (and, for a bulk import, a bulk slot) may be sent.

        `single`: the bulk import holds one contact (ActiveCampaign limits those separately).
        """
        # Bulk slot first: reserving the request slot before a long bulk wait would let the request
        # be sent late, bunched with later reservations, and overrun the per-second limit.
        if bulk:
            self._wait(self._single if single else self._bulk)
        self._wait(self._requests)

    def hold(self, seconds: float, *, bulk: bool = False) -> None:
        """Send nothing (or no bulk import) for `seconds`: ActiveCampaign said the budget is spent."""
        with self._lock:
            until = self._clock() + seconds
            for bucket in (self._bulk, self._single) if bulk else (self._requests,):
                bucket.hold_until(until)

    def _wait(self, bucket: _Bucket) -> None:
        with self._lock:
            now = self._clock()
            start = bucket.reserve(now)
        if start > now:
            self._sleep(start - now)


_shared_pacers: dict[str, Pacer] = {}
_shared_pacers_lock = threading.Lock()


def shared_pacer(
    hostname: str, requests_per_second: float, bulk_imports_per_minute: float, request_share: float = 1.0
) -> Pacer:
    """The process-wide Pacer of one account: every key of an account shares its budget.

    The first call for a host fixes its rates (they come from settings, fixed for the process). Runs
    in other processes take turns with this one (the account lease), so one run's pacing is all
    runs' pacing on the account.
    """
    key = hostname.strip().lower()
    with _shared_pacers_lock:
        pacer = _shared_pacers.get(key)
        if pacer is None:
            pacer = Pacer(requests_per_second, bulk_imports_per_minute, request_share=request_share)
            _shared_pacers[key] = pacer
        return pacer


# --------------------------------------------------------------------------------------------- retries


class _Retryable(Exception):
    """One attempt failed in a way worth retrying; `what` says how, for the log and `Unavailable`."""

    def __init__(
        self,
        what: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        bulk_only: bool = False,
        connect: bool = False,
    ) -> None:
        super().__init__(what)
        self.what = what
        self.connect = connect  # no connection at all: retried only briefly (CONNECT_ATTEMPTS)
        self.status = status
        self.retry_after = retry_after
        self.bulk_only = bulk_only  # only the bulk-import budget is spent, not the per-second one


# An account that cannot be connected to at all (refused, no such host, no answer) fails within about
# ten seconds with the likely cause, instead of the minute of backoff meant for a busy account.
CONNECT_ATTEMPTS = 2
CONNECT_TIMEOUT_SECONDS = 4.0


def connect_failure(exc: BaseException) -> str:
    """The likely cause of a failed connection, in words a person can act on."""
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused (nothing listens at that address: check the connection's hostname)"
    if "name or service not known" in text or "name resolution" in text or "nodename nor servname" in text:
        return "the hostname does not resolve (check the connection's hostname, or this machine's DNS)"
    if "network is unreachable" in text or "no route to host" in text:
        return "no network route there (is this machine offline?)"
    return f"{type(exc).__name__} (check the hostname and the network)"


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After", "").strip()
    try:
        value = float(raw)
    except ValueError:
        return None  # an HTTP date or garbage: fall back to exponential backoff
    return value if math.isfinite(value) and value >= 0 else None


# --------------------------------------------------------------------------------------------- client


class ActiveCampaignClient:
    """A synchronous, thread-safe client for one ActiveCampaign account and key."""

    def __init__(
        self,
        hostname: str,
        api_key: str,
        *,
        pacer: Pacer,
        allowed_suffixes: tuple[str, ...],
        allow_loopback: bool,
        timeout: float = 30.0,
        max_attempts: int = 8,
        max_retry_seconds: float = DEFAULT_MAX_RETRY_SECONDS,
        transport: httpx.BaseTransport | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # The trust boundary: no client (and so no key) for a host that is not ActiveCampaign's.
        self.hostname = validate_hostname(
            hostname, allowed_suffixes=allowed_suffixes, allow_loopback=allow_loopback
        )
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._api_key = ""
        self.set_api_key(api_key)
        self._pacer = pacer
        self._max_attempts = max_attempts
        self._max_retry_seconds = max_retry_seconds
        # Exponential backoff plus jitter, so clients that failed together do not retry together.
        self._backoff = wait_exponential(multiplier=backoff_initial, max=backoff_max) + wait_random(
            0, backoff_initial
        )
        self._sleep = sleep
        # Requests sent (retries included), by kind ("POST /import/bulk_import", "GET /import/info",
        # "DELETE /contactTags/{id}"): the run report's `requests`.
        self._counts: dict[str, int] = {}
        self._counts_lock = threading.Lock()
        self._http = httpx.Client(
            base_url=base_url(self.hostname),
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_SECONDS)),
            follow_redirects=False,  # a redirect would carry the Api-Token header to another place
            transport=transport,
            headers={"Accept": "application/json"},
        )

    def __repr__(self) -> str:
        # Never the key: a client in a log line or a traceback's locals shows its host only.
        return f"ActiveCampaignClient(hostname={self.hostname!r})"

    # -- lifecycle

    def set_api_key(self, key: str) -> None:
        """Use another key from now on (after a rotation); requests in flight keep the old one."""
        # ApiKeyInvalid (a ValueError) never echoes the value; a control character would otherwise
        # reach httpx, whose header error quotes the key in an escaped form.
        self._api_key = check_api_key(key)
        # Log records anywhere in the process are scrubbed of it too (shared.redact's filter).
        register_secret_value(self._api_key)

    def close(self) -> None:
        self._http.close()

    def request_counts(self) -> dict[str, int]:
        """Requests this client sent so far (each attempt), by kind: method and path, ids as {id}."""
        with self._counts_lock:
            return dict(sorted(self._counts.items()))

    def __enter__(self) -> ActiveCampaignClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- API

    def check_connection(self) -> dict[str, Any]:
        """GET /users/me: proves host and key work; returns the key's user object."""
        body = self._call("GET", "/users/me")
        return _object(body, "user", "GET /users/me")

    def get_list(self, list_id: int) -> dict[str, Any]:
        """GET /lists/{id}: the list object; ListNotFound when the account has no such list."""
        body = self._call("GET", f"/lists/{int(list_id)}", list_id=int(list_id))
        return _object(body, "list", f"GET /lists/{int(list_id)}")

    def list_fields(self) -> list[CustomField]:
        """GET /fields, every page (ActiveCampaign serves at most 100 per page)."""
        fields: list[CustomField] = []
        offset = 0
        while True:
            body = self._call("GET", "/fields", params={"limit": FIELDS_PAGE_SIZE, "offset": offset})
            page = body.get("fields")
            if not isinstance(page, list):
                raise UnexpectedResponse("GET /fields answered without a 'fields' array")
            options = _field_options(body.get("fieldOptions"))
            fields.extend(_custom_field(item, options) for item in page)
            total = _int_or_none(
                body.get("meta", {}).get("total") if isinstance(body.get("meta"), dict) else None
            )
            offset += len(page)
            # An empty page ends the walk even if meta.total disagrees, so a miscount cannot loop forever.
            if not page or total is None or offset >= total:
                return fields

    def field_options(self, field_id: int) -> tuple[str, ...]:
        """GET /fields/{id}/options (the field's `links.options`): its option values in `orderid` order."""
        body = self._call("GET", f"/fields/{int(field_id)}/options")
        items = body.get("fieldOptions", body.get("options"))
        if not isinstance(items, list):
            raise UnexpectedResponse(
                f"GET /fields/{int(field_id)}/options answered without a 'fieldOptions' array"
            )
        # Entries name their field; one that does not is taken as this field's (it was asked for it).
        found = _field_options(
            [{"field": field_id, **item} if isinstance(item, dict) else item for item in items]
        )
        return tuple(found.get(int(field_id), ()))

    def with_options(self, fields: list[CustomField], wanted: Iterable[int]) -> list[CustomField]:
        """`fields` where each choice field among `wanted` (ids) that GET /fields gave no options (no
        `fieldOptions` sideload) has them, read from GET /fields/{id}/options: one paced request per
        such field, only for the fields an export maps."""
        ids = set(wanted)
        return [
            replace(f, options=self.field_options(f.id))
            if f.id in ids and f.type in CHOICE_FIELD_TYPES and not f.options
            else f
            for f in fields
        ]

    def page(self, resource: str, *, limit: int, offset: int) -> dict[str, Any]:
        """One page of GET /lists, /fields or /tags as ActiveCampaign answers it (`meta.total` holds the
        count; at most 100 per page). For account discovery: the caller maps what it shows."""
        if resource not in ("lists", "fields", "tags"):
            raise ValueError(f"not a pageable resource: {resource!r}")
        return self._call("GET", f"/{resource}", params={"limit": limit, "offset": offset})

    def find_contact_id(self, email: str) -> int | None:
        """GET /contacts?email=: the id of the contact with this email, or None when there is none."""
        body = self._call("GET", "/contacts", params={"email": email})
        contacts = body.get("contacts")
        if not isinstance(contacts, list):
            raise UnexpectedResponse("GET /contacts answered without a 'contacts' array")
        for item in contacts:
            if isinstance(item, dict) and str(item.get("email", "")).lower() == email.lower():
                return _int_or_none(item.get("id"))
        return None

    def list_members_page(
        self, list_id: int, *, status: int, after_id: int = 0, limit: int = CONTACTS_PAGE_SIZE
    ) -> list[tuple[int, str]]:
        """GET /contacts filtered by list and status: one page of (id, lower-case email), ids ascending
        and above `after_id` (`orders[id]=ASC` + `id_greater`: stable while the list changes)."""
        params: dict[str, str | int] = {
            "listid": int(list_id),
            "status": int(status),
            "orders[id]": "ASC",
            "id_greater": int(after_id),
            "limit": int(limit),
        }
        body = self._call("GET", "/contacts", params=params)
        contacts = body.get("contacts")
        if not isinstance(contacts, list):
            raise UnexpectedResponse("GET /contacts answered without a 'contacts' array")
        page: list[tuple[int, str]] = []
        for item in contacts:
            contact_id = _int_or_none(item.get("id")) if isinstance(item, dict) else None
            if contact_id is None:
                raise UnexpectedResponse("GET /contacts answered with a contact without a numeric id")
            page.append((contact_id, str(item.get("email", "")).strip().lower()))
        return page

    def tag_ids(self, names: Iterable[str]) -> dict[str, int]:
        """The account's id of each tag name (GET /tags?search=, one paced request per name); a name
        the account has no tag for is left out. Names match ignoring case (the exact name first)."""
        found: dict[str, int] = {}
        for name in names:
            body = self._call("GET", "/tags", params={"search": name, "limit": FIELDS_PAGE_SIZE})
            tags = body.get("tags")
            if not isinstance(tags, list):
                raise UnexpectedResponse("GET /tags answered without a 'tags' array")
            named = [
                (str(item.get("tag", "")), _int_or_none(item.get("id")))
                for item in tags
                if isinstance(item, dict)
            ]
            exact = [tag_id for tag, tag_id in named if tag == name and tag_id is not None]
            folded = [
                tag_id for tag, tag_id in named if tag.casefold() == name.casefold() and tag_id is not None
            ]
            if exact or folded:
                found[name] = (exact or folded)[0]
        return found

    def contact_tags(self, contact_id: int) -> list[tuple[int, int]]:
        """GET /contacts/{id}/contactTags: (contactTag id, tag id) of each tag the contact has."""
        body = self._call("GET", f"/contacts/{int(contact_id)}/contactTags")
        items = body.get("contactTags")
        if not isinstance(items, list):
            raise UnexpectedResponse("GET /contacts/{id}/contactTags answered without a 'contactTags' array")
        pairs: list[tuple[int, int]] = []
        for item in items:
            link_id = _int_or_none(item.get("id")) if isinstance(item, dict) else None
            tag_id = _int_or_none(item.get("tag")) if isinstance(item, dict) else None
            if link_id is None or tag_id is None:
                raise UnexpectedResponse("GET /contacts/{id}/contactTags answered with an entry without ids")
            pairs.append((link_id, tag_id))
        return pairs

    def remove_contact_tag(self, contact_tag_id: int) -> bool:
        """DELETE /contactTags/{id}: takes one tag off one contact; False when it was already gone (404)."""
        try:
            self._call("DELETE", f"/contactTags/{int(contact_tag_id)}")
        except Refused as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def subscribe(self, list_id: int, contact_id: int) -> None:
        """POST /contactLists with status 1: subscribes, also someone who is unsubscribed.

        Only for contacts this app unsubscribed itself (mirror mode) and who rejoined the segment:
        bulk import cannot bring them back, and nobody who opted out on their own is ever passed here.
        """
        # sourceid 4: what the contactLists reference asks for when re-subscribing a contact.
        doc = {"contactList": {"list": int(list_id), "contact": int(contact_id), "status": 1, "sourceid": 4}}
        self._call("POST", "/contactLists", content=json.dumps(doc).encode())

    def bulk_import(
        self, contacts: list[dict[str, Any]], *, exclude_automations: bool = False
    ) -> BulkImportQueued:
        """POST /import/bulk_import: queue 1..250 contacts; BulkImportRejected if any is malformed.

        ValueError (before sending) when the batch is empty, too large, or 400,000 bytes or more.
        """
        content = bulk_import_body(contacts, exclude_automations=exclude_automations)
        body = self._call(
            "POST", "/import/bulk_import", content=content, bulk=True, single=len(contacts) == 1
        )
        batch_id = body.get("batchId")
        if not isinstance(batch_id, str) or not batch_id:
            raise UnexpectedResponse(
                "bulk_import answered 200 without a batchId; the import may not be queued"
            )
        queued = _int_or_none(body.get("queued_contacts"))
        return BulkImportQueued(batch_id=batch_id, queued=len(contacts) if queued is None else queued)

    def import_info(self, batch_id: str) -> ImportInfo:
        """GET /import/info: progress of a queued batch (status None until ActiveCampaign knows it)."""
        body = self._call("GET", "/import/info", params={"batchId": batch_id})
        status = body.get("status")
        success = body.get("success") or []
        failure = body.get("failure") or []
        if not isinstance(success, list) or not isinstance(failure, list):
            raise UnexpectedResponse("import/info answered with 'success'/'failure' that are not arrays")
        try:
            ids = [int(item) for item in success]
        except (TypeError, ValueError):
            raise UnexpectedResponse("import/info answered with contact ids that are not numbers") from None
        return ImportInfo(
            status=status if isinstance(status, str) and status else None,
            success=ids,
            failure=[str(item) for item in failure],
        )

    # -- plumbing

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        content: bytes | None = None,
        bulk: bool = False,
        single: bool = False,
        list_id: int | None = None,
    ) -> dict[str, Any]:
        """One API call with pacing and retries; returns the JSON object or raises a typed error."""
        what = f"{method} {path}"
        retrying = Retrying(
            retry=retry_if_exception_type(_Retryable),
            stop=self._should_stop,
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=lambda state: self._log_retry(what, state),
        )
        try:
            result: dict[str, Any] = retrying(
                self._attempt, method, path, params, content, bulk, single, list_id
            )
        except RetryError as exc:
            attempt = exc.last_attempt
            last = attempt.exception()
            reason = last.what if isinstance(last, _Retryable) else "an unknown error"
            status = last.status if isinstance(last, _Retryable) else None
            if isinstance(last, _Retryable) and last.bulk_only:
                raise RateLimited(
                    f"ActiveCampaign at {self.hostname} kept refusing bulk imports with its rate limit "
                    f"after {attempt.attempt_number} attempt(s): another tool may be importing into the "
                    "same account; the run waits and continues",
                    attempts=attempt.attempt_number,
                    retry_after=self._pacer.bulk_window_seconds,
                ) from None
            raise Unavailable(
                f"ActiveCampaign at {self.hostname} is unavailable: {what} kept failing "
                f"({reason}) after {attempt.attempt_number} attempt(s); try again later",
                status=status,
                attempts=attempt.attempt_number,
            ) from None
        return result

    def _attempt(
        self,
        method: str,
        path: str,
        params: Mapping[str, str | int] | None,
        content: bytes | None,
        bulk: bool,
        single: bool,
        list_id: int | None,
    ) -> dict[str, Any]:
        self._pacer.acquire(bulk=bulk, single=single)
        kind = request_kind(method, path)
        with self._counts_lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1
        headers = {"Api-Token": self._api_key}
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            # A bulk POST that timed out may have been queued; sending it again may queue it twice.
            # That is acceptable: bulk import is an upsert by email, so a repeat changes nothing.
            response = self._http.request(method, path, params=params, content=content, headers=headers)
        except httpx.ConnectTimeout:
            raise _Retryable(
                f"cannot connect: no answer within {CONNECT_TIMEOUT_SECONDS:.0f}s (a firewall or proxy may block "
                "the way there)",
                connect=True,
            ) from None
        except httpx.ConnectError as exc:
            raise _Retryable(f"cannot connect: {connect_failure(exc)}", connect=True) from None
        except httpx.TimeoutException:
            raise _Retryable("timed out") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise _Retryable(f"connection failed: {type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            # Anything else httpx raises (a header it refuses, an unsupported URL) is not worth a retry.
            # Its text can quote request headers, so only the type and the scrubbed text go on.
            raise RequestNotSent(
                f"ActiveCampaign at {self.hostname}: {method} {path} could not be sent "
                f"({type(exc).__name__}: {_scrub(str(exc), self._api_key)[:_MESSAGE_LIMIT]})"
            ) from None
        return self._interpret(response, method, path, bulk=bulk, list_id=list_id)

    def _interpret(
        self, response: httpx.Response, method: str, path: str, *, bulk: bool, list_id: int | None
    ) -> dict[str, Any]:
        status = response.status_code
        what = f"{method} {path}"
        if 200 <= status < 300:
            return self._json_object(response, what)
        if 300 <= status < 400:
            target = httpx.URL(response.headers.get("Location", "")).host or "an unnamed place"
            raise UnexpectedResponse(
                f"ActiveCampaign at {self.hostname} redirected {what} (HTTP {status}) to {target}; "
                "not followed, so the API key is not sent elsewhere: check the REST endpoint hostname "
                f"in ActiveCampaign, {SETTINGS_HINT}",
                status=status,
            )
        message = self._error_message(response)
        denied = _permission_text(response) if status == 403 else None
        if denied is not None:
            raise PermissionDenied(
                f"ActiveCampaign at {self.hostname} refused {what} (HTTP 403): {denied!r}. The API key is "
                "valid, but its user lacks this permission: grant it to the user's group in ActiveCampaign "
                "(Settings > Users), or use the key of a user who has it",
                status=status,
            )
        if status in (401, 403):
            raise InvalidApiKey(
                f"ActiveCampaign at {self.hostname} refused the API key (HTTP {status}): the key is wrong or "
                f"has been revoked (a key stops working when its user is removed). Get a current key in "
                f"ActiveCampaign, {SETTINGS_HINT}, and update the connection's secret",
                status=status,
            )
        if status == 404 and list_id is not None:
            raise ListNotFound(
                f"ActiveCampaign list {list_id} was not found on {self.hostname} ({message}): "
                "check the list id in the export configuration",
                list_id=list_id,
            )
        if status == 404 and path == "/import/info":
            raise BatchNotFound(
                f"ActiveCampaign at {self.hostname} does not know the queued batch ({message})", status=404
            )
        if status == 429 or status == 503:
            raise _Retryable(f"HTTP {status}", status=status, retry_after=_retry_after(response))
        if status >= 500:
            raise _Retryable(f"HTTP {status}", status=status)
        if bulk and status == 400:
            self._bulk_400(response, message)
        raise Refused(
            f"ActiveCampaign at {self.hostname} refused {what} (HTTP {status}): {message}", status=status
        )

    def _bulk_400(self, response: httpx.Response, message: str) -> None:
        """Raise what a bulk_import 400 means: rate limit (retry) or rejected contacts; else return."""
        body = _json_or_none(response)
        raw = body.get("message") if isinstance(body, dict) else None
        if isinstance(raw, str) and raw.strip().lower().rstrip(".") == _BULK_RATE_LIMIT_MESSAGE:
            # The account's bulk budget is spent (maybe by another process): wait a whole window
            # instead of hammering, then retry.
            raise _Retryable(
                "bulk import rate limit exceeded (HTTP 400)",
                status=400,
                retry_after=self._pacer.bulk_window_seconds,
                bulk_only=True,
            )
        reasons = body.get("failureReasons") if isinstance(body, dict) else None
        if not isinstance(reasons, list) or not reasons:
            return
        failures: list[tuple[int, str]] = []
        for item in reasons:
            if isinstance(item, dict) and _int_or_none(item.get("contact")) is not None:
                # The category only: the reason quotes the contact it refuses (shared/refusals.py).
                failures.append((int(item["contact"]), refusals.reason(item.get("failureReason"))))
        if failures:
            first_index, first_reason = failures[0]
            raise BulkImportRejected(
                f"ActiveCampaign rejected the bulk import, nothing was queued: {len(failures)} "
                f"invalid contact(s), first: contact {first_index}: {first_reason}",
                failures=failures,
            )

    def _json_object(self, response: httpx.Response, what: str) -> dict[str, Any]:
        body = _json_or_none(response)
        if not isinstance(body, dict):
            kind = response.headers.get("Content-Type", "no content type").split(";")[0]
            raise UnexpectedResponse(
                f"ActiveCampaign at {self.hostname} answered {what} with HTTP {response.status_code} and "
                f"{kind} instead of a JSON object; an expired or revoked API key can cause this "
                f"(ActiveCampaign answers with its login page): check the key in {SETTINGS_HINT}",
                status=response.status_code,
            )
        return body

    def _error_message(self, response: httpx.Response) -> str:
        """What an error body says, reduced to categories and positions (shared/refusals.py): 422
        carries `errors[]`, the rest `message`. The texts themselves may quote a contact."""
        body = _json_or_none(response)
        text = ""
        if isinstance(body, dict):
            errors = body.get("errors")
            if isinstance(errors, list) and errors:
                text = refusals.describe_errors(errors)
            elif isinstance(body.get("message"), str):
                text = refusals.reason(body["message"])
        text = text or f"HTTP {response.status_code}"
        return _scrub(text, self._api_key)[:_MESSAGE_LIMIT]

    def _should_stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self._max_attempts:
            return True
        elapsed = state.seconds_since_start or 0.0
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.connect and state.attempt_number >= CONNECT_ATTEMPTS:
            # Nothing answers at all: say so within seconds instead of backing off for a minute.
            return True
        ahead = exc.retry_after if isinstance(exc, _Retryable) and exc.retry_after else 0.0
        # Give up now rather than sleep past the time cap only to give up then.
        return elapsed + ahead >= self._max_retry_seconds

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            wait = exc.retry_after
            # Everyone on this account is limited, not just this thread: hold the shared pacer too.
            self._pacer.hold(wait, bulk=exc.bulk_only)
        else:
            wait = self._backoff(state)
        remaining = self._max_retry_seconds - (state.seconds_since_start or 0.0)
        return max(0.0, min(wait, remaining))

    def _log_retry(self, what: str, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = exc.what if isinstance(exc, _Retryable) else "error"
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "ActiveCampaign %s at %s: %s; retrying in %.1fs (attempt %d of %d)",
            what,
            self.hostname,
            reason,
            wait,
            state.attempt_number,
            self._max_attempts,
        )


# --------------------------------------------------------------------------------------------- helpers


def bulk_import_body(contacts: list[dict[str, Any]], *, exclude_automations: bool = False) -> bytes:
    """The exact bytes POSTed to /import/bulk_import, checked against ActiveCampaign's limits.

    List ids in subscribe/unsubscribe are sent as strings, as the published schema declares them.
    """
    if not contacts:
        raise ValueError("bulk_import needs at least one contact")
    if len(contacts) > MAX_BULK_CONTACTS:
        raise ValueError(
            f"bulk_import got {len(contacts)} contacts; "
            f"ActiveCampaign accepts at most {MAX_BULK_CONTACTS} per request"
        )
    listed = [_with_string_list_ids(contact) for contact in contacts]
    if exclude_automations:
        # The reference's example sets it in each contact, peers at the top level, and which one
        # ActiveCampaign reads is unverified: both, when true.
        listed = [
            c if c.get("exclude_automations") is True else {**c, "exclude_automations": True} for c in listed
        ]
    payload = {"contacts": listed, "exclude_automations": exclude_automations}
    content = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(content) >= MAX_BULK_BODY_BYTES:
        raise ValueError(
            f"bulk_import body is {len(content):,} bytes; "
            f"ActiveCampaign accepts under {MAX_BULK_BODY_BYTES:,}: "
            "send fewer contacts per request"
        )
    return content


def _with_string_list_ids(contact: dict[str, Any]) -> dict[str, Any]:
    if not any(key in contact for key in ("subscribe", "unsubscribe")):
        return contact
    out = dict(contact)
    for key in ("subscribe", "unsubscribe"):
        if isinstance(out.get(key), list):
            out[key] = [
                {**item, "listid": str(item["listid"])}
                if isinstance(item, dict) and "listid" in item
                else item
                for item in out[key]
            ]
    return out


def client_for(hostname: str, api_key: str, settings: Settings) -> ActiveCampaignClient:
    """A client for an account, paced by the process-wide budget of that account."""
    allow_loopback = not settings.running_in_azure
    host = validate_hostname(
        hostname, allowed_suffixes=settings.allowed_host_suffixes, allow_loopback=allow_loopback
    )
    return ActiveCampaignClient(
        host,
        api_key,
        pacer=shared_pacer(
            host, settings.requests_per_second, settings.bulk_imports_per_minute, settings.request_share
        ),
        allowed_suffixes=settings.allowed_host_suffixes,
        allow_loopback=allow_loopback,
    )


_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")


def request_kind(method: str, path: str) -> str:
    """A request's kind for counting: `GET /fields/{id}/options` for GET /fields/12/options."""
    return f"{method} {_ID_SEGMENT.sub('/{id}', path)}"


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _object(body: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    value = body.get(key)
    if not isinstance(value, dict):
        raise UnexpectedResponse(f"{what} answered without a '{key}' object")
    return value


def _custom_field(item: object, options: Mapping[int, list[str]]) -> CustomField:
    if not isinstance(item, dict):
        raise UnexpectedResponse("GET /fields answered with a field that is not an object")
    field_id = _int_or_none(item.get("id"))
    if field_id is None:
        raise UnexpectedResponse("GET /fields answered with a field without a numeric id")
    return CustomField(
        id=field_id,
        perstag=str(item.get("perstag") or ""),
        title=str(item.get("title") or ""),
        type=str(item.get("type") or "").strip().lower(),
        options=tuple(options.get(field_id, ())),
    )


def _field_options(items: object) -> dict[int, list[str]]:
    """GET /fields' `fieldOptions` (each `{"field": "12", "value": ..., "orderid": ...}`) by field id,
    option values in `orderid` order. Malformed entries are skipped: options only narrow what is sent."""
    if not isinstance(items, list):
        return {}
    found: list[tuple[int, int, str]] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            continue
        field_id = _int_or_none(item.get("field"))
        if field_id is not None:
            found.append((field_id, _int_or_none(item.get("orderid")) or 0, item["value"]))
    options: dict[int, list[str]] = {}
    for field_id, _order, value in sorted(found, key=lambda f: (f[0], f[1])):
        options.setdefault(field_id, []).append(value)
    return options


# The sentence's lower-case words only: what follows them (a name, a list's title) is not repeated.
_PERMISSION = re.compile(r"(?i:you do not have permission to)(?: [a-z]+){1,8}\.?")


def _permission_text(response: httpx.Response) -> str | None:
    """ActiveCampaign's own sentence when a 403 is about a permission (in `detail` or `message`)."""
    body = _json_or_none(response)
    if not isinstance(body, dict):
        return None
    texts = [body.get("detail"), body.get("message")]
    errors = body.get("errors")
    if isinstance(errors, list):
        texts += [e.get(k) for e in errors if isinstance(e, dict) for k in ("title", "detail")]
    for text in texts:
        if isinstance(text, str) and (match := _PERMISSION.search(text)):
            return match.group(0).strip()
    return None


def _int_or_none(value: object) -> int | None:
    # ActiveCampaign sends most ids and counts as strings ("12").
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _scrub(text: str, api_key: str) -> str:
    """Error text from ActiveCampaign, safe to log: never the key, emails masked."""
    if api_key:
        text = text.replace(api_key, MASK)
    return scrub(text)
