"""HTTP API routes that help a client fill in its forms (the console uses them; so can curl).

- `GET /api/me`: what the caller may do, so a client shows only what the API would allow (the
  routes still check every request).
- `POST /api/connections/{name}/check`: the "Connect" step on its own: checks a hostname and key
  against ActiveCampaign and saves nothing, so a form can say "connected" before Save.
- `GET /api/segment-columns`: the newest snapshot's column names, so an export's data matching is
  picked from the segment's own columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import azure.functions as func

from functions import new_blueprint
from functions.http import ApiError, api_handler, json_response, read_json_object
from functions.services import Services, api_route
from shared.auth import Action, AuthError, Caller, authorize, caller_from_headers, require_a_role

__all__ = ["bp", "caller_me", "connection_check", "segment_columns"]

bp = new_blueprint()


@bp.function_name("caller_me")
@bp.route(route="me", methods=["GET"])
@api_handler
def caller_me(req: func.HttpRequest) -> func.HttpResponse:
    from shared.settings import load_settings

    auth_mode = load_settings().auth_mode
    caller = caller_from_headers(req.headers, auth_mode)
    require_a_role(caller)

    def may(action: Action) -> bool:
        try:
            authorize(caller, action)
        except AuthError:
            return False
        return True

    return json_response(
        {
            "name": caller.name,
            "roles": sorted(caller.roles),
            "authMode": auth_mode,
            "admin": caller.is_admin,
            "may": {
                "readConnections": may(Action.READ_CONNECTIONS),
                "changeConnections": may(Action.WRITE_CONNECTIONS),
                "readExports": may(Action.READ_EXPORTS),
                "changeExports": may(Action.WRITE_EXPORTS),
                # Contributors: only for exports whose connection has allowContributors: true.
                "startRuns": "always"
                if caller.is_admin
                else ("ifConnectionAllows" if caller.is_contributor else "never"),
                # force (lift the removal guard) and full (resend everyone) widen a run.
                "forceRuns": may(Action.START_WIDENED_RUN),
                "fullRuns": may(Action.START_WIDENED_RUN),
            },
        }
    )


@bp.function_name("connection_check")
@bp.route(route="connections/{name}/check", methods=["POST"])
@api_route(Action.WRITE_CONNECTIONS)
def connection_check(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    from functions.accounts import account, default_secret_name, refuse_stored_key_for_another_host
    from shared.config import parse_connection
    from shared.secrets import KeyBoundToAnotherHost, SecretNotFound, connection_key

    name = req.route_params["name"]
    body = read_json_object(req)
    api_key = body.pop("apiKey", None)
    if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
        raise ApiError(
            400, "ValidationFailed", "apiKey must be the ActiveCampaign API key as a non-empty string"
        )
    current = svc.config.read()
    existing = current.item("connections", name)
    body.setdefault("apiKeySecret", existing["apiKeySecret"] if existing else default_secret_name(name))
    # Consent is asked for by Save (PUT); checking a key sends no profile data.
    body.setdefault("dataPrivacyConsent", False)
    settings = svc.settings
    connection = parse_connection(
        name,
        body,
        allowed_suffixes=settings.allowed_host_suffixes,
        allow_loopback=not settings.running_in_azure,
    )
    if api_key:
        key = api_key.strip()
    else:
        # As PUT: the stored key is only checked against a host it was given for.
        refuse_stored_key_for_another_host(current, name, connection)
        try:
            key = connection_key(
                svc.secrets, name, connection.api_key_secret, connection.hostname, refresh=True
            )
        except KeyBoundToAnotherHost as exc:
            raise ApiError(400, "ApiKeyRequired", str(exc)) from None
        except SecretNotFound:
            raise ApiError(
                400,
                "ApiKeyRequired",
                f"no API key is stored for connection {name!r}: send the ActiveCampaign API key as apiKey",
            ) from None
    with account(settings, connection.hostname, key, connection=name) as client:
        client.check_connection()
    return json_response({"name": name, "hostname": connection.hostname, "connected": True})


@dataclass(frozen=True)
class _Source:
    container: str
    folder: str
    segment: str


@bp.function_name("segment_columns")
@bp.route(route="segment-columns", methods=["GET"])
@api_route(Action.WRITE_EXPORTS)
def segment_columns(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    from shared.segments import SegmentError, SegmentReader

    container, segment = req.params.get("container", "").strip(), req.params.get("segment", "").strip()
    folder = req.params.get("folder", "").strip().strip("/")
    if not container or not segment:
        raise ApiError(
            400,
            "ValidationFailed",
            "query parameters container and segment are required (folder is optional), e.g. "
            "?container=customer-insights&folder=CustomerInsights_1234/BlobExport&segment=HighValueSegment",
        )
    where = f"container {container!r}, folder {folder!r}, segment {segment!r}"
    try:
        snapshot = SegmentReader(svc.segment_blobs, _Source(container, folder, segment)).latest_snapshot()
    except SegmentError as exc:
        raise ApiError(400, "SegmentUnreadable", f"the segment cannot be read: {exc}") from None
    if snapshot is None:
        raise ApiError(
            404,
            "NoSnapshot",
            f"no snapshot of the segment exists in SEGMENTS_STORAGE ({where}): check the names, or wait for "
            "the first export of the segment",
        )
    return json_response(
        {
            "source": {"container": container, "folder": folder, "segment": segment},
            "snapshotId": snapshot.snapshot_id,
            "columns": list(snapshot.columns),
        }
    )
