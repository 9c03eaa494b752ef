"""The web console: one static page and its assets, served by the app itself under /api/console.

These two routes are anonymous on purpose: a browser's address bar cannot send a function key, and
the page holds no data and no secret. Everything the page shows comes from the documented API,
which it calls with the function key the user types (kept in sessionStorage for the browser
session) or, with AUTH_MODE=entra, with the App Service Authentication session; those routes keep
their own key and role checks.

Files are read only when a request asks for them, so importing function_app costs nothing more.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import azure.functions as func

from functions import new_blueprint

if TYPE_CHECKING:
    from shared.settings import Settings

__all__ = [
    "ASSETS",
    "CONTENT_SECURITY_POLICY",
    "PAGE",
    "bp",
    "console_asset",
    "console_page",
    "page_html",
    "public_paths",
]

bp = new_blueprint()

ASSETS = Path(__file__).resolve().parent / "console_assets"
PAGE = "index.html"
_CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# Flat names only: nothing outside ASSETS can be named, whatever the path holds.
_ASSET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\.(?:js|css|svg)$")
_SETTINGS_MARK = b"{{CONSOLE_SETTINGS}}"

# No inline script or style, nothing from another origin, no framing, no form posts elsewhere.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Revalidate every time (cheap: ETag), so a deployed change is seen at the next load.
    "Cache-Control": "no-cache",
}


@lru_cache(maxsize=32)
def _read(name: str) -> bytes:
    return (ASSETS / name).read_bytes()


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _respond(req: func.HttpRequest, body: bytes, content_type: str) -> func.HttpResponse:
    etag = _etag(body)
    headers = {**_SECURITY_HEADERS, "ETag": etag}
    if req.headers.get("If-None-Match") == etag:
        return func.HttpResponse(status_code=304, headers=headers)
    return func.HttpResponse(body, status_code=200, headers=headers, mimetype=content_type, charset="utf-8")


def _text(status: int, message: str) -> func.HttpResponse:
    return func.HttpResponse(
        message + "\n", status_code=status, headers=_SECURITY_HEADERS, mimetype="text/plain", charset="utf-8"
    )


def public_paths(route_prefix: str = "api") -> list[str]:
    """Every path these routes serve: what App Service Authentication must let through unsigned
    (infra/modules/functionapp.bicep, excludedPaths), so a browser that is not signed in yet gets the
    page and its sign-in link rather than a bare 401."""
    base = f"/{route_prefix}/console" if route_prefix else "/console"
    assets = sorted(p.name for p in ASSETS.iterdir() if p.is_file() and _ASSET_NAME.match(p.name))
    return [base, *(f"{base}/{name}" for name in assets)]


def page_html(settings: Settings) -> bytes:
    """The page, telling its script (in a meta tag: no inline script) how callers authenticate and
    which hostnames the server accepts, so the form checks them as typed with the server's rules."""
    public = {
        "authMode": settings.auth_mode,
        "hostSuffixes": list(settings.allowed_host_suffixes),
        "allowLoopback": not settings.running_in_azure,
    }
    return _read(PAGE).replace(_SETTINGS_MARK, html.escape(json.dumps(public), quote=True).encode())


@bp.function_name("console_page")
@bp.route(route="console", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def console_page(req: func.HttpRequest) -> func.HttpResponse:
    from shared.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        return _text(500, f"the function app is misconfigured: {exc}")
    return _respond(req, page_html(settings), "text/html")


@bp.function_name("console_asset")
@bp.route(route="console/{*asset}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def console_asset(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("asset") or ""
    if name in ("", PAGE):
        # Relative asset URLs resolve against /api/console, not /api/console/.
        return func.HttpResponse(status_code=308, headers={**_SECURITY_HEADERS, "Location": "../console"})
    if not _ASSET_NAME.match(name) or not (ASSETS / name).is_file():
        return _text(404, f"the console has no file {name[:80]!r}; open /api/console")
    return _respond(req, _read(name), _CONTENT_TYPES[Path(name).suffix])
