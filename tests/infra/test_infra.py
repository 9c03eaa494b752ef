"""Offline checks of infra/*.bicep: parse (pycep), scan (checkov), security properties, settings.

There is no Bicep CLI offline, so the templates are read by `pycep-parser` and scanned by
`checkov --framework bicep`, both from the separate `.venv-iac` (`make iac` builds it from
requirements-iac.txt; `make test` runs it). Each tool runs ONCE per test session (checkov takes seconds to start), in a
subprocess, and the tests assert on its JSON output. Pitfalls guarded against here:
- checkov reports a file it cannot parse as zero checks and exits 0: every .bicep file must parse
  with pycep (the same version checkov uses), checkov must report no parsing error and scan every
  file that declares a resource it has checks for.
- checkov's skips must carry a written reason.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.console import public_paths
from shared import settings as app_settings
from shared import storage as app_storage

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MODULES = INFRA / "modules"
IAC_BIN = ROOT / ".venv-iac" / "bin"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

ROLE = {
    "storage_blob_data_owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storage_blob_data_reader": "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    "storage_blob_data_contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "storage_queue_data_contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "key_vault_secrets_officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "monitoring_metrics_publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "storage_queue_data_message_sender": "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
}

# Settings of shared.settings.SETTINGS_READ the template deliberately does not set, with the reason.
NOT_SET_ON_PURPOSE: dict[str, str] = {
    "APP_CONTAINER": "its default is the container the template creates (appContainerName, checked below)",
    "RUNS_QUEUE": "its default is the queue the template creates and the worker's trigger names (runsQueueName)",
    "ALLOWED_ORIGINS": "empty by default: only the app's own origin may change data (docs/api.md)",
}

# App settings the template sets that the app's code does not read: read by the Functions host or
# the platform.
HOST_SETTINGS: dict[str, str] = {
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": (
        "read by the Functions host: Entra ID (managed identity) authentication for Application "
        "Insights ingestion, since local auth is disabled"
    ),
}
# Identity-based connection settings (`<CONNECTION>__<suffix>`) for the two storage connections:
# read by shared/settings.py (URIs, clientId) and by the Functions host (credential).
IDENTITY_CONNECTIONS = {
    "AzureWebJobsStorage": {"blobServiceUri", "queueServiceUri", "credential", "clientId"},
    "SEGMENTS_STORAGE": {"blobServiceUri", "credential", "clientId"},
}
# Not valid on Flex Consumption (the runtime lives in functionAppConfig; deployment is to a blob
# container), or secrets that identity-based connections replace.
FORBIDDEN_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_EXTENSION_VERSION",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "AzureWebJobsStorage",
    "SEGMENTS_STORAGE",
    "APPINSIGHTS_INSTRUMENTATIONKEY",
}

# checkov checks that crash (an exception inside checkov, logged as "Failed to run check") and why
# that is acceptable. Any other crash fails the test: a check that did not run is not a pass.
KNOWN_CHECKOV_CRASHES: dict[tuple[str, str], str] = {
    ("CKV_AZURE_70", "Microsoft.Web/sites/config.authSettings"): (
        "checkov 3.3.30 expects `properties` at the top of a conditional (if) sites/config resource; "
        "HTTPS-only is asserted by test_function_app_is_flex_python_311_https_only instead"
    ),
}

_PARSE_SCRIPT = """
import json, sys
from pathlib import Path
from pycep import BicepParser
parser = BicepParser()
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = {"ok": True, "json": parser.parse(file_path=Path(name))}
    except Exception as exc:  # report every file, not just the first failure
        out[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(out, default=str))
"""


def _iac_tool(name: str) -> Path:
    tool = IAC_BIN / name
    if not tool.exists():
        pytest.fail(
            f"{tool.relative_to(ROOT)} is missing: the IaC checkers live in a separate venv; "
            "run `make iac` (or: python3.11 -m venv .venv-iac && .venv-iac/bin/python -m pip install "
            "-r requirements-iac.txt)"
        )
    return tool


@pytest.fixture(scope="module")
def checkov_run() -> Iterator[subprocess.Popen[str]]:
    """Start checkov at once (it is slow) so it runs while pycep parses; tests wait for it."""
    proc = subprocess.Popen(
        [
            str(_iac_tool("checkov")),
            "--directory",
            str(INFRA),
            "--framework",
            "bicep",
            "--skip-download",
            "--output",
            "json",
            "--compact",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def checkov(checkov_run: subprocess.Popen[str]) -> dict[str, Any]:
    stdout, stderr = checkov_run.communicate(timeout=240)
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON report (exit {checkov_run.returncode}):\n{stderr[-3000:]}")
    if isinstance(report, list):  # one report per framework; only bicep was asked for
        (report,) = [r for r in report if r.get("check_type") == "bicep"]
    assert isinstance(report, dict), report
    report["_stderr"] = stderr
    report["_returncode"] = checkov_run.returncode
    return report


@pytest.fixture(scope="module")
def parsed(checkov_run: subprocess.Popen[str]) -> dict[str, dict[str, Any]]:
    """pycep's JSON of every .bicep file, by path relative to the repo root."""
    names = [str(p.relative_to(ROOT)) for p in BICEP_FILES]
    result = subprocess.run(
        [str(_iac_tool("python")), "-c", _PARSE_SCRIPT, *names],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out: dict[str, dict[str, Any]] = json.loads(result.stdout)
    return out


@pytest.fixture(scope="module")
def bicep(parsed: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    failures = {name: r["error"] for name, r in parsed.items() if not r["ok"]}
    if failures:
        pytest.fail(
            "Bicep files pycep cannot parse:\n" + "\n".join(f"{k}: {v[:500]}" for k, v in failures.items())
        )
    return {name: r["json"] for name, r in parsed.items()}


# --- helpers over pycep's JSON ---------------------------------------------------------------


def _body(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource body; conditional (`if`) resources nest it under config.config."""
    config: dict[str, Any] = resource["config"]
    if "condition" in config and "config" in config:
        inner: dict[str, Any] = config["config"]
        return inner
    return config


def _resources(bicep: dict[str, dict[str, Any]], rtype: str) -> dict[str, dict[str, Any]]:
    """Declared (not `existing`) resources of a type: '<file>:<symbol>' -> resource."""
    found = {}
    for name, doc in bicep.items():
        for symbol, res in doc.get("resources", {}).items():
            if res["type"] == rtype and not res["existing"]:
                found[f"{name}:{symbol}"] = res
    return found


def _get_ci(obj: dict[str, Any], key: str) -> Any:
    """ARM property names are case-insensitive (e.g. DisableLocalAuth)."""
    matches = [v for k, v in obj.items() if k.lower() == key.lower()]
    assert len(matches) == 1, f"{key} not set exactly once in {sorted(obj)}"
    return matches[0]


def _module(bicep: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    return bicep[f"infra/modules/{name}"]


def _main(bicep: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return bicep["infra/main.bicep"]


def _app_settings(bicep: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (site,) = _resources(bicep, "Microsoft.Web/sites").values()
    settings = _body(site)["properties"]["siteConfig"]["appSettings"]
    names = [s["name"] for s in settings]
    assert len(names) == len(set(names)), f"duplicate app settings: {names}"
    return {s["name"]: s["value"] for s in settings}


def _host_function_timeout_seconds() -> int:
    host = json.loads((ROOT / "host.json").read_text())
    hours, minutes, seconds = (int(x) for x in host["functionTimeout"].split(":"))
    return hours * 3600 + minutes * 60 + seconds


def test_host_logs_successful_invocations_to_the_requests_table():
    # Host.Results at Error kept successful invocations out of `requests`: no success rate, and the
    # failed share of invocations could not be computed.
    levels = json.loads((ROOT / "host.json").read_text())["logging"]["logLevel"]
    assert levels["Host.Results"] in ("Information", "Debug", "Trace")


def test_the_host_hands_queue_messages_over_undecoded_and_polls_at_least_every_10_s():
    # Microsoft's pages disagree on whether Event Grid writes storage-queue messages base64-encoded
    # or as plain JSON. With the host's default base64 decoding, plain JSON would fail to decode and
    # go to the poison queue before the function saw it; with "none" the function gets the text as it
    # is and reads both (functions/messages.queue_text).
    queues = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    assert queues["messageEncoding"] == "none"
    # An idle queue is polled at most this far apart (the default backs off to a minute): an event,
    # then the run message it queues, are each picked up within 10 s, so a refresh starts its run
    # within 30 s on Azure (docs/deploy.md says what the 2 s of host.json cost).
    hours, minutes, seconds = (int(x) for x in queues["maxPollingInterval"].split(":"))
    assert hours * 3600 + minutes * 60 + seconds <= 10


# --- parsing and checkov ---------------------------------------------------------------------


def test_infra_has_main_and_one_module_per_concern():
    names = {p.name for p in MODULES.glob("*.bicep")}
    assert (INFRA / "main.bicep").exists()
    for concern in ("identity", "storage", "keyvault", "monitoring", "functionapp", "rbac", "alerts"):
        assert f"{concern}.bicep" in names


def test_every_bicep_file_parses_with_pycep(parsed):
    assert set(parsed) == {str(p.relative_to(ROOT)) for p in BICEP_FILES}
    failures = {name: r["error"][:400] for name, r in parsed.items() if not r["ok"]}
    assert not failures, failures


def test_no_registry_modules(bicep):
    """checkov cannot scan inside registry (br:) or template-spec (ts:) modules."""
    for name, doc in bicep.items():
        for symbol, module in doc.get("modules", {}).items():
            assert module["type"] == "local", f"{name}: module {symbol} is {module['type']}, not a local file"
            assert (INFRA / Path(name).relative_to("infra").parent / module["detail"]["path"]).exists()


def test_checkov_parsed_everything_and_ran_checks(checkov):
    summary = checkov["summary"]
    assert summary["parsing_errors"] == 0, checkov["_stderr"][-3000:]
    assert summary["passed"] > 0
    assert summary["resource_count"] > 0
    # A file checkov could not read would be silently missing from the results.
    results = checkov["results"]
    scanned = {
        c["file_path"].lstrip("/")
        for key in ("passed_checks", "failed_checks", "skipped_checks")
        for c in results.get(key, [])
    }
    # (main.bicep declares only modules, on which checkov has no checks.)
    for must in ("storage.bicep", "segment-storage.bicep", "keyvault.bicep", "functionapp.bicep"):
        assert any(s.endswith(must) for s in scanned), (
            f"checkov reported no check on {must}: {sorted(scanned)}"
        )
    storage_checks = {
        c["check_id"]
        for key in ("passed_checks", "skipped_checks")
        for c in results.get(key, [])
        if c["resource"].startswith("Microsoft.Storage/storageAccounts.")
    }
    assert {"CKV_AZURE_3", "CKV_AZURE_44"} <= storage_checks  # https only, TLS 1.2


def test_checkov_reports_no_failed_check(checkov):
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in checkov["results"].get("failed_checks", [])
    ]
    assert not failed, "\n".join(failed)
    assert checkov["summary"]["failed"] == 0
    assert checkov["_returncode"] == 0


def test_every_checkov_skip_has_a_written_reason(checkov):
    skipped = checkov["results"].get("skipped_checks", [])
    for c in skipped:
        reason = (c.get("check_result") or {}).get("suppress_comment", "")
        assert reason != "No comment provided", (c["check_id"], c["resource"])
        assert len(reason.strip()) >= 20, (
            c["check_id"],
            c["resource"],
            reason,
        )


def test_the_ftp_check_is_skipped_because_flex_rejects_ftps_state(checkov):
    (skip,) = [
        c
        for c in checkov["results"].get("skipped_checks", [])
        if c["check_id"] == "CKV_AZURE_78" and c["resource"] == "Microsoft.Web/sites.site"
    ]
    reason = skip["check_result"]["suppress_comment"]
    assert "51021" in reason
    assert "basicPublishingCredentialsPolicies" in reason


def test_checkov_checks_did_not_crash_unnoticed(checkov):
    crashes = set(re.findall(r"Failed to run check (\S+) on \S+?:(\S+)", checkov["_stderr"]))
    unknown = crashes - set(KNOWN_CHECKOV_CRASHES)
    assert not unknown, f"checkov checks crashed (not run): {sorted(unknown)}"


# --- security properties ---------------------------------------------------------------------


def test_storage_accounts_are_hardened(bicep):
    accounts = _resources(bicep, "Microsoft.Storage/storageAccounts")
    assert set(accounts) == {
        "infra/modules/storage.bicep:account",
        "infra/modules/segment-storage.bicep:account",
    }
    for name, res in accounts.items():
        props = _body(res)["properties"]
        assert props["allowSharedKeyAccess"] is False, name
        assert props["minimumTlsVersion"] == "TLS1_2", name
        assert props["allowBlobPublicAccess"] is False, name
        assert props["supportsHttpsTrafficOnly"] is True, name
        assert props["defaultToOAuthAuthentication"] is True, name
    for name, res in _resources(bicep, "Microsoft.Storage/storageAccounts/blobServices/containers").items():
        assert _body(res)["properties"]["publicAccess"] == "None", name


def test_app_storage_has_the_container_and_queues_the_code_uses(bicep):
    storage = _module(bicep, "storage.bicep")
    assert storage["parameters"]["appContainerName"]["default"] == app_storage.APP_CONTAINER
    assert storage["parameters"]["runsQueueName"]["default"] == app_storage.RUNS_QUEUE
    assert app_storage.RUNS_POISON_QUEUE == app_storage.RUNS_QUEUE + "-poison"
    names = {
        _body(r)["name"]
        for key, r in _resources(bicep, "Microsoft.Storage/storageAccounts/queueServices/queues").items()
        if key.startswith("infra/modules/storage.bicep")
    }
    assert names == {"runsQueueName", "${runsQueueName}-poison", "eventsQueueName"}
    assert storage["parameters"]["eventsQueueName"]["default"] == app_storage.SEGMENT_EVENTS_QUEUE
    containers = {
        _body(r)["name"]
        for key, r in _resources(bicep, "Microsoft.Storage/storageAccounts/blobServices/containers").items()
        if key.startswith("infra/modules/storage.bicep")
    }
    assert containers == {"appContainerName", "deploymentContainerName"}
    # main passes no override: the defaults above are what gets deployed.
    assert "appContainerName" not in _body(_main(bicep)["modules"]["storage"])["params"]
    assert "runsQueueName" not in _body(_main(bicep)["modules"]["storage"])["params"]


def test_key_vault_uses_rbac_soft_delete_and_purge_protection(bicep):
    (vault,) = _resources(bicep, "Microsoft.KeyVault/vaults").values()
    props = _body(vault)["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True
    assert "accessPolicies" not in props


def test_monitoring_has_local_auth_disabled(bicep):
    (insights,) = _resources(bicep, "Microsoft.Insights/components").values()
    props = _body(insights)["properties"]
    assert _get_ci(props, "disableLocalAuth") is True
    assert _get_ci(props, "WorkspaceResourceId")
    (workspace,) = _resources(bicep, "Microsoft.OperationalInsights/workspaces").values()
    assert _body(workspace)["properties"]["features"]["disableLocalAuth"] is True
    settings = _app_settings(bicep)
    assert (
        settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
        == "ClientId=${identityClientId};Authorization=AAD"
    )


def test_function_app_is_flex_python_311_https_only(bicep):
    (plan,) = _resources(bicep, "Microsoft.Web/serverfarms").values()
    plan_body = _body(plan)
    assert plan_body["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan_body["properties"]["reserved"] is True  # Linux
    (site,) = _resources(bicep, "Microsoft.Web/sites").values()
    body = _body(site)
    assert "linux" in body["kind"]
    assert body["identity"]["type"] == "UserAssigned"
    props = body["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    # Flex Consumption rejects ftpsState in newer regions (ARM error 51021); FTP is off through the
    # basicPublishingCredentialsPolicies below instead.
    assert "ftpsState" not in props["siteConfig"]
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"]["type"] == "UserAssignedIdentity"
    assert storage["authentication"]["userAssignedIdentityResourceId"] == "identityId"
    policies = {
        _body(r)["name"]: _body(r)["properties"]["allow"]
        for r in _resources(bicep, "Microsoft.Web/sites/basicPublishingCredentialsPolicies").values()
    }
    assert policies == {"ftp": False, "scm": False}


def test_entra_authentication_is_deployed_only_for_auth_mode_entra(bicep):
    (auth,) = _resources(bicep, "Microsoft.Web/sites/config").values()
    condition = auth["config"]["condition"]["operator"]
    assert condition == {"type": "equals", "operands": {"operand_1": "authMode", "operand_2": "entra"}}
    body = _body(auth)
    assert body["name"] == "authsettingsV2"
    props = body["properties"]
    assert props["platform"]["enabled"] is True
    assert props["globalValidation"] == {
        "requireAuthentication": True,
        "unauthenticatedClientAction": "Return401",
        # Unsigned browsers get the console's page (no data) with its sign-in link, nothing else.
        "excludedPaths": public_paths(),
    }
    assert props["httpSettings"]["requireHttps"] is True
    aad = props["identityProviders"]["azureActiveDirectory"]
    assert aad["enabled"] is True
    assert aad["registration"]["clientId"] == "entraClientId"
    main_params = _main(bicep)["parameters"]
    allowed = next(d["argument"] for d in main_params["authMode"]["decorators"] if d["type"] == "allowed")
    assert sorted(allowed) == ["entra", "key"]
    assert main_params["authMode"]["default"] == "key"
    assert {"entraClientId", "entraTenantId"} <= set(main_params)


def _role_assignments(bicep: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for key, res in _resources(bicep, "Microsoft.Authorization/roleAssignments").items():
        file_name = key.split(":")[0]
        variables = bicep[file_name].get("variables", {})
        body = _body(res)
        role_ref = body["properties"]["roleDefinitionId"]["function"]
        assert role_ref["type"] == "subscription_resource_id", key
        assert role_ref["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions", key
        role_var = role_ref["parameters"]["resource_name_1"]
        guid = body["name"]["function"]
        assert guid["type"] == "guid", key
        # name: guid(<scope>.id, <principal>, <role id>)
        assert guid["parameters"]["base_string"]["operator"]["operands"] == {
            "operand_1": body["scope"],
            "operand_2": "id",
        }, key
        assert guid["parameters"]["extra_string_1"] == body["properties"]["principalId"], key
        assert guid["parameters"]["extra_string_2"] == role_var, key
        out.append(
            {
                "key": key,
                "file": file_name.removeprefix("infra/modules/"),
                "scope": body["scope"],
                "role": variables[role_var]["value"],
                "principal": body["properties"]["principalId"],
                "principal_type": body["properties"]["principalType"],
                "conditional": "condition" in res["config"],
            }
        )
    return out


def test_identity_roles_are_least_privilege(bicep):
    identity = {
        (a["file"], a["scope"], a["role"])
        for a in _role_assignments(bicep)
        if a["principal"] == "principalId"
    }
    assert identity == {
        ("rbac.bicep", "storage", ROLE["storage_blob_data_owner"]),
        ("rbac.bicep", "storage", ROLE["storage_queue_data_contributor"]),
        ("rbac.bicep", "vault", ROLE["key_vault_secrets_officer"]),
        ("rbac.bicep", "appInsights", ROLE["monitoring_metrics_publisher"]),
        ("segment-rbac.bicep", "account", ROLE["storage_blob_data_reader"]),
        # Issue 26: write access to the feedback container only, and only when one is named.
        ("segment-rbac.bicep", "feedbackContainer", ROLE["storage_blob_data_contributor"]),
    }
    for a in _role_assignments(bicep):
        if a["principal"] == "principalId":
            assert a["principal_type"] == "ServicePrincipal", a
            assert a["conditional"] == (a["scope"] == "feedbackContainer"), a


def test_segment_storage_is_read_only_for_the_app(bicep):
    segment = [
        a for a in _role_assignments(bicep) if a["file"] in ("segment-rbac.bicep", "segment-storage.bicep")
    ]
    for a in segment:
        if a["principal"] == "principalId" and a["scope"] == "feedbackContainer":
            # The feedback folder (issue 26): a container, never the account, never the segments'.
            assert a["role"] == ROLE["storage_blob_data_contributor"], a
            assert a["conditional"], a
        elif a["principal"] == "principalId":
            assert a["role"] == ROLE["storage_blob_data_reader"], a
        else:  # the deployer, to upload test snapshots: optional and never the app
            assert a["principal"] == "deployerPrincipalId", a
            assert a["conditional"], a
    rbac = _module(bicep, "segment-rbac.bicep")
    assert rbac["resources"]["account"]["existing"] is True
    module = _body(_main(bicep)["modules"]["segmentRbac"])
    assert module["params"]["principalId"] == _body(_main(bicep)["modules"]["rbac"])["params"]["principalId"]
    assert module["scope"]["function"]["type"] == "resource_group"
    assert _app_settings(bicep)["SEGMENTS_STORAGE__blobServiceUri"] == "segmentsBlobEndpoint"


def test_deployer_roles_are_optional_and_limited(bicep):
    deployer = {
        (a["file"], a["role"], a["conditional"])
        for a in _role_assignments(bicep)
        if a["principal"] not in ("principalId", "topicPrincipalId")
    }
    assert deployer == {
        ("rbac.bicep", ROLE["key_vault_secrets_officer"], True),
        ("segment-storage.bicep", ROLE["storage_blob_data_contributor"], True),
    }


def test_no_other_role_id_or_key_appears_in_the_templates():
    allowed = set(ROLE.values())
    guid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
    for path in BICEP_FILES:
        text = path.read_text()
        assert set(guid.findall(text)) <= allowed, path
        for secret_source in ("listKeys(", "listkeys(", "AccountKey=", "InstrumentationKey="):
            assert secret_source not in text, (path, secret_source)


def _dotted(expr: Any) -> Any:
    """`a.b.c` for pycep's nested property accessors; anything else unchanged."""
    if isinstance(expr, dict) and expr.get("operator", {}).get("type") == "property_accessor":
        operands = expr["operator"]["operands"]
        return f"{_dotted(operands['operand_1'])}.{_dotted(operands['operand_2'])}"
    return expr


def test_refresh_events_reach_the_queue_with_an_identity_and_only_for_segment_blobs(bicep):
    (topic,) = _resources(bicep, "Microsoft.EventGrid/systemTopics").values()
    body = _body(topic)
    assert body["identity"] == {"type": "SystemAssigned"}
    assert body["properties"]["topicType"] == "Microsoft.Storage.StorageAccounts"
    assert _dotted(body["properties"]["source"]) == "account.id"
    assert _module(bicep, "events.bicep")["resources"]["account"]["existing"] is True

    (subscription,) = _resources(bicep, "Microsoft.EventGrid/systemTopics/eventSubscriptions").values()
    assert subscription["config"]["loop_type"]["detail"] == {
        "item_name": "container",
        "array_name": "containers",
    }
    props = _body(subscription)["properties"]
    assert props["eventDeliverySchema"] == "EventGridSchema"  # what shared/blobevents.py parses
    assert "destination" not in props  # only identity-based delivery: no keys, no webhook
    delivery = props["deliveryWithResourceIdentity"]
    assert delivery["identity"] == {"type": "SystemAssigned"}
    assert delivery["destination"]["endpointType"] == "StorageQueue"
    assert delivery["destination"]["properties"]["queueName"] == "queueName"
    flt = props["filter"]
    assert flt["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert flt["subjectBeginsWith"] == "/blobServices/default/containers/${container}/blobs/"
    filters = {f["key"]: f for f in flt["advancedFilters"]}
    assert filters["subject"]["operatorType"] == "StringEndsWith"
    assert set(filters["subject"]["values"]) == {"/model.json", ".csv"}
    assert filters["data.api"]["operatorType"] == "StringIn"
    assert set(filters["data.api"]["values"]) == {
        "PutBlob",
        "PutBlockList",
        "CopyBlob",
        "FlushWithClose",
        "SftpCommit",
    }

    main = _main(bicep)["modules"]
    for name in ("eventsTopic", "eventsRbac", "eventsSubscriptions"):
        assert main[name]["config"]["condition"] == "refreshEvents", name
    rbac = _body(main["eventsRbac"])["params"]
    assert _dotted(rbac["queueName"]) == "storage.outputs.eventsQueueName"
    assert _dotted(rbac["topicPrincipalId"]) == "eventsTopic.outputs.principalId"
    subs = _body(main["eventsSubscriptions"])
    assert _dotted(subs["params"]["queueName"]) == "storage.outputs.eventsQueueName"
    assert subs["params"]["containers"] == "segmentContainers"
    assert "eventsRbac" in subs["dependsOn"]  # deliveries need the role first
    for module in ("eventsTopic", "eventsSubscriptions"):
        assert _body(main[module])["scope"]["function"]["type"] == "resource_group"


def test_event_grid_may_only_add_messages_to_the_event_queue(bicep):
    topic_roles = [a for a in _role_assignments(bicep) if a["principal"] == "topicPrincipalId"]
    assert [(a["file"], a["scope"], a["role"]) for a in topic_roles] == [
        ("events-rbac.bicep", "queue", ROLE["storage_queue_data_message_sender"])
    ]
    queue = _module(bicep, "events-rbac.bicep")["resources"]["queue"]
    assert queue["existing"] is True
    assert queue["type"] == "Microsoft.Storage/storageAccounts/queueServices/queues"


# --- app settings ----------------------------------------------------------------------------


def test_every_setting_the_code_reads_is_set_by_the_template(bicep):
    settings = set(_app_settings(bicep))
    missing = []
    for name in app_settings.SETTINGS_READ:
        if name in NOT_SET_ON_PURPOSE:
            continue
        if name in IDENTITY_CONNECTIONS:
            needed = {f"{name}__{suffix}" for suffix in IDENTITY_CONNECTIONS[name]}
            missing.extend(sorted(needed - settings))
        elif name not in settings:
            missing.append(name)
    assert not missing, f"settings read by shared/settings.py but not set in functionapp.bicep: {missing}"
    assert not set(NOT_SET_ON_PURPOSE) - set(app_settings.SETTINGS_READ)


def test_every_setting_the_template_sets_is_read_or_is_a_host_setting(bicep):
    unexplained = []
    for name in _app_settings(bicep):
        if name in app_settings.SETTINGS_READ or name in HOST_SETTINGS:
            continue
        connection, _, suffix = name.partition("__")
        if suffix and suffix in IDENTITY_CONNECTIONS.get(connection, set()):
            assert connection in app_settings.SETTINGS_READ
            continue
        unexplained.append(name)
    assert not unexplained, f"app settings nobody reads: {unexplained}"
    assert not FORBIDDEN_SETTINGS & set(_app_settings(bicep))


def test_identity_connections_use_the_user_assigned_identity(bicep):
    settings = _app_settings(bicep)
    for connection in IDENTITY_CONNECTIONS:
        assert settings[f"{connection}__credential"] == "managedidentity"
        assert settings[f"{connection}__clientId"] == "identityClientId"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert settings["KEY_VAULT_URL"] == "keyVaultUri"


def test_defaults_match_the_code_and_the_run_budget_fits_the_timeout(bicep):
    params = _main(bicep)["parameters"]
    assert params["exportSchedule"]["default"] == app_settings.DEFAULT_EXPORT_SCHEDULE
    assert float(params["requestsPerSecond"]["default"]) == app_settings.DEFAULT_REQUESTS_PER_SECOND
    assert float(params["bulkImportsPerMinute"]["default"]) == app_settings.DEFAULT_BULK_IMPORTS_PER_MINUTE
    assert float(params["requestShare"]["default"]) == app_settings.DEFAULT_REQUEST_SHARE
    assert float(params["secretCacheSeconds"]["default"]) == app_settings.DEFAULT_SECRET_CACHE_SECONDS
    timeout = _host_function_timeout_seconds()
    budget = params["runTimeBudgetSeconds"]
    max_value = next(d["argument"] for d in budget["decorators"] if d["type"] == "max_value")
    assert budget["default"] < timeout
    assert max_value < timeout
    assert budget["default"] == app_settings.DEFAULT_RUN_TIME_BUDGET_SECONDS
    fn_budget = _module(bicep, "functionapp.bicep")["parameters"]["runTimeBudgetSeconds"]
    assert next(d["argument"] for d in fn_budget["decorators"] if d["type"] == "max_value") < timeout


# --- wiring (what `bicep build` would catch) ---------------------------------------------------


def test_modules_get_exactly_their_parameters(bicep):
    for symbol, module in _main(bicep)["modules"].items():
        target = bicep[f"infra/{module['detail']['path']}"]
        declared = target["parameters"]
        passed = set(_body(module)["params"])
        assert passed <= set(declared), f"{symbol}: unknown params {passed - set(declared)}"
        required = {name for name, p in declared.items() if p.get("default") is None}
        assert required <= passed, f"{symbol}: missing params {required - passed}"


def test_parameters_file_matches_main(bicep):
    doc = json.loads((INFRA / "main.parameters.json").read_text())
    params = _main(bicep)["parameters"]
    assert set(doc["parameters"]) <= set(params)
    for name, value in doc["parameters"].items():
        default = params[name]["default"]
        if isinstance(default, str | int | bool):
            assert value["value"] == default, name


def test_outputs(bicep):
    outputs = _main(bicep)["outputs"]
    assert {"functionAppName", "functionAppUrl", "keyVaultUri"} <= set(outputs)


_QUERY_TABLES = {"customMetrics", "requests"}
# Fields of the host's `requests` table the rules read (Host.Results at Information fills it).
_REQUEST_FIELDS = {"success", "name"}


def _alert_queries(bicep: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each rule's name -> its query text, resolved from the rules variable of alerts.bicep."""
    alerts = _module(bicep, "alerts.bicep")
    variables = alerts["variables"]
    return {rule["name"]: variables[rule["query"]]["value"] for rule in variables["rules"]["value"]}


def _fields_read(query: str) -> tuple[set[str], dict[str, set[str]], set[str]]:
    """(tables, {metric name: customDimensions keys}, other `requests` fields) a query reads."""
    tables = set(re.findall(r"(?:^|[;(|]\s*|union\s+|let\s+\w+\s*=\s*)([A-Za-z]+)\s*\|", query))
    dims_by_metric: dict[str, set[str]] = {}
    for part in re.split(r";", query):
        if "customMetrics" not in part:
            continue
        names = set(re.findall(r'name\s*==\s*"([^"]+)"', part))
        for group in re.findall(r"name\s+in\s*\(([^)]*)\)", part):
            names |= set(re.findall(r'"([^"]+)"', group))
        dims = set(re.findall(r'customDimensions\["([^"]+)"\]', part))
        for name in names:
            dims_by_metric.setdefault(name, set()).update(dims)
    request_fields = set(re.findall(r"requests\s*\|\s*where\s+(\w+)", query))
    return tables, dims_by_metric, request_fields


def test_every_field_an_alert_reads_is_emitted_by_the_code(bicep):
    """Like the settings cross-check: a rule reading a metric or dimension nobody emits never fires."""
    from shared import telemetry

    queries = _alert_queries(bicep)
    assert set(queries) == {
        "${namePrefix}-failed-runs",
        "${namePrefix}-bad-share",
        "${namePrefix}-stale-export",
        "${namePrefix}-poison-messages",
    }
    read_anything: set[str] = set()
    for rule, query in queries.items():
        tables, dims_by_metric, request_fields = _fields_read(query)
        assert tables, rule
        assert tables <= _QUERY_TABLES, (rule, tables)
        if "customMetrics" in tables:
            assert dims_by_metric, f"{rule} reads customMetrics without naming a metric"
        for metric, dims in dims_by_metric.items():
            assert metric in telemetry.EMITTED, f"{rule} reads metric {metric!r}, which the app never emits"
            assert dims <= telemetry.EMITTED[metric], (
                f"{rule} reads {dims - telemetry.EMITTED[metric]} of {metric}"
            )
            read_anything.add(metric)
        assert request_fields <= _REQUEST_FIELDS, (rule, request_fields)
    # And the other way round: the metrics made for alerts are read by one.
    assert {
        telemetry.DURATION_HISTOGRAM,
        telemetry.REJECTED_SHARE_HISTOGRAM,
        telemetry.FAILED_SHARE_HISTOGRAM,
        telemetry.HOURS_SINCE_SUCCESS_HISTOGRAM,
    } <= read_anything


def test_the_poison_alert_counts_the_functions_that_read_the_poison_queues(bicep):
    # Any message in export-runs-poison or segment-events-poison is one invocation of the function
    # reading that queue: the rule must name exactly those functions, as the app registers them.
    from shared.storage import RUNS_POISON_QUEUE, SEGMENT_EVENTS_POISON_QUEUE
    from tests.support.app import built_functions

    query = _alert_queries(bicep)["${namePrefix}-poison-messages"]
    named = set(re.findall(r'"([a-z_]+)"', re.search(r"name in \(([^)]*)\)", query).group(1)))  # type: ignore[union-attr]
    readers = {
        str(name): fn.get_bindings_dict()["bindings"][0]["queueName"]
        for name, fn in built_functions().items()
        if fn.get_bindings_dict()["bindings"][0]["type"] == "queueTrigger"
        and fn.get_bindings_dict()["bindings"][0]["queueName"].endswith("-poison")
    }
    assert set(readers.values()) == {RUNS_POISON_QUEUE, SEGMENT_EVENTS_POISON_QUEUE}
    assert named == set(readers)
    assert query.endswith("| summarize messages = count()")


def test_the_field_extraction_sees_what_a_query_reads():
    # The cross-check is only as good as its parser: show it on a query with every construct.
    query = (
        'let a = customMetrics | where name == "m1" and tostring(customDimensions["d1"]) == "x"; '
        "let b = requests | where success == false; "
        'customMetrics | where name in ("m2", "m3") | summarize by tostring(customDimensions["d2"])'
    )
    tables, dims, request_fields = _fields_read(query)
    assert tables == {"customMetrics", "requests"}
    assert dims == {"m1": {"d1"}, "m2": {"d2"}, "m3": {"d2"}}
    assert request_fields == {"success"}


def test_alert_rules_thresholds_and_the_one_notification_parameter(bicep):
    alerts = _module(bicep, "alerts.bicep")
    (rules,) = _resources(bicep, "Microsoft.Insights/scheduledQueryRules").values()
    assert rules["config"]["loop_type"]["detail"]["array_name"] == "rules"
    props = _body(rules)["properties"]
    assert props["scopes"] == ["appInsightsId"]
    queries = _alert_queries(bicep)
    assert queries["${namePrefix}-bad-share"].endswith("| where worst * 100 > ${maxBadSharePercent}")
    assert queries["${namePrefix}-stale-export"].endswith("| where hours > ${staleAfterHours}")
    assert '"failed"' in queries["${namePrefix}-failed-runs"]
    params = alerts["parameters"]
    assert params["maxBadSharePercent"]["default"] == 10
    assert params["staleAfterHours"]["default"] == 24
    assert any(d["type"] == "secure" for d in params["notify"]["decorators"])
    (group,) = _resources(bicep, "Microsoft.Insights/actionGroups").values()
    assert group["config"]["condition"] == "notifies"
    receivers = _body(group)["properties"]
    assert receivers["emailReceivers"]["loop_type"]["detail"]["array_name"] == "emails"
    main = _main(bicep)
    assert "alertActionGroupId" not in main["parameters"]
    assert any(d["type"] == "secure" for d in main["parameters"]["alertNotify"]["decorators"])
    passed = _body(main["modules"]["alerts"])["params"]
    assert passed["notify"] == "alertNotify"
    assert (passed["maxBadSharePercent"], passed["staleAfterHours"]) == (
        "alertMaxBadSharePercent",
        "alertStaleAfterHours",
    )


def test_deploy_script_hands_alert_recipients_over_in_a_file_not_on_the_command_line(fake_az):
    env, log = fake_az
    webhook = "https://hooks.example.com/services/T000/B000/secret-token-123"
    env["ALERT_WEBHOOK_URL"] = webhook
    result = _deploy(env, "-g", "rg", "--no-code", "--alert-email", "ops@example.com,oncall@example.com")
    assert result.returncode == 0, result.stderr
    calls = _az_calls(log)
    for call in calls:
        assert webhook not in " ".join(call["args"])
    assert webhook not in result.stdout + result.stderr
    (deploy,) = [c for c in calls if c["args"][:3] == ["deployment", "group", "create"]]
    assert deploy["alert_params"]["parameters"]["alertNotify"]["value"] == {
        "emails": ["ops@example.com", "oncall@example.com"],
        "webhookUrl": webhook,
    }
    bare = _deploy(env | {"ALERT_WEBHOOK_URL": ""}, "-g", "rg", "--no-code")
    assert bare.returncode == 0, bare.stderr
    (plain,) = [c for c in _az_calls(log)[len(calls) :] if c["args"][:3] == ["deployment", "group", "create"]]
    assert plain["alert_params"]["parameters"]["alertNotify"]["value"] == {}
    refused = _deploy(env, "-g", "rg", "--alert-email", "not-an-address")
    assert refused.returncode != 0
    assert "--alert-email" in refused.stderr


# --- scripts/deploy.sh, against a stand-in `az` ------------------------------------------------

DEPLOY = ROOT / "scripts" / "deploy.sh"
FAKE_KEY = "fake-ac-key-0123456789abcdef"
_FAKE_AZ = """#!{python}
import json, os, shutil, sys
from pathlib import Path
log = Path(os.environ["FAKE_AZ_LOG"])
args = sys.argv[1:]
entry = {{"args": args}}
if "--file" in args and args[args.index("--file") + 1] == "/dev/stdin":
    entry["stdin"] = sys.stdin.read()
if "--src" in args:
    shutil.copy(args[args.index("--src") + 1], log.parent / "package.zip")
for arg in args:  # parameter files vanish with the script's temp folder: keep what they said
    if arg.startswith("@") and arg.endswith("alert-parameters.json"):
        entry["alert_params"] = json.loads(Path(arg[1:]).read_text())
with log.open("a") as f:
    f.write(json.dumps(entry) + "\\n")
joined = " ".join(args)
outputs = {{"functionAppName": "func-acexp-x", "functionAppUrl": "https://func-acexp-x.example",
           "keyVaultName": "kv-acexp-x", "segmentStorageAccountName": "stacexpsegx"}}
if joined.startswith("account show --query user.type"):
    print("user")
elif joined.startswith("ad signed-in-user show"):
    print("00000000-0000-0000-0000-00000000d3p1")
elif joined.startswith("provider show"):
    print("Registered")
elif joined.startswith("deployment group show"):
    query = args[args.index("--query") + 1]
    print(outputs[query.split(".")[2]])
elif joined.startswith("group show"):
    # An existing group when FAKE_AZ_GROUP_LOCATION is set; otherwise az fails (not found).
    location = os.environ.get("FAKE_AZ_GROUP_LOCATION")
    if not location:
        sys.exit(3)
    query = args[args.index("--query") + 1]
    print(location if query == "location" else "/subscriptions/s/resourceGroups/" + args[args.index("--name") + 1])
elif joined.startswith("functionapp deployment source config-zip"):
    # Refused with 403 the first FAKE_AZ_ZIP_403 times, as while the app's new role on the deployment
    # storage propagates (or always with another error when FAKE_AZ_ZIP_FAILS is set).
    counter = log.parent / "zip-attempts"
    seen = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(seen + 1))
    if os.environ.get("FAKE_AZ_ZIP_FAILS"):
        print("ERROR: Deployment failed: the remote build could not install requirements.txt", file=sys.stderr)
        sys.exit(1)
    if seen < int(os.environ.get("FAKE_AZ_ZIP_403", "0")):
        print("ERROR: Status Code: 403, Details: This request is not authorized to perform this operation "
              "using this permission. (AuthorizationPermissionMismatch)", file=sys.stderr)
        sys.exit(1)
elif joined.startswith("keyvault secret show-deleted"):
    # A soft-deleted secret of that name when FAKE_AZ_DELETED_SECRET is set; otherwise not found.
    if not os.environ.get("FAKE_AZ_DELETED_SECRET"):
        sys.exit(3)
"""


@pytest.fixture
def fake_az(tmp_path: Path) -> tuple[dict[str, str], Path]:
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    az = bin_dir / "az"
    az.write_text(_FAKE_AZ.format(python=sys.executable))
    az.chmod(0o755)
    log = tmp_path / "az.log"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FAKE_AZ_LOG": str(log),
    }
    return env, log


def _deploy(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DEPLOY), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _az_calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _python3_dir() -> str:
    import shutil

    found = shutil.which("python3")
    assert found, "python3 is needed by scripts/deploy.sh"
    return str(Path(found).parent)


def test_deploy_script_runs_the_steps_in_order_and_keeps_the_key_off_command_lines(fake_az, tmp_path):
    import zipfile

    env, log = fake_az
    env["PATH"] += f":{_python3_dir()}"
    env["AC_API_KEY"] = FAKE_KEY
    result = _deploy(env, "-g", "rg-test", "-l", "westeurope", "--ac-connection", "acme")
    assert result.returncode == 0, result.stderr
    calls = _az_calls(log)
    steps = [" ".join(c["args"][:3]) for c in calls]
    order = [
        "group create --name",
        "deployment group validate",
        "deployment group what-if",
        "deployment group create",
        "keyvault secret set",
        "functionapp deployment source",
    ]
    positions = [next(i for i, s in enumerate(steps) if s.startswith(step)) for step in order]
    assert positions == sorted(positions), steps
    for call in calls:
        assert FAKE_KEY not in " ".join(call["args"])
    (secret,) = [c for c in calls if c["args"][:3] == ["keyvault", "secret", "set"]]
    assert secret["stdin"] == FAKE_KEY
    assert "activecampaign-acme" in secret["args"]
    assert FAKE_KEY not in result.stdout + result.stderr
    (create,) = [c for c in calls if c["args"][:3] == ["deployment", "group", "create"]]
    assert "deployerPrincipalId=00000000-0000-0000-0000-00000000d3p1" in create["args"]
    assert "segmentStorageAccountId=" in create["args"]
    (publish,) = [c for c in calls if c["args"][:1] == ["functionapp"]]
    assert publish["args"][publish["args"].index("--build-remote") + 1] == "true"
    names = set(zipfile.ZipFile(tmp_path / "package.zip").namelist())
    assert {
        "host.json",
        "function_app.py",
        "requirements.txt",
        "shared/settings.py",
        "shared/telemetry.py",
    } <= names
    assert any(n.startswith("functions/") for n in names)
    assert not [n for n in names if n.startswith(("tests/", ".venv", "node_modules/")) or "__pycache__" in n]


def test_deploy_script_retries_a_zip_deploy_refused_while_the_new_role_propagates(fake_az):
    env, log = fake_az
    env["PATH"] += f":{_python3_dir()}"
    env |= {"FAKE_AZ_ZIP_403": "2", "DEPLOY_RETRY_SECONDS": "0"}
    result = _deploy(env, "-g", "rg-test")
    assert result.returncode == 0, result.stderr
    publishes = [
        c for c in _az_calls(log) if c["args"][:4] == ["functionapp", "deployment", "source", "config-zip"]
    ]
    assert len(publishes) == 3  # two 403s, then the deploy went through
    assert result.stderr.count("role assignment on it is still propagating") == 2
    assert "attempt 1 of 10" in result.stderr
    assert "Deployed." in result.stderr


def test_deploy_script_gives_up_on_403_after_its_attempts_and_never_retries_another_failure(fake_az):
    env, log = fake_az
    env["PATH"] += f":{_python3_dir()}"
    env |= {"FAKE_AZ_ZIP_403": "99", "DEPLOY_RETRY_SECONDS": "0"}
    refused = _deploy(env, "-g", "rg-test")
    assert refused.returncode != 0
    assert "after 10 attempts" in refused.stderr
    assert "Storage Blob Data Owner" in refused.stderr
    (log.parent / "zip-attempts").unlink()
    log.unlink()
    env |= {"FAKE_AZ_ZIP_403": "0", "FAKE_AZ_ZIP_FAILS": "1"}
    failed = _deploy(env, "-g", "rg-test")
    assert failed.returncode != 0
    assert "could not install requirements.txt" in failed.stderr
    publishes = [c for c in _az_calls(log) if c["args"][:2] == ["functionapp", "deployment"]]
    assert len(publishes) == 1


def test_deploy_script_binds_the_stored_key_to_its_host_in_the_same_write(fake_az):
    env, log = fake_az
    env["PATH"] += f":{_python3_dir()}"
    args = ("-g", "rg-test", "--ac-connection", "acme", "--no-code")
    result = _deploy(env, *args, "--ac-host", "Acme.api-us1.com", stdin=FAKE_KEY + "\n")
    assert result.returncode == 0, result.stderr
    (secret,) = [c for c in _az_calls(log) if c["args"][:3] == ["keyvault", "secret", "set"]]
    tags = secret["args"][secret["args"].index("--tags") + 1]
    assert tags == "activecampaign-host=acme.api-us1.com"  # shared/secrets.py HOST_TAG
    log.unlink()
    unbound = _deploy(env, *args, stdin=FAKE_KEY + "\n")  # bound to the host of its first use
    assert unbound.returncode == 0, unbound.stderr
    (secret,) = [c for c in _az_calls(log) if c["args"][:3] == ["keyvault", "secret", "set"]]
    assert "--tags" not in secret["args"]
    for bad in (["--ac-host", "https://acme.api-us1.com"], ["--ac-host", "acme.api-us1.com/x"]):
        refused = _deploy(env, *args, *bad, stdin=FAKE_KEY + "\n")
        assert refused.returncode != 0
        assert "--ac-host" in refused.stderr
    alone = _deploy(env, "-g", "rg-test", "--no-code", "--ac-host", "acme.api-us1.com")
    assert alone.returncode != 0
    assert "--ac-host goes with --ac-connection" in alone.stderr


def test_deploy_script_reads_the_key_from_stdin(fake_az):
    env, log = fake_az
    env["PATH"] += f":{_python3_dir()}"
    result = _deploy(env, "-g", "rg-test", "--ac-connection", "acme", "--no-code", stdin=FAKE_KEY + "\n")
    assert result.returncode == 0, result.stderr
    calls = _az_calls(log)
    (secret,) = [c for c in calls if c["args"][:3] == ["keyvault", "secret", "set"]]
    assert secret["stdin"] == FAKE_KEY
    assert not [c for c in calls if c["args"][:1] == ["functionapp"]]


def test_deploy_script_what_if_only_changes_nothing(fake_az):
    env, log = fake_az
    result = _deploy(
        env,
        "-g",
        "rg-test",
        "--what-if-only",
        "-s",
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/segs",
    )
    assert result.returncode == 0, result.stderr
    steps = [" ".join(c["args"][:3]) for c in _az_calls(log)]
    assert "deployment group what-if" in steps
    assert "deployment group create" not in steps
    assert not [s for s in steps if s.startswith(("keyvault", "functionapp"))]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--resource-group is required"),
        (("-g", "rg", "--ac-key", FAKE_KEY), "never pass the API key as an argument"),
        (("-g", "rg", "--prefix", "Bad_Prefix"), "--prefix"),
        (("-g", "rg", "--auth-mode", "entra"), "--entra-client-id"),
        (("-g", "rg", "-s", "not-a-resource-id"), "--segment-storage-id"),
    ],
)
def test_deploy_script_refuses_bad_arguments_before_calling_azure(fake_az, args, message):
    env, log = fake_az
    result = _deploy(env, *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert FAKE_KEY not in result.stderr
    assert _az_calls(log) == []


def test_deploy_script_creates_a_missing_group_with_its_tag(fake_az):
    env, log = fake_az
    result = _deploy(env, "-g", "rg-new", "-l", "westeurope", "--no-code")
    assert result.returncode == 0, result.stderr
    calls = [c["args"] for c in _az_calls(log)]
    (create,) = [a for a in calls if a[:2] == ["group", "create"]]
    assert create[create.index("--location") + 1] == "westeurope"
    assert create[create.index("--tags") + 1] == "app=activecampaign-segment-export"
    assert not [a for a in calls if a[:2] == ["tag", "update"]]
    (deploy,) = [a for a in calls if a[:3] == ["deployment", "group", "create"]]
    assert "location=westeurope" in deploy
    assert 'segmentContainers=["customer-insights"]' in deploy
    assert "enableRefreshEvents=true" in deploy


def test_deploy_script_passes_the_segment_containers_and_can_skip_refresh_events(fake_az):
    env, log = fake_az
    result = _deploy(
        env, "-g", "rg", "--no-code", "--segment-containers", "ci-one,ci-two", "--no-refresh-events"
    )
    assert result.returncode == 0, result.stderr
    (deploy,) = [c["args"] for c in _az_calls(log) if c["args"][:3] == ["deployment", "group", "create"]]
    assert 'segmentContainers=["ci-one","ci-two"]' in deploy
    assert "enableRefreshEvents=false" in deploy
    bad = _deploy(env, "-g", "rg", "--segment-containers", "Bad Name")
    assert bad.returncode != 0
    assert "--segment-containers" in bad.stderr


def test_deploy_script_keeps_an_existing_groups_location_and_merges_its_tag(fake_az):
    env, log = fake_az
    env["FAKE_AZ_GROUP_LOCATION"] = "northeurope"
    result = _deploy(env, "-g", "rg-old", "-l", "westeurope", "--no-code")
    assert result.returncode == 0, result.stderr
    assert "exists in northeurope" in result.stderr
    calls = [c["args"] for c in _az_calls(log)]
    assert not [a for a in calls if a[:2] == ["group", "create"]]
    (tag,) = [a for a in calls if a[:2] == ["tag", "update"]]
    # merge adds our tag and keeps every other tag of the group (replace would drop them)
    assert tag[tag.index("--operation") + 1] == "merge"
    assert tag[tag.index("--tags") + 1] == "app=activecampaign-segment-export"
    assert tag[tag.index("--resource-id") + 1] == "/subscriptions/s/resourceGroups/rg-old"
    for step in ("validate", "what-if", "create"):
        (call,) = [a for a in calls if a[:3] == ["deployment", "group", step]]
        assert "location=northeurope" in call, step
        assert "location=westeurope" not in call, step


def test_deploy_script_recovers_a_soft_deleted_secret_before_storing_the_key(fake_az):
    env, log = fake_az
    env["AC_API_KEY"] = FAKE_KEY
    env["FAKE_AZ_DELETED_SECRET"] = "1"
    result = _deploy(env, "-g", "rg-test", "--ac-connection", "acme", "--no-code")
    assert result.returncode == 0, result.stderr
    steps = [" ".join(c["args"][:3]) for c in _az_calls(log)]
    recover = steps.index("keyvault secret recover")
    assert steps.index("keyvault secret show-deleted") < recover < steps.index("keyvault secret set")
    (recovered,) = [c["args"] for c in _az_calls(log) if c["args"][:3] == ["keyvault", "secret", "recover"]]
    assert recovered[recovered.index("--name") + 1] == "activecampaign-acme"
    for call in _az_calls(log):
        assert FAKE_KEY not in " ".join(call["args"])


def test_deploy_script_stores_a_new_secret_without_recovering(fake_az):
    env, log = fake_az
    env["AC_API_KEY"] = FAKE_KEY
    result = _deploy(env, "-g", "rg-test", "--ac-connection", "acme", "--no-code")
    assert result.returncode == 0, result.stderr
    steps = [" ".join(c["args"][:3]) for c in _az_calls(log)]
    assert "keyvault secret show-deleted" in steps
    assert "keyvault secret recover" not in steps
    assert "keyvault secret set" in steps
