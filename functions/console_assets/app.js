// The console's shell: who the caller is, the function-key prompt, and a hash router over the
// screens. Each screen is a function (main, ctx, ...params) that draws into <main>.

import { authMode, getJson, session, whenSignedOut } from "./api.js";
import { errorBox, field, h, notice, replace } from "./dom.js";
import * as connections from "./connections.js";
import * as exportScreens from "./exports.js";
import * as runs from "./runs.js";

const main = document.getElementById("main");
const who = document.getElementById("who");
let me = null;
let cleanups = [];
let flash = null;

const routes = [
  [/^#\/connections$/, connections.list, "Connections"],
  [/^#\/connections\/new$/, (m, c) => connections.form(m, c, null), "Add connection"],
  [/^#\/connections\/([a-z0-9-]+)\/edit$/, connections.form, "Edit connection"],
  [/^#\/exports$/, exportScreens.list, "Exports"],
  [/^#\/exports\/new$/, (m, c) => exportScreens.form(m, c, null), "Add export"],
  [/^#\/exports\/([a-z0-9-]+)\/edit$/, exportScreens.form, "Edit export"],
  [/^#\/exports\/([a-z0-9-]+)$/, runs.history, "Export"],
  [/^#\/exports\/([a-z0-9-]+)\/runs$/, runs.history, "Export"],
  [/^#\/exports\/([a-z0-9-]+)\/runs\/([0-9A-Za-z-]+)$/, runs.detail, "Run"],
];

const ctx = {
  get me() {
    return me;
  },
  go(hash, message = null) {
    flash = message;
    if (window.location.hash === hash) render();
    else window.location.hash = hash;
  },
  // A poll or timer of the current screen, stopped when the screen changes.
  onLeave(stop) {
    cleanups.push(stop);
  },
  takeFlash() {
    const message = flash;
    flash = null;
    return message;
  },
};

function leave() {
  for (const stop of cleanups) stop();
  cleanups = [];
}

function showWho() {
  const forget = h(
    "button",
    {
      type: "button",
      class: "link",
      onclick: () => {
        session.forget();
        me = null;
        start();
      },
    },
    "Forget the key",
  );
  const role = me.admin ? "administrator" : me.roles.includes("Exports.Contributor") ? "contributor" : "no role";
  // App Service Authentication ends its own session; the page then shows its sign-in link.
  const back = encodeURIComponent(window.location.pathname);
  const signOut = h("a", { href: `/.auth/logout?post_logout_redirect_uri=${back}` }, "Sign out");
  replace(
    who,
    authMode === "key" && session.key()
      ? h("p", {}, `Signed in with a function key (${role}). `, forget)
      : authMode === "entra"
        ? h("p", {}, `Signed in as ${me.name} (${role}). `, signOut)
        : h("p", {}, `Signed in as ${me.name} (${role}).`),
  );
}

function keyPrompt(problem = null) {
  leave();
  replace(who);
  const input = h("input", { type: "password", name: "function-key", autocomplete: "off", required: true });
  const keyField = field("Function key", input, {
    hint: "A function key of this app (Azure portal: the function app > App keys, or az functionapp keys list). It is kept for this browser session only and sent with each API call.",
  });
  const form = h(
    "form",
    {
      class: "card narrow",
      onsubmit: (event) => {
        event.preventDefault();
        const key = input.value.trim();
        if (!key) {
          keyField.setError("Enter the function key.");
          input.focus();
          return;
        }
        session.setKey(key);
        start();
      },
    },
    h("h1", { tabindex: "-1" }, "Sign in"),
    h("p", {}, "The console uses the app's HTTP API, which needs a function key."),
    problem ? errorBox(problem, { title: "The key was refused" }) : null,
    keyField,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Sign in")),
  );
  replace(main, form);
  document.title = "Sign in – Segment export to ActiveCampaign";
  input.focus();
}

function signInPrompt(problem) {
  const back = encodeURIComponent(window.location.pathname + window.location.hash);
  replace(
    main,
    h(
      "div",
      { class: "card narrow" },
      h("h1", { tabindex: "-1" }, "Sign in"),
      // Not signed in yet, or the session ended: a plain note. Anything else the API said: its error.
      problem && problem.code !== "NotSignedIn"
        ? errorBox(problem, { title: "You are not signed in" })
        : notice("info", "You are not signed in.", "Sign in with your Microsoft Entra ID account to use the console."),
      h("p", {}, h("a", { href: `/.auth/login/aad?post_login_redirect_uri=${back}` }, "Sign in with Microsoft Entra ID")),
    ),
  );
}

async function render() {
  leave();
  if (!me) return;
  const hash = window.location.hash || "";
  if (!hash.startsWith("#/")) {
    if (hash === "" || hash === "#") ctx.go("#/exports");
    return; // an in-page anchor such as the skip link
  }
  for (const [pattern, screen, title] of routes) {
    const match = hash.match(pattern);
    if (!match) continue;
    for (const link of document.querySelectorAll("[data-nav]")) {
      if (hash.startsWith(`#/${link.dataset.nav}`)) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = `${title} – Segment export to ActiveCampaign`;
    replace(main, h("p", { class: "loading" }, "Loading…"));
    try {
      await screen(main, ctx, ...match.slice(1).map(decodeURIComponent));
    } catch (error) {
      replace(main, h("h1", { tabindex: "-1" }, title), errorBox(error));
    }
    const heading = main.querySelector("h1");
    if (heading && !main.contains(document.activeElement)) heading.focus({ preventScroll: true });
    return;
  }
  replace(main, h("h1", { tabindex: "-1" }, "Not found"), notice("info", "There is no such screen.", h("p", {}, h("a", { href: "#/exports" }, "Go to the exports"))));
}

async function start() {
  if (authMode === "key" && !session.key()) {
    keyPrompt();
    return;
  }
  try {
    me = await getJson("/api/me");
  } catch (error) {
    me = null;
    if (error.status === 401) {
      signedOut(error);
    } else {
      replace(main, h("h1", { tabindex: "-1" }, "The console could not start"), errorBox(error));
    }
    return;
  }
  showWho();
  render();
}

function signedOut(error) {
  me = null;
  if (authMode === "entra") {
    signInPrompt(error);
  } else {
    session.forget();
    keyPrompt(error);
  }
}

whenSignedOut(signedOut);
window.addEventListener("hashchange", render);
start();
