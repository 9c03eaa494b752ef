// The documented HTTP API (docs/api.md), called the way curl would: same routes, same headers.
// Key mode: the function key typed once is kept in sessionStorage (gone when the browser session
// ends) and sent as x-functions-key. Entra mode: the App Service Authentication cookie goes with
// every same-origin request; the app reads the signed-in caller from the header Easy Auth adds.

const KEY_ITEM = "functionKey";

// Public app settings the page handler puts in a meta tag (no inline script under the CSP).
function readSettings() {
  try {
    return JSON.parse(document.querySelector('meta[name="console-settings"]')?.content || "{}");
  } catch {
    return {};
  }
}

export const appSettings = readSettings();
export const authMode = appSettings.authMode === "entra" ? "entra" : "key";

// The app's routes live beside the console: /api/console -> /api/.
const base = new URL(".", window.location.href);

export function apiUrl(path) {
  return new URL(path.replace(/^\/?api\//, ""), base).toString();
}

export const session = {
  key: () => window.sessionStorage.getItem(KEY_ITEM),
  setKey: (key) => window.sessionStorage.setItem(KEY_ITEM, key),
  forget: () => window.sessionStorage.removeItem(KEY_ITEM),
};

export class ApiFailure extends Error {
  constructor(status, code, message, details = null, body = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.body = body;
  }
}

// Called on a 401 after start: the host refused the function key (key mode) or the App Service
// Authentication session is gone (entra mode). The app asks for the key again, or to sign in.
let onSignedOut = () => {};
export function whenSignedOut(handler) {
  onSignedOut = handler;
}

function headers(extra, hasBody) {
  const all = { Accept: "application/json", ...extra };
  if (hasBody) all["Content-Type"] = "application/json";
  const key = session.key();
  if (key) all["x-functions-key"] = key;
  return all;
}

async function failure(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  const error = body && body.error;
  if (error && error.message) {
    return new ApiFailure(response.status, error.code, error.message, error.details || null, body);
  }
  // A 401 without the app's JSON error comes from in front of the app: the Functions host refusing
  // the key, or App Service Authentication finding no signed-in session.
  if (response.status === 401 && authMode === "entra") {
    return new ApiFailure(401, "NotSignedIn", "App Service Authentication found no signed-in session: sign in with Microsoft Entra ID");
  }
  if (response.status === 401) {
    return new ApiFailure(401, "KeyRefused", "the function app refused the function key: enter a valid key");
  }
  return new ApiFailure(
    response.status,
    "HttpError",
    `the app answered HTTP ${response.status} ${response.statusText || ""}`.trim(),
  );
}

export async function call(method, path, { body = undefined, ifMatch = null, accept = null } = {}) {
  // The app refuses a state-changing request that is not JSON (a cross-site form cannot send JSON)
  // and reads its options from the body only: `{}` when there are none.
  if (body === undefined && method !== "GET" && method !== "HEAD") body = {};
  const extra = {};
  if (ifMatch) extra["If-Match"] = ifMatch;
  if (accept) extra.Accept = accept;
  let response;
  try {
    response = await fetch(apiUrl(path), {
      method,
      headers: headers(extra, body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (exc) {
    throw new ApiFailure(0, "Unreachable", `the function app could not be reached (${exc.message}); check that it is running`);
  }
  if (!response.ok) {
    const error = await failure(response);
    if (error.status === 401) onSignedOut(error);
    throw error;
  }
  return response;
}

export async function getJson(path) {
  const response = await call("GET", path);
  return response.json();
}

export async function sendJson(method, path, body, options = {}) {
  const response = await call(method, path, { ...options, body });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : null };
}

// A paged discovery route ({items, next}): every page, following `next` as ActiveCampaign pages.
export async function getAllPages(path, key) {
  const items = [];
  let next = path;
  for (let page = 0; next && page < 1000; page += 1) {
    const body = await getJson(next);
    items.push(...(body[key] || []));
    next = body.next || null;
  }
  return items;
}

// The `rel="next"` target of a Link header, or null.
export function nextLink(response) {
  const match = /<([^>]+)>;\s*rel="next"/.exec(response.headers.get("Link") || "");
  return match ? match[1] : null;
}

export const enc = encodeURIComponent;
