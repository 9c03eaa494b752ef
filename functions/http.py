"""JSON plumbing shared by the HTTP API: bodies, errors, conditional headers, the caller.

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
from collections.abc import Callable, Mapping
from typing import Any, Literal

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
from shared.settings import SettingsError, load_settings

log = logging.getLogger(__name__)
# The largest body any route takes: an export with hundreds of mapped fields is a few tens of KB.
MAX_BODY_BYTES = 1024 * 1024
Handler = Callable[[func.HttpRequest], func.HttpResponse]
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


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
        try:
            refusal = _refusal()
            if refusal is not None:
                return error_response(ApiError(503, "AuthenticationNotEnabled", refusal))
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
            return error_response(
                ApiError(500, "AppMisconfigured", f"the function app is misconfigured: {exc}")
            )
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

    return wrapper


def _refusal() -> str | None:
    """Why no route may serve (Entra mode without App Service Authentication, or routes registered
    without function keys while the settings now say key mode), or None."""
    settings = load_settings()
    if API_AUTH_LEVEL is func.AuthLevel.ANONYMOUS and settings.auth_mode != "entra":
        # Key mode trusts whoever got past the host's key check: with no check that is everyone.
        return (
            "the API routes were registered without function keys because AUTH_MODE was entra when the "
            "app started, and AUTH_MODE is now key: restart the function app so the host asks for keys again"
        )
    return easy_auth_refusal(settings.auth_mode, settings.easy_auth_enabled)


def read_json_object(req: func.HttpRequest, *, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object; 400 for anything else, 413 past MAX_BODY_BYTES. An empty optional
    body is `{}`."""
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
        body = boundedjson.loads(raw)
    except TooDeep as exc:
        raise ApiError(
            400, "InvalidJson", f"the request body is {exc}; send the object docs/openapi.yaml describes"
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(
            400, "InvalidJson", f"the request body is not valid JSON ({exc}); send a JSON object"
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "InvalidJson", "the request body must be a JSON object ({...})")
    return body


def flag(name: str, body: Mapping[str, Any], params: Mapping[str, str]) -> bool:
    """A boolean option from the JSON body or, failing that, the query string."""
    if name in body:
        value = body[name]
        if not isinstance(value, bool):
            raise ApiError(400, "ValidationFailed", f"{name} must be true or false, got {json.dumps(value)}")
        return value
    raw = params.get(name)
    if raw is None:
        return False
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ApiError(400, "ValidationFailed", f"query parameter {name} must be true or false, got {raw!r}")


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
