// Admin > Connections: the ActiveCampaign accounts the app may send to.

import { appSettings, call, enc, getJson, sendJson } from "./api.js";
import { checkbox, confirmDialog, errorBox, field, h, notice, radios, replace, table } from "./dom.js";
import { EXPECTED_FORM, hostnameProblem } from "./hostname.js";
import { forgetNames } from "./names.js";

const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
const hostRules = {
  suffixes: appSettings.hostSuffixes || [".api-us1.com", ".api-eu1.com", ".activehosted.com"],
  allowLoopback: Boolean(appSettings.allowLoopback),
};

function adminsOnly(main) {
  replace(
    main,
    h("h1", { tabindex: "-1" }, "Connections"),
    notice(
      "info",
      "Only administrators manage connections.",
      "Your role lets you read exports and their runs, and start runs where the connection allows contributors. Ask an administrator (app role Exports.Admin) to add or change a connection.",
    ),
  );
}

export async function list(main, ctx) {
  if (!ctx.me.may.readConnections) {
    adminsOnly(main);
    return;
  }
  const [{ connections }, { exports }] = await Promise.all([getJson("/api/connections"), getJson("/api/exports")]);
  const usedBy = (name) => exports.filter((e) => e.connection === name).map((e) => e.name);
  const status = h("div", { class: "status-area" }, ctx.takeFlash());
  const rows = connections.map((c) =>
    h(
      "tr",
      {},
      h("th", { scope: "row" }, c.displayName, h("span", { class: "sub" }, c.name)),
      h("td", {}, c.hostname),
      h("td", {}, c.allowContributors ? "Administrators and contributors" : "Administrators only"),
      h("td", {}, usedBy(c.name).join(", ") || "none"),
      h(
        "td",
        { class: "row-actions" },
        h("a", { href: `#/connections/${enc(c.name)}/edit`, "aria-label": `Edit connection ${c.displayName}` }, "Edit"),
        h(
          "button",
          { type: "button", class: "secondary", "aria-label": `Delete connection ${c.displayName}`, onclick: () => remove(ctx, c, usedBy(c.name), status) },
          "Delete",
        ),
      ),
    ),
  );
  replace(
    main,
    h("h1", { tabindex: "-1" }, "Connections"),
    h("p", {}, "ActiveCampaign accounts the app may send profile data to. An export sends through one connection."),
    h("p", {}, h("a", { class: "button", href: "#/connections/new" }, "Add connection")),
    status,
    connections.length
      ? table("Connections", ["Display name", "REST endpoint hostname", "Who can use it", "Used by exports", "Actions"], rows)
      : notice("info", "No connections yet.", "Add one with the ActiveCampaign API key and REST endpoint hostname of the account."),
  );
}

async function remove(ctx, connection, users, status) {
  const named = connection.displayName.toLowerCase().includes(connection.name) ? connection.displayName : `${connection.displayName} (${connection.name})`;
  const lines = [`This removes the connection ${named} and deletes its stored API key (secret ${connection.apiKeySecret}).`];
  const keep = checkbox("Keep their run history (run records and reports: counts and timings, no row values)");
  if (users.length) {
    lines.push(
      `It is used by the exports ${users.join(", ")}: they are deleted with it, with what the app kept about them (delivered state, checkpoints, run records, reports, rejected rows), and a run of theirs stops before its next batch.`,
    );
  } else {
    lines.push("No export uses it.");
  }
  lines.push("Contacts already in ActiveCampaign stay there.");
  const yes = await confirmDialog(`Delete connection ${connection.displayName}?`, lines, "Delete connection", { extra: users.length ? keep.el : null });
  if (!yes) return;
  const options = users.length ? { cascade: true, keepHistory: keep.box.checked } : {};
  try {
    await call("DELETE", `/api/connections/${enc(connection.name)}`, { body: options, ifMatch: connection.etag });
    forgetNames();
    ctx.go("#/connections", notice("success", `Deleted connection ${connection.displayName}.`, users.length ? `Also deleted: ${users.join(", ")}.` : ""));
  } catch (error) {
    replace(status, errorBox(error, { title: "The connection was not deleted" }));
  }
}

const PRIVACY = [
  "When you connect this app to ActiveCampaign, profile data leaves your compliance boundary for ActiveCampaign, including potentially sensitive data such as personal data.",
  "The app transfers such data at your instruction, but you are responsible for ensuring that ActiveCampaign meets any privacy or security obligations you may have.",
  "An administrator can delete this connection at any time to stop using it.",
];

export async function form(main, ctx, name) {
  if (!ctx.me.may.changeConnections) {
    adminsOnly(main);
    return;
  }
  let existing = null;
  let etag = null;
  if (name) {
    const response = await call("GET", `/api/connections/${enc(name)}`);
    existing = await response.json();
    etag = response.headers.get("ETag") || existing.etag;
  }
  const nameInput = h("input", { type: "text", name: "name", required: true, autocomplete: "off", spellcheck: "false", value: name || "" });
  const nameField = field("Connection name", nameInput, {
    hint: "Lower-case letters, digits and hyphens, e.g. marketing. Exports refer to it; it cannot be changed later.",
  });
  if (existing) nameInput.readOnly = true;
  const display = h("input", { type: "text", name: "displayName", required: true, maxlength: "200", value: existing?.displayName || "" });
  const displayField = field("Display name", display, {
    hint: "A recognizable name that explains the purpose and target, e.g. ActiveCampaign (marketing).",
  });
  const who = radios(
    "Who can use this connection",
    "allow",
    [
      ["admins", "Administrators only"],
      ["contributors", "Administrators and contributors"],
    ],
    existing?.allowContributors ? "contributors" : "admins",
    { hint: "By default only administrators. Contributors may then start runs of the exports that use it." },
  );
  const key = h("input", { type: "password", name: "apiKey", autocomplete: "new-password", spellcheck: "false", required: !existing });
  const keyField = field("API key", key, {
    hint: existing
      ? "Write-only: the stored key is never shown. Leave empty to keep it, or enter a new key to replace it."
      : "From ActiveCampaign: Settings > Developer. Write-only: it is checked, stored as a secret (in Azure: Key Vault) and never shown again.",
  });
  const host = h("input", { type: "text", name: "hostname", required: true, autocomplete: "off", spellcheck: "false", placeholder: "acme.api-us1.com", value: existing?.hostname || "" });
  const hostField = field("REST endpoint hostname", host, {
    hint: `From ActiveCampaign: Settings > Developer. Expected form: ${EXPECTED_FORM}.`,
  });
  const agree = checkbox("I agree", { checked: Boolean(existing?.dataPrivacyConsent) });
  const agreeError = h("p", { class: "field-error", id: "agree-error", "aria-live": "polite" });
  agree.box.setAttribute("aria-describedby", "privacy-text agree-error");
  const connectStatus = h("div", { class: "status-area", "aria-live": "polite" });
  const saveStatus = h("div", { class: "status-area" });
  const connectButton = h("button", { type: "button", class: "secondary" }, "Connect");
  const saveButton = h("button", { type: "submit", disabled: true }, "Save");
  const saveHint = h("p", { class: "hint", id: "save-hint" }, "Save is possible once Connect has checked the key and hostname.");
  saveButton.setAttribute("aria-describedby", "save-hint");
  let connected = false;

  const setConnected = (value) => {
    connected = value;
    saveButton.disabled = !value;
    saveHint.textContent = value ? "Connected: Save stores the connection." : "Save is possible once Connect has checked the key and hostname.";
  };
  const checkHost = () => {
    const problem = host.value ? hostnameProblem(host.value, hostRules) : null;
    hostField.setError(problem);
    return !problem;
  };
  host.addEventListener("input", () => {
    checkHost();
    setConnected(false);
  });
  key.addEventListener("input", () => setConnected(false));
  nameInput.addEventListener("input", () => nameField.setError(NAME.test(nameInput.value) || !nameInput.value ? null : "Use lower-case letters, digits and hyphens, starting with a letter or digit (at most 63)."));
  agree.box.addEventListener("change", () => {
    if (agree.box.checked) agreeError.textContent = "";
  });

  const body = () => {
    const doc = {
      displayName: display.value.trim(),
      hostname: host.value.trim(),
      allowContributors: who.value() === "contributors",
      dataPrivacyConsent: agree.box.checked,
    };
    if (key.value.trim()) doc.apiKey = key.value.trim();
    if (existing) doc.apiKeySecret = existing.apiKeySecret;
    return doc;
  };
  const valid = () => {
    let ok = true;
    const connectionName = nameInput.value.trim();
    if (!NAME.test(connectionName)) {
      nameField.setError("Enter a name: lower-case letters, digits and hyphens.");
      ok = false;
    }
    displayField.setError(display.value.trim() ? null : "Enter a display name.");
    ok = ok && Boolean(display.value.trim());
    if (!host.value.trim()) hostField.setError(`Enter the hostname: ${EXPECTED_FORM}.`);
    ok = checkHost() && Boolean(host.value.trim()) && ok;
    if (!existing && !key.value.trim()) {
      keyField.setError("Enter the API key.");
      ok = false;
    } else keyField.setError(null);
    return ok;
  };

  connectButton.addEventListener("click", async () => {
    replace(connectStatus);
    if (!valid()) {
      main.querySelector("[aria-invalid=true]")?.focus();
      return;
    }
    connectButton.disabled = true;
    replace(connectStatus, h("p", { class: "loading" }, "Checking the key with ActiveCampaign…"));
    try {
      const result = await sendJson("POST", `/api/connections/${enc(nameInput.value.trim())}/check`, body());
      replace(connectStatus, notice("success", "Connected.", `ActiveCampaign at ${result.body.hostname} accepted the API key. Select Save to store the connection.`));
      setConnected(true);
    } catch (error) {
      setConnected(false);
      replace(connectStatus, errorBox(error, { title: "Not connected" }));
      if (error.code === "InvalidApiKey") keyField.setError("ActiveCampaign refused this key.");
    } finally {
      connectButton.disabled = false;
    }
  });

  const formEl = h(
    "form",
    {
      class: "card",
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        replace(saveStatus);
        if (!connected || !valid()) return;
        if (!agree.box.checked) {
          agreeError.textContent = "Select I agree to confirm the data privacy and compliance terms.";
          agree.box.focus();
          return;
        }
        saveButton.disabled = true;
        const connectionName = nameInput.value.trim();
        try {
          await sendJson("PUT", `/api/connections/${enc(connectionName)}`, body(), { ifMatch: etag });
          forgetNames();
          key.value = "";
          ctx.go("#/connections", notice("success", `Saved connection ${display.value.trim()}.`, "Its API key is stored as a secret (in Azure: Key Vault) and is never shown again."));
        } catch (error) {
          saveButton.disabled = false;
          replace(saveStatus, errorBox(error, { title: "The connection was not saved" }));
        }
      },
    },
    h("h1", { tabindex: "-1" }, existing ? `Edit connection ${existing.displayName}` : "Add connection"),
    h("p", {}, "Connection type: ActiveCampaign."),
    nameField,
    displayField,
    who,
    keyField,
    hostField,
    h(
      "fieldset",
      { class: "privacy" },
      h("legend", {}, "Data privacy and compliance"),
      h("div", { id: "privacy-text" }, PRIVACY.map((text) => h("p", {}, text))),
      agree.el,
      agreeError,
    ),
    h("div", { class: "actions" }, connectButton, saveButton, h("a", { href: "#/connections" }, "Cancel")),
    saveHint,
    connectStatus,
    saveStatus,
  );
  replace(main, formEl);
}
