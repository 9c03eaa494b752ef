// Contacts sent, rejected and removed per run, oldest run on the left: a grouped bar chart in SVG
// drawn here (no library). The runs table beside it holds the same numbers as text.

import { h, timeZone } from "./dom.js";

export const SERIES = [
  ["sent", "Sent", "bar-sent"],
  ["rejected", "Rejected", "bar-rejected"],
  ["removed", "Removed", "bar-removed"],
];

const W = 640;
const H = 260;
const PAD = { left: 56, right: 12, top: 16, bottom: 48 };

// The axis top: 4, 6, 8 or 10 times a power of ten, so the four grid steps are whole numbers.
function niceMax(value) {
  if (value <= 4) return 4;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 4, 6, 8, 10]) if (step * power >= value && (step * power) % 4 === 0) return step * power;
  return 10 * power;
}

function label(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleString("en-GB", { day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit" });
}

// points: [{when, sent, rejected, removed, preview}], oldest first.
export function runChart(points, { title }) {
  const max = niceMax(Math.max(1, ...points.flatMap((p) => SERIES.map(([key]) => p[key] || 0))));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const slot = plotW / Math.max(points.length, 1);
  const bar = Math.max(2, Math.min(18, (slot * 0.8) / SERIES.length));
  const y = (v) => PAD.top + plotH - (v / max) * plotH;
  const summary = points.length
    ? `${title}: ${points.length} runs. ` +
      points
        .map((p) => `${label(p.when)}${p.preview ? " (preview)" : ""}: ${SERIES.map(([key, name]) => `${name.toLowerCase()} ${p[key] || 0}`).join(", ")}`)
        .join("; ")
    : `${title}: no runs yet.`;
  const svg = h("svg:svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": summary, preserveAspectRatio: "xMidYMid meet" });
  svg.append(h("svg:title", {}, summary));
  for (let i = 0; i <= 4; i += 1) {
    const value = (max / 4) * i;
    svg.append(
      h("svg:line", { x1: PAD.left, x2: W - PAD.right, y1: y(value), y2: y(value), class: "grid" }),
      h("svg:text", { x: PAD.left - 6, y: y(value) + 4, class: "axis", "text-anchor": "end" }, value.toLocaleString("en-US")),
    );
  }
  points.forEach((p, index) => {
    const x0 = PAD.left + index * slot + (slot - bar * SERIES.length) / 2;
    SERIES.forEach(([key, name, cls], s) => {
      const v = p[key] || 0;
      svg.append(
        h(
          "svg:rect",
          { x: x0 + s * bar, y: y(v), width: bar - 1, height: Math.max(0, PAD.top + plotH - y(v)), class: `${cls}${p.preview ? " preview" : ""}` },
          h("svg:title", {}, `${label(p.when)}: ${name.toLowerCase()} ${v}`),
        ),
      );
    });
    if (points.length <= 12 || index % Math.ceil(points.length / 12) === 0) {
      svg.append(h("svg:text", { x: PAD.left + index * slot + slot / 2, y: H - PAD.bottom + 16, class: "axis", "text-anchor": "middle" }, label(p.when)));
    }
  });
  svg.append(h("svg:line", { x1: PAD.left, x2: W - PAD.right, y1: y(0), y2: y(0), class: "baseline" }));
  const legend = h(
    "ul",
    { class: "legend" },
    SERIES.map(([, name, cls]) => h("li", {}, h("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), name)),
    h("li", {}, h("span", { class: "swatch preview-swatch", "aria-hidden": "true" }), "Pale with a dashed outline: preview (dry run), nothing sent"),
  );
  return h("figure", { class: "chart-figure" }, h("figcaption", {}, title, h("span", { class: "sub" }, `Times in ${timeZone}.`)), svg, legend);
}
