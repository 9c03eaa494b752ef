"""The web console as the app serves it: the page, its assets, its headers, and nothing else.

In-process, through real azure.functions requests. What the page does in a browser is tested in
tests/console/test_console_browser.py.
"""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser

import azure.functions as func
import pytest

from functions import console
from tests.support.app import AppEnv, built_functions, run_isolated

ASSETS = console.ASSETS


def get(function: str, asset: str | None = None, headers: dict[str, str] | None = None) -> func.HttpResponse:
    req = func.HttpRequest(
        method="GET",
        url=f"http://localhost/api/console{'/' + asset if asset is not None else ''}",
        headers=headers or {},
        params={},
        route_params={"asset": asset} if asset is not None else {},
        body=b"",
    )
    return built_functions()[function].get_user_function()(req)  # type: ignore[no-any-return]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_script = False
        self.attrs: list[tuple[str, str, str | None]] = []
        self.meta: dict[str, str] = {}
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attrs += [(tag, name, value) for name, value in attrs]
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True
        if tag == "meta" and dict(attrs).get("name"):
            self.meta[str(dict(attrs)["name"])] = str(dict(attrs).get("content"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script = True


def parse(body: bytes) -> _Page:
    page = _Page()
    page.feed(body.decode())
    return page


def test_the_page_is_served_with_a_strict_content_security_policy(app_env: AppEnv):
    resp = get("console_page")
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    csp = dict(part.strip().split(" ", 1) for part in resp.headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"
    assert csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert "unsafe" not in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"


def test_the_page_has_no_inline_script_or_style_and_loads_only_its_own_files(app_env: AppEnv):
    page = parse(get("console_page").get_body())
    assert not page.inline_script
    assert page.scripts
    assert all((s.get("src") or "").startswith("console/") for s in page.scripts)
    assert not [(tag, name) for tag, name, _ in page.attrs if name.startswith("on") or name == "style"]
    for tag, name, value in page.attrs:
        if name in ("src", "href") and value and not value.startswith("#"):
            assert value.startswith("console/"), (tag, name, value)
            assert (ASSETS / value.removeprefix("console/")).is_file(), value


def test_the_page_tells_its_script_the_auth_mode_and_host_rules(app_env: AppEnv):
    settings = json.loads(parse(get("console_page").get_body()).meta["console-settings"])
    assert settings == {
        "authMode": "key",
        "hostSuffixes": [".api-us1.com", ".api-eu1.com", ".activehosted.com"],
        "allowLoopback": True,
    }
    app_env.set("AUTH_MODE", "entra")
    app_env.set("ACTIVECAMPAIGN_ALLOWED_HOST_SUFFIXES", ".api-us2.com")
    app_env.set("WEBSITE_INSTANCE_ID", "abc")
    app_env.monkeypatch.delenv("RUNS_QUEUE")  # the test's own queue: on Azure only export-runs is allowed
    settings = json.loads(parse(get("console_page").get_body()).meta["console-settings"])
    assert settings["authMode"] == "entra"
    assert settings["hostSuffixes"][-1] == ".api-us2.com"
    assert settings["allowLoopback"] is False


def test_a_bad_setting_is_named_not_hidden(app_env: AppEnv):
    app_env.set("AUTH_MODE", "cookie")
    resp = get("console_page")
    assert resp.status_code == 500
    assert "AUTH_MODE" in resp.get_body().decode()


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        (p.name, {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}[p.suffix])
        for p in sorted(ASSETS.iterdir())
        if p.suffix != ".html"
    ],
)
def test_every_asset_is_served_with_its_type_and_the_same_headers(name: str, content_type: str):
    resp = get("console_asset", name)
    assert resp.status_code == 200, name
    assert resp.mimetype == content_type
    assert resp.get_body() == (ASSETS / name).read_bytes()
    assert resp.headers["Content-Security-Policy"] == console.CONTENT_SECURITY_POLICY
    again = get("console_asset", name, headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status_code == 304
    assert again.get_body() == b""


@pytest.mark.parametrize(
    "asset",
    [
        "../function_app.py",
        "..%2Ffunction_app.py",
        "../../host.json",
        "x/../app.js",
        "/etc/passwd",
        "app.py",
        "missing.js",
        "APP.JS",
        "index.html.js",
        ".hidden.js",
        "app.js/",
    ],
)
def test_nothing_but_the_console_files_can_be_named(asset: str):
    resp = get("console_asset", asset)
    assert resp.status_code == 404
    assert b"import" not in resp.get_body()


@pytest.mark.parametrize("asset", ["", "index.html"])
def test_the_folder_form_of_the_address_goes_to_the_page(asset: str):
    resp = get("console_asset", asset)
    assert resp.status_code == 308
    assert resp.headers["Location"] == "../console"


def test_the_console_is_the_only_anonymous_route():
    anonymous = set()
    for name, fn in built_functions().items():
        trigger = fn.get_bindings_dict()["bindings"][0]
        if trigger["type"] == "httpTrigger" and str(trigger["authLevel"].value) != "function":
            anonymous.add(
                (name, str(trigger["authLevel"].value), tuple(str(m.value) for m in trigger["methods"]))
            )
    assert anonymous == {("console_page", "anonymous", ("GET",)), ("console_asset", "anonymous", ("GET",))}


def test_assets_name_no_other_origin():
    # The only absolute URL allowed is the SVG namespace (an identifier, never fetched).
    for path in ASSETS.iterdir():
        text = path.read_text()
        urls = set(re.findall(r"[a-z][a-z0-9+.-]*://[a-z0-9-]+(?:\.[a-z0-9-]+)+[^\s\"'`)]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (path.name, urls)


def test_every_module_the_scripts_import_is_shipped():
    for path in ASSETS.glob("*.js"):
        for target in re.findall(r"""from\s+["']\./([^"']+)["']""", path.read_text()):
            assert (ASSETS / target).is_file(), f"{path.name} imports ./{target}"
            assert console._ASSET_NAME.match(target), target


def test_scripts_never_write_markup_from_strings():
    # Values from the API and from segments are text: no innerHTML/outerHTML/insertAdjacentHTML/eval.
    for path in ASSETS.glob("*.js"):
        text = path.read_text()
        for pattern in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "eval(",
            "new Function",
            "document.write",
        ):
            assert pattern not in text, (path.name, pattern)


def test_the_function_key_is_kept_for_the_browser_session_only():
    text = "\n".join(p.read_text() for p in ASSETS.glob("*.js"))
    assert "localStorage" not in text
    assert "document.cookie" not in text
    assert "sessionStorage" in text


def test_importing_the_app_reads_no_console_file():
    out = run_isolated(
        "import json, sys\n"
        "opened = []\n"
        "sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == 'open' and 'console_assets' in str(args[0]) else None)\n"
        "import function_app\n"
        "function_app.app.get_functions()\n"
        "print(json.dumps(opened))"
    )
    assert json.loads(out.splitlines()[-1]) == []


def test_the_page_meta_is_escaped():
    class _S:
        auth_mode = "key"
        allowed_host_suffixes = ('"><script>',)
        running_in_azure = False

    body = console.page_html(_S()).decode()  # type: ignore[arg-type]
    assert "<script>" not in body.split("<script type")[0]
    content = re.search(r'name="console-settings" content="([^"]*)"', body)
    assert content is not None
    assert json.loads(html.unescape(content.group(1)))["hostSuffixes"] == ['"><script>']


def test_the_export_form_sends_back_exactly_what_the_schema_accepts():
    # Fewer would drop settings the form does not show; more would send view-only fields back.
    schema = json.loads((console.ASSETS.parents[1] / "shared" / "schemas" / "config.schema.json").read_text())
    text = (ASSETS / "exports.js").read_text()
    block = re.search(r"export const EXPORT_FIELDS = \[(.*?)\];", text, re.S)
    assert block is not None
    assert sorted(re.findall(r'"([A-Za-z]+)"', block.group(1))) == sorted(
        schema["$defs"]["export"]["properties"]
    )


HOSTNAMES = [
    "acme.api-us1.com",
    "ACME.api-us1.com",
    " acme.api-eu1.com ",
    "acme.activehosted.com",
    "acme.api-us1.com.",
    "https://acme.api-us1.com",
    "acme.api-us1.com/api/3",
    "user@acme.api-us1.com",
    "acme.api-us1.com:443",
    "acme.example.com",
    "api-us1.com",
    "-acme.api-us1.com",
    "acme-.api-us1.com",
    "ac_me.api-us1.com",
    "a..api-us1.com",
    "acme.api-us1.com?x=1",
    "127.0.0.1:8765",
    "localhost:8765",
    "127.0.0.1:0",
    "127.0.0.1:99999",
    "",
    "   ",
    "evil.api-us1.com.example.com",
    "x" * 64 + ".api-us1.com",
]


@pytest.mark.parametrize("allow_loopback", [True, False])
def test_the_form_checks_hostnames_with_the_servers_rules(tmp_path, allow_loopback: bool):
    import shutil
    import subprocess

    from shared.hosts import HostError, validate_hostname
    from shared.settings import DEFAULT_ALLOWED_HOST_SUFFIXES

    node = shutil.which("node")
    assert node, "node (needed for Azurite) runs the console's hostname check here"
    runner = tmp_path / "check.mjs"
    runner.write_text(
        'const fs = await import("node:fs");\n'
        "const src = fs.readFileSync(process.argv[2], 'utf8');\n"
        "const mod = await import('data:text/javascript,' + encodeURIComponent(src));\n"
        "const [values, rules] = JSON.parse(fs.readFileSync(0, 'utf8'));\n"
        "console.log(JSON.stringify(values.map((v) => mod.hostnameProblem(v, rules))));\n"
    )
    rules = {"suffixes": list(DEFAULT_ALLOWED_HOST_SUFFIXES), "allowLoopback": allow_loopback}
    done = subprocess.run(
        [node, str(runner), str(ASSETS / "hostname.js")],
        input=json.dumps([HOSTNAMES, rules]),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    browser = json.loads(done.stdout)
    for value, problem in zip(HOSTNAMES, browser, strict=True):
        try:
            validate_hostname(
                value, allowed_suffixes=DEFAULT_ALLOWED_HOST_SUFFIXES, allow_loopback=allow_loopback
            )
            server_ok = True
        except HostError:
            server_ok = False
        assert (problem is None) == server_ok, (value, problem)
