#!/usr/bin/env bash
# Deploy the ActiveCampaign segment export to Azure: infrastructure (infra/main.bicep) and code.
# Idempotent: run it again to update the infrastructure and publish new code. Needs the Azure CLI
# (logged in: az login) and python3 (to build the zip). Guide: docs/deploy.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/deploy.sh -g RESOURCE_GROUP [options]

Creates the resource group when it does not exist (an existing one keeps its location and tags;
ours is added), validates the Bicep template, shows what-if, deploys it,
publishes the function code (remote build) and, when given, stores an ActiveCampaign API key in Key
Vault.

Options:
  -g, --resource-group NAME     resource group to create (when missing) or deploy into (required)
  -l, --location REGION         Azure region of a NEW group (default: $AZURE_LOCATION or
                                swedencentral); an existing group's own location is always used
  -p, --prefix PREFIX           name prefix of every resource, 2-8 lowercase letters/digits (default: acexp)
  -s, --segment-storage-id ID   resource id of the EXISTING storage account holding the segments
                                (may be in another resource group or subscription); omitted: a new
                                empty account is created
      --auth-mode key|entra     HTTP API authentication (default: key)
      --entra-client-id ID      Entra ID application (client) id of the API (with --auth-mode entra)
      --schedule NCRONTAB       how often the timer checks the exports, and the schedule of
                                scheduled exports that name none; with seconds, UTC
                                (default: "0 */5 * * * *", every 5 minutes)
      --segment-containers LIST containers of the segment account the exports read, comma-separated
                                (default: customer-insights); their refresh events start onRefresh exports
      --no-refresh-events       create no Event Grid topic (the account already has one: docs/deploy.md);
                                onRefresh exports then run at the timer's next check
      --alert-email LIST        e-mail addresses the alerts notify, comma-separated (a webhook too:
                                set ALERT_WEBHOOK_URL, kept off the command line like the API key)
      --ac-connection NAME      store an ActiveCampaign API key for connection NAME in Key Vault, as
                                secret "activecampaign-NAME" (the HTTP API's default secret name).
                                The key is read from the AC_API_KEY environment variable or, if that
                                is unset, from standard input; never from an argument.
      --ac-host HOST            the account's REST endpoint host (acme.api-us1.com) the key is
                                bound to (Key Vault tag activecampaign-host, written with the
                                key); without it the key is bound to the host of its first use
      --no-code                 deploy the infrastructure only (skip publishing the code)
      --what-if-only            stop after validate and what-if (change nothing)
  -h, --help                    show this help

Example:
  az login
  scripts/deploy.sh -g rg-acexport -l westeurope
  read -rs AC_API_KEY && export AC_API_KEY && scripts/deploy.sh -g rg-acexport --ac-connection acme
EOF
}

die() {
  echo "deploy.sh: $*" >&2
  exit 1
}

log() {
  echo "==> $*" >&2
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Waits while a new role assignment propagates (tests set it to 0).
RETRY_SECONDS="${DEPLOY_RETRY_SECONDS:-30}"
ZIP_ATTEMPTS=10
RESOURCE_GROUP=""
LOCATION="${AZURE_LOCATION:-swedencentral}"
LOCATION_GIVEN=0
GROUP_TAG="app=activecampaign-segment-export"
PREFIX="acexp"
SEGMENT_STORAGE_ID=""
AUTH_MODE="key"
ENTRA_CLIENT_ID=""
SCHEDULE="0 */5 * * * *"
ALERT_EMAILS=""
SEGMENT_CONTAINERS="customer-insights"
REFRESH_EVENTS=true
AC_CONNECTION=""
AC_HOST=""
DEPLOY_CODE=1
WHAT_IF_ONLY=0

need_value() {
  [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -g | --resource-group) need_value "$@"; RESOURCE_GROUP="$2"; shift 2 ;;
    -l | --location) need_value "$@"; LOCATION="$2"; LOCATION_GIVEN=1; shift 2 ;;
    -p | --prefix) need_value "$@"; PREFIX="$2"; shift 2 ;;
    -s | --segment-storage-id) need_value "$@"; SEGMENT_STORAGE_ID="$2"; shift 2 ;;
    --auth-mode) need_value "$@"; AUTH_MODE="$2"; shift 2 ;;
    --entra-client-id) need_value "$@"; ENTRA_CLIENT_ID="$2"; shift 2 ;;
    --schedule) need_value "$@"; SCHEDULE="$2"; shift 2 ;;
    --alert-email) need_value "$@"; ALERT_EMAILS="$2"; shift 2 ;;
    --segment-containers) need_value "$@"; SEGMENT_CONTAINERS="$2"; shift 2 ;;
    --no-refresh-events) REFRESH_EVENTS=false; shift ;;
    --ac-connection) need_value "$@"; AC_CONNECTION="$2"; shift 2 ;;
    --ac-host) need_value "$@"; AC_HOST="$2"; shift 2 ;;
    --ac-key | --api-key) die "$1: never pass the API key as an argument (it lands in shell history); set AC_API_KEY or pipe it on stdin" ;;
    --no-code) DEPLOY_CODE=0; shift ;;
    --what-if-only) WHAT_IF_ONLY=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

[[ -n "$RESOURCE_GROUP" ]] || { usage >&2; die "--resource-group is required"; }
[[ "$PREFIX" =~ ^[a-z0-9]{2,8}$ ]] || die "--prefix must be 2-8 lowercase letters or digits, got '$PREFIX'"
[[ "$AUTH_MODE" == "key" || "$AUTH_MODE" == "entra" ]] || die "--auth-mode must be key or entra, got '$AUTH_MODE'"
if [[ "$AUTH_MODE" == "entra" && -z "$ENTRA_CLIENT_ID" ]]; then
  die "--auth-mode entra needs --entra-client-id (the API's Entra ID application id; docs/deploy.md)"
fi
if [[ -n "$SEGMENT_STORAGE_ID" ]]; then
  [[ "$SEGMENT_STORAGE_ID" =~ ^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Storage/storageAccounts/[a-z0-9]{3,24}$ ]] \
    || die "--segment-storage-id must look like /subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.Storage/storageAccounts/<name>"
fi
[[ "$SEGMENT_CONTAINERS" =~ ^[a-z0-9][a-z0-9-]{2,62}(,[a-z0-9][a-z0-9-]{2,62})*$ ]] \
  || die "--segment-containers must be comma-separated container names (3-63 lowercase letters, digits, '-'), got '$SEGMENT_CONTAINERS'"
CONTAINERS_JSON="[\"${SEGMENT_CONTAINERS//,/\",\"}\"]"
if [[ -n "$ALERT_EMAILS" ]]; then
  [[ "$ALERT_EMAILS" =~ ^[^,@[:space:]\"]+@[^,@[:space:]\"]+(,[^,@[:space:]\"]+@[^,@[:space:]\"]+)*$ ]] \
    || die "--alert-email must be comma-separated e-mail addresses, got '$ALERT_EMAILS'"
fi
ALERT_WEBHOOK="${ALERT_WEBHOOK_URL:-}"
unset ALERT_WEBHOOK_URL
if [[ -n "$ALERT_WEBHOOK" && ! "$ALERT_WEBHOOK" =~ ^https://[^[:space:]\"]+$ ]]; then
  die "ALERT_WEBHOOK_URL must be an https:// URL"
fi
if [[ -n "$AC_CONNECTION" ]]; then
  [[ "$AC_CONNECTION" =~ ^[a-z0-9][a-z0-9-]{0,62}$ ]] || die "--ac-connection: 1-63 lowercase letters, digits and '-', got '$AC_CONNECTION'"
fi
if [[ -n "$AC_HOST" ]]; then
  [[ -n "$AC_CONNECTION" ]] || die "--ac-host goes with --ac-connection (the host the stored key is for)"
  # A bare host name, as the connection's hostname is (the app checks its domain when it is saved).
  [[ "$AC_HOST" =~ ^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$ && "$AC_HOST" == *.* ]] \
    || die "--ac-host: the bare host name of the account's REST endpoint (acme.api-us1.com), no scheme or path, got '$AC_HOST'"
  AC_HOST="$(printf '%s' "$AC_HOST" | tr '[:upper:]' '[:lower:]')"
fi
command -v az >/dev/null || die "the Azure CLI (az) is not installed: docs/deploy.md, Prerequisites"
command -v python3 >/dev/null || die "python3 is needed to build the code package"

# Read the API key first (before minutes of deployment), from the environment or stdin only.
AC_KEY=""
if [[ -n "$AC_CONNECTION" ]]; then
  if [[ -n "${AC_API_KEY:-}" ]]; then
    AC_KEY="$AC_API_KEY"
  else
    if [[ -t 0 ]]; then
      read -rsp "ActiveCampaign API key for connection '$AC_CONNECTION' (not echoed): " AC_KEY
      echo >&2
    else
      IFS= read -r AC_KEY || true
    fi
  fi
  [[ -n "$AC_KEY" ]] || die "no API key: set AC_API_KEY or pipe the key on stdin"
fi
unset AC_API_KEY

az account show --output none 2>/dev/null || die "not logged in to Azure: run 'az login' (and 'az account set -s <subscription>')"

# The deployer gets Key Vault Secrets Officer (to store the key) and, on a new segment account,
# Storage Blob Data Contributor (to upload snapshots): the vault and storage use Entra ID only.
DEPLOYER_ID=""
DEPLOYER_TYPE="User"
case "$(az account show --query user.type --output tsv)" in
  user)
    DEPLOYER_ID="$(az ad signed-in-user show --query id --output tsv 2>/dev/null || true)" ;;
  servicePrincipal)
    DEPLOYER_TYPE="ServicePrincipal"
    DEPLOYER_ID="$(az ad sp show --id "$(az account show --query user.name --output tsv)" --query id --output tsv 2>/dev/null || true)" ;;
esac
[[ -n "$DEPLOYER_ID" ]] || log "could not find your principal id: no data roles for you (store keys through the HTTP API)"

log "Registering resource providers (once per subscription)"
for namespace in Microsoft.Web Microsoft.Storage Microsoft.KeyVault Microsoft.Insights \
  Microsoft.OperationalInsights Microsoft.ManagedIdentity Microsoft.EventGrid; do
  state="$(az provider show --namespace "$namespace" --query registrationState --output tsv 2>/dev/null || true)"
  if [[ "$state" != "Registered" ]]; then
    az provider register --namespace "$namespace" --wait --output none
  fi
done

# An existing group keeps its location (Azure refuses `group create` with another one) and its
# tags: ours is merged in, never replacing the others.
GROUP_LOCATION="$(az group show --name "$RESOURCE_GROUP" --query location --output tsv 2>/dev/null || true)"
if [[ -z "$GROUP_LOCATION" ]]; then
  log "Creating resource group $RESOURCE_GROUP in $LOCATION"
  az group create --name "$RESOURCE_GROUP" --location "$LOCATION" --tags "$GROUP_TAG" --output none
else
  if [[ "$LOCATION_GIVEN" == 1 && "$GROUP_LOCATION" != "$LOCATION" ]]; then
    log "Resource group $RESOURCE_GROUP exists in $GROUP_LOCATION: deploying there, not in $LOCATION"
  else
    log "Resource group $RESOURCE_GROUP exists in $GROUP_LOCATION"
  fi
  LOCATION="$GROUP_LOCATION"
  az tag update --resource-id "$(az group show --name "$RESOURCE_GROUP" --query id --output tsv)" \
    --operation merge --tags "$GROUP_TAG" --output none
fi

WORK_DIR="$(mktemp -d)"
trap 'rm -rf "$WORK_DIR"' EXIT
# The alert recipients go in a parameters file (mode 600), not on a command line: a webhook URL
# usually carries its own secret token.
ALERT_PARAMS="$WORK_DIR/alert-parameters.json"
(
  umask 077
  ALERT_EMAILS="$ALERT_EMAILS" ALERT_WEBHOOK="$ALERT_WEBHOOK" python3 - >"$ALERT_PARAMS" <<'PY'
import json
import os

notify = {}
emails = [e for e in os.environ["ALERT_EMAILS"].split(",") if e]
if emails:
    notify["emails"] = emails
if os.environ["ALERT_WEBHOOK"]:
    notify["webhookUrl"] = os.environ["ALERT_WEBHOOK"]
print(json.dumps({
    "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
    "contentVersion": "1.0.0.0",
    "parameters": {"alertNotify": {"value": notify}},
}))
PY
)
ALERT_WEBHOOK=""

DEPLOYMENT="activecampaign-export"
PARAMS=(
  --parameters "@$ROOT/infra/main.parameters.json"
  --parameters namePrefix="$PREFIX"
  --parameters location="$LOCATION"
  --parameters segmentStorageAccountId="$SEGMENT_STORAGE_ID"
  --parameters exportSchedule="$SCHEDULE"
  --parameters authMode="$AUTH_MODE"
  --parameters entraClientId="$ENTRA_CLIENT_ID"
  --parameters "@$ALERT_PARAMS"
  --parameters segmentContainers="$CONTAINERS_JSON"
  --parameters enableRefreshEvents="$REFRESH_EVENTS"
  --parameters deployerPrincipalId="$DEPLOYER_ID"
  --parameters deployerPrincipalType="$DEPLOYER_TYPE"
)
TEMPLATE=(--resource-group "$RESOURCE_GROUP" --name "$DEPLOYMENT" --template-file "$ROOT/infra/main.bicep")

log "Validating infra/main.bicep"
az deployment group validate "${TEMPLATE[@]}" "${PARAMS[@]}" --output none

log "What-if (changes this deployment would make)"
az deployment group what-if "${TEMPLATE[@]}" "${PARAMS[@]}"
if [[ "$WHAT_IF_ONLY" == 1 ]]; then
  log "--what-if-only: nothing changed"
  exit 0
fi

log "Deploying (a few minutes)"
az deployment group create "${TEMPLATE[@]}" "${PARAMS[@]}" --output none

output() {
  az deployment group show --resource-group "$RESOURCE_GROUP" --name "$DEPLOYMENT" \
    --query "properties.outputs.$1.value" --output tsv
}
APP_NAME="$(output functionAppName)"
APP_URL="$(output functionAppUrl)"
VAULT_NAME="$(output keyVaultName)"
SEGMENT_ACCOUNT="$(output segmentStorageAccountName)"
[[ -n "$APP_NAME" && -n "$VAULT_NAME" ]] || die "the deployment returned no outputs"

if [[ -n "$AC_CONNECTION" ]]; then
  SECRET="activecampaign-$AC_CONNECTION"
  # A secret deleted earlier sits soft-deleted (purge protection: 90 days) and `secret set` fails
  # with a conflict until it is recovered; recover it first, then store the new value over it.
  if az keyvault secret show-deleted --vault-name "$VAULT_NAME" --name "$SECRET" --output none 2>/dev/null; then
    log "Secret $SECRET was deleted earlier: recovering it before storing the new key"
    az keyvault secret recover --vault-name "$VAULT_NAME" --name "$SECRET" --output none
    for attempt in 1 2 3 4 5 6 7 8 9 10 11 12; do
      # Recovery takes a few seconds to complete; `secret set` fails until it has.
      az keyvault secret show --vault-name "$VAULT_NAME" --name "$SECRET" --query id --output none 2>/dev/null && break
      [[ "$attempt" -lt 12 ]] || die "secret $SECRET is still being recovered; run the script again in a minute"
      sleep 5
    done
  fi
  log "Storing the API key as secret $SECRET in $VAULT_NAME"
  # printf is a shell builtin and the value goes through a pipe: it never appears on a command
  # line (ps) or in shell history. A fresh role assignment can take minutes to apply: retry.
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    # The host goes in the same write as the key (shared/secrets.py reads the tag at every use).
    if printf '%s' "$AC_KEY" | az keyvault secret set --vault-name "$VAULT_NAME" --name "$SECRET" \
      --file /dev/stdin --encoding utf-8 --content-type "ActiveCampaign API key" \
      ${AC_HOST:+--tags "activecampaign-host=$AC_HOST"} --output none; then
      break
    fi
    [[ "$attempt" -lt 10 ]] || die "could not store the secret (do you have Key Vault Secrets Officer on $VAULT_NAME?)"
    log "Key Vault refused (role assignment still propagating?); retrying in 30 s"
    sleep 30
  done
fi
AC_KEY=""

if [[ "$DEPLOY_CODE" == 1 ]]; then
  PACKAGE_DIR="$WORK_DIR"
  PACKAGE="$PACKAGE_DIR/app.zip"
  log "Packaging the app (host.json, function_app.py, functions/, shared/, requirements.txt)"
  python3 - "$ROOT" "$PACKAGE" <<'PY'
import sys
import zipfile
from pathlib import Path

root, target = Path(sys.argv[1]), Path(sys.argv[2])
files = [root / "host.json", root / "function_app.py", root / "requirements.txt"]
for folder in ("functions", "shared"):
    files += sorted(p for p in (root / folder).rglob("*") if p.is_file())
skip_dirs = {"__pycache__", "tests", ".venv", ".venv-iac", "node_modules", ".mypy_cache", ".pytest_cache"}
with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
    for path in files:
        rel = path.relative_to(root)
        if skip_dirs & set(rel.parts) or path.suffix in (".pyc", ".pyo") or path.name == "local.settings.json":
            continue
        zf.write(path, rel.as_posix())
print(f"{target}: {len(zf.namelist())} files", file=sys.stderr)
PY
  log "Publishing the code to $APP_NAME (remote build installs requirements.txt)"
  # The template has just given the app's identity its role on the deployment storage. A new role
  # assignment takes minutes to propagate, and a Flex Consumption zip deploy made meanwhile is
  # refused with 403: retry that refusal (only that one), for up to about five minutes.
  for attempt in $(seq 1 "$ZIP_ATTEMPTS"); do
    if az functionapp deployment source config-zip --resource-group "$RESOURCE_GROUP" --name "$APP_NAME" \
      --src "$PACKAGE" --build-remote true --output none 2>"$WORK_DIR/publish.err"; then
      break
    fi
    if ! grep -qiE '403|forbidden|AuthorizationPermissionMismatch|AuthorizationFailure' "$WORK_DIR/publish.err"; then
      cat "$WORK_DIR/publish.err" >&2
      die "publishing the code failed (above); fix that and run the script again with the same arguments"
    fi
    if [[ "$attempt" -ge "$ZIP_ATTEMPTS" ]]; then
      cat "$WORK_DIR/publish.err" >&2
      die "the deployment storage still refuses the code (HTTP 403) after $ZIP_ATTEMPTS attempts: check that the \
app's identity has Storage Blob Data Owner on the deployment storage account, then run the script again"
    fi
    log "The deployment storage refused the code (HTTP 403): the app's new role assignment on it is still \
propagating; retrying in ${RETRY_SECONDS} s (attempt $attempt of $ZIP_ATTEMPTS)"
    sleep "$RETRY_SECONDS"
  done
fi

cat >&2 <<EOF

Deployed.
  Function app:     $APP_NAME
  API:              $APP_URL/api
  Key Vault:        $VAULT_NAME
  Segment storage:  $SEGMENT_ACCOUNT
Function key (auth mode key):
  az functionapp keys list -g $RESOURCE_GROUP -n $APP_NAME --query functionKeys.default -o tsv
Next: docs/deploy.md, "Create a connection and an export".
EOF
