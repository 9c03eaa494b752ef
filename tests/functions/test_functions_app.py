"""The function app as the host sees it: what it indexes, what importing it loads, its bindings.

The helpers the test_functions_* modules share are in tests/support/app.py, the fixtures in
tests/fixtures/app.py (a pytest plugin, see tests/conftest.py).
"""

from __future__ import annotations

import json

from functions import services
from shared.storage import RUNS_POISON_QUEUE, RUNS_QUEUE, SEGMENT_EVENTS_QUEUE
from tests.support.app import ROOT, built_functions, call, run_isolated

EXPECTED_FUNCTIONS = {
    "connections_list",
    "connection_item",
    "exports_list",
    "export_item",
    "export_runs",
    "export_run",
    "export_run_cancel",
    "export_run_changes",
    "export_lookup",
    "export_feedback",
    "export_run_report",
    "export_run_rejected",
    "export_run_unsubscribed",
    "connection_lists",
    "connection_fields",
    "connection_tags",
    "export_reset",
    "export_schedule",
    "export_worker",
    "export_worker_poison",
    "caller_me",
    "connection_check",
    "segment_columns",
    "console_page",
    "console_asset",
    "segment_events",
    "segment_events_poison",
}
# Served to a browser's address bar, which cannot send a function key: static files, no data.
ANONYMOUS_FUNCTIONS = {"console_page", "console_asset"}
HEAVY_MODULES = (
    "azure.identity",
    "numpy",
    "httpx",
    "shared.pipeline",
    "azure.monitor.opentelemetry",
    # issue 23: no storage SDK (nor azure-core's HTTP pipeline under it), no JSON Schema validator, no
    # HTTP client at all
    "azure.storage.blob",
    "azure.storage.queue",
    "azure.core",
    "jsonschema",
    "requests",
    "urllib3",
)
# Everything `import function_app` may load besides the standard library: the Functions library
# (with the werkzeug and markupsafe it imports) and the app's own packages (`_distutils_hack` is
# setuptools' site hook). A handler imports the rest when it needs it. Adding to this list costs every
# cold start: measure it (scripts/bench.py --cold-start) first.
MAY_LOAD = {
    "azure",
    "azure.functions",
    "werkzeug",
    "markupsafe",
    "function_app",
    "functions",
    "shared",
    "_distutils_hack",
}


def test_app_indexes_every_function_with_an_empty_environment():
    out = run_isolated(
        "import json, function_app\nprint(json.dumps(sorted(f.get_function_name() for f in function_app.app.get_functions())))"
    )
    assert set(json.loads(out.splitlines()[-1])) == EXPECTED_FUNCTIONS


def test_importing_the_app_loads_no_heavy_module():
    out = run_isolated(
        "import json, sys, function_app\n"
        f"print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))"
    )
    assert json.loads(out.splitlines()[-1]) == []


def test_importing_the_app_loads_only_the_modules_on_its_list():
    out = run_isolated(
        "import json, sys, function_app\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] not in sys.stdlib_module_names)))"
    )
    loaded = json.loads(out.splitlines()[-1])
    # _sysconfigdata_* is the standard library's own generated module, not listed as one.
    packages = {
        ".".join(m.split(".")[:2]) if m.startswith("azure.") else m.split(".")[0]
        for m in loaded
        if not m.startswith("_sysconfigdata")
    }
    assert sorted(packages - MAY_LOAD - {"__main__"}) == []


def test_the_first_call_of_every_function_in_a_fresh_process_imports_what_it_needs(azurite, unique_name):
    # Imports moved into handlers must resolve on the first call: any NameError or ImportError would
    # answer 500 (HTTP) or raise (queue, timer). Each function is called once, in a fresh interpreter.
    code = """
import json, sys, function_app
import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
results = {}
for fn in function_app.app.get_functions():
    name, user = str(fn.get_function_name()), fn.get_user_function()
    trigger = fn.get_bindings_dict()["bindings"][0]
    if trigger["type"] == "httpTrigger":
        route = trigger["route"]
        params = {p.strip("{}*"): "vip" for p in route.split("/") if p.startswith("{")}
        method = str(trigger["methods"][0].value)
        req = func.HttpRequest(method=method, url="http://localhost/api/" + route,
            headers={"Content-Type": "application/json"}, route_params=params, body=b"{}")
        results[name] = user(req).status_code
    elif trigger["type"] == "timerTrigger":
        user(TimerRequest(past_due=False))
        results[name] = "ran"
    else:
        try:
            user(QueueMessage(id="m-1", body=b"{}", dequeue_count=1))
            results[name] = "ran"
        except Exception as exc:
            results[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(results))
"""
    out = run_isolated(
        code,
        AzureWebJobsStorage=azurite,
        APP_CONTAINER=unique_name,
        RUNS_QUEUE=unique_name,
        EXPORT_SCHEDULE="0 */5 * * * *",
    )
    results = json.loads(out.splitlines()[-1])
    assert set(results) == EXPECTED_FUNCTIONS
    failed = {name: status for name, status in results.items() if isinstance(status, int) and status >= 500}
    assert failed == {}
    assert {name: r for name, r in results.items() if not isinstance(r, int)} == {
        "export_schedule": "ran",
        "export_worker": "ran",  # an invalid message is logged and dropped
        "export_worker_poison": "ran",
        "segment_events": "ran",
        "segment_events_poison": "ran",
    }


def test_bindings_are_what_the_host_needs():
    functions = built_functions()
    assert set(functions) == EXPECTED_FUNCTIONS
    for name, fn in functions.items():
        trigger = fn.get_bindings_dict()["bindings"][0]
        if trigger["type"] == "httpTrigger":
            expected = "anonymous" if name in ANONYMOUS_FUNCTIONS else "function"
            assert str(trigger["authLevel"].value) == expected, name
    timer = functions["export_schedule"].get_bindings_dict()["bindings"][0]
    assert timer["schedule"] == "%EXPORT_SCHEDULE%"
    assert timer["runOnStartup"] is False
    worker = functions["export_worker"].get_bindings_dict()["bindings"][0]
    poison = functions["export_worker_poison"].get_bindings_dict()["bindings"][0]
    assert (worker["queueName"], poison["queueName"]) == (RUNS_QUEUE, RUNS_POISON_QUEUE)
    assert worker["connection"] == poison["connection"] == "AzureWebJobsStorage"
    events = functions["segment_events"].get_bindings_dict()["bindings"][0]
    assert (events["type"], events["queueName"]) == ("queueTrigger", SEGMENT_EVENTS_QUEUE)
    assert events["connection"] == "AzureWebJobsStorage"


def test_a_missing_setting_fails_the_request_with_its_name_not_the_import(app_env):
    app_env.monkeypatch.delenv("AzureWebJobsStorage")
    services._services.cache_clear()
    resp = call("exports_list", "GET", "exports")
    assert resp.status == 500
    assert resp.body["error"]["code"] == "AppMisconfigured"
    assert "AzureWebJobsStorage" in resp.body["error"]["message"]


def test_local_settings_sample_documents_every_setting_read():
    from shared.settings import DEFAULT_EXPORT_SCHEDULE, SETTINGS_READ

    sample = json.loads((ROOT / "local.settings.sample.json").read_text())
    values = sample["Values"]
    assert set(SETTINGS_READ) <= set(values)
    assert values["EXPORT_SCHEDULE"] == DEFAULT_EXPORT_SCHEDULE
    api_doc = (ROOT / "docs" / "api.md").read_text()
    missing = [name for name in SETTINGS_READ if f"`{name}`" not in api_doc]
    assert missing == [], f"docs/api.md does not describe {missing}"


# --- building blocks for API tests --------------------------------------------------------------


def test_the_first_api_request_of_a_process_installs_the_log_redaction():
    # /api/me builds no services (where the rest of the observability is set up): its first log line
    # must already be scrubbed.
    out = run_isolated(
        "import json, logging, azure.functions as func, function_app\n"
        "from functions.api_assist import caller_me\n"
        "before = logging.getLogRecordFactory() is logging.LogRecord\n"
        "req = func.HttpRequest(method='GET', url='http://localhost/api/me', headers={}, body=b'')\n"
        "status = caller_me.build().get_user_function()(req).status_code\n"
        "record = logging.getLogRecordFactory()('x', logging.INFO, 'f', 1, 'mail %s', ('ann@example.com',), None)\n"
        "print(json.dumps([before, status, record.getMessage()]))"
    )
    before, status, message = json.loads(out.splitlines()[-1])
    assert before is True  # nothing installed it at import
    assert status == 200
    assert "ann@example.com" not in message


def test_contributors_see_the_change_logs_key_columns():
    # functions/api_reports.py writes the number down to keep numpy (shared.changes) out of the app's import.
    from functions.api_reports import CONTRIBUTOR_CHANGE_COLUMNS
    from shared.changes import CHANGE_KEY_COLUMNS

    assert len(CHANGE_KEY_COLUMNS) == CONTRIBUTOR_CHANGE_COLUMNS
