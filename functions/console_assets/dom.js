// Building the page from data without parsing markup: every value is text, so nothing from the API or
// a segment can become markup.

let counter = 0;

export function uid(prefix = "id") {
  counter += 1;
  return `${prefix}-${counter}`;
}

// h("button", {type: "button", onclick: f}, "Save"): attributes, properties (on*, value, checked),
// and children (strings, numbers, nodes, arrays; null/false skipped).
export function h(tag, props = {}, ...children) {
  const el = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "value" || key === "checked" || key === "selected") {
      el[key] = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// A labelled control with an optional hint and a live error message tied to it by aria-describedby.
export function field(label, control, { hint = null, id = null } = {}) {
  const controlId = id || control.id || uid("f");
  control.id = controlId;
  const hintEl = hint ? h("p", { class: "hint", id: `${controlId}-hint` }, hint) : null;
  const errorEl = h("p", { class: "field-error", id: `${controlId}-error`, "aria-live": "polite" });
  const described = [hintEl ? hintEl.id : null, errorEl.id].filter(Boolean).join(" ");
  control.setAttribute("aria-describedby", described);
  const wrap = h("div", { class: "field" }, h("label", { for: controlId }, label), hintEl, control, errorEl);
  wrap.setError = (message) => {
    errorEl.textContent = message || "";
    if (message) control.setAttribute("aria-invalid", "true");
    else control.removeAttribute("aria-invalid");
  };
  wrap.control = control;
  return wrap;
}

export function radios(legend, name, options, selected, { hint = null } = {}) {
  const hintEl = hint ? h("p", { class: "hint" }, hint) : null;
  const set = h(
    "fieldset",
    { class: "radios" },
    h("legend", {}, legend),
    hintEl,
    options.map(([value, text]) => {
      const id = uid(name);
      return h(
        "div",
        { class: "radio" },
        h("input", { type: "radio", name, id, value, checked: value === selected }),
        h("label", { for: id }, text),
      );
    }),
  );
  set.value = () => set.querySelector("input:checked")?.value ?? null;
  return set;
}

export function checkbox(label, { checked = false, id = null } = {}) {
  const box = h("input", { type: "checkbox", id: id || uid("c"), checked });
  return { box, el: h("div", { class: "check" }, box, h("label", { for: box.id }, label)) };
}

export function table(caption, headers, rows, { className = "" } = {}) {
  return h(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    h(
      "table",
      { class: className },
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col" }, text)))),
      h("tbody", {}, rows),
    ),
  );
}

export function number(value) {
  return typeof value === "number" ? value.toLocaleString("en-US") : "–";
}

// The browser's own time zone, named on every timestamp ("4 Dec 2026, 23:35:12 UTC"): the API's
// times are UTC and a schedule is in UTC, so a bare local time would be ambiguous.
const STAMP = new Intl.DateTimeFormat("en-GB", {
  day: "numeric",
  month: "short",
  year: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hourCycle: "h23",
  timeZoneName: "short",
});
export const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

export function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : STAMP.format(date);
}

// An API error as the API gives it: the message, then each detail line.
export function errorBox(error, { title = "That did not work" } = {}) {
  const box = h(
    "div",
    { class: "notice error", role: "alert" },
    h("p", { class: "notice-title" }, title),
    h("p", {}, error.message || String(error)),
    error.details && error.details.length ? h("ul", {}, error.details.map((d) => h("li", {}, d))) : null,
    error.code ? h("p", { class: "hint" }, `Error code: ${error.code}${error.status ? ` (HTTP ${error.status})` : ""}`) : null,
  );
  return box;
}

export function notice(kind, title, ...lines) {
  return h(
    "div",
    { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" },
    h("p", { class: "notice-title" }, title),
    lines.map((line) => (line instanceof Node ? line : h("p", {}, line))),
  );
}

const announcer = () => document.getElementById("announce");

export function announce(text) {
  const el = announcer();
  if (el) el.textContent = text;
}

// A modal confirmation (native <dialog>: focus is trapped and Escape cancels). Resolves true/false.
export function confirmDialog(title, lines, confirmLabel, { extra = null, cancelLabel = "Cancel" } = {}) {
  return new Promise((resolve) => {
    const titleId = uid("dlg");
    const dialog = h(
      "dialog",
      { class: "dialog", "aria-labelledby": titleId },
      h("h2", { id: titleId }, title),
      lines.map((line) => h("p", {}, line)),
      extra,
    );
    const done = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    const cancel = h("button", { type: "button", class: "secondary", onclick: () => done(false) }, cancelLabel);
    const ok = h("button", { type: "button", class: "danger", onclick: () => done(true) }, confirmLabel);
    dialog.append(h("div", { class: "actions" }, cancel, ok));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      done(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}
