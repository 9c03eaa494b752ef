// Run history: the runs of one export, a chart of what each sent, one run's report in plain
// words, its rejected rows, and live progress while a run is going.

import { apiUrl, call, enc, getJson, nextLink, sendJson } from "./api.js";
import { announce, checkbox, confirmDialog, errorBox, h, notice, number, replace, table, when } from "./dom.js";
import { runChart } from "./chart.js";
import { parseCsv } from "./csv.js";
import { connectionSlot, listSlot } from "./names.js";
import { REASONS, changesSection, findPerson, reasonCell, unguard } from "./changes.js";

const POLL_MS = 1000;
const ACTIVE = new Set(["queued", "running"]);
const ROWS_SHOWN = 200;

// A run that sent nothing because nothing changed since the last delivery.
export function upToDate(run) {
  const counts = run.counts || {};
  return run.status === "succeeded" && !run.dryRun && !run.withdraw && !counts.toSend && !counts.toRemove && !counts.sent;
}

export function statusBadge(run) {
  const text = upToDate(run)
    ? "Up to date"
    : { queued: "Queued", running: "Running", succeeded: "Succeeded", failed: "Failed", cancelled: "Cancelled" }[run.status] || run.status;
  return h("span", { class: `badge badge-${run.status}` }, run.dryRun ? `${text} (preview)` : text);
}

// POST .../runs, then follow the run on its own screen. `into` shows an error where it happened.
export async function startRun(ctx, exportName, options, into) {
  try {
    const started = await sendJson("POST", `/api/exports/${enc(exportName)}/runs`, options);
    ctx.go(runPath(exportName, started.body.runId));
  } catch (error) {
    const active = error.body && error.body.activeRun;
    replace(
      into,
      errorBox(error, { title: options.dryRun ? "The preview did not start" : "The run did not start" }),
      active ? h("p", {}, h("a", { href: runPath(exportName, active.runId) }, `Follow run ${active.runId}`)) : null,
    );
  }
}

const c = (run, key) => (run.counts && typeof run.counts[key] === "number" ? run.counts[key] : 0);

export const exportPath = (exportName) => `#/exports/${enc(exportName)}`;
export const runPath = (exportName, runId) => `#/exports/${enc(exportName)}/runs/${enc(runId)}`;

function runKind(run) {
  const kind = [run.withdraw ? "withdrawal" : null, run.dryRun ? "preview" : run.withdraw ? null : "run", run.full ? "full" : null, run.force ? "forced" : null];
  return kind.filter(Boolean).join(", ");
}

function runRow(exportName, run) {
  return h(
    "tr",
    {},
    h("th", { scope: "row" }, h("a", { href: runPath(exportName, run.runId) }, when(run.queuedAt)), h("span", { class: "sub" }, run.runId)),
    h("td", {}, statusBadge(run)),
    h("td", {}, `${runKind(run)}; ${run.trigger === "schedule" ? "scheduled" : run.trigger === "cli" ? "CLI" : "on demand"}`),
    h("td", { class: "num" }, number(c(run, "rowsRead"))),
    h("td", { class: "num" }, number(c(run, "unchanged"))),
    h("td", { class: "num" }, number(c(run, "sent"))),
    h("td", { class: "num" }, number(c(run, "accepted"))),
    h("td", { class: "num" }, number(c(run, "rejected") + c(run, "failed"))),
    h("td", { class: "num" }, number(c(run, "removed"))),
    h("td", { class: "num" }, run.durationSeconds == null ? "–" : `${run.durationSeconds.toFixed(1)} s`),
  );
}

export const RUN_COLUMNS = ["Queued", "Status", "Kind", "Rows read", "Unchanged", "Sent", "Accepted", "Rejected", "Removed", "Duration"];

// Withdraw: a preview first (it says how many it would unsubscribe); its page offers the real one.
function withdrawCard(ctx, exportName, exp) {
  const status = h("div", { class: "status-area" });
  const force = checkbox("Force: go past the removal guard (it stops a withdrawal of more than the export's removal share of its contacts)");
  return h(
    "section",
    { class: "card", "aria-labelledby": "withdraw-h" },
    h("h2", { id: "withdraw-h" }, "Withdraw from the list"),
    h(
      "p",
      {},
      `Unsubscribes from list ${exp.listId} everyone this export subscribed, except people who unsubscribed on their own. Contacts stay in ActiveCampaign. `,
      "Start with a preview: it sends nothing and says how many would be unsubscribed; its page then offers the withdrawal itself.",
    ),
    ctx.me.may.forceRuns ? force.el : null,
    h(
      "div",
      { class: "actions" },
      h(
        "button",
        { type: "button", class: "secondary", onclick: () => startRun(ctx, exportName, { withdraw: true, dryRun: true, ...(force.box.checked ? { force: true } : {}) }, status) },
        "Preview the withdrawal (dry run)",
      ),
    ),
    status,
  );
}

// The export's feedback folder (issue 26): where it is, when it was last written, what it holds.
function feedbackCard(exportName, exp) {
  if (!exp.feedback) return null;
  const body = h("div", {}, h("p", { class: "hint" }, "Reading the feedback folder's state ..."));
  getJson(`/api/exports/${enc(exportName)}/feedback`).then(
    (fb) => {
      const counts = fb.counts || {};
      const kinds = ["unsubscribed", "bounced", "subscribed"].map((k) => `${number(counts[k] || 0)} ${k}`).join(", ");
      replace(
        body,
        h("p", {}, `Container ${exp.feedback.container}, folder ${exp.feedback.folder} (a Common Data Model folder Customer Insights can connect to).`),
        h(
          "p",
          {},
          fb.lastWrittenAt
            ? `Last written ${when(fb.lastWrittenAt)}: ${(fb.refreshes || []).length} refresh(es) listed, holding ${kinds}.`
            : "Not written yet: it is written after the export's next run.",
        ),
        fb.lastError ? notice("error", "The last feedback write failed; it is tried again after the next run.", fb.lastError) : null,
      );
    },
    (error) => replace(body, errorBox(error, { title: "The feedback folder's state could not be read" })),
  );
  return h("section", { class: "card", "aria-labelledby": "feedback-h" }, h("h2", { id: "feedback-h" }, "Feedback folder: opt-outs and bounces"), body);
}

// The export's page: what it sends where, starting runs, and its runs (with a chart).
export async function history(main, ctx, exportName) {
  const [exp, { runs }] = await Promise.all([getJson(`/api/exports/${enc(exportName)}`), getJson(`/api/exports/${enc(exportName)}/runs?limit=50`)]);
  const may = ctx.me.may;
  const status = h("div", { class: "status-area" }, ctx.takeFlash());
  const full = checkbox("Full: send every contact, not only changes");
  const force = checkbox("Force: allow unsubscribing more than the removal guard");
  const options = () => {
    const chosen = {};
    if (full.box.checked) chosen.full = true;
    if (force.box.checked) chosen.force = true;
    return chosen;
  };
  const controls =
    may.startRuns === "never"
      ? null
      : h(
          "div",
          { class: "card run-controls" },
          h("h2", {}, "Start a run"),
          may.startRuns === "ifConnectionAllows"
            ? h("p", { class: "hint" }, "Contributors may start runs when the export's connection allows contributors; the app says so if it does not.")
            : null,
          may.fullRuns ? full.el : null,
          may.forceRuns && exp.mode === "mirror" ? force.el : null,
          h(
            "div",
            { class: "actions" },
            h("button", { type: "button", class: "secondary", onclick: () => startRun(ctx, exportName, { ...options(), dryRun: true }, status) }, "Preview (dry run)"),
            h("button", { type: "button", onclick: () => startRun(ctx, exportName, options(), status) }, "Run now"),
          ),
        );
  const listing = h("div", {});
  const drawRuns = (list) => {
    const points = [...list].reverse().map((run) => ({
      when: run.queuedAt,
      sent: c(run, "sent"),
      rejected: c(run, "rejected") + c(run, "failed"),
      removed: c(run, "removed"),
      preview: run.dryRun,
    }));
    replace(
      listing,
      list.length
        ? [
            runChart(points, { title: "Contacts sent, rejected and removed per run" }),
            table("Runs, newest first", RUN_COLUMNS, list.map((run) => runRow(exportName, run))),
          ]
        : notice("info", "No runs yet.", "Start one with Preview (dry run) or Run now, or wait for the schedule."),
    );
  };
  drawRuns(runs);
  const source = [exp.source.container, exp.source.folder].filter(Boolean).join(" / ");
  replace(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/exports" }, "Exports"), " / ", exportName),
    h("h1", { tabindex: "-1" }, `Export ${exportName}`),
    h(
      "p",
      {},
      `Segment ${exp.source.segment}`,
      source ? ` (${source})` : "",
      " to ",
      listSlot(ctx, exp.connection, exp.listId),
      " through connection ",
      connectionSlot(ctx, exp.connection, exp.connectionDisplayName),
      `, mode ${exp.mode}. `,
      may.changeExports ? h("a", { href: `${exportPath(exportName)}/edit`, "aria-label": `Edit export ${exportName}` }, "Edit") : null,
    ),
    status,
    controls,
    ctx.me.admin ? findPerson(exportName, (runId) => runPath(exportName, runId)) : null,
    h("h2", {}, "Runs"),
    listing,
    feedbackCard(exportName, exp),
    ctx.me.admin ? withdrawCard(ctx, exportName, exp) : null,
  );
  // While a run is going, only the chart and table are redrawn: the controls keep their state and focus.
  let timer = null;
  let left = false;
  const poll = async (list) => {
    if (left || !list.some((run) => ACTIVE.has(run.status))) return;
    timer = window.setTimeout(async () => {
      try {
        const fresh = (await getJson(`/api/exports/${enc(exportName)}/runs?limit=50`)).runs;
        drawRuns(fresh);
        poll(fresh);
      } catch (error) {
        replace(status, errorBox(error, { title: "The runs could not be read" }));
      }
    }, POLL_MS * 2);
  };
  ctx.onLeave(() => {
    left = true;
    window.clearTimeout(timer);
  });
  poll(runs);
}

const pick = (report, camel, snake) => (report[camel] !== undefined ? report[camel] : report[snake]);

function plural(n, one, many = `${one}s`) {
  return `${number(n)} ${n === 1 ? one : many}`;
}

// What the run did, in sentences, from report.json (the API's report route) or the run's counts.
export function describe(run, report, { rowsListed = false } = {}) {
  const r = report || {};
  const counts = run.counts || {};
  const get = (camel, snake) => {
    const value = pick(r, camel, snake);
    return typeof value === "number" ? value : counts[camel] || 0;
  };
  if (run.withdraw) return describeWithdrawal(run, get);
  const rejectedByReason = pick(r, "rejected", "rejected");
  const rejected = typeof rejectedByReason === "object" && rejectedByReason ? Object.values(rejectedByReason).reduce((a, b) => a + b, 0) : counts.rejected || 0;
  const lines = [];
  const snapshot = pick(r, "snapshotId", "snapshot_id") || run.snapshotId;
  lines.push(`Read ${plural(get("rowsRead", "rows_read"), "row")}${snapshot ? ` from snapshot ${snapshot}` : ""}.`);
  if (rejected) {
    const reasons = typeof rejectedByReason === "object" && rejectedByReason
      ? Object.entries(rejectedByReason).map(([reason, n]) => `${number(n)} with ${REASONS[reason] || reason}`).join(", ")
      : null;
    lines.push(`Rejected ${plural(rejected, "row")} before sending${reasons ? `: ${reasons}` : ""}.${rowsListed ? " They are listed below with their reasons." : ""}`);
  } else lines.push("No row was rejected.");
  const duplicates = get("duplicates", "duplicates");
  if (duplicates) lines.push(`Skipped ${plural(duplicates, "duplicate")}: a later row with an email address already seen (the first one counts).`);
  const contacts = get("contacts", "contacts");
  const hasSplit = ["new", "changed"].every((k) => typeof r[k] === "number" || typeof counts[k] === "number");
  lines.push(
    `That leaves ${plural(contacts, "contact")}` +
      (hasSplit ? `: ${number(get("new", "new"))} new, ${number(get("changed", "changed"))} changed and ${number(get("unchanged", "unchanged"))} unchanged since the last delivery.` : "."),
  );
  const toSend = get("toSend", "to_send");
  if (run.dryRun) {
    lines.push(`This was a preview: it would send ${plural(toSend, "contact")} and sent nothing.`);
    const toRemove = get("toRemove", "to_remove");
    if (toRemove) lines.push(`It would unsubscribe ${plural(toRemove, "contact")} who left the segment.`);
    return lines;
  }
  if (run.status === "failed" && !get("sent", "sent")) {
    lines.push("Nothing was sent to ActiveCampaign.");
    return lines;
  }
  if (run.status === "cancelled") {
    // `sent` is totalled when a run ends; a cancelled run's outcomes so far are what it did.
    const failed = get("failed", "failed");
    const unconfirmed = get("unconfirmed", "unconfirmed");
    lines.push(
      `Cancelled: ActiveCampaign accepted ${number(get("accepted", "accepted"))} of the ${plural(toSend, "contact")} to send` +
        (failed ? `, refused ${number(failed)}` : "") +
        (unconfirmed ? `, did not confirm ${number(unconfirmed)} in time` : "") +
        ".",
    );
    lines.push("Batches ActiveCampaign had already queued were confirmed and logged: nothing was half-sent. The next run goes on from where this one stopped.");
    return lines;
  }
  if (upToDate(run)) {
    lines.push("Up to date: nothing changed since the last delivery, so nothing was sent to ActiveCampaign.");
    return lines;
  }
  lines.push(`Sent ${plural(get("sent", "sent"), "contact")} of ${number(toSend)} to send.`);
  const failed = get("failed", "failed");
  const reasons = pick(r, "failureReasons", "failure_reasons");
  lines.push(
    `ActiveCampaign accepted ${number(get("accepted", "accepted"))}` +
      (failed ? ` and refused ${number(failed)}${reasons && Object.keys(reasons).length ? ` (${Object.entries(reasons).map(([why, n]) => `${number(n)} ${REASONS[why] || why}`).join("; ")})` : ""}` : "") +
      ".",
  );
  const unconfirmed = get("unconfirmed", "unconfirmed");
  if (unconfirmed) lines.push(`${plural(unconfirmed, "contact was", "contacts were")} queued but not confirmed in time; they are sent again next run.`);
  const toRemove = get("toRemove", "to_remove");
  if (toRemove || get("removed", "removed")) {
    lines.push(`Unsubscribed ${number(get("removed", "removed"))} of ${plural(toRemove, "contact")} who left the segment${get("removeFailed", "remove_failed") ? `; ${number(get("removeFailed", "remove_failed"))} could not be unsubscribed` : ""}.`);
  }
  return lines;
}

// A withdrawal reads no segment: it unsubscribes who the export's delivered state holds.
function describeWithdrawal(run, get) {
  const toRemove = get("toRemove", "to_remove");
  const removed = get("removed", "removed");
  const left = get("leftUnsubscribed", "left_unsubscribed");
  const notFailed = get("removeFailed", "remove_failed");
  const alone = left ? ` ${plural(left, "person who unsubscribed on their own is", "people who unsubscribed on their own are")} left alone.` : "";
  if (run.dryRun) {
    return [`This was a preview of a withdrawal: it would unsubscribe ${plural(toRemove, "contact")} this export subscribed to the list, and sent nothing.${alone}`];
  }
  if (run.status === "failed" && !removed) return ["Nobody was unsubscribed."];
  const lines = [`Unsubscribed ${number(removed)} of ${plural(toRemove, "contact")} this export had subscribed${notFailed ? `; ${number(notFailed)} could not be unsubscribed` : ""}.${alone}`];
  if (run.status === "cancelled") lines.push("Cancelled before the end: a new withdrawal unsubscribes the rest.");
  return lines;
}

function progress(run) {
  const toSend = c(run, "toSend");
  const sent = c(run, "sent");
  const phase =
    run.status === "queued"
      ? "Waiting for the worker to pick the run up."
      : toSend
        ? `Sending: ${number(sent)} of ${number(toSend)} contacts sent.`
        : `Reading the segment: ${number(c(run, "rowsRead"))} rows read so far.`;
  return h(
    "div",
    { class: "card progress-card" },
    h("h2", {}, "Progress"),
    h("p", { id: "progress-text" }, phase),
    toSend ? h("progress", { max: String(toSend), value: String(sent), "aria-labelledby": "progress-text" }) : null,
    h("p", { class: "hint" }, `Rows read ${number(c(run, "rowsRead"))}, rejected ${number(c(run, "rejected"))}, accepted ${number(c(run, "accepted"))}. Updated ${when(run.updatedAt)}.`),
  );
}

// Every page of the rejected rows as one CSV text (the header once).
async function wholeCsv(path) {
  let next = `${path}?limit=100000`;
  let text = "";
  for (let page = 0; next && page < 1000; page += 1) {
    const response = await call("GET", next, { accept: "text/csv" });
    const part = await response.text();
    text += page === 0 ? part : part.slice(part.indexOf("\n") + 1);
    next = nextLink(response);
  }
  return text;
}

function fileName(path) {
  return path.slice(path.lastIndexOf("/") + 1) || path;
}

function folderOf(path) {
  return path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : "";
}

// The partition column as its file name, its full path on hover (and, when every row shares one
// folder, that folder said once above the table for those who cannot hover).
function partitionCell(path) {
  if (path === "activecampaign") return h("th", { scope: "row" }, "ActiveCampaign");
  return h("th", { scope: "row" }, h("span", { title: path, class: "file" }, fileName(path)));
}

// A button that saves every page of a CSV route. Fetched with the key; a blob URL saves it
// without the key ever being in a URL.
function downloadButton(path, filename, label) {
  return h(
    "button",
    {
      type: "button",
      class: "secondary",
      onclick: async () => {
        const text = await wholeCsv(path);
        const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
        const link = h("a", { href: url, download: filename });
        document.body.append(link);
        link.click();
        link.remove();
        window.setTimeout(() => URL.revokeObjectURL(url), 10000);
      },
    },
    label,
  );
}

async function rejectedRows(exportName, run) {
  const path = `/api/exports/${enc(exportName)}/runs/${enc(run.runId)}/rejected`;
  const response = await call("GET", `${path}?limit=${ROWS_SHOWN}`, { accept: "text/csv" });
  const [rawHeader, ...raw] = parseCsv(await response.text());
  const header = (rawHeader || []).map(unguard);
  const data = raw.map((row) => row.map(unguard));
  const more = Boolean(nextLink(response));
  const total = c(run, "rejected") + c(run, "duplicates") + c(run, "failed");
  const download = downloadButton(path, `rejected-${exportName}-${run.runId}.csv`, "Download rejected rows (CSV)");
  // A withdrawal reads no rows: only unsubscriptions ActiveCampaign refused would be listed.
  if (run.withdraw && !data.length) return null;
  if (!header.length || !data.length) return h("section", { "aria-labelledby": "rejected-h" }, h("h2", { id: "rejected-h" }, "Rejected rows"), h("p", {}, "No row was rejected."));
  // partition, line, reason, detail, then the segment's own columns (administrators only).
  const values = header.slice(4);
  const folders = [...new Set(data.map((row) => row[0]).filter((p) => p !== "activecampaign").map(folderOf))];
  const rows = data.map((row) =>
    h(
      "tr",
      {},
      partitionCell(row[0]),
      h("td", { class: "num" }, row[1] && row[1] !== "0" ? number(Number(row[1])) : "–"),
      reasonCell(row[2]),
      h("td", {}, row[3] || "–"),
      values.map((_, i) => h("td", {}, row[4 + i] ?? "")),
    ),
  );
  return h(
    "section",
    { "aria-labelledby": "rejected-h" },
    h("h2", { id: "rejected-h" }, "Rejected rows"),
    h("p", {}, more ? `The first ${number(data.length)} of about ${number(total)} rows; the CSV download has all of them.` : `${plural(data.length, "row")}, each with its reason.`),
    folders.length === 1 && folders[0] ? h("p", { class: "hint" }, `Files in folder ${folders[0]}; point at a file name for its full path.`) : h("p", { class: "hint" }, "Point at a file name for its full path."),
    h("p", {}, download),
    table("Rejected rows", ["File", "Line", "Reason", "Detail", ...values], rows, { className: "rows rejected" }),
  );
}

// A failed or cancelled run: start it again as it was, or change the export first.
function afterFailure(ctx, exportName, run) {
  const cancelled = run.status === "cancelled";
  const status = h("div", { class: "status-area" });
  const again = Object.fromEntries(["dryRun", "full", "force", "withdraw"].filter((k) => run[k]).map((k) => [k, true]));
  const may = ctx.me.may;
  return h(
    "div",
    { class: "card" },
    h("h2", {}, "What next"),
    cancelled
      ? h("p", {}, "A new run goes on from where this one stopped.")
      : h("p", {}, "Fix what the error names (the export, its connection or the segment), then start the run again."),
    h(
      "div",
      { class: "actions" },
      may.startRuns !== "never"
        ? h("button", { type: "button", onclick: () => startRun(ctx, exportName, again, status) }, cancelled ? "Run again" : run.dryRun ? "Retry the preview" : "Retry")
        : null,
      run.withdraw && run.dryRun && !run.force && may.forceRuns
        ? h("button", { type: "button", class: "secondary", onclick: () => startRun(ctx, exportName, { ...again, force: true }, status) }, "Preview again with force")
        : null,
      may.changeExports ? h("a", { class: "button secondary", href: `${exportPath(exportName)}/edit` }, "Edit export") : null,
    ),
    status,
  );
}

// A queued or running run: Cancel (POST .../cancel). It stops at its next batch boundary; the poll
// then shows it cancelled.
function cancelControl(ctx, path, run) {
  if (ctx.me.may.startRuns === "never") return null;
  const status = h("div", { class: "status-area" });
  const what = run.withdraw ? "withdrawal" : run.dryRun ? "preview" : "run";
  const button = h(
    "button",
    {
      type: "button",
      class: "danger",
      onclick: async () => {
        const yes = await confirmDialog(
          `Cancel this ${what}?`,
          [
            "It stops at its next batch boundary. Batches ActiveCampaign has already queued are still confirmed and logged, so nothing is half-sent.",
            "Its checkpoint is kept: the next run goes on from where this one stopped.",
          ],
          `Cancel the ${what}`,
          { cancelLabel: "Keep it running" },
        );
        if (!yes) return;
        button.disabled = true;
        try {
          const answer = await sendJson("POST", `${path}/cancel`, {});
          replace(status, notice("info", answer.body.status === "cancelled" ? "Cancelled." : "Cancel requested.", answer.body.status === "cancelled" ? `The ${what} had not started: nothing was sent.` : `The ${what} stops at its next batch boundary.`));
        } catch (error) {
          button.disabled = false;
          replace(status, errorBox(error, { title: `The ${what} was not cancelled` }));
        }
      },
    },
    `Cancel the ${what}`,
  );
  return h("div", { class: "actions" }, button, status);
}

// A withdrawal preview that succeeded: the withdrawal itself, with the same options.
function withdrawNow(ctx, exportName, run, report) {
  if (!ctx.me.admin) return null;
  const status = h("div", { class: "status-area" });
  const n = c(run, "toRemove") || (report && report.to_remove) || 0;
  if (!n) return notice("info", "Nothing to withdraw.", "The export's delivered state holds nobody it subscribed to the list.");
  const start = async () => {
    const yes = await confirmDialog(
      `Withdraw ${plural(n, "contact")} from the list?`,
      [
        `This unsubscribes from the list the ${plural(n, "contact")} this preview found${run.force ? ", past the removal guard (force)" : ""}. People who unsubscribed on their own are left alone.`,
        "Contacts stay in ActiveCampaign. Disable the export first, or a scheduled run sends them again.",
      ],
      "Withdraw",
      { cancelLabel: "Keep them" },
    );
    if (!yes) return;
    startRun(ctx, exportName, run.force ? { withdraw: true, force: true } : { withdraw: true }, status);
  };
  return h(
    "div",
    { class: "card" },
    h("h2", {}, "Withdraw"),
    h("p", {}, `The preview found ${plural(n, "contact")} to unsubscribe. Withdraw them when this is what you expect.`),
    h("div", { class: "actions" }, h("button", { type: "button", class: "danger", onclick: start }, `Withdraw ${plural(n, "contact")}`)),
    status,
  );
}

function runTitle(run) {
  if (run.withdraw) return run.dryRun ? "Withdrawal preview" : "Withdrawal";
  return run.dryRun ? "Preview" : "Run";
}

export async function detail(main, ctx, exportName, runId) {
  const path = `/api/exports/${enc(exportName)}/runs/${enc(runId)}`;
  let run = await getJson(path);
  const head = [
    h("p", { class: "crumbs" }, h("a", { href: "#/exports" }, "Exports"), " / ", h("a", { href: exportPath(exportName) }, exportName), " / ", runId),
    h("h1", { tabindex: "-1" }, `${runTitle(run)} of export ${exportName}`),
  ];
  const summary = () =>
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Status"),
      h("dd", {}, statusBadge(run)),
      h("dt", {}, "Queued"),
      h("dd", {}, when(run.queuedAt)),
      h("dt", {}, "Finished"),
      h("dd", {}, when(run.finishedAt)),
      h("dt", {}, "Run id"),
      h("dd", {}, run.runId),
      ...(run.instance ? [h("dt", {}, "Instance"), h("dd", {}, `${run.instance} (attempt ${run.attempts})`)] : []),
    );
  // Not a live region: a screen reader hears the outcome once (announce), not every poll.
  const live = h("div", {});
  // Drawn once while the run is active, so the poll does not take the focus from it.
  const controls = ACTIVE.has(run.status) ? cancelControl(ctx, path, run) : null;
  replace(main, head, summary(), controls, live);
  const draw = () => replace(main, head, summary(), ACTIVE.has(run.status) ? controls : null, live);
  if (ACTIVE.has(run.status)) {
    replace(live, progress(run));
    await new Promise((resolve) => {
      let stopped = false;
      let timer = null;
      const tick = async () => {
        if (stopped) return;
        try {
          run = await getJson(path);
        } catch (error) {
          replace(live, errorBox(error, { title: "Progress could not be read" }));
        }
        if (!ACTIVE.has(run.status)) {
          stopped = true;
          resolve();
          return;
        }
        draw();
        replace(live, progress(run));
        timer = window.setTimeout(tick, POLL_MS);
      };
      timer = window.setTimeout(tick, POLL_MS);
      ctx.onLeave(() => {
        stopped = true;
        window.clearTimeout(timer);
        resolve();
      });
    });
    if (ACTIVE.has(run.status)) return; // the screen was left
    draw();
    announce(`The ${runTitle(run).toLowerCase()} ${run.status}.`);
  }
  let report = null;
  let reportProblem = null;
  try {
    report = await getJson(`${path}/report`);
  } catch (error) {
    reportProblem = error;
  }
  const parts = [];
  if (run.status === "cancelled") parts.push(notice("warning", `The ${runTitle(run).toLowerCase()} was cancelled.`, run.error || "It stopped at a batch boundary."));
  else if (run.error) parts.push(errorBox({ message: run.error }, { title: "The run failed" }));
  if (run.status === "failed" || run.status === "cancelled") parts.push(afterFailure(ctx, exportName, run));
  if (run.withdraw && run.dryRun && run.status === "succeeded") parts.push(withdrawNow(ctx, exportName, run, report));
  if (run.attemptErrors && run.attemptErrors.length) {
    parts.push(h("section", {}, h("h2", {}, "Failed attempts"), h("ol", {}, run.attemptErrors.map((e) => h("li", {}, e)))));
  }
  const rowsListed = run.status === "succeeded" || Boolean(run.rejectedBlob);
  parts.push(h("section", { "aria-labelledby": "report-h", class: "report" }, h("h2", { id: "report-h" }, "What happened"), describe(run, report, { rowsListed }).map((line) => h("p", {}, line))));
  if (reportProblem && run.status === "succeeded") parts.push(errorBox(reportProblem, { title: "The full report could not be read; the summary above uses the run's counts" }));
  replace(live, parts);
  if (rowsListed) {
    try {
      const rows = await rejectedRows(exportName, run);
      if (rows) live.append(rows);
    } catch (error) {
      live.append(errorBox(error, { title: "The rejected rows could not be read" }));
    }
  }
  const changes = run.changesBlob || (run.reports && run.reports.changes);
  if (changes) live.append(changesSection(exportName, run, { download: downloadButton }));
  live.append(h("p", { class: "hint" }, `The same report through the API: GET ${apiUrl(`${path}/report`)}`));
}
