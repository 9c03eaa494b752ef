"""JSON plumbing shared by the HTTP API: bodies, errors, conditional headers, the caller.

Every route goes through `api_handler`, which is also where the rules for every request live, so a
route added later gets them without asking:
- a state-changing request (anything but GET/HEAD/OPTIONS) must come from the app's own origin (or
  one in ALLOWED_ORIGINS): `Sec-Fetch-Site: cross-site|same-site`, or an `Origin` that is neither,
  answers 403 (CrossSiteRequest). It must be `Content-Type: application/json` (415 otherwise):
  a cross-site HTML form can send only text/plain, urlencoded or multipart bodies, and a script on
  another site needs the app's CORS consent to send JSON, which it never gives. Its options come
  from the JSON body only: any query parameter but the function key (`code`) is refused (400).
- a JSON body is strict: a duplicate key, or a control character in any string, answers 400.
- every answer carries `X-Content-Type-Options: nosniff`.

Every error leaves as `{"error": {"code", "message"}}` (plus `details` for validation errors) with a
message that says what to fix. An engine error (shared.errors) answers with its class's
`http_status` and `code`, and a transient one that knows how long to wait adds `Retry-After`.
Unexpected exceptions are logged with their traceback (scrubbed by the redacting log filter) and
answered with a generic 500 that never echoes internals.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import azure.functions as func

from shared import boundedjson
from shared.auth import (
    Action,
    AuthError,
    Caller,
    authorize,
    caller_from_headers,
    easy_auth_refusal,
    parse_auth_mode,
)
from shared.boundedjson import TooDeep
from shared.config import ConfigError
from shared.errors import EngineError, classify
from shared.redact import install_redaction, scrub
from shared.settings import Settings, SettingsError, load_settings, normalise_origin

__all__ = [
    "API_AUTH_LEVEL",
    "MAX_BODY_BYTES",
    "SAFE_METHODS",
    "ApiError",
    "DuplicateKey",
    "Handler",
    "api_auth_level",
    "api_handler",
    "caller_for",
    "conditions",
    "error_response",
    "flag",
    "int_param",
    "json_response",
    "no_content",
    "not_found",
    "options",
    "read_json_object",
    "refuse_unsafe_request",
]

log = logging.getLogger(__name__)
# The largest body any route takes: an export with hundreds of mapped fields is a few tens of KB.
MAX_BODY_BYTES = 1024 * 1024
Handler = Callable[[func.HttpRequest], func.HttpResponse]
# Methods that change nothing: the cross-site, content-type and query-option rules skip them.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The one query parameter a state-changing request may carry: the function key, which the host
# accepts as `?code=` (and checks before the app sees the request).
_HOST_PARAMS = frozenset({"code"})
# Unicode's control characters (category Cc: C0, DEL, C1). No name, label, column, tag or key
# legitimately holds one, and a NUL or an escape sequence in a display name reaches logs, CSV files
# and terminals that read it differently than the app does.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def api_auth_level(environ: Mapping[str, str]) -> func.AuthLevel:
    """The auth level the Functions host enforces on every API route, decided once at import.

    `entra`: anonymous to the host. App Service Authentication signs the caller in (a browser session
    or a bearer token) and the app checks roles, refusing every route while the platform does not
    report it on (`easy_auth_refusal`); a function key on top would lock the console's signed-in
    users out, as a browser session cannot carry one. Anything else, including an AUTH_MODE the
    settings refuse: the host asks for a function key, so a typo never opens the API.
    """
    if parse_auth_mode(environ.get("AUTH_MODE")) == "entra":
        return func.AuthLevel.ANONYMOUS
    return func.AuthLevel.FUNCTION


# App settings are environment variables fixed for the process's life (Azure restarts the app when
# one changes), so this matches what the settings say at every request; `_refusal` checks anyway.
API_AUTH_LEVEL = api_auth_level(os.environ)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: list[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.extra = dict(extra or {})


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, ensure_ascii=False),
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
        mimetype="application/json",
        charset="utf-8",
    )


def no_content(headers: Mapping[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(status_code=204, headers=dict(headers or {}))


def error_response(error: ApiError) -> func.HttpResponse:
    # Scrubbed whatever built the message (a validation error quoting a value, an ActiveCampaign or
    # segment error passed on): no API error carries a key or an email.
    payload: dict[str, Any] = {"code": error.code, "message": scrub(error.message)}
    if error.details:
        payload["details"] = [scrub(detail) for detail in error.details]
    return json_response({"error": payload, **error.extra}, status=error.status)


def not_found(kind: str, name: str, hint: str) -> ApiError:
    return ApiError(404, "NotFound", f"{kind} {name!r} does not exist; {hint}")


def api_handler(handler: Handler) -> Handler:
    """Turn the exceptions a handler raises into JSON error responses."""

    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        # Before anything can log: routes that never build the services (/api/me, a refusal, a bad
        # setting) would otherwise log through unscrubbed handlers. Idempotent and cheap.
        install_redaction()
        response = _serve(handler, req)
        # Answers are JSON or CSV: a browser must never sniff one into HTML or script.
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return wrapper


def _serve(handler: Handler, req: func.HttpRequest) -> func.HttpResponse:
    try:
        settings = load_settings()
        refusal = _refusal(settings)
        if refusal is not None:
            return error_response(ApiError(503, "AuthenticationNotEnabled", refusal))
        if req.method.upper() not in SAFE_METHODS:
            refuse_unsafe_request(req, settings.allowed_origins)
        return handler(req)
    except ApiError as exc:
        return error_response(exc)
    except AuthError as exc:
        return error_response(ApiError(exc.status, exc.code, exc.message))
    except ConfigError as exc:
        return error_response(
            ApiError(
                400,
                "ValidationFailed",
                "the request body is invalid: " + "; ".join(exc.errors),
                details=exc.errors,
            )
        )
    except SettingsError as exc:
        log.error("app setting problem: %s", exc)
        return error_response(ApiError(500, "AppMisconfigured", f"the function app is misconfigured: {exc}"))
    except EngineError as exc:
        if exc.http_status >= 500:
            log.error("%s %s: %s", req.method, handler.__name__, exc)
        headers = {}
        if classify(exc) == "transient" and exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        response = error_response(ApiError(exc.http_status, exc.code, str(exc)))
        response.headers.update(headers)
        return response
    except Exception as exc:
        from shared.reachability import storage_refused, storage_unreachable

        unreachable = storage_unreachable(exc)
        if unreachable is not None:
            log.error("%s %s: %s", req.method, handler.__name__, unreachable)
            return error_response(ApiError(503, "StorageUnavailable", unreachable))
        refused = storage_refused(exc)
        if refused is not None:
            # The app's settings, not the request, need fixing: as AppMisconfigured, naming the setting.
            log.error("%s %s: %s", req.method, handler.__name__, refused)
            return error_response(ApiError(500, "StorageRefused", refused))
        # Not req.url: its query string may carry the function key (`code=`).
        log.exception("%s %s failed", req.method, handler.__name__)
        return error_response(
            ApiError(
                500,
                "InternalError",
                "the request failed unexpectedly; the function logs have the details",
            )
        )


def _refusal(settings: Settings) -> str | None:
    """Why no route may serve (Entra mode without App Service Authentication, or routes registered
    without function keys while the settings now say key mode), or None."""
    if API_AUTH_LEVEL is func.AuthLevel.ANONYMOUS and settings.auth_mode != "entra":
        # Key mode trusts whoever got past the host's key check: with no check that is everyone.
        return (
            "the API routes were registered without function keys because AUTH_MODE was entra when the "
            "app started, and AUTH_MODE is now key: restart the function app so the host asks for keys again"
        )
    return easy_auth_refusal(settings.auth_mode, settings.easy_auth_enabled)


def refuse_unsafe_request(req: func.HttpRequest, allowed_origins: tuple[str, ...]) -> None:
    """403 for a state-changing request another site made, 415 for one that is not JSON, 400 for
    options in the query string. Browsers send `Sec-Fetch-Site` and `Origin` themselves and a page
    cannot forge them; a client without either (curl, the CLI, scripts) is not a browser riding on
    someone's session and passes on to the function key or Entra ID check."""
    site = (req.headers.get("Sec-Fetch-Site") or "").strip().lower()
    if site in ("cross-site", "same-site"):
        raise ApiError(
            403,
            "CrossSiteRequest",
            f"a {req.method} from another site (Sec-Fetch-Site: {site}) is refused: change data from the "
            "app's console or an API client, not from a page on another site",
        )
    origin = req.headers.get("Origin")
    if origin is not None and not _own_origin(origin, req, allowed_origins):
        raise ApiError(
            403,
            "CrossSiteRequest",
            f"a {req.method} from origin {origin.strip()[:100]!r} is refused: only the app's own origin, and "
            "those listed in the ALLOWED_ORIGINS app setting, may change data",
        )
    media_type = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        shown = f"Content-Type {media_type!r}" if media_type else "no Content-Type"
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"a {req.method} must send Content-Type: application/json with a JSON object (`{{}}` when it has "
            f"no options); this one sent {shown}",
        )
    options = sorted(set(req.params) - _HOST_PARAMS)
    if options:
        raise ApiError(
            400,
            "ValidationFailed",
            f"query parameter(s) {', '.join(options)} are not read on a {req.method}: send options in the "
            f'JSON body instead, e.g. {{"{options[0]}": true}}',
        )


def _own_origin(origin: str, req: func.HttpRequest, allowed_origins: tuple[str, ...]) -> bool:
    sent = normalise_origin(origin)
    if sent is None:  # "null" (a sandboxed frame, a file), or not an origin at all
        return False
    if sent in allowed_origins:
        return True
    # The app's own origin, as the request reached it. TLS may end in front of the worker, so the
    # https form of the Host header counts too; a page cannot set Host on a request it sends.
    url = urlsplit(req.url)
    own = {normalise_origin(f"{url.scheme}://{url.netloc}")}
    host = (req.headers.get("Host") or "").strip()
    if host:
        own |= {normalise_origin(f"{scheme}://{host}") for scheme in ("https", url.scheme)}
    return sent in own


def read_json_object(req: func.HttpRequest, *, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object; 400 for anything else (a duplicate key, a control character in a
    string), 413 past MAX_BODY_BYTES. An empty optional body is `{}`."""
    raw = req.get_body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(
            413,
            "BodyTooLarge",
            f"the request body has {len(raw):,} bytes; a connection, an export or run options fit in "
            f"{MAX_BODY_BYTES:,}",
        )
    if not raw.strip():
        if required:
            raise ApiError(400, "BodyRequired", "send a JSON object in the request body")
        return {}
    try:
        body = boundedjson.loads(raw, object_pairs_hook=_unique_keys)
    except TooDeep as exc:
        raise ApiError(
            400, "InvalidJson", f"the request body is {exc}; send the object docs/openapi.yaml describes"
        ) from None
    except DuplicateKey as exc:
        raise ApiError(
            400,
            "InvalidJson",
            f"the request body has the key {exc.key!r} twice (at {exc.where}): send each key once, as readers "
            "disagree on which one counts",
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(
            400, "InvalidJson", f"the request body is not valid JSON ({exc}); send a JSON object"
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "InvalidJson", "the request body must be a JSON object ({...})")
    for path, text in _strings(body, "$"):
        found = _CONTROL.search(text)
        if found is not None:
            raise ApiError(
                400,
                "ValidationFailed",
                f"{path} holds the control character U+{ord(found.group()):04X} at position {found.start()}: "
                "remove it (names, labels and other text take printable characters only)",
            )
    return body


class DuplicateKey(ValueError):
    def __init__(self, key: str, where: str) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key
        self.where = where


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            # The object is still being built, so its path is unknown; its other keys locate it.
            others = ", ".join(repr(k) for k in list(seen)[:3] if k != key)
            raise DuplicateKey(key, f"the object with {others}" if others else "an object")
        seen[key] = value
    return seen


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in a parsed body, keys included, with a JSON-path-like location."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"{path} key {key!r}"[:120], key
            yield from _strings(item, f"{path}.{key}"[:120])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def flag(name: str, body: Mapping[str, Any]) -> bool:
    """A boolean option from the JSON body (absent: false). State-changing requests take no query
    options (refuse_unsafe_request), so a link or a form cannot carry one."""
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(400, "ValidationFailed", f"{name} must be true or false, got {json.dumps(value)}")
    return value


def options(req: func.HttpRequest, names: tuple[str, ...], what: str) -> dict[str, bool]:
    """The boolean options of a body that holds nothing else (`{}` for none): 400 for another field."""
    body = read_json_object(req, required=False)
    unknown = sorted(set(body) - set(names))
    if unknown:
        raise ApiError(
            400,
            "ValidationFailed",
            f"unknown field(s) {', '.join(unknown)}; {what} accepts {', '.join(names)}",
        )
    return {name: flag(name, body) for name in names}


def int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(400, "ValidationFailed", f"query parameter {name} must be a whole number {low}-{high}")
    return value


def conditions(req: func.HttpRequest) -> dict[str, str | None]:
    return {"if_match": req.headers.get("If-Match"), "if_none_match": req.headers.get("If-None-Match")}


def caller_for(
    req: func.HttpRequest,
    auth_mode: Literal["key", "entra"],
    action: Action,
    *,
    allow_contributors: bool = False,
) -> Caller:
    """The caller, if allowed to do `action` (AuthError otherwise)."""
    caller = caller_from_headers(req.headers, auth_mode)
    authorize(caller, action, allow_contributors=allow_contributors)
    return caller
