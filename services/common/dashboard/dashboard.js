// The Gatehouse dashboard: reads /api/dashboard with the viewer's token every 2 s and works out
// rates and latency percentiles between two reads. The token stays in this tab (sessionStorage);
// `gatehouse dashboard` hands it over in the URL's fragment, which never reaches a server.
"use strict";

const TOKEN_KEY = "gatehouse-token";
const POLL_MS = 2000;
const KEPT = 60;
const samplesByService = new Map();  // "project/service" -> [{time, total, errors, counts}]

function takeTokenFromFragment() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    window.history.replaceState(null, "", location.pathname);
  }
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function quantile(q, bounds, counts) {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total <= 0) return null;
  const rank = q * total;
  let running = 0, lower = 0;
  for (let i = 0; i < bounds.length; i++) {
    if (counts[i] && running + counts[i] >= rank) return lower + (bounds[i] - lower) * (rank - running) / counts[i];
    running += counts[i];
    lower = bounds[i];
  }
  return bounds.length ? bounds[bounds.length - 1] : null;
}

function remember(data, service) {
  const key = service.project + "/" + service.name;
  const total = Object.values(service.requests).reduce((a, b) => a + b, 0);
  const samples = samplesByService.get(key) || [];
  samples.push({ time: data.time, total, errors: service.requests["5xx"] || 0, counts: service.latency_counts });
  while (samples.length > KEPT + 1) samples.shift();
  samplesByService.set(key, samples);
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const seconds = samples[i].time - samples[i - 1].time;
    const delta = samples[i].total - samples[i - 1].total;
    rates.push(seconds > 0 && delta >= 0 ? delta / seconds : 0);
  }
  // The last interval in which Envoy's counters moved (they are flushed every 2 s).
  let last = null;
  for (let i = samples.length - 1; i > 0 && last === null; i--) {
    if (samples[i].total !== samples[i - 1].total) last = [samples[i - 1], samples[i]];
  }
  let rps = 0, errors = 0, p50 = null, p99 = null;
  if (last) {
    const [a, b] = last;
    const answered = b.total - a.total;
    rps = answered > 0 ? answered / Math.max(b.time - a.time, 0.001) : 0;
    errors = answered > 0 ? (b.errors - a.errors) / answered : 0;
    // Before its first request a service has no histogram yet: count from zero.
    const before = a.counts.length ? a.counts : b.counts.map(() => 0);
    if (before.length === b.counts.length && b.counts.length) {
      const counts = b.counts.map((c, i) => c - before[i]);
      p50 = quantile(0.5, service.latency_bounds_ms, counts);
      p99 = quantile(0.99, service.latency_bounds_ms, counts);
    }
  }
  return { key, rates, rps, errors, p50, p99 };
}

function chart(rates) {
  const canvas = document.createElement("canvas");
  canvas.width = 180; canvas.height = 36;
  const g = canvas.getContext("2d");
  const top = Math.max(1, ...rates);
  g.strokeStyle = "#2f6fde"; g.lineWidth = 1.5; g.beginPath();
  rates.slice(-KEPT).forEach((rate, i) => {
    const x = (i / (KEPT - 1)) * (canvas.width - 2) + 1;
    const y = canvas.height - 2 - (rate / top) * (canvas.height - 4);
    i ? g.lineTo(x, y) : g.moveTo(x, y);
  });
  g.stroke();
  return canvas;
}

function ms(value) { return value === null ? "–" : value.toFixed(value < 10 ? 1 : 0) + " ms"; }

function fill(id, rows, build) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  rows.forEach((item) => { const row = document.createElement("tr"); build(row, item); body.appendChild(row); });
}

function render(data) {
  fill("services", data.services, (row, s) => {
    const seen = remember(data, s);
    row.dataset.service = seen.key;
    row.dataset.rps = seen.rps.toFixed(3);
    row.dataset.points = String(seen.rates.length);
    cell(row, s.project); cell(row, s.name); cell(row, s.gateway);
    cell(row, s.state, s.state === "failed" ? "error" : s.state === "running" ? "ok" : "");
    cell(row, s.ready_replicas + "/" + s.desired_replicas);
    cell(row, seen.rps.toFixed(1)); cell(row, (seen.errors * 100).toFixed(1) + "%");
    cell(row, ms(seen.p50)); cell(row, ms(seen.p99));
    cell(row, "").appendChild(chart(seen.rates));
    cell(row, s.message, "error");
  });
  fill("gateways", data.gateways, (row, g) => {
    cell(row, g.project); cell(row, g.name); cell(row, g.address);
    cell(row, g.state, g.state === "failed" ? "error" : g.state === "running" ? "ok" : "");
    cell(row, g.envoys.filter((e) => e.connected).length + " connected of " + g.envoys.length);
    const rejected = g.envoys.filter((e) => e.rejected);
    cell(row, rejected.length ? rejected.map((e) => e.rejected).join("; ") : "accepted", rejected.length ? "warning" : "ok");
    cell(row, g.message, "error");
  });
  fill("replicas", data.replicas, (row, r) => {
    cell(row, r.project); cell(row, r.service); cell(row, r.id); cell(row, r.address); cell(row, r.ready ? "yes" : "no");
  });
  fill("certificates", data.certificates, (row, c) => {
    cell(row, c.project); cell(row, c.gateway); cell(row, c.hostnames.join(", ")); cell(row, c.state);
    const days = c.not_after === null ? null : (c.not_after - data.time) / 86400;
    cell(row, days === null ? "–" : days.toFixed(0) + " days", days !== null && days < 14 ? "warning" : "");
  });
  document.getElementById("status").textContent = "updated " + new Date(data.time * 1000).toLocaleTimeString();
}

function showLogin(message) {
  document.getElementById("main").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
}

let timer = null;
async function poll() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) { showLogin(); return; }
  try {
    const answer = await fetch("/api/dashboard", { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
    if (answer.status === 401) { sessionStorage.removeItem(TOKEN_KEY); showLogin("That token is not valid."); return; }
    if (!answer.ok) throw new Error("the server answered " + answer.status);
    render(await answer.json());
    document.getElementById("login").hidden = true;
    document.getElementById("main").hidden = false;
    document.getElementById("logout").hidden = false;
  } catch (error) {
    document.getElementById("status").textContent = "cannot reach the server: " + error.message;
  }
  timer = setTimeout(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromFragment();
  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    document.getElementById("token").value = "";
    poll();
  });
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY); clearTimeout(timer); samplesByService.clear(); showLogin();
  });
  poll();
});
