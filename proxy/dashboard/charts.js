// Hand-drawn SVG line charts: time or log x axis, linear or log y axis, vertical markers.
// No dependencies, no build step. Each series path carries data-points="N" (its drawn
// points) so tests and curious readers can see the chart has data.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, parent, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

function linearScale(lo, hi, a, b) {
  if (hi <= lo) hi = lo + 1;
  const f = (v) => a + ((v - lo) / (hi - lo)) * (b - a);
  const step = niceStep(hi - lo, 5);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(t);
  return { f, ticks, lo, hi };
}

function logScale(lo, hi, a, b) {
  lo = Math.max(lo, 1e-12);
  if (hi <= lo) hi = lo * 10;
  const l0 = Math.floor(Math.log10(lo));
  const l1 = Math.ceil(Math.log10(hi));
  const f = (v) => a + ((Math.log10(Math.max(v, 1e-12)) - l0) / Math.max(1, l1 - l0)) * (b - a);
  const ticks = [];
  const every = Math.max(1, Math.ceil((l1 - l0) / 6));
  for (let e = l0; e <= l1; e += every) ticks.push(Math.pow(10, e));
  return { f, ticks, lo: Math.pow(10, l0), hi: Math.pow(10, l1) };
}

function timeLabel(t, span) {
  const d = new Date(t * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (span <= 600) return `${hm}:${pad(d.getSeconds())}`;
  if (span <= 2 * 86400) return hm;
  return `${d.toLocaleDateString(undefined, { weekday: "short" })} ${hm}`;
}

// opts: {series: [{name, color, dash, points: [[x, y|null], ...]}], xType: "time"|"log",
//        yType: "linear"|"log", yFormat, xFormat, markers: [{x, label, cls, color}],
//        yMax, empty: "text when there is nothing to draw"}
function drawChart(svg, opts) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const width = Math.max(320, svg.clientWidth || svg.parentNode.clientWidth || 560);
  const height = opts.height || 240;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const m = { l: 64, r: 34, t: 26, b: 30 };
  const xs = [];
  const ys = [];
  for (const s of opts.series) {
    for (const [x, y] of s.points) {
      if (x === null || x === undefined) continue;
      xs.push(x);
      if (y !== null && y !== undefined && Number.isFinite(y)) ys.push(y);
    }
  }
  for (const mk of opts.markers || []) if (mk.x !== null && mk.x !== undefined) xs.push(mk.x);
  if (!xs.length || !ys.length) {
    el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, svg,
      opts.empty || "no data yet");
    svg.dataset.empty = "true";
    return;
  }
  delete svg.dataset.empty;
  const xLo = Math.min(...xs);
  const xHi = Math.max(...xs);
  const yPos = ys.filter((v) => v > 0);
  const X = opts.xType === "log"
    ? logScale(Math.min(...xs.filter((v) => v > 0)), xHi, m.l, width - m.r)
    : linearScale(xLo, xHi, m.l, width - m.r);
  const Y = opts.yType === "log"
    ? logScale(yPos.length ? Math.min(...yPos) : 1e-3, Math.max(...ys, 1e-3), height - m.b, m.t)
    : linearScale(0, opts.yMax !== undefined ? opts.yMax : Math.max(...ys, 1e-9), height - m.b, m.t);
  const grid = el("g", { class: "grid" }, svg);
  const yFmt = opts.yFormat || ((v) => String(v));
  for (const t of Y.ticks) {
    const y = Y.f(t);
    el("line", { x1: m.l, x2: width - m.r, y1: y, y2: y }, grid);
    el("text", { x: m.l - 6, y: y + 4, "text-anchor": "end", class: "tick" }, svg, yFmt(t));
  }
  const xTicks = opts.xType === "time"
    ? Array.from({ length: 6 }, (_, i) => xLo + ((xHi - xLo) * i) / 5)
    : X.ticks;
  const xFmt = opts.xFormat || ((v) => timeLabel(v, xHi - xLo));
  for (const t of xTicks) {
    const x = X.f(t);
    el("line", { x1: x, x2: x, y1: m.t, y2: height - m.b }, grid);
    el("text", { x, y: height - m.b + 16, "text-anchor": "middle", class: "tick" }, svg, xFmt(t));
  }
  el("line", { x1: m.l, x2: width - m.r, y1: height - m.b, y2: height - m.b, class: "axis" }, svg);
  el("line", { x1: m.l, x2: m.l, y1: m.t, y2: height - m.b, class: "axis" }, svg);

  let legendX = m.l;
  opts.series.forEach((s, i) => {
    const color = s.color || PALETTE[i % PALETTE.length];
    const parts = [];
    let pen = "M";
    let drawn = 0;
    const dots = [];
    for (const [x, y] of s.points) {
      const ok = y !== null && y !== undefined && Number.isFinite(y) && (opts.yType !== "log" || y > 0);
      if (!ok) { pen = "M"; continue; }
      const px = X.f(x).toFixed(1);
      const py = Y.f(y).toFixed(1);
      parts.push(`${pen}${px},${py}`);
      pen = "L";
      drawn += 1;
      dots.push([px, py]);
    }
    const path = el("path", {
      d: parts.join(" "), class: "series", stroke: color, fill: "none",
      "data-series": s.name, "data-points": drawn,
    }, svg);
    if (s.dash) path.setAttribute("stroke-dasharray", s.dash);
    if (dots.length <= 90) for (const [px, py] of dots) el("circle", { cx: px, cy: py, r: 2.2, fill: color, class: "pt" }, svg);
    const item = el("g", { class: "legend" }, svg);
    el("rect", { x: legendX, y: 6, width: 10, height: 10, fill: color }, item);
    const label = el("text", { x: legendX + 14, y: 15 }, item, s.name);
    legendX += 24 + Math.max(40, s.name.length * 6.4);
    void label;
  });
  for (const mk of opts.markers || []) {
    if (mk.x === null || mk.x === undefined || !(opts.xType !== "log" || mk.x > 0)) continue;
    const x = X.f(mk.x);
    const g = el("g", { class: `marker ${mk.cls || ""}`, "data-x": mk.x }, svg);
    el("line", { x1: x, x2: x, y1: m.t, y2: height - m.b, stroke: mk.color || "#222" }, g);
    el("text", { x: x + 4, y: m.t + 12 + (mk.offset || 0), class: "marker-label" }, g, mk.label);
  }
}

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];
