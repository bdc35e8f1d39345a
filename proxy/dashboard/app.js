// The dashboard: fetches /costs/report with the admin key kept in sessionStorage and
// draws it. `#key=...` in the address is moved into sessionStorage and dropped from the
// address bar (a fragment never reaches the server), so a link can open it logged in.
"use strict";

const KEY = "hybridgate.adminKey";
const WINDOW_KEY = "hybridgate.window";
const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);
let timer = null;

const usd = (v) => (v === null || v === undefined ? "–" : new Intl.NumberFormat("en-US", {
  style: "currency", currency: "USD", minimumFractionDigits: Math.abs(v) < 1 && v !== 0 ? 4 : 2,
  maximumFractionDigits: Math.abs(v) < 1 && v !== 0 ? 4 : 2,
}).format(v));
const usdShort = (v) => (Math.abs(v) >= 1000 ? "$" + count(v) : usd(v));
function count(n) {
  if (n === null || n === undefined) return "–";
  for (const [size, suffix] of [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "K"]]) {
    if (Math.abs(n) >= size) return (n / size).toFixed(n / size < 100 ? 1 : 0).replace(/\.0$/, "") + suffix;
  }
  return n.toFixed(0);
}
const pct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`);

function takeKeyFromHash() {
  const m = /(?:^#|&)key=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function showLogin(message) {
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("admin-key").focus();
}

async function load() {
  clearTimeout(timer);
  const key = sessionStorage.getItem(KEY);
  if (!key) return showLogin("");
  const win = $("window").value;
  let response;
  try {
    response = await fetch(`/costs/report?window=${encodeURIComponent(win)}`, {
      headers: { Authorization: `Bearer ${key}` },
      cache: "no-store",
    });
  } catch (err) {
    $("status").textContent = `proxy unreachable (${err.message}); retrying`;
    timer = setTimeout(load, REFRESH_MS);
    return;
  }
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(KEY);
    const body = await response.json().catch(() => ({}));
    return showLogin((body.error && body.error.message) || "The admin key was refused.");
  }
  if (!response.ok) {
    $("status").textContent = `report failed: HTTP ${response.status}; retrying`;
    timer = setTimeout(load, REFRESH_MS);
    return;
  }
  const report = await response.json();
  $("login").hidden = true;
  $("main").hidden = false;
  render(report);
  $("status").textContent = `updated ${new Date(report.generated_at * 1000).toLocaleTimeString()} · window ${report.window} = ${formatSpan(report.inputs.window_seconds)}`;
  timer = setTimeout(load, REFRESH_MS);
}

function formatSpan(s) {
  if (s < 120) return `${s.toFixed(0)} s`;
  if (s < 7200) return `${(s / 60).toFixed(0)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} days`;
}

function tile(label, value, detail, id) {
  const div = document.createElement("div");
  div.className = "tile";
  if (id) div.id = id;
  div.innerHTML = "<span class=label></span><span class=value></span><span class=detail></span>";
  div.querySelector(".label").textContent = label;
  div.querySelector(".value").textContent = value;
  div.querySelector(".detail").textContent = detail || "";
  return div;
}

function render(r) {
  const primary = (r.comparisons || []).find((c) => c.pool === r.primary_pool) || null;
  const sc = r.scenarios || {};
  const tiles = $("tiles");
  tiles.replaceChildren(
    tile("Today's volume", `${count(r.today_requests_per_month)}/mo`, `projected; all traffic ${count(r.projected.requests_per_month)}/mo`, "tile-volume"),
    tile("Today's routing", sc.hybrid_current !== undefined ? `${usdShort(sc.hybrid_current)}/mo` : "–", "hybrid_current", "tile-current"),
    tile("API-only", sc.api_only !== undefined ? `${usdShort(sc.api_only)}/mo` : "–", "api_only"),
    tile("Self-hosted-only", sc.selfhosted_only !== undefined ? `${usdShort(sc.selfhosted_only)}/mo` : "–", "selfhosted_only"),
    tile("Optimal hybrid", sc.hybrid_optimal !== undefined ? `${usdShort(sc.hybrid_optimal)}/mo` : "–",
      primary && primary.scenarios.hybrid_optimal ? `${primary.scenarios.hybrid_optimal.gpus} GPUs` : "hybrid_optimal"),
    tile("Break-even", r.breakeven_requests_per_month !== null ? `${count(r.breakeven_requests_per_month)}/mo` : "none", "requests/month, self-hosted ≤ API", "tile-breakeven"),
    tile("Spend in window", usd(r.spend.total_usd), `idle GPUs ${usd(r.spend.gpu_idle_usd)}`),
    tile("Savings so far", usd(r.spend.selfhosted_savings_usd), "self-hosted vs the API price, after fixed cost"),
  );
  $("recommendation").textContent = r.recommendation;
  drawSeries(r);
  drawBreakeven(primary);
  drawScenarios(primary);
  $("inputs").textContent = JSON.stringify({ inputs: r.inputs, profile: primary && primary.profile, capacity: primary && primary.capacity, notes: r.notes }, null, 2);
}

function drawSeries(r) {
  const s = r.series;
  const t = s.t;
  const spend = Object.entries(s.spend_by_backend).map(([name, values]) => ({
    name, points: values.map((v, i) => [t[i], v]),
  }));
  if (s.gpu_idle_usd.some((v) => v > 0)) {
    spend.push({ name: "GPU idle", color: "#9ca3af", dash: "4 3", points: s.gpu_idle_usd.map((v, i) => [t[i], v]) });
  }
  drawChart($("chart-spend"), { series: spend, xType: "time", yType: "linear", yFormat: usdShort });

  const cum = (values) => { let acc = 0; return values.map((v, i) => [t[i], (acc += v)]); };
  const withIdle = s.actual_usd.map((v, i) => v + s.gpu_idle_usd[i]);
  drawChart($("chart-counterfactual"), {
    series: [
      { name: "actual (attributed)", color: "#2563eb", points: cum(s.actual_usd) },
      { name: "actual + GPU idle", color: "#1e3a8a", dash: "5 3", points: cum(withIdle) },
      { name: "counterfactual", color: "#dc2626", points: cum(s.counterfactual_usd) },
    ],
    xType: "time", yType: "linear", yFormat: usdShort,
  });

  const util = Object.entries(s.gpu).map(([pool, g]) => ({ name: `${pool} utilization`, points: g.utilization.map((v, i) => [t[i], v]) }));
  drawChart($("chart-gpu"), { series: util, xType: "time", yType: "linear", yMax: 1, yFormat: (v) => `${Math.round(v * 100)}%`, empty: "no GPU pool sampled yet" });
  const idle = Object.entries(s.gpu).map(([pool, g]) => ({ name: `${pool} idle cost`, color: "#9ca3af", points: cum(g.idle_usd) }));
  drawChart($("chart-idle"), { series: idle, xType: "time", yType: "linear", yFormat: usdShort, height: 150, empty: "no GPU pool sampled yet" });
  const pools = Object.entries(r.pools).map(([name, p]) => `${name}: ${pct(p.utilization)} busy, ${usd(p.idle_usd)} idle`);
  $("gpu-summary").textContent = pools.join(" · ");
}

function drawBreakeven(c) {
  const svg = $("chart-breakeven");
  if (!c || !c.chart) {
    drawChart(svg, { series: [], empty: c ? c.recommendation : "no comparison configured" });
    return;
  }
  const ch = c.chart;
  const pts = (values) => values.map((v, i) => [ch.volumes[i], v]);
  const markers = [{ x: ch.today_requests_per_month, label: `today ${count(ch.today_requests_per_month)}/mo`, cls: "today-marker", color: "#111827" }];
  if (ch.breakeven_requests_per_month !== null) {
    markers.push({ x: ch.breakeven_requests_per_month, label: `break-even ${count(ch.breakeven_requests_per_month)}`, cls: "breakeven-marker", color: "#16a34a", offset: 14 });
  }
  drawChart(svg, {
    series: [
      { name: "API-only", color: "#dc2626", points: pts(ch.api_only) },
      { name: "self-hosted-only", color: "#2563eb", points: pts(ch.selfhosted_only) },
      { name: "optimal hybrid", color: "#9333ea", dash: "5 3", points: pts(ch.hybrid_optimal) },
    ],
    xType: "log", yType: "log", xFormat: count, yFormat: usdShort, markers, height: 300,
  });
  $("breakeven-caption").textContent = `${c.aliases.join(", ")} on pool ${c.pool} vs ${c.api_model}; same token mix and load shape at every volume.`;
}

function drawScenarios(c) {
  const body = $("scenario-rows");
  body.replaceChildren();
  if (!c) return;
  for (const [name, s] of Object.entries(c.scenarios)) {
    const tr = document.createElement("tr");
    const parts = Object.entries(s.breakdown).map(([k, v]) => `${k} ${usd(v)}`).join(", ");
    for (const text of [name, usd(s.monthly_usd), String(s.gpus), pct(s.utilization), pct(s.api_share), parts]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    if (name === c.cheapest) tr.className = "cheapest";
    body.appendChild(tr);
  }
}

window.addEventListener("error", (e) => {
  const box = $("errors");
  box.hidden = false;
  box.textContent += `${e.message}\n`;
});

document.addEventListener("DOMContentLoaded", () => {
  takeKeyFromHash();
  const saved = sessionStorage.getItem(WINDOW_KEY);
  if (saved) $("window").value = saved;
  $("window").addEventListener("change", () => { sessionStorage.setItem(WINDOW_KEY, $("window").value); load(); });
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("admin-key").value.trim());
    $("admin-key").value = "";
    load();
  });
  $("logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); showLogin(""); });
  load();
});
