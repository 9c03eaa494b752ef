// The REST endpoint hostname checked as it is typed, with the server's rules (shared/hosts.py).
// The server checks again on Save; this only says early what it would say.

export const EXPECTED_FORM = "a bare host name such as acme.api-us1.com (no https://, no path)";
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

function isLoopback(host) {
  if (host === "localhost" || host === "::1" || host === "[::1]") return true;
  const parts = host.split(".");
  return parts.length === 4 && parts[0] === "127" && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) < 256);
}

// Returns null when the server would accept `value`, else what to fix.
export function hostnameProblem(value, { suffixes, allowLoopback }) {
  const raw = (value || "").trim().toLowerCase();
  if (!raw) return `Enter the hostname: ${EXPECTED_FORM}.`;
  if (raw.includes("://")) return `Leave out the scheme (https://): ${EXPECTED_FORM}.`;
  if (raw.includes("@")) return `Leave out credentials: ${EXPECTED_FORM}.`;
  if (/[/?#\\\s]/.test(raw)) return `Leave out any path or query: ${EXPECTED_FORM}.`;
  let host = raw;
  let port = null;
  const colon = raw.lastIndexOf(":");
  if (colon >= 0) {
    host = raw.slice(0, colon);
    port = raw.slice(colon + 1);
    if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) return `The port is not valid: ${EXPECTED_FORM}.`;
  }
  host = host.replace(/\.+$/, "");
  if (isLoopback(host)) {
    return allowLoopback ? null : "A loopback address is allowed only outside Azure (the local sandbox).";
  }
  if (port !== null) return `Only the local sandbox may use a port: ${EXPECTED_FORM}.`;
  const labels = host.split(".");
  if (labels.length < 3 || !labels.every((label) => LABEL.test(label))) {
    return `That is not a valid host name: ${EXPECTED_FORM}.`;
  }
  if (!suffixes.some((suffix) => host.endsWith(suffix))) {
    return `That is not an ActiveCampaign API host (allowed: ${suffixes.map((s) => `*${s}`).join(", ")}).`;
  }
  return null;
}
