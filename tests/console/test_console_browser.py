"""The web console in a real browser: headless Chromium against `scripts.serve`, Azurite and the
ActiveCampaign sandbox, driven the way a person uses it.

Screenshots of each screen go to $CONSOLE_SCREENSHOTS (docs/console/ with `make screenshots`), else
to the test's temporary folder.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from functions.console import public_paths
from sandbox import Fault
from shared.auth import ADMIN_ROLE, CONTRIBUTOR_ROLE, PRINCIPAL_HEADER
from tests.fixtures.easyauth import easy_auth, principal_headers
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.fixtures.serve import Served, StartServe, base_env
from tests.support.app import ROOT, AppEnv
from tests.support.browser import Console, chromium
from tests.support.segments import FOLDER, profiles, write_ci_snapshot

GOOD_ROWS = 40
# Rows the run must reject, each for its own reason (CustomerId, Email, First, Last, Phone, Tier).
BAD_ROWS = [
    ["900", "", "No", "Email", "", "gold"],
    # Values a spreadsheet would run as formulas: rejected.csv stores them with a leading quote.
    ["901", "not-an-email", "=Bad", "-Email", "", "@gold"],
    ["902", "person3@example.com", "Again", "Duplicate", "", "gold"],
]
SERIOUS = {"serious", "critical"}


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = os.environ.get("CONSOLE_SCREENSHOTS")
    path = (ROOT / where) if where else tmp_path / "shots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    path = tmp_path / "downloads"
    path.mkdir()
    return path


@pytest.fixture
def snapshot(segments) -> Any:
    write_ci_snapshot(segments, "Vip", [*profiles(GOOD_ROWS), *BAD_ROWS])
    return segments


@contextmanager
def open_console(
    served: Served,
    shots: Path,
    downloads: Path,
    *,
    width: int = 1280,
    zoom: float = 1.0,
    via: str | None = None,
) -> Iterator[Console]:
    """The console in Chromium, at `served` or at `via` (the origin of something in front of it)."""
    origin = via or served.url
    with chromium(downloads) as driver:
        console = Console(driver, origin + "/api/console", shots, width=width, zoom=zoom)
        yield console
        errors = console.console_errors()
        assert not [e for e in errors if "Content Security Policy" in e or "Refused to" in e], errors
        assert [u for u in console.resources() if not u.startswith(origin + "/")] == []


def no_serious_violations(console: Console, screen: str) -> None:
    bad = [v for v in console.axe() if v["impact"] in SERIOUS]
    assert bad == [], f"{screen}: {json.dumps(bad, indent=1)}"


def principal(*roles: str) -> str:
    claims = [{"typ": "preferred_username", "val": "casey@example.com"}]
    claims += [{"typ": "roles", "val": role} for role in roles]
    doc = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def connect(api: httpx.Client, hostname: str) -> None:
    body = {
        "displayName": "ActiveCampaign (main)",
        "hostname": hostname,
        "dataPrivacyConsent": True,
        "apiKey": SANDBOX_API_KEY,
    }
    assert api.put("/connections/main", json=body).status_code == 201


def put_export(api: httpx.Client, container: str, **options: Any) -> None:
    export = {
        "connection": "main",
        "source": {"container": container, "folder": FOLDER, "segment": "Vip"},
        "listId": 1,
        "mapping": {"email": "EmailAddress"},
        **options,
    }
    assert api.put("/exports/vip", json=export).status_code == 201


# --- an administrator, from an empty app to a finished run ---------------------------------------


def test_from_an_empty_app_connect_configure_preview_run_and_read_the_report(
    serve: StartServe, app_env: AppEnv, ac_sandbox, snapshot, shots: Path, downloads: Path
):
    served = serve(base_env(app_env.azurite))
    with open_console(served, shots, downloads) as console:
        # Key mode: the console asks for the function key once, and keeps it for the session only.
        console.go("")
        console.see("Sign in")
        console.shot("sign-in")
        console.type("Function key", "local-function-key")
        console.click("Sign in")
        console.see("No exports yet.")
        stored = console.driver.execute_script(
            "return [sessionStorage.getItem('functionKey'), localStorage.length, document.cookie]"
        )
        assert stored == ["local-function-key", 0, ""]
        console.driver.refresh()  # once per browser session: a reload does not ask again
        console.see("No exports yet.")
        console.link("Add export").click()
        console.see("No connections available to you.")

        # Connections: a hostname in the wrong form is refused as typed, a wrong key by Connect.
        console.link("Connections").click()
        console.see("No connections yet.")
        console.link("Add connection").click()
        console.type("Connection name", "marketing")
        console.type("Display name", "ActiveCampaign (marketing)")
        console.type("REST endpoint hostname", "https://acme.api-us1.com")
        console.see("Leave out the scheme (https://)")
        console.type("REST endpoint hostname", ac_sandbox.hostname)
        console.wait(lambda: "Leave out" not in console.main_text(), "the hostname error to clear")
        console.type("API key", "not-the-key")
        console.field("I agree").click()
        assert console.button("Save").get_attribute("disabled") is not None
        console.click("Connect")
        assert "refused the API key" in console.alert_text()
        assert console.button("Save").get_attribute("disabled") is not None
        console.type("API key", SANDBOX_API_KEY)
        console.click("Connect")
        console.see("Connected.")
        console.shot("connection-form", full_page=True)
        console.click("Save")
        console.see("Saved connection ActiveCampaign (marketing).")
        console.shot("connections")
        assert SANDBOX_API_KEY not in console.driver.page_source

        # Exports: the list picked by name, columns from the segment, a custom field from page 2.
        console.link("Exports").click()
        console.link("Add export").click()
        console.type("Export name", "vip")
        console.choose("ActiveCampaign list", "Newsletter (list id 1)")
        console.type("Container", snapshot.container_name)
        console.type("Folder", FOLDER)
        console.type("Segment", "Vip")
        console.click("Load columns")
        console.see("The segment has 6 columns.")
        console.choose("Email", "EmailAddress")
        console.click("Add attribute")
        console.choose("Attribute 1", "First name")
        console.choose("Column for attribute 1", "FirstName")
        console.click("Add attribute")
        console.choose("Attribute 2", "City (CITY, text)")
        console.choose("Column for attribute 2", "LoyaltyTier")
        picker = console.field("Add one of the account's tags")
        console.wait(lambda: picker.text.startswith("The account has no tags yet"), "the account's tags")
        console.type("Tags", "segment:vip")
        console.shot("export-form", full_page=True)
        console.click("Save")
        console.see("Saved export vip.")
        console.see("Saving does not run the export.")
        # The URL follows the page: the export's own page, which a reload shows again.
        assert console.driver.current_url.endswith("/api/console#/exports/vip")
        console.see("Export vip")
        with httpx.Client(base_url=served.api, timeout=30) as api:
            saved = api.get("/exports/vip").json()
        assert saved["listId"] == 1
        assert saved["mapping"] == {
            "email": "EmailAddress",
            "firstName": "FirstName",
            "fields": {"CITY": "LoyaltyTier"},
            "tags": ["segment:vip"],
        }

        # Preview: read and planned, nothing sent.
        console.click("Preview (dry run)")
        console.see("Succeeded (preview)")
        console.see(f"This was a preview: it would send {GOOD_ROWS} contacts and sent nothing.")
        assert ac_sandbox.state.list_members(1) == {}

        # Run now, held at ActiveCampaign's processing so the live progress can be watched.
        ac_sandbox.pause_processing()
        console.link("vip").click()
        console.see("Export vip")
        console.click("Run now")
        console.see("Progress")
        console.wait(lambda: "Sending:" in console.main_text(), "live progress of the sending")
        console.shot("run-progress")
        ac_sandbox.resume_processing()
        console.see("Succeeded", timeout=90)
        console.see(f"ActiveCampaign accepted {GOOD_ROWS}.")
        console.see(
            "Rejected 2 rows before sending: 1 with no email address, 1 with an invalid email address."
        )
        console.see("Skipped 1 duplicate")
        console.see("Rejected rows")
        rejected_table(console)
        console.shot("run-report", full_page=True)

        # The CSV download is the API's rejected rows, byte for byte.
        console.click("Download rejected rows (CSV)")
        csv_file = console.wait(lambda: next(iter(downloads.glob("*.csv")), None), "the CSV download")
        console.wait(lambda: not list(downloads.glob("*.crdownload")), "the download to complete")
        with httpx.Client(base_url=served.api, timeout=30) as api:
            run_id = api.get("/exports/vip/runs").json()["runs"][0]["runId"]
            expected = api.get(f"/exports/vip/runs/{run_id}/rejected").content
        assert csv_file.read_bytes() == expected
        assert len(list(csv.reader(io.StringIO(expected.decode())))) == 1 + len(BAD_ROWS)

        # Nothing changed since: the next run sends nothing and says it is up to date.
        console.link("vip").click()
        console.click("Run now")
        console.see("Up to date: nothing changed since the last delivery", timeout=90)
        assert console.driver.find_element(By.CSS_SELECTOR, "dl.facts .badge").text == "Up to date"
        assert ac_sandbox.state.list_members(1).keys() == {f"person{i}@example.com" for i in range(GOOD_ROWS)}

        # Run history: the three runs in the table (with what each left unchanged) and the chart.
        console.link("vip").click()
        console.see("Contacts sent, rejected and removed per run")
        table = console.driver.find_element(By.CSS_SELECTOR, "main table")
        heads = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
        assert heads[:6] == ["Queued", "Status", "Kind", "Rows read", "Unchanged", "Sent"]
        body = [
            [c.text for c in tr.find_elements(By.CSS_SELECTOR, "th, td")]
            for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")
        ]
        assert [row[1] for row in body] == ["Up to date", "Succeeded", "Succeeded (preview)"]
        assert [row[4] for row in body] == [str(GOOD_ROWS), "0", "0"]  # unchanged since the last delivery
        assert [row[5] for row in body] == ["0", str(GOOD_ROWS), "0"]  # sent
        assert len(console.driver.find_elements(By.CSS_SELECTOR, "svg.chart rect")) == 3 * 3
        label = console.driver.find_element(By.CSS_SELECTOR, "svg.chart").get_attribute("aria-label")
        assert f"sent {GOOD_ROWS}" in str(label)
        console.shot("run-history", full_page=True)
        console.link("Exports").click()
        console.see("Up to date")
        console.see("Nothing changed since the last delivery")
        # Connections and lists by their names, the id beside the list's.
        console.see("ActiveCampaign (marketing)")
        console.see("Newsletter (list id 1)")
        console.shot("exports")

        # Editing and saving unchanged keeps the export exactly as it was; the tag the runs created
        # on the account is offered, and picking it again adds it once.
        console.link("Edit").click()
        console.see("Edit export vip")
        console.wait(lambda: console.field("ActiveCampaign list").get_attribute("value") == "1", "the list")
        console.type("Tags", "")
        console.choose("Add one of the account's tags", "segment:vip")
        console.choose("Add one of the account's tags", "segment:vip")
        assert console.field("Tags").get_attribute("value") == "segment:vip"
        console.click("Save")
        console.see("Saved export vip.")
        assert console.driver.current_url.endswith("/api/console#/exports/vip")
        with httpx.Client(base_url=served.api, timeout=30) as api:
            again = api.get("/exports/vip").json()
        assert {k: v for k, v in again.items() if k not in ("lastRun", "lastDecision")} == {
            k: v for k, v in saved.items() if k not in ("lastRun", "lastDecision")
        }
    assert len(ac_sandbox.state.list_members(1)) == GOOD_ROWS


def rejected_table(console: Console) -> None:
    """The rejected rows as a person reads them at 1280 px: each row's file by its name (the full
    path on hover), its reason in words with the code beside it, its values as the segment had them
    (no spreadsheet guard quote), and no sideways scrolling."""
    table = console.driver.find_element(By.CSS_SELECTOR, "table.rejected")
    assert [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")][:4] == [
        "File",
        "Line",
        "Reason",
        "Detail",
    ]
    rows = {}
    for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr"):
        file = tr.find_element(By.CSS_SELECTOR, "th span")
        path = str(file.get_attribute("title"))
        assert path.startswith(FOLDER + "/Vip/"), path
        assert path.endswith("/" + file.text), (path, file.text)
        assert "/" not in file.text
        cells = tr.find_elements(By.TAG_NAME, "td")
        code = cells[1].find_element(By.TAG_NAME, "code").text
        rows[code] = (cells[1].text, [c.text for c in cells[3:]])
    assert {code: words for code, (words, _) in rows.items()} == {
        "duplicate": "A duplicate of an earlier row duplicate",
        "invalid_email": "An invalid email address invalid_email",
        "missing_email": "No email address missing_email",
    }
    # Shown as the segment had them: the CSV's "'=Bad" is =Bad on screen.
    assert rows["invalid_email"][1] == ["901", "not-an-email", "=Bad", "-Email", "", "@gold"]
    assert not [v for _, values in rows.values() for v in values if v.startswith("'")]
    wrap = table.find_element(By.XPATH, "..")
    scroll = console.driver.execute_script("return arguments[0].scrollWidth - arguments[0].clientWidth", wrap)
    assert scroll <= 0, f"the rejected rows scroll sideways by {scroll} px at 1280 px"
    console.see("Files in folder " + FOLDER + "/Vip/")


def test_deleting_a_connection_says_what_goes_with_it(
    serve: StartServe, app_env: AppEnv, ac_sandbox, snapshot, shots: Path, downloads: Path
):
    served = serve(base_env(app_env.azurite))
    with httpx.Client(base_url=served.api, timeout=30) as api:
        connect(api, ac_sandbox.hostname)
        put_export(api, snapshot.container_name)
        with open_console(served, shots, downloads) as console:
            console.go("#/connections")
            console.type("Function key", "local-function-key")
            console.click("Sign in")
            console.see("ActiveCampaign (main)")
            console.click("Delete")
            dialog = console.wait(
                lambda: console.driver.find_element(By.CSS_SELECTOR, "dialog[open]"), "the dialog"
            )
            text = dialog.text
            assert "deletes its stored API key (secret activecampaign-main)" in text
            assert "It is used by the exports vip: they are deleted with it, with what the app kept" in text
            assert "Keep their run history" in text
            console.shot("connection-delete", full_page=False)
            dialog.find_element(By.XPATH, ".//button[normalize-space()='Cancel']").click()
            assert api.get("/connections/main").status_code == 200
            console.click("Delete")
            console.click("Delete connection")
            console.see("Deleted connection ActiveCampaign (main).")
            console.see("Also deleted: vip.")
        assert api.get("/connections/main").status_code == 404
        assert api.get("/exports/vip").status_code == 404


def test_a_failed_run_shows_the_error_as_the_api_gives_it(
    serve: StartServe, app_env: AppEnv, ac_sandbox, segments, shots: Path, downloads: Path
):
    # Nothing usable: no row has a valid email, so the run fails before sending anything.
    write_ci_snapshot(segments, "Vip", [[str(i), f"nobody-{i}", "A", "B", "", "gold"] for i in range(5)])
    served = serve(base_env(app_env.azurite))
    with httpx.Client(base_url=served.api, timeout=30) as api:
        connect(api, ac_sandbox.hostname)
        put_export(api, segments.container_name, trigger="manual")
        with open_console(served, shots, downloads) as console:
            console.go("#/exports/vip")
            console.type("Function key", "local-function-key")
            console.click("Sign in")
            console.see("Export vip")
            console.click("Run now")
            console.see("The run failed", timeout=90)
            run = api.get("/exports/vip/runs").json()["runs"][0]
            assert run["status"] == "failed"
            assert run["error"]
            assert run["error"] in console.alert_text()
            console.see("Nothing was sent to ActiveCampaign.")
            console.shot("run-failed", full_page=True)
            failed_at = console.driver.current_url

            # Edit: straight to the export's form; Retry: the same run again, now with usable rows.
            console.link("Edit export").click()
            console.see("Edit export vip")
            assert console.driver.current_url.endswith("#/exports/vip/edit")
            console.driver.back()
            console.see("The run failed")
            assert console.driver.current_url == failed_at
            assert ac_sandbox.state.list_members(1) == {}
            write_ci_snapshot(segments, "Vip", profiles(5), time_folder="2026/11/21/0600")
            console.click("Retry")
            console.wait(lambda: console.driver.current_url != failed_at, "the retried run's page")
            console.see("ActiveCampaign accepted 5.", timeout=90)
            runs = api.get("/exports/vip/runs").json()["runs"]
            assert [r["status"] for r in runs] == ["succeeded", "failed"]
            assert console.driver.current_url.endswith(f"#/exports/vip/runs/{runs[0]['runId']}")

            # Timestamps name their zone: the browser's own (here India, UTC+05:30, no daylight saving).
            console.driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kolkata"})
            console.driver.refresh()
            console.see("ActiveCampaign accepted 5.")
            queued = datetime.fromisoformat(runs[0]["queuedAt"]).astimezone(ZoneInfo("Asia/Kolkata"))
            shown = console.driver.find_element(By.XPATH, "//dt[.='Queued']/following-sibling::dd[1]").text
            assert shown in (
                f"{queued.day} {queued:%b %Y, %H:%M:%S} {zone}" for zone in ("IST", "GMT+5:30")
            ), shown
    assert len(ac_sandbox.state.list_members(1)) == 5


# --- a contributor ------------------------------------------------------------------------------


def test_a_contributor_sees_only_what_the_api_lets_them_do(
    serve: StartServe, app_env: AppEnv, ac_sandbox, snapshot, shots: Path, downloads: Path
):
    served = serve(base_env(app_env.azurite, AUTH_MODE="entra", WEBSITE_AUTH_ENABLED="True"))
    admin = {PRINCIPAL_HEADER: principal(ADMIN_ROLE)}
    with httpx.Client(base_url=served.api, timeout=30, headers=admin) as api:
        connect(api, ac_sandbox.hostname)
        put_export(api, snapshot.container_name, trigger="manual")
    with open_console(served, shots, downloads) as console:
        # Not signed in (no Easy Auth session): the console sends the user to sign in, asks no key.
        console.go("#/exports")
        console.see("You are not signed in")
        link = console.link("Sign in with Microsoft Entra ID")
        assert "/.auth/login/aad?post_login_redirect_uri=" in str(link.get_attribute("href"))
        assert not console.driver.find_elements(By.CSS_SELECTOR, "input[type=password]")
        # What App Service Authentication adds to every request of a signed-in contributor.
        console.driver.execute_cdp_cmd("Network.enable", {})
        console.driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {PRINCIPAL_HEADER: principal(CONTRIBUTOR_ROLE)}}
        )
        console.driver.refresh()
        console.see("vip")
        assert "Signed in as casey@example.com (contributor)." in console.text()
        assert not console.driver.find_elements(By.CSS_SELECTOR, "input[type=password]")  # no key asked
        assert console.buttons() == ["Preview", "Run now"]
        assert "Add export" not in console.main_text()
        assert "Edit" not in console.main_text()
        # The connection by its name (the export's view gives it); the list by its id (its name
        # comes from a route only administrators may read).
        console.see("ActiveCampaign (main)")
        console.see("list 1")
        console.shot("contributor-exports")

        console.link("Runs").click()
        console.see("Export vip")
        assert console.buttons() == ["Preview (dry run)", "Run now"]  # no Full, no Force
        # Lookup and withdrawal are for administrators only.
        assert "Find a person" not in console.main_text()
        assert "Withdraw from the list" not in console.main_text()
        console.click("Run now")
        assert "allowContributors" in console.alert_text()
        console.shot("contributor-run-refused")

        console.link("Connections").click()
        console.see("Only administrators manage connections.")
        console.go("#/exports/vip/edit")
        console.see("Only administrators change exports.")


def test_with_app_service_authentication_the_console_uses_the_session_and_never_a_key(
    serve: StartServe, app_env: AppEnv, ac_sandbox, snapshot, shots: Path, downloads: Path
):
    # The local host checks function keys here as the Functions host does: if the API routes kept
    # authLevel function in entra mode, every call of the console would be refused.
    served = serve(
        base_env(
            app_env.azurite,
            AUTH_MODE="entra",
            WEBSITE_AUTH_ENABLED="True",
            SERVE_FUNCTION_KEY="a-key-the-console-never-sends",
        )
    )
    admin = principal_headers("avery@example.com", [ADMIN_ROLE])
    with (
        easy_auth(served.url, admin, public_paths()) as front,
        open_console(served, shots, downloads, via=front.url) as console,
    ):
        # Not signed in: App Service Authentication lets the page through (excludedPaths) and
        # answers the API with a bare 401; the console offers to sign in and asks for no key.
        console.go("#/connections")
        console.see("You are not signed in")
        assert not console.driver.find_elements(By.CSS_SELECTOR, "input[type=password]")
        assert ("GET", "/api/me", 401) in [seen[:3] for seen in front.seen]
        no_serious_violations(console, "entra sign in")
        console.shot("entra-sign-in")
        console.link("Sign in with Microsoft Entra ID").click()

        # Signed in (the session cookie): an administrator adds a connection contributors may use.
        console.see("No connections yet.")
        assert "Signed in as avery@example.com (administrator). Sign out" in console.text()
        console.link("Add connection").click()
        console.type("Connection name", "main")
        console.type("Display name", "ActiveCampaign (main)")
        console.field("Administrators and contributors").click()
        console.type("REST endpoint hostname", ac_sandbox.hostname)
        console.type("API key", SANDBOX_API_KEY)
        console.field("I agree").click()
        console.click("Connect")
        console.see("Connected.")
        console.click("Save")
        console.see("Saved connection ActiveCampaign (main).")
        assert "Administrators and contributors" in console.main_text()
        with httpx.Client(base_url=served.api, timeout=30, headers=admin) as api:
            assert api.get("/connections/main").json()["allowContributors"] is True
            put_export(api, snapshot.container_name, trigger="manual")

        # Signing out ends the session; a contributor signs in and may run it (the connection says so).
        console.link("Sign out").click()
        console.see("You are not signed in")
        front.user = principal_headers("casey@example.com", [CONTRIBUTOR_ROLE])
        console.link("Sign in with Microsoft Entra ID").click()
        console.see("vip")
        assert "Signed in as casey@example.com (contributor)." in console.text()
        console.go("#/exports/vip")
        console.see("Export vip")
        console.click("Run now")
        console.see("Succeeded", timeout=90)
        # A contributor's change log: who (masked), what and how it went, not the values sent.
        console.see(f"Changes 1 to {GOOD_ROWS} of {GOOD_ROWS}.")
        table = console.driver.find_element(By.CSS_SELECTOR, "table.changes")
        assert [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")] == [
            "Email",
            "Action",
            "Outcome",
            "Reason",
        ]
        assert {row[0] for row in shown_rows(console, "table.changes")} == {"p***@example.com"}
        stored = console.driver.execute_script("return [sessionStorage.length, localStorage.length]")
        assert stored == [0, 0]
    assert not [seen for seen in front.seen if "x-functions-key" in seen[3] or "code=" in seen[1]]
    assert len(ac_sandbox.state.list_members(1)) == GOOD_ROWS


# --- accessibility: axe-core, keyboard only, 200% zoom and narrow screens ----------------------


def seed(api: httpx.Client, ac_sandbox, container: str) -> str:
    connect(api, ac_sandbox.hostname)
    put_export(api, container, mapping={"email": "EmailAddress", "firstName": "FirstName"})
    run_id = str(api.post("/exports/vip/runs", json={}).json()["runId"])
    for _ in range(600):
        if api.get(f"/exports/vip/runs/{run_id}").json()["status"] in ("succeeded", "failed"):
            break
        ac_sandbox.wait_until_idle(0.1)
    assert api.get(f"/exports/vip/runs/{run_id}").json()["status"] == "succeeded"
    return run_id


SCREENS = [
    ("exports", "#/exports", "Exports"),
    ("export form", "#/exports/vip/edit", "Edit export vip"),
    ("connections", "#/connections", "Connections"),
    ("connection form", "#/connections/main/edit", "Edit connection"),
    ("export page", "#/exports/vip", "Export vip"),
]


def test_every_screen_is_accessible_by_keyboard_at_200_percent_and_on_a_narrow_screen(
    serve: StartServe, app_env: AppEnv, ac_sandbox, snapshot, shots: Path, downloads: Path
):
    served = serve(base_env(app_env.azurite))
    with httpx.Client(base_url=served.api, timeout=30) as api:
        run_id = seed(api, ac_sandbox, snapshot.container_name)
    screens = [*SCREENS, ("run report", f"#/exports/vip/runs/{run_id}", "What happened")]
    with open_console(served, shots, downloads) as console:
        # Keyboard only: the key field has the focus, Enter signs in.
        console.go("#/exports")
        console.see("Sign in")
        no_serious_violations(console, "sign in")
        focused = console.driver.switch_to.active_element
        assert focused.get_attribute("type") == "password"
        focused.send_keys("local-function-key", Keys.ENTER)
        console.see("vip")
        # The skip link is the first stop of the page, shows when focused and jumps to the content.
        first = console.driver.execute_script(
            "return [...document.querySelectorAll('a[href], button, input, select')][0].textContent"
        )
        assert first == "Skip to content"
        console.driver.execute_script("document.querySelector('.skip-link').focus()")
        assert console.driver.execute_script("return document.activeElement.getBoundingClientRect().top") >= 0
        keys = ActionChains(console.driver)
        keys.send_keys(Keys.ENTER).perform()
        assert console.driver.switch_to.active_element.get_attribute("id") == "main"
        keys.send_keys(Keys.TAB).perform()
        for _ in range(30):
            if console.driver.switch_to.active_element.text == "Add export":
                break
            keys.send_keys(Keys.TAB).perform()
        assert console.driver.switch_to.active_element.text == "Add export"
        keys.send_keys(Keys.ENTER).perform()
        console.see("Export name")

        for name, hash_, heading in screens:
            console.go(hash_)
            console.see(heading)
            no_serious_violations(console, name)

        # Mirror mode shows its removal guard, and only then.
        console.go("#/exports/vip/edit")
        console.see("Edit export vip")
        assert not console.driver.find_elements(
            By.XPATH, "//label[normalize-space()='Removal guard (% of the list)']"
        )[0].is_displayed()
        console.field("Mirror: also unsubscribe people who left the segment").click()
        assert console.field("Removal guard (% of the list)").get_attribute("value") == "20"
        no_serious_violations(console, "export form, mirror mode")

    # 200% zoom of a 1280 px window is a 640 CSS px viewport; 320 px is the narrowest (WCAG reflow).
    for width, zoom in ((640, 2.0), (320, 1.0)):
        with open_console(served, shots, downloads, width=width, zoom=zoom) as console:
            console.go("")
            console.see("Sign in")
            console.type("Function key", "local-function-key")
            console.click("Sign in")
            for name, hash_, heading in screens:
                console.go(hash_)
                console.see(heading)
                overflow = console.driver.execute_script(
                    "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                wide = console.driver.execute_script(
                    "const w = document.documentElement.clientWidth;"
                    "return [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > w"
                    " && !e.closest('.table-wrap')).slice(0, 5).map((e) => e.tagName + '.' + e.className)"
                )
                assert overflow <= 0, f"{name} at {width} px scrolls sideways by {overflow} px: {wide}"
            console.go(f"#/exports/vip/runs/{run_id}")
            console.see("What happened")
            console.shot("run-report-zoom-200" if zoom == 2.0 else "run-report-320px", full_page=True)


# --- who got what: the change log, Find a person, Cancel, Withdraw --------------------------------


def run_via_api(api: httpx.Client, ac_sandbox: Any, **options: Any) -> dict[str, Any]:
    """Start a run through the API and wait (bounded) for its record to end."""
    resp = api.post("/exports/vip/runs", json=options)
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["runId"]
    for _ in range(900):
        run: dict[str, Any] = api.get(f"/exports/vip/runs/{run_id}").json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return run
        ac_sandbox.wait_until_idle(0.1)
    raise AssertionError(f"run {run_id} did not end")


def shown_rows(console: Console, css: str) -> list[list[str]]:
    table = console.driver.find_element(By.CSS_SELECTOR, css)
    return [
        [cell.text for cell in tr.find_elements(By.CSS_SELECTOR, "th, td")]
        for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]


def test_the_run_page_lists_its_changes_filtered_and_paged_and_find_a_person_shows_their_history(
    serve: StartServe, app_env: AppEnv, ac_sandbox, segments, shots: Path, downloads: Path
):
    # Run 1 adds 60 people (two pages of 50 on screen); run 2 updates 3 of them and adds 2.
    write_ci_snapshot(segments, "Vip", profiles(60))
    served = serve(base_env(app_env.azurite))
    with httpx.Client(base_url=served.api, timeout=30) as api:
        connect(api, ac_sandbox.hostname)
        put_export(
            api,
            segments.container_name,
            trigger="manual",
            mapping={"email": "EmailAddress", "firstName": "FirstName"},
        )
        first = run_via_api(api, ac_sandbox)
        assert first["status"] == "succeeded", first
        changed = [[*row[:2], "Renamed", *row[3:]] if int(row[0]) < 3 else row for row in profiles(60)]
        write_ci_snapshot(segments, "Vip", [*changed, *profiles(2, start=60)], time_folder="2026/11/21/0600")
        second = run_via_api(api, ac_sandbox)
        assert second["status"] == "succeeded", second
        assert ac_sandbox.wait_until_idle(10)
        api_rows = list(csv.reader(io.StringIO(api.get(f"/exports/vip/runs/{first['runId']}/changes").text)))
        with open_console(served, shots, downloads) as console:
            console.go(f"#/exports/vip/runs/{second['runId']}")
            console.type("Function key", "local-function-key")
            console.click("Sign in")
            console.see("Changes 1 to 5 of 5.")
            rows = shown_rows(console, "table.changes")
            assert sorted((r[0], r[1], r[2], r[4]) for r in rows) == [
                ("person0@example.com", "Updated update", "Accepted accepted", "Renamed"),
                ("person1@example.com", "Updated update", "Accepted accepted", "Renamed"),
                ("person2@example.com", "Updated update", "Accepted accepted", "Renamed"),
                ("person60@example.com", "Added add", "Accepted accepted", "First60"),
                ("person61@example.com", "Added add", "Accepted accepted", "First61"),
            ]
            # Filtered by the API: only the updates, then only accepted adds.
            console.choose("Action", "Updated")
            console.click("Show changes")
            console.see("Changes 1 to 3 of 3 (filtered).")
            assert {r[0] for r in shown_rows(console, "table.changes")} == {
                f"person{i}@example.com" for i in range(3)
            }
            console.choose("Action", "Added")
            console.choose("Outcome", "Accepted")
            console.click("Show changes")
            console.see("Changes 1 to 2 of 2 (filtered).")
            assert {r[0] for r in shown_rows(console, "table.changes")} == {
                "person60@example.com",
                "person61@example.com",
            }
            console.choose("Outcome", "Failed")
            console.click("Show changes")
            console.see("No change matches these filters.")
            no_serious_violations(console, "run changes")

            # Paged: the first run's 60 adds, 50 at a time, as the API lists them.
            console.link("vip").click()
            console.see("Export vip")
            console.go(f"#/exports/vip/runs/{first['runId']}")
            console.see("Changes 1 to 50.")
            page1 = [r[0] for r in shown_rows(console, "table.changes")]
            console.shot("run-changes", full_page=True)
            console.click("Next page")
            console.see("Changes 51 to 60 of 60.")
            page2 = [r[0] for r in shown_rows(console, "table.changes")]
            assert [*page1, *page2] == [row[0] for row in api_rows[1:]]
            assert set(page1 + page2) == {f"person{i}@example.com" for i in range(60)}
            assert console.button("Next page").get_attribute("disabled") is not None
            console.click("Previous page")
            console.see("Changes 1 to 50.")

            # Find a person: what the runs did, newest first; an unknown address is simply not found.
            console.link("vip").click()
            console.see("Find a person")
            console.type("Email address", "Person1@Example.com")
            console.click("Find")
            console.see("2 changes for Person1@Example.com, newest first.")
            history = shown_rows(console, "main .card table")
            assert [r[1:] for r in history] == [
                ["Updated update", "Accepted accepted", "–"],
                ["Added add", "Accepted accepted", "–"],
            ]
            assert [r[0].split("\n")[1] for r in history] == [second["runId"], first["runId"]]
            console.see("In the segment's newest snapshot.")
            console.see("Delivered: the export holds this person as sent to the list.")
            no_serious_violations(console, "find a person")
            console.shot("find-a-person", full_page=True)
            console.type("Email address", "nobody@example.com")
            console.field("Email address").send_keys(Keys.ENTER)  # by keyboard: Enter finds
            console.see("No run of this export sent anything about nobody@example.com.")
            console.see("Not in the segment's newest snapshot.")
            console.type("Email address", "Person1@Example.com")
            console.click("Find")
            console.link(history[0][0].split("\n")[0]).click()
            console.wait(lambda: console.driver.current_url.endswith(second["runId"]), "the run's page")
            # The address went in request bodies only: in no URL the page loaded or called.
            assert not [u for u in console.resources() if "example.com" in u.lower()]


def test_a_running_run_is_cancelled_from_its_page(
    serve: StartServe, app_env: AppEnv, ac_sandbox, segments, shots: Path, downloads: Path
):
    write_ci_snapshot(segments, "Vip", profiles(1000))  # 4 batches of 250
    hold = Fault.hold(path="/api/3/import/bulk_import")  # the first batch waits for the test
    ac_sandbox.inject(hold)
    served = serve(base_env(app_env.azurite))
    with httpx.Client(base_url=served.api, timeout=30) as api:
        connect(api, ac_sandbox.hostname)
        put_export(api, segments.container_name, trigger="manual")
        with open_console(served, shots, downloads) as console:
            console.go("#/exports/vip")
            console.type("Function key", "local-function-key")
            console.click("Sign in")
            console.click("Run now")
            assert hold.arrived is not None
            assert hold.arrived.wait(60)
            console.click("Cancel the run")
            dialog = console.wait(
                lambda: console.driver.find_element(By.CSS_SELECTOR, "dialog[open]"), "the dialog"
            )
            assert "Batches ActiveCampaign has already queued are still confirmed" in dialog.text
            # The safe choice has the focus; Escape keeps the run going.
            assert console.driver.switch_to.active_element.text == "Keep it running"
            ActionChains(console.driver).send_keys(Keys.ESCAPE).perform()
            console.wait(
                lambda: not console.driver.find_elements(By.CSS_SELECTOR, "dialog[open]"),
                "the dialog to close",
            )
            assert api.get("/exports/vip/runs").json()["runs"][0]["status"] == "running"
            console.click("Cancel the run")
            dialog = console.wait(
                lambda: console.driver.find_element(By.CSS_SELECTOR, "dialog[open]"), "the dialog"
            )
            dialog.find_element(By.XPATH, ".//button[normalize-space()='Cancel the run']").click()
            console.see("Cancel requested.")
            console.see("The run stops at its next batch boundary.")
            console.shot("run-cancelling")
            hold.release()
            console.see("The run was cancelled.", timeout=90)
            run = api.get("/exports/vip/runs").json()["runs"][0]
            assert run["status"] == "cancelled"
            assert console.driver.find_element(By.CSS_SELECTOR, "dl.facts .badge").text == "Cancelled"
            accepted = run["counts"]["accepted"]
            assert 0 < accepted < 1000
            console.see(f"Cancelled: ActiveCampaign accepted {accepted} of the 1,000 contacts to send.")
            console.shot("run-cancelled", full_page=True)
            no_serious_violations(console, "cancelled run")
            assert ac_sandbox.wait_until_idle(10)
            assert len(ac_sandbox.state.list_members(1)) == run["counts"]["accepted"]
            # Run again: it goes on from where the cancelled run stopped, and the list ends exact.
            console.click("Run again")
            console.see("ActiveCampaign accepted", timeout=90)
            runs = api.get("/exports/vip/runs").json()["runs"]
            assert [r["status"] for r in runs] == ["succeeded", "cancelled"]
            assert api.get(f"/exports/vip/runs/{runs[0]['runId']}/report").json()["resumed_from"] == accepted
    assert ac_sandbox.wait_until_idle(10)
    assert len(ac_sandbox.state.list_members(1)) == 1000
    assert sum(len(batch.contacts) for batch in ac_sandbox.state.batches()) == 1000  # nobody sent twice


def test_withdraw_is_previewed_first_and_done_from_the_preview(
    serve: StartServe, app_env: AppEnv, ac_sandbox, segments, shots: Path, downloads: Path
):
    people = [f"person{i}@example.com" for i in range(30)]
    write_ci_snapshot(segments, "Vip", profiles(30))
    served = serve(base_env(app_env.azurite))
    with httpx.Client(base_url=served.api, timeout=30) as api:
        connect(api, ac_sandbox.hostname)
        put_export(api, segments.container_name, trigger="manual")
        assert run_via_api(api, ac_sandbox)["status"] == "succeeded"
        assert ac_sandbox.wait_until_idle(10)
        # One person leaves the list on their own: a withdrawal leaves them alone.
        opt_out = httpx.post(ac_sandbox.root_url + "/__sandbox/opt-out", json={"list": 1, "email": people[0]})
        assert opt_out.status_code < 300
        batches = len(ac_sandbox.state.batches())
        with open_console(served, shots, downloads) as console:
            console.go("#/exports/vip")
            console.type("Function key", "local-function-key")
            console.click("Sign in")
            console.see("Withdraw from the list")
            # Over the removal guard, the preview says so; the page offers it again with force.
            console.click("Preview the withdrawal (dry run)")
            console.see("Withdrawal preview of export vip")
            console.see("The run failed", timeout=90)
            assert "maxRemovalShare" in console.alert_text()
            console.click("Preview again with force")
            console.see("This was a preview of a withdrawal: it would unsubscribe 29 contacts", timeout=90)
            console.see("1 person who unsubscribed on their own is left alone.")
            assert len(ac_sandbox.state.batches()) == batches  # a preview sends nothing
            console.shot("withdraw-preview", full_page=True)
            no_serious_violations(console, "withdrawal preview")
            preview_url = console.driver.current_url

            console.click("Withdraw 29 contacts")
            dialog = console.wait(
                lambda: console.driver.find_element(By.CSS_SELECTOR, "dialog[open]"), "the dialog"
            )
            assert "People who unsubscribed on their own are left alone." in dialog.text
            dialog.find_element(By.XPATH, ".//button[normalize-space()='Withdraw']").click()
            console.wait(lambda: console.driver.current_url != preview_url, "the withdrawal's page")
            console.see("Withdrawal of export vip")
            console.see("Unsubscribed 29 of 29 contacts this export had subscribed.", timeout=90)
            # Its change log lists each unsubscription, not the person who left on their own.
            console.see("Changes 1 to 29 of 29.")
            rows = shown_rows(console, "table.changes")
            assert {(r[1], r[2]) for r in rows} == {("Unsubscribed remove", "Accepted accepted")}
            assert {r[0] for r in rows} == set(people[1:])
            runs = api.get("/exports/vip/runs").json()["runs"]
            assert [(r["withdraw"], r["dryRun"], r["status"]) for r in runs[:3]] == [
                (True, False, "succeeded"),
                (True, True, "succeeded"),
                (True, True, "failed"),
            ]
            console.link("vip").click()
            console.see("withdrawal, forced; on demand")
            console.see("withdrawal, preview, forced; on demand")
    assert ac_sandbox.wait_until_idle(10)
    members = ac_sandbox.state.list_members(1)
    assert {e for e, status in members.items() if status == 1} == set()
    assert set(members) == set(people)


def test_the_export_page_shows_its_feedback_folder(
    serve: StartServe, app_env: AppEnv, ac_sandbox, segments, unique_name: str, shots: Path, downloads: Path
):
    write_ci_snapshot(segments, "Vip", profiles(5))
    served = serve(base_env(app_env.azurite))
    with httpx.Client(base_url=served.api, timeout=30) as api:
        connect(api, ac_sandbox.hostname)
        target = {"container": unique_name + "fb", "folder": "ActiveCampaign/vip"}
        put_export(api, segments.container_name, trigger="manual", feedback=target)
        assert run_via_api(api, ac_sandbox)["status"] == "succeeded"
        with open_console(served, shots, downloads) as console:
            console.go("#/exports/vip")
            console.type("Function key", "local-function-key")
            console.click("Sign in")
            console.see("Feedback folder: opt-outs and bounces")
            console.see(f"Container {target['container']}, folder ActiveCampaign/vip")
            console.see("holding 0 unsubscribed, 0 bounced, 5 subscribed")
            no_serious_violations(console, "export page with a feedback folder")
