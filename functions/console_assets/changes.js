// Who got what: a run's change log (GET .../runs/{runId}/changes, CSV, paged and filtered by the
// API) and "Find a person" (POST .../lookup: the address goes in the body, never in a URL).

import { call, enc, nextLink, sendJson } from "./api.js";
import { announce, errorBox, field, h, notice, number, replace, table, when } from "./dom.js";
import { parseCsv } from "./csv.js";

export const PAGE = 50;
export const ACTIONS = [
  ["add", "added"],
  ["update", "updated"],
  ["resubscribe", "subscribed again"],
  ["remove", "unsubscribed"],
];
export const OUTCOMES = [
  ["accepted", "accepted"],
  ["rejected", "refused by ActiveCampaign"],
  ["failed", "failed"],
  ["unconfirmed", "not confirmed in time"],
  ["planned", "planned (preview)"],
];
const ACTION_WORDS = Object.fromEntries(ACTIONS);
const OUTCOME_WORDS = Object.fromEntries(OUTCOMES);
// The change log's standard columns in words; custom fields come titled as in ActiveCampaign.
const COLUMN_WORDS = { email: "Email", firstName: "First name", lastName: "Last name", phone: "Phone", tags: "Tags" };

// Rejection and failure codes (shared/mapping.py, shared/pipeline.py) in words; a code the console
// does not know yet is shown as it is.
export const REASONS = {
  missing_email: "no email address",
  invalid_email: "an invalid email address",
  ragged_row: "the wrong number of fields",
  field_too_long: "a value too long for ActiveCampaign",
  duplicate: "a duplicate of an earlier row",
  invalid_field_value: "a value its custom field cannot take",
  activecampaign_failed: "not taken by ActiveCampaign",
  unsubscribe_failed: "not unsubscribed by ActiveCampaign",
  // Failure codes (shared/outcomes.py): why ActiveCampaign did not take a contact.
  rejected: "refused by ActiveCampaign",
  failed: "listed among the batch's failures",
  batch_failed: "the batch failed at ActiveCampaign",
  batch_interrupted: "the batch was interrupted at ActiveCampaign",
  contact_too_large: "too large for one request",
  unconfirmed: "not confirmed in time (sent again next run)",
  resubscribe_failed: "imported, but not subscribed again",
};

// rejected.csv guards cells a spreadsheet would run as a formula with a leading quote
// (shared/report.py neutralise_cell); on screen the value is shown as it was.
const FORMULA_START = new Set(["=", "+", "-", "@", "\t", "\r"]);
export function unguard(value) {
  return value.length > 1 && value[0] === "'" && FORMULA_START.has(value[1]) ? value.slice(1) : value;
}

// A code in words, with the code beside it (what the CSV and the API say).
export function reasonCell(code) {
  return h("td", {}, coded(REASONS[code], code));
}

const capital = (text) => (text ? text[0].toUpperCase() + text.slice(1) : text);

// A value in words with its code beside it, as the CSV and the API say it.
export function coded(words, code) {
  if (!code) return "–";
  return [words ? `${capital(words)} ` : null, h("code", {}, code)];
}

function select(label, choices, everything) {
  const control = h("select", {}, h("option", { value: "" }, everything), choices.map(([value, words]) => h("option", { value }, capital(words))));
  return field(label, control);
}

// The changes section of a run's page; `download(path, filename, label)` makes its CSV download button.
export function changesSection(exportName, run, { download = null } = {}) {
  const path = `/api/exports/${enc(exportName)}/runs/${enc(run.runId)}/changes`;
  const action = select("Action", ACTIONS, "All actions");
  const outcome = select("Outcome", OUTCOMES, "All outcomes");
  const results = h("div", {});
  const starts = [];
  let start = 0;

  const load = async (at) => {
    const params = new URLSearchParams({ start: String(at), limit: String(PAGE) });
    if (action.control.value) params.set("action", action.control.value);
    if (outcome.control.value) params.set("outcome", outcome.control.value);
    replace(results, h("p", { class: "loading" }, "Loading the changes…"));
    let response;
    try {
      response = await call("GET", `${path}?${params}`, { accept: "text/csv" });
    } catch (error) {
      replace(results, errorBox(error, { title: "The changes could not be read" }));
      return;
    }
    const [rawHeader, ...raw] = parseCsv(await response.text());
    const header = (rawHeader || []).map(unguard);
    const rows = raw.filter((row) => row.length > 1 || row[0]).map((row) => row.map(unguard));
    const more = Boolean(nextLink(response));
    start = at;
    const filtered = Boolean(action.control.value || outcome.control.value);
    if (!rows.length) {
      replace(results, notice("info", filtered ? "No change matches these filters." : "The run changed nobody.", filtered ? "Choose All actions and All outcomes to see every change." : "Unchanged contacts are counted in the report, not listed."));
      return;
    }
    const values = header.slice(4);
    const range = `Changes ${number(at + 1)} to ${number(at + rows.length)}${more ? "" : ` of ${number(at + rows.length)}`}`;
    const previous = h("button", { type: "button", class: "secondary", disabled: at === 0, onclick: () => load(starts.pop() ?? 0) }, "Previous page");
    const next = h(
      "button",
      {
        type: "button",
        class: "secondary",
        disabled: !more,
        onclick: () => {
          starts.push(at);
          load(at + rows.length);
        },
      },
      "Next page",
    );
    replace(
      results,
      h("p", { id: `${run.runId}-range`, role: "status" }, range, filtered ? " (filtered)" : "", "."),
      table(
        range,
        ["Email", "Action", "Outcome", "Reason", ...values.map((name) => COLUMN_WORDS[name] || name)],
        rows.map((row) =>
          h(
            "tr",
            {},
            h("th", { scope: "row" }, row[0]),
            h("td", {}, coded(ACTION_WORDS[row[1]], row[1])),
            h("td", {}, coded(OUTCOME_WORDS[row[2]], row[2])),
            reasonCell(row[3]),
            values.map((_, i) => h("td", {}, row[4 + i] ?? "")),
          ),
        ),
        { className: "rows changes" },
      ),
      h("div", { class: "actions" }, previous, next),
    );
  };

  const form = h(
    "form",
    {
      class: "filters",
      onsubmit: (event) => {
        event.preventDefault();
        starts.length = 0;
        load(0);
      },
    },
    action,
    outcome,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "secondary" }, "Show changes")),
  );
  const section = h(
    "section",
    { "aria-labelledby": "changes-h" },
    h("h2", { id: "changes-h" }, "Changes"),
    h("p", {}, run.dryRun ? "What the preview would have done to each contact (outcome planned); nothing was sent." : "Each contact the run acted on: what it did and how ActiveCampaign answered. Unchanged contacts are counted, not listed."),
    form,
    download ? h("p", {}, download(`${path}`, `changes-${exportName}-${run.runId}.csv`, "Download the change log (CSV)")) : null,
    results,
  );
  load(start);
  return section;
}

function yesNo(value, yes, no, unknown) {
  if (value === null || value === undefined) return unknown;
  return value ? yes : no;
}

// "Find a person" on the export's page: administrators only (the API says so too).
export function findPerson(exportName, runLink) {
  const input = h("input", { type: "email", name: "lookup-email", autocomplete: "off", spellcheck: "false", required: true });
  const email = field("Email address", input, {
    hint: "What this export's runs sent about one person. The address is sent in the request body, never in an address bar or a log, and is not stored.",
  });
  const result = h("div", { class: "status-area" });
  const form = h(
    "form",
    {
      class: "card",
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        replace(result);
        const address = input.value.trim();
        if (!address || !address.includes("@")) {
          email.setError("Enter an email address, e.g. jane@example.com.");
          input.focus();
          return;
        }
        email.setError(null);
        replace(result, h("p", { class: "loading" }, "Looking in the change logs…"));
        try {
          const { body } = await sendJson("POST", `/api/exports/${enc(exportName)}/lookup`, { email: address });
          const facts = [
            yesNo(body.inSnapshot, "In the segment's newest snapshot.", "Not in the segment's newest snapshot.", "The segment's newest snapshot could not be read."),
            yesNo(body.inDeliveredState, "Delivered: the export holds this person as sent to the list.", "Not delivered: the export holds no delivery of this person.", ""),
          ].filter(Boolean);
          announce(body.found ? `Found ${body.history.length === 1 ? "1 change" : `${body.history.length} changes`}.` : "No run sent anything about this address.");
          if (!body.found) {
            replace(result, notice("info", `No run of this export sent anything about ${address}.`, ...facts));
          } else {
            replace(
              result,
              notice("success", `${body.history.length === 1 ? "1 change" : `${number(body.history.length)} changes`} for ${address}, newest first.`, ...facts),
              table(
                `What the runs of export ${exportName} did about ${address}`,
                ["Run", "Action", "Outcome", "Reason"],
                body.history.map((entry) =>
                  h(
                    "tr",
                    {},
                    h("th", { scope: "row" }, h("a", { href: runLink(entry.runId) }, when(entry.at)), h("span", { class: "sub" }, entry.runId)),
                    h("td", {}, coded(ACTION_WORDS[entry.action], entry.action)),
                    h("td", {}, coded(OUTCOME_WORDS[entry.outcome], entry.outcome)),
                    reasonCell(entry.reason),
                  ),
                ),
              ),
            );
          }
        } catch (error) {
          replace(result, errorBox(error, { title: "The lookup did not work" }));
          if (error.status === 400) email.setError(error.message);
        }
      },
    },
    h("h2", {}, "Find a person"),
    email,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Find")),
    result,
  );
  return form;
}
