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
from dataclasses import replace
from datetime import date
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
from shared.activecampaign.errors import (
    BatchNotFound,
    BulkImportRejected,
    InvalidApiKey,
    ListNotFound,
    PermissionDenied,
    RateLimited,
    Refused,
    RequestNotSent,
    Unavailable,
    UnexpectedResponse,
)
from shared.activecampaign.pacing import Pacer, shared_pacer
from shared.activecampaign.wire import (
    CHOICE_FIELD_TYPES,
    CONTACTS_PAGE_SIZE,
    FIELDS_PAGE_SIZE,
    BulkImportQueued,
    CustomField,
    ImportInfo,
    ListStatus,
    bulk_import_body,
    custom_field,
    int_id,
    object_in,
    options_by_field,
    request_kind,
)
from shared.apikey import check_api_key
from shared.hosts import base_url, validate_hostname
from shared.redact import MASK, register_secret_value, scrub

if TYPE_CHECKING:
    from shared.settings import Settings

__all__ = [
    "CONNECT_ATTEMPTS",
    "CONNECT_TIMEOUT_SECONDS",
    "DEFAULT_MAX_RETRY_SECONDS",
    "SETTINGS_HINT",
    "ActiveCampaignClient",
    "client_for",
    "connect_failure",
]

log = logging.getLogger(__name__)


DEFAULT_MAX_RETRY_SECONDS = 180.0


SETTINGS_HINT = "Settings > Developer"


_BULK_RATE_LIMIT_MESSAGE = "rate limit exceeded"


_MESSAGE_LIMIT = 300


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

    @property
    def api_key(self) -> str:
        """The key in use (compared after a refusal, never shown)."""
        return self._api_key

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
        return object_in(body, "user", "GET /users/me")

    def get_list(self, list_id: int) -> dict[str, Any]:
        """GET /lists/{id}: the list object; ListNotFound when the account has no such list."""
        body = self._call("GET", f"/lists/{int(list_id)}", list_id=int(list_id))
        return object_in(body, "list", f"GET /lists/{int(list_id)}")

    def list_fields(self) -> list[CustomField]:
        """GET /fields, every page (ActiveCampaign serves at most 100 per page)."""
        fields: list[CustomField] = []
        offset = 0
        while True:
            body = self._call("GET", "/fields", params={"limit": FIELDS_PAGE_SIZE, "offset": offset})
            page = body.get("fields")
            if not isinstance(page, list):
                raise UnexpectedResponse("GET /fields answered without a 'fields' array")
            options = options_by_field(body.get("fieldOptions"))
            fields.extend(custom_field(item, options) for item in page)
            total = int_id(body.get("meta", {}).get("total") if isinstance(body.get("meta"), dict) else None)
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
        found = options_by_field(
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
                return int_id(item.get("id"))
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
            contact_id = int_id(item.get("id")) if isinstance(item, dict) else None
            if contact_id is None:
                raise UnexpectedResponse("GET /contacts answered with a contact without a numeric id")
            page.append((contact_id, str(item.get("email", "")).strip().lower()))
        return page

    def list_status_page(
        self,
        list_id: int,
        *,
        status: int,
        updated_after: date | None = None,
        after_id: int = 0,
        limit: int = CONTACTS_PAGE_SIZE,
    ) -> list[ListStatus]:
        """GET /contacts by list, status and (optionally) `filters[updated_after]` (a day: contacts
        updated on a later day): one page, ids ascending above `after_id` (`orders[id]=ASC` +
        `id_greater`, stable while statuses change under the walk)."""
        params: dict[str, str | int] = {
            "listid": int(list_id),
            "status": int(status),
            "orders[id]": "ASC",
            "id_greater": int(after_id),
            "limit": int(limit),
        }
        if updated_after is not None:
            params["filters[updated_after]"] = updated_after.isoformat()
        body = self._call("GET", "/contacts", params=params)
        contacts = body.get("contacts")
        if not isinstance(contacts, list):
            raise UnexpectedResponse("GET /contacts answered without a 'contacts' array")
        page: list[ListStatus] = []
        for item in contacts:
            contact_id = int_id(item.get("id")) if isinstance(item, dict) else None
            if contact_id is None or not isinstance(item, dict):
                raise UnexpectedResponse("GET /contacts answered with a contact without a numeric id")
            udate = item.get("udate")
            page.append(
                ListStatus(
                    contact_id,
                    str(item.get("email", "")).strip().lower(),
                    int(status),
                    udate if isinstance(udate, str) else "",
                    int_id(item.get("bounced_hard")) or 0,
                )
            )
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
                (str(item.get("tag", "")), int_id(item.get("id"))) for item in tags if isinstance(item, dict)
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
            link_id = int_id(item.get("id")) if isinstance(item, dict) else None
            tag_id = int_id(item.get("tag")) if isinstance(item, dict) else None
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
        queued = int_id(body.get("queued_contacts"))
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
            if isinstance(item, dict) and int_id(item.get("contact")) is not None:
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


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


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


def _scrub(text: str, api_key: str) -> str:
    """Error text from ActiveCampaign, safe to log: never the key, emails masked."""
    if api_key:
        text = text.replace(api_key, MASK)
    return scrub(text)
