// Connections and lists by their names, not only their ids. An export's view names its connection
// (connectionDisplayName); list names come from a route only an administrator may read
// (GET /api/connections/{name}/lists): for anyone else, or while they load, the id stands in. A slot shows the id at once and its name when known,
// so no screen waits on ActiveCampaign.

import { enc, getAllPages, getJson } from "./api.js";
import { h } from "./dom.js";

const KEEP_MS = 60_000;
const cache = new Map();

function remembered(key, load) {
  const hit = cache.get(key);
  if (hit && Date.now() - hit.at < KEEP_MS) return hit.value;
  const value = load();
  cache.set(key, { at: Date.now(), value });
  value.catch(() => cache.delete(key));
  return value;
}

export function connectionLabel(connection) {
  return connection.displayName.toLowerCase().includes(connection.name) ? connection.displayName : `${connection.displayName} (${connection.name})`;
}

export function connectionName(ctx, name) {
  if (!ctx.me.may.readConnections) return Promise.resolve(null);
  return remembered("connections", () => getJson("/api/connections")).then((body) => {
    const found = body.connections.find((c) => c.name === name);
    return found ? connectionLabel(found) : null;
  });
}

export function listName(ctx, connection, listId) {
  if (!ctx.me.may.readConnections) return Promise.resolve(null);
  return remembered(`lists:${connection}`, () => getAllPages(`/api/connections/${enc(connection)}/lists`, "lists")).then((lists) => {
    const found = lists.find((l) => Number(l.id) === Number(listId));
    return found ? `${found.name} (list id ${found.id})` : null;
  });
}

// Text now (the id), the name when it arrives; a failure to load keeps the id.
export function slot(fallback, promise) {
  const el = h("span", {}, fallback);
  promise.then(
    (name) => {
      if (name) el.textContent = name;
    },
    () => {},
  );
  return el;
}

// `displayName`: what the export's view says (GET /api/exports gives it to every reader).
export const connectionSlot = (ctx, name, displayName = null) =>
  displayName ? h("span", {}, connectionLabel({ name, displayName })) : slot(name, connectionName(ctx, name));
export const listSlot = (ctx, connection, listId) => slot(`list ${listId}`, listName(ctx, connection, listId));

// After a save the names may have changed.
export function forgetNames() {
  cache.clear();
}
