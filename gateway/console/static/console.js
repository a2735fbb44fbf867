// Monokera console: three read-only views over the gateway's own GET endpoints.
// No framework and no build step: the DOM, fetch and a canvas.
"use strict";

const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
const num = (v) => (v === null || v === undefined ? "–" : fmt.format(v));
const ms = (v) => (v === null || v === undefined ? "–" : v < 10 ? v.toFixed(2) + " ms" : fmt.format(v) + " ms");
const secs = (v) => (v < 60 ? v.toFixed(1) + " s" : fmt.format(v / 60) + " min");
const when = (v) => (v ? new Date(v).toISOString().replace("T", " ").replace("Z", " UTC") : "–");
let overviewTimer = null;

function row(tbody, cells, classes) {
  const tr = document.createElement("tr");
  cells.forEach((value, i) => {
    const td = document.createElement("td");
    td.textContent = value;
    if (classes && classes[i]) td.className = classes[i];
    tr.appendChild(td);
  });
  tbody.appendChild(tr);
  return tr;
}

function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }

async function getJSON(url) {
  const res = await fetch(url, { headers: { accept: "application/json" }, cache: "no-store" });
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  return { status: res.status, body };
}

function problem(reply, what) {
  const message = reply.body && reply.body.message ? reply.body.message : "HTTP " + reply.status;
  if (reply.status === 404) return "Not found: " + message;
  if (reply.status === 422) return what + " is not valid: " + message;
  return "Unavailable (" + reply.status + "): " + message;
}

// ---- views and the URL ----------------------------------------------------------------
function show(view) {
  for (const name of ["overview", "trace", "account"]) $("view-" + name).hidden = name !== view;
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  if (overviewTimer) { clearInterval(overviewTimer); overviewTimer = null; }
  if (view === "overview") { refreshOverview(); overviewTimer = setInterval(refreshOverview, 1000); }
}

function route() {
  const params = new URLSearchParams(location.search);
  if (params.has("tx")) {
    show("trace");
    $("trace-input").value = params.get("tx");
    if (params.get("tx")) trace(params.get("tx"));
  } else if (params.has("account")) {
    show("account");
    $("account-input").value = params.get("account");
    if (params.get("account")) account(params.get("account"), null);
  } else {
    show("overview");
  }
}

function go(query) {
  history.pushState(null, "", "/console" + query);
  route();
}

document.querySelectorAll("nav a").forEach((a) => a.addEventListener("click", (event) => {
  event.preventDefault();
  go(a.dataset.view === "overview" ? "" : a.dataset.view === "trace" ? "?tx=" : "?account=");
}));
window.addEventListener("popstate", route);
$("trace-form").addEventListener("submit", (event) => {
  event.preventDefault();
  go("?tx=" + encodeURIComponent($("trace-input").value.trim()));
});
$("account-form").addEventListener("submit", (event) => {
  event.preventDefault();
  go("?account=" + encodeURIComponent($("account-input").value.trim()));
});

// ---- overview ---------------------------------------------------------------------------
async function refreshOverview() {
  let reply;
  try { reply = await getJSON("/console/api/overview"); } catch (e) {
    $("redis-state").textContent = "gateway unreachable"; $("redis-state").className = "badge bad"; return;
  }
  if (reply.status !== 200 || !reply.body) return;
  const o = reply.body;
  $("worker").textContent = "worker " + o.worker;
  $("durability").textContent = "durability: " + o.durability.mode;
  $("durability").title = o.durability.detail;
  $("durability").className = "badge " + ({ "no-aof": "bad", unknown: "warn" }[o.durability.mode] || "good");
  $("redis-state").textContent = "redis " + o.redis;
  $("redis-state").className = "badge " + (o.redis === "ok" ? "good" : "bad");
  $("refusing").hidden = !o.refusing;
  $("refusing").textContent = o.refusing ? "Refusing purchases: " + o.refusing : "";
  const sh = o.shards, counts = sh.publishers.map((p) => p.count + " " + p.role + " worker(s) on " + p.shards).join(", ");
  const unread = Object.entries(sh.unread).map(([s, n]) => num(n) + " in " + s).join(", ");
  const shardProblems = {
    writes_unread: "This gateway writes " + sh.own + " stream shards, the live flushers read " + sh.flushers_read + ": it is not ready (503).",
    unread: "Unflushed entries in streams no live flusher reads: " + unread + ".",
    mismatch: "Gateways and flushers run with different stream shard counts.",
  };
  $("shards-alert").hidden = !shardProblems[sh.status];
  $("shards-alert").textContent = shardProblems[sh.status] ? "Shard counts: " + shardProblems[sh.status] + " Live: " + counts + "." : "";
  $("ack-rate").textContent = num(o.ack_per_s);
  $("ack-p50").textContent = ms(o.ack_p50_ms);
  $("ack-p99").textContent = ms(o.ack_p99_ms);
  $("acknowledged").textContent = num(o.acknowledged_total);
  $("stored").textContent = o.stored_in_postgres === null ? "unavailable" : (o.stored_is_estimate ? "≈ " : "") + num(o.stored_in_postgres);
  $("unflushed").textContent = num(o.backlog.reduce((s, b) => s + b.stream_length, 0));
  $("oldest").textContent = secs(Math.max(0, ...o.backlog.map((b) => b.oldest_unflushed_age_s)));
  $("batches-rate").textContent = num(o.flusher_batches_per_s);
  $("rows-rate").textContent = num(o.flusher_rows_per_s);
  $("replays").textContent = num(o.replays_total);
  $("cache-ratio").textContent = o.cache_hit_ratio === null ? "–" : (o.cache_hit_ratio * 100).toFixed(1) + " %";

  const errors = $("errors").tBodies[0]; clear(errors);
  for (const [status, count] of Object.entries(o.errors_total)) {
    row(errors, [status, num(count)], [null, "num " + (count ? "nonzero" : "zero")]);
  }
  const backlog = $("backlog").tBodies[0]; clear(backlog);
  for (const b of o.backlog) {
    row(backlog, [b.shard, num(b.stream_length), secs(b.oldest_unflushed_age_s), num(b.pending)], [null, "num", "num", "num"]);
  }
  const flushers = $("flushers").tBodies[0]; clear(flushers);
  if (!o.flushers.length) row(flushers, ["no flusher has reported in the last half minute", "", "", "", "", ""]);
  for (const f of o.flushers) {
    row(flushers, [f.consumer, num(f.batches_total), num(f.rows_written_total), num(f.duplicates_total),
      num(f.conflicting_duplicates_total), num(f.dead_letters_total)],
      [null, "num", "num", "num", "num " + (f.conflicting_duplicates_total ? "nonzero" : ""),
        "num " + (f.dead_letters_total ? "nonzero" : "")]);
  }
  draw(o.history);
}

function draw(points) {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const pad = { l: 54, r: 60, t: 10, b: 22 };
  const w = width - pad.l - pad.r, h = height - pad.t - pad.b;
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();
  g.font = "11px system-ui, sans-serif";
  g.strokeStyle = color("--line"); g.fillStyle = color("--muted"); g.lineWidth = 1;
  if (points.length < 2) { g.fillText("collecting…", pad.l, pad.t + 20); return; }
  const t0 = points[0].at, t1 = points[points.length - 1].at;
  const maxRate = niceMax(Math.max(1, ...points.map((p) => p.ack_per_s)));
  const maxMs = niceMax(Math.max(1, ...points.map((p) => p.p99_ms || 0)));
  const x = (t) => pad.l + ((t - t0) / Math.max(1, t1 - t0)) * w;
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + h - (i / 4) * h;
    g.beginPath(); g.moveTo(pad.l, y); g.lineTo(pad.l + w, y); g.stroke();
    g.textAlign = "right"; g.fillText(fmt.format((maxRate * i) / 4), pad.l - 6, y + 4);
    g.textAlign = "left"; g.fillText(fmt.format((maxMs * i) / 4) + " ms", pad.l + w + 6, y + 4);
  }
  g.textAlign = "left"; g.fillText("−" + Math.round(t1 - t0) + " s", pad.l, height - 6);
  g.textAlign = "right"; g.fillText("now", pad.l + w, height - 6);
  const line = (key, max, stroke, dash) => {
    g.beginPath(); g.setLineDash(dash); g.strokeStyle = stroke; g.lineWidth = 2;
    let started = false;
    for (const p of points) {
      if (p[key] === null) { started = false; continue; }
      const px = x(p.at), py = pad.t + h - (p[key] / max) * h;
      if (started) g.lineTo(px, py); else { g.moveTo(px, py); started = true; }
    }
    g.stroke(); g.setLineDash([]);
  };
  line("p50_ms", maxMs, color("--p50"), [4, 3]);
  line("p99_ms", maxMs, color("--bad"), []);
  line("ack_per_s", maxRate, color("--accent"), []);
}

function niceMax(v) {
  const step = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= v) return m * step;
  return 10 * step;
}

// ---- trace ------------------------------------------------------------------------------
async function trace(tx) {
  $("trace-error").hidden = true; $("trace-result").hidden = true;
  const [traced, view] = await Promise.all([
    getJSON("/console/api/trace?tx=" + encodeURIComponent(tx)),
    getJSON("/transactions/" + encodeURIComponent(tx)),
  ]);
  if (traced.status !== 200) {
    $("trace-error").textContent = problem(traced, "transaction_id");
    $("trace-error").hidden = false;
    return;
  }
  const t = traced.body, v = view.status === 200 ? view.body : null;
  $("trace-id").textContent = t.transaction_id;
  $("trace-stage").textContent = t.stage;
  $("trace-stage").className = "badge " + ({ PERSISTED: "good", ORPHANED: "bad", DEAD_LETTERED: "bad" }[t.stage] || "warn");
  const accepted = t.accepted_at_us ? new Date(t.accepted_at_us / 1000).toISOString() : v && v.accepted_at;
  const steps = [
    ["Accepted", accepted ? when(accepted) : "–", "request " + (t.request_id || "–"), "done"],
    ["In the stream", "entry " + (t.stream_entry_id || "–"),
      t.pending_consumer ? "pending on " + t.pending_consumer + ", " + t.delivery_count + " deliveries, idle " + t.pending_idle_ms + " ms"
        : t.in_stream ? "still in the stream" : "trimmed from the stream",
      t.stage === "ORPHANED" || t.undecodable ? "bad" : t.stage === "PERSISTED" ? "done" : "now"],
    ["Persisted", t.persisted_at ? when(t.persisted_at) : "not yet", t.persisted_entry_id ? "from entry " + t.persisted_entry_id : "",
      t.persisted_at ? "done" : t.dead_letter ? "bad" : ""],
  ];
  const timeline = $("timeline"); clear(timeline);
  for (const [title, line1, line2, state] of steps) {
    const li = document.createElement("li"); li.className = state;
    const b = document.createElement("b"); b.textContent = title; li.appendChild(b);
    for (const text of [line1, line2]) {
      const span = document.createElement("span"); span.textContent = text; li.appendChild(span);
      li.appendChild(document.createElement("br"));
    }
    timeline.appendChild(li);
  }
  const details = $("trace-details").tBodies[0]; clear(details);
  const facts = [
    ["stage", t.stage], ["stream entry id", t.stream_entry_id || "–"],
    ["stream shard", t.stream_shard === null ? "–" : String(t.stream_shard)],
    ["undecodable", t.undecodable || "no"], ["request id", t.request_id || "–"],
    ["accepted at", accepted ? when(accepted) : "–"], ["persisted at", when(t.persisted_at)],
    ["still in stream", t.in_stream ? "yes" : "no"],
    ["idempotency key ttl", t.idempotency_ttl_s ? t.idempotency_ttl_s + " s" : "–"],
    ["pending on", t.pending_consumer || "–"],
    ["rejected duplicates", t.rejected_duplicates.length ? t.rejected_duplicates.join(", ") : "none"],
    ["dead letter", t.dead_letter || "none"],
  ];
  if (v) facts.splice(1, 0, ["customer", v.customer_info.customer_name], ["seller", v.seller_info.seller_name]);
  for (const f of facts) row(details, f, [null, f[0] === "dead letter" && t.dead_letter ? "nonzero" : null]);
  const legs = $("legs").tBodies[0]; clear(legs);
  if (v) for (const leg of v.legs) row(legs, [leg.account, leg.direction, num(leg.amount)], [null, null, "num"]);
  else row(legs, ["legs unavailable: the purchase is neither in the stream nor stored", "", ""]);
  $("trace-result").hidden = false;
}

// ---- account ----------------------------------------------------------------------------
const pages = [];
async function account(name, cursor) {
  $("account-error").hidden = true;
  const path = "/accounts/" + encodeURIComponent(name);
  const query = "?limit=20" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
  const [summary, page] = await Promise.all([getJSON(path), getJSON(path + "/transactions" + query)]);
  if (summary.status !== 200 || page.status !== 200) {
    $("account-result").hidden = true;
    $("account-error").textContent = problem(summary.status !== 200 ? summary : page, "account");
    $("account-error").hidden = false;
    return;
  }
  if (!cursor) pages.length = 0;
  const s = summary.body, p = page.body;
  if (!p.entries.length && !cursor && !s.debit_count && !s.credit_count) {
    $("account-result").hidden = true;
    $("account-error").textContent = "Not found: no purchase or sale recorded for account " + name;
    $("account-error").hidden = false;
    return;
  }
  $("account-id").textContent = s.account;
  $("debited").textContent = num(s.debited_total);
  $("debit-count").textContent = num(s.debit_count) + " purchases";
  $("credited").textContent = num(s.credited_total);
  $("credit-count").textContent = num(s.credit_count) + " sales";
  $("first-activity").textContent = when(s.first_activity_at);
  $("last-activity").textContent = when(s.last_activity_at);
  const entries = $("entries").tBodies[0]; clear(entries);
  for (const e of p.entries) {
    const tr = row(entries, [when(e.accepted_at), e.transaction_id, e.direction, num(e.amount), e.counterparty], [null, null, null, "num", null]);
    const link = document.createElement("a");
    link.href = "/console?tx=" + encodeURIComponent(e.transaction_id);
    link.textContent = e.transaction_id;
    tr.cells[1].textContent = ""; tr.cells[1].appendChild(link);
  }
  $("page-label").textContent = "page " + (pages.length + 1) + ", newest first";
  const older = $("older"), newest = $("newest");
  older.disabled = !p.next_cursor;
  newest.disabled = !cursor;
  older.onclick = () => { pages.push(cursor); account(name, p.next_cursor); };
  newest.onclick = () => account(name, null);
  $("account-result").hidden = false;
}

route();
