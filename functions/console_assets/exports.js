// Data > Exports: which segment goes to which ActiveCampaign list, and how its columns map.

import { call, enc, getAllPages, getJson, sendJson } from "./api.js";
import { checkbox, confirmDialog, errorBox, field, h, notice, number, radios, replace, table, uid, when } from "./dom.js";
import { connectionSlot, listSlot as listNameSlot } from "./names.js";
import { exportPath, runPath, startRun, statusBadge, upToDate } from "./runs.js";

const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
// What a PUT accepts (the export's properties in shared/schemas/config.schema.json; a test keeps
// the two equal). An edit sends back every one of them the form does not show, so nothing is lost,
// and nothing the view adds (lastRun, nextScheduledAt, ...).
export const EXPORT_FIELDS = [
  "connection",
  "source",
  "listId",
  "mapping",
  "enabled",
  "trigger",
  "schedule",
  "mode",
  "excludeAutomations",
  "fullResyncEveryDays",
  "maxRemovalShare",
  "maxRejectedShare",
  "maxContacts",
  "onInvalidFieldValue",
  "feedback",
  "feedbackSchedule",
];
const STANDARD = [
  ["firstName", "First name"],
  ["lastName", "Last name"],
  ["phone", "Phone"],
];

export function triggerText(exp) {
  if (exp.enabled === false) return "Disabled: runs only after it is enabled again.";
  if (exp.trigger === "manual") return "Manual: runs only on demand (Run now).";
  if (exp.trigger === "scheduled") {
    const at = exp.nextScheduledAt ? `next check ${when(exp.nextScheduledAt)}` : "at its schedule";
    return `Scheduled (${exp.schedule || "EXPORT_SCHEDULE"}): ${at}, when the segment has a new snapshot.`;
  }
  return "On refresh: runs as soon as each new snapshot of the segment lands.";
}

function lastRunWords(run, counts) {
  if (run.withdraw) return run.dryRun ? `Withdrawal preview: ${number(counts.toRemove || 0)} would be unsubscribed` : `Withdrawal: ${number(counts.removed || 0)} unsubscribed`;
  if (run.dryRun) return `Preview: ${number(counts.toSend)} would be sent`;
  if (upToDate(run)) return "Nothing changed since the last delivery";
  return `${number(counts.accepted)} accepted, ${number(counts.rejected)} rejected, ${number(counts.removed || 0)} removed`;
}

function lastRunCell(exp) {
  const run = exp.lastRun;
  if (!run) return h("td", {}, "Never run");
  const counts = run.counts || {};
  return h(
    "td",
    {},
    h("a", { href: runPath(exp.name, run.runId) }, statusBadge(run), " ", when(run.finishedAt || run.startedAt || run.queuedAt)),
    h("span", { class: "sub" }, lastRunWords(run, counts)),
  );
}

export async function list(main, ctx) {
  const { exports } = await getJson("/api/exports");
  const may = ctx.me.may;
  const status = h("div", { class: "status-area" }, ctx.takeFlash());
  const rows = exports.map((exp) =>
    h(
      "tr",
      {},
      h("th", { scope: "row" }, h("a", { href: exportPath(exp.name) }, exp.name), h("span", { class: "sub" }, exp.mode === "mirror" ? "mirror" : "upsert")),
      h("td", {}, connectionSlot(ctx, exp.connection, exp.connectionDisplayName)),
      h("td", {}, listNameSlot(ctx, exp.connection, exp.listId)),
      h("td", {}, exp.source.segment, h("span", { class: "sub" }, [exp.source.container, exp.source.folder].filter(Boolean).join(" / "))),
      lastRunCell(exp),
      h(
        "td",
        {},
        triggerText(exp),
        exp.lastDecision
          ? h("span", { class: "sub" }, `Last check ${when(exp.lastDecision.at)}: ${exp.lastDecision.outcome}, ${exp.lastDecision.reason}`)
          : null,
      ),
      h(
        "td",
        { class: "row-actions" },
        h("a", { href: exportPath(exp.name), "aria-label": `Runs of export ${exp.name}` }, "Runs"),
        may.changeExports ? h("a", { href: `#/exports/${enc(exp.name)}/edit`, "aria-label": `Edit export ${exp.name}` }, "Edit") : null,
        may.startRuns !== "never"
          ? [
              h("button", { type: "button", class: "secondary", "aria-label": `Preview export ${exp.name} (dry run)`, onclick: () => startRun(ctx, exp.name, { dryRun: true }, status) }, "Preview"),
              h("button", { type: "button", "aria-label": `Run now: export ${exp.name}`, onclick: () => startRun(ctx, exp.name, {}, status) }, "Run now"),
            ]
          : null,
        may.changeExports ? h("button", { type: "button", class: "secondary", "aria-label": `Delete export ${exp.name}`, onclick: () => remove(ctx, exp, status) }, "Delete") : null,
      ),
    ),
  );
  replace(
    main,
    h("h1", { tabindex: "-1" }, "Exports"),
    h("p", {}, "Each export sends one segment to one ActiveCampaign list. Saving an export does not run it."),
    may.changeExports ? h("p", {}, h("a", { class: "button", href: "#/exports/new" }, "Add export")) : null,
    status,
    exports.length
      ? table("Exports", ["Export", "Connection", "List", "Segment", "Last run", "Next trigger", "Actions"], rows)
      : notice("info", "No exports yet.", may.changeExports ? "Add one to send a segment to an ActiveCampaign list." : "An administrator has not configured any export yet."),
  );
}

async function remove(ctx, exp, status) {
  const keep = checkbox("Keep the run history (run records and reports: counts and timings, no row values)");
  const yes = await confirmDialog(
    `Delete export ${exp.name}?`,
    [
      `This removes the export ${exp.name} (segment ${exp.source.segment} to list ${exp.listId}); a run in progress stops before its next batch.`,
      "It also deletes what the app kept about it: its delivered state (every email delivered), the checkpoint of an unfinished run, its run records, reports, rejected rows and unsubscribed lists. An export created again under the same name starts over: its first run sends everyone.",
      "Contacts already in ActiveCampaign stay there.",
    ],
    "Delete export",
    { extra: keep.el },
  );
  if (!yes) return;
  try {
    await call("DELETE", `/api/exports/${enc(exp.name)}`, { body: { keepHistory: keep.box.checked }, ifMatch: exp.etag });
    ctx.go("#/exports", notice("success", `Deleted export ${exp.name}.`));
  } catch (error) {
    replace(status, errorBox(error, { title: "The export was not deleted" }));
  }
}

// A column picker: a select of the segment's own columns once they are known, else a text input.
function columnControl(label, columns, current, { required = false } = {}) {
  let control;
  if (columns) {
    const names = current && !columns.includes(current) ? [current, ...columns] : columns;
    control = h(
      "select",
      { required },
      h("option", { value: "" }, required ? "Choose a column" : "No column"),
      names.map((c) => h("option", { value: c, selected: c === current }, c)),
    );
  } else {
    control = h("input", { type: "text", value: current || "", required, autocomplete: "off", spellcheck: "false" });
  }
  return field(label, control, {
    hint: columns ? null : "Type the column name, or load the segment's columns above to pick one.",
  });
}

export async function form(main, ctx, name) {
  if (!ctx.me.may.changeExports) {
    replace(main, h("h1", { tabindex: "-1" }, "Exports"), notice("info", "Only administrators change exports.", "You can read exports and their runs."));
    return;
  }
  let existing = null;
  let etag = null;
  if (name) {
    const response = await call("GET", `/api/exports/${enc(name)}`);
    existing = await response.json();
    etag = response.headers.get("ETag") || existing.etag;
  }
  const { connections } = await getJson("/api/connections");
  if (!connections.length) {
    replace(
      main,
      h("h1", { tabindex: "-1" }, "Add export"),
      notice("info", "No connections available to you.", h("p", {}, "An export sends through an ActiveCampaign connection. ", h("a", { href: "#/connections/new" }, "Add a connection"), " first.")),
    );
    return;
  }
  const mapping = existing?.mapping || {};
  const state = { columns: null, fields: [], fieldsProblem: null, lists: null };

  const nameInput = h("input", { type: "text", required: true, autocomplete: "off", spellcheck: "false", value: name || "" });
  const nameField = field("Export name", nameInput, { hint: "Lower-case letters, digits and hyphens, e.g. vip-customers. Runs and their history are kept under it." });
  if (existing) nameInput.readOnly = true;

  const connection = h(
    "select",
    { required: true },
    connections.map((c) =>
      h("option", { value: c.name, selected: c.name === existing?.connection }, c.displayName.toLowerCase().includes(c.name) ? c.displayName : `${c.displayName} (${c.name})`),
    ),
  );
  const connectionField = field("Connection for export", connection, { hint: "The ActiveCampaign account the segment is sent to." });

  const listSlot = h("div", {});
  let listControl = null;
  const drawLists = async () => {
    replace(listSlot, h("p", { class: "loading" }, "Loading the account's lists…"));
    const current = listControl ? Number(listControl.value) || existing?.listId : existing?.listId;
    try {
      const lists = await getAllPages(`/api/connections/${enc(connection.value)}/lists`, "lists");
      listControl = h(
        "select",
        { required: true },
        h("option", { value: "" }, "Choose a list"),
        lists.map((l) => h("option", { value: String(l.id), selected: Number(l.id) === current }, `${l.name} (list id ${l.id})`)),
      );
      replace(listSlot, field("ActiveCampaign list", listControl, { hint: `${lists.length} lists in this account. The list id is shown after each name.` }));
    } catch (error) {
      listControl = h("input", { type: "number", min: "1", step: "1", required: true, value: current ? String(current) : "" });
      replace(
        listSlot,
        field("ActiveCampaign list ID", listControl, { hint: "In ActiveCampaign: Contacts > Lists; the id is listid=N in the list's address." }),
        errorBox(error, { title: "The account's lists could not be loaded" }),
      );
    }
  };

  const container = h("input", { type: "text", required: true, autocomplete: "off", spellcheck: "false", value: existing?.source?.container || "" });
  const folder = h("input", { type: "text", autocomplete: "off", spellcheck: "false", value: existing?.source?.folder || "" });
  const segment = h("input", { type: "text", required: true, autocomplete: "off", spellcheck: "false", value: existing?.source?.segment || "" });
  const columnsStatus = h("div", { class: "status-area", "aria-live": "polite" });
  const loadColumns = h("button", { type: "button", class: "secondary" }, "Load columns");

  const matching = h("div", {});
  const attributes = [];
  let emailField = null;
  const attributeOptions = () => [
    ...STANDARD.map(([value, text]) => h("option", { value }, text)),
    state.fields.length
      ? h(
          "optgroup",
          { label: "Custom fields" },
          state.fields.map((f) => h("option", { value: `field:${f.perstag}` }, `${f.title} (${f.perstag}, ${f.type || "text"})`)),
        )
      : null,
  ];
  const drawMatching = () => {
    const email = emailField ? emailField.control.value : mapping.email;
    emailField = columnControl("Email", state.columns, email, { required: true });
    const rows = attributes.map((attr, index) => {
      const which = h("select", {}, attributeOptions());
      which.value = attr.target;
      if (which.value !== attr.target) {
        // A custom field not in the account's list (or the list is unavailable): keep it visible.
        which.append(h("option", { value: attr.target }, attr.target.replace(/^field:/, "")));
        which.value = attr.target;
      }
      which.addEventListener("change", () => {
        attr.target = which.value;
      });
      const column = columnControl(`Column for attribute ${index + 1}`, state.columns, attr.column);
      column.control.addEventListener("change", () => {
        attr.column = column.control.value;
      });
      column.control.addEventListener("input", () => {
        attr.column = column.control.value;
      });
      const removeButton = h(
        "button",
        {
          type: "button",
          class: "secondary",
          onclick: () => {
            attributes.splice(index, 1);
            drawMatching();
            addButton.focus();
          },
        },
        `Remove attribute ${index + 1}`,
      );
      return h("div", { class: "attribute" }, field(`Attribute ${index + 1}`, which), column, removeButton);
    });
    replace(
      matching,
      emailField,
      rows,
      state.fieldsProblem ? errorBox(state.fieldsProblem, { title: "The account's custom fields could not be loaded" }) : null,
    );
  };
  const addButton = h(
    "button",
    {
      type: "button",
      class: "secondary",
      onclick: () => {
        const used = new Set(attributes.map((a) => a.target));
        const free = [...STANDARD.map(([v]) => v), ...state.fields.map((f) => `field:${f.perstag}`)].find((v) => !used.has(v));
        attributes.push({ target: free || "firstName", column: "" });
        drawMatching();
        const selects = matching.querySelectorAll(".attribute select");
        selects[selects.length - 2]?.focus();
      },
    },
    "Add attribute",
  );
  for (const [key] of STANDARD) if (mapping[key]) attributes.push({ target: key, column: mapping[key] });
  for (const [perstag, column] of Object.entries(mapping.fields || {})) attributes.push({ target: `field:${perstag}`, column });

  const drawFields = async () => {
    try {
      state.fields = await getAllPages(`/api/connections/${enc(connection.value)}/fields`, "fields");
      state.fieldsProblem = null;
    } catch (error) {
      state.fields = [];
      state.fieldsProblem = error;
    }
    drawMatching();
  };
  loadColumns.addEventListener("click", async () => {
    const params = new URLSearchParams({ container: container.value.trim(), folder: folder.value.trim(), segment: segment.value.trim() });
    replace(columnsStatus, h("p", { class: "loading" }, "Reading the segment's newest snapshot…"));
    try {
      const body = await getJson(`/api/segment-columns?${params}`);
      state.columns = body.columns;
      replace(columnsStatus, notice("success", `The segment has ${body.columns.length} columns.`, `Newest snapshot: ${body.snapshotId}. Pick the columns below.`));
    } catch (error) {
      state.columns = null;
      replace(columnsStatus, errorBox(error, { title: "The segment's columns could not be read" }));
    }
    drawMatching();
  });

  const tags = h("input", { type: "text", autocomplete: "off", value: (mapping.tags || []).join(", ") });
  const tagsField = field("Tags", tags, { hint: "Optional, comma-separated: added to every contact this export sends, e.g. segment:high-value." });
  // The account's own tags to pick from; a new name can still be typed (an import creates it).
  const tagPick = h("select", {}, h("option", { value: "" }, "Loading the account's tags…"));
  const tagPickField = field("Add one of the account's tags", tagPick, { hint: "Picking one adds it to Tags." });
  tagPick.addEventListener("change", () => {
    const name = tagPick.value;
    if (!name) return;
    const current = tags.value.split(",").map((t) => t.trim()).filter(Boolean);
    if (!current.includes(name)) current.push(name);
    tags.value = current.join(", ");
    tagPick.value = "";
  });
  const drawTags = async () => {
    try {
      const found = await getAllPages(`/api/connections/${enc(connection.value)}/tags`, "tags");
      const first = found.length ? `Pick one of its ${found.length} tags` : "The account has no tags yet";
      replace(tagPick, h("option", { value: "" }, first), found.map((t) => h("option", { value: t.name }, t.name)));
    } catch (error) {
      replace(tagPick, h("option", { value: "" }, `The account's tags could not be read: ${error.message}`));
    }
  };
  const mode = radios(
    "Mode",
    uid("mode"),
    [
      ["upsert", "Upsert: add and update contacts on the list"],
      ["mirror", "Mirror: also unsubscribe people who left the segment"],
    ],
    existing?.mode || "upsert",
  );
  const share = h("input", { type: "number", min: "0", max: "100", step: "1", value: String(Math.round((existing?.maxRemovalShare ?? 0.2) * 100)) });
  const shareField = field("Removal guard (% of the list)", share, {
    hint: "A mirror run that would unsubscribe more than this share of the list stops before sending; an administrator can force it once.",
  });
  const showShare = () => {
    shareField.hidden = mode.value() !== "mirror";
  };
  mode.addEventListener("change", showShare);
  showShare();
  const trigger = radios(
    "Trigger",
    uid("trigger"),
    [
      ["onRefresh", "On refresh: runs as soon as each new snapshot of the segment lands"],
      ["scheduled", "Scheduled: runs at a schedule when the segment has a new snapshot"],
      ["manual", "Manual: runs only on demand"],
    ],
    existing?.trigger || "onRefresh",
    { hint: "Every export can also be run on demand (Run now)." },
  );
  const schedule = h("input", { type: "text", autocomplete: "off", spellcheck: "false", value: existing?.schedule || "", placeholder: "0 30 2 * * *" });
  const scheduleField = field("Schedule (NCRONTAB, UTC)", schedule, {
    hint: "Six fields: second minute hour day month day-of-week, e.g. 0 30 2 * * * (daily at 02:30 UTC). Empty: the app's EXPORT_SCHEDULE.",
  });
  const showSchedule = () => {
    scheduleField.hidden = trigger.value() !== "scheduled";
  };
  trigger.addEventListener("change", showSchedule);
  showSchedule();
  const enabled = checkbox("Enabled", { checked: existing ? existing.enabled !== false : true });
  const saveStatus = h("div", { class: "status-area" });

  const document_ = () => {
    const doc = existing ? Object.fromEntries(Object.entries(existing).filter(([k]) => EXPORT_FIELDS.includes(k))) : {};
    const map = { email: emailField.control.value.trim() };
    const fields = {};
    for (const attr of attributes) {
      if (!attr.column) continue;
      if (attr.target.startsWith("field:")) fields[attr.target.slice(6)] = attr.column;
      else map[attr.target] = attr.column;
    }
    if (Object.keys(fields).length) map.fields = fields;
    // The form does not edit declared field formats: they are kept for the fields still mapped.
    const formats = Object.fromEntries(Object.entries(mapping.fieldFormats || {}).filter(([key]) => key in fields));
    if (Object.keys(formats).length) map.fieldFormats = formats;
    const tagList = tags.value.split(",").map((t) => t.trim()).filter(Boolean);
    if (tagList.length) map.tags = tagList;
    Object.assign(doc, {
      connection: connection.value,
      source: { container: container.value.trim(), folder: folder.value.trim().replace(/^\/+|\/+$/g, ""), segment: segment.value.trim() },
      listId: Number(listControl?.value),
      mapping: map,
      mode: mode.value(),
      trigger: trigger.value(),
      enabled: enabled.box.checked,
    });
    if (doc.mode === "mirror") doc.maxRemovalShare = Number(share.value) / 100;
    // A schedule belongs to the scheduled trigger only (the server refuses it with another one).
    if (doc.trigger === "scheduled") doc.schedule = schedule.value.trim() || null;
    else delete doc.schedule;
    return doc;
  };

  const formEl = h(
    "form",
    {
      class: "card",
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        replace(saveStatus);
        const exportName = nameInput.value.trim();
        nameField.setError(NAME.test(exportName) ? null : "Enter a name: lower-case letters, digits and hyphens.");
        emailField.setError(emailField.control.value.trim() ? null : "Choose the column that holds the email address.");
        if (!NAME.test(exportName) || !emailField.control.value.trim()) {
          formEl.querySelector("[aria-invalid=true]")?.focus();
          return;
        }
        try {
          const saved = await sendJson("PUT", `/api/exports/${enc(exportName)}`, document_(), { ifMatch: etag });
          const warnings = saved.body.warnings || [];
          // The export's own page, with its address: a reload or a shared link shows the export.
          ctx.go(
            exportPath(exportName),
            notice(
              "success",
              `Saved export ${exportName}.`,
              "Saving does not run the export. It runs on the schedule when its trigger is Scheduled and the segment has a new snapshot, or when you select Run now.",
              ...warnings.map((w) => `Note: ${w}`),
            ),
          );
        } catch (error) {
          replace(saveStatus, errorBox(error, { title: "The export was not saved" }));
          saveStatus.querySelector("[role=alert]")?.focus?.();
        }
      },
    },
    h("h1", { tabindex: "-1" }, existing ? `Edit export ${existing.name}` : "Add export"),
    nameField,
    connectionField,
    listSlot,
    h(
      "fieldset",
      {},
      h("legend", {}, "Segment source"),
      h("p", { class: "hint" }, "Where Customer Insights exports the segment in blob storage (SEGMENTS_STORAGE)."),
      field("Container", container, { hint: "e.g. customer-insights" }),
      field("Folder", folder, { hint: "Optional, e.g. CustomerInsights_1234/BlobExport" }),
      field("Segment", segment, { hint: "The exported table, e.g. HighValueSegment" }),
      h("div", { class: "actions" }, loadColumns),
      columnsStatus,
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Data matching"),
      h("p", { class: "hint" }, "The email column is required. Add attributes for first name, last name, phone and the account's custom fields."),
      matching,
      h("div", { class: "actions" }, addButton),
    ),
    tagsField,
    tagPickField,
    mode,
    shareField,
    trigger,
    scheduleField,
    enabled.el,
    h("p", { class: "hint" }, "Saving does not run the export."),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Save"), h("a", { href: "#/exports" }, "Cancel")),
    saveStatus,
  );
  connection.addEventListener("change", () => {
    drawLists();
    drawFields();
    drawTags();
  });
  replace(main, formEl);
  drawMatching();
  await Promise.all([drawLists(), drawFields(), drawTags()]);
}
