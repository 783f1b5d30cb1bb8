// Yun console: each page fetches its data from Yun's own HTTP API with the session cookie, and sends the
// session's CSRF token (from the page's <meta name="csrf-token">) with every state-changing call.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]')?.content;

class ApiError extends Error {}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401) { window.location.assign("/console/sign-in"); throw new ApiError("signed out"); }
  const data = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new ApiError(data?.error?.message || `${r.status} ${r.statusText}`);
  return data;
}

function showError(err) {
  const box = document.getElementById("error");
  box.textContent = err instanceof Error ? err.message : String(err);
  box.hidden = false;
}

const usd = (v) => "$" + Number(v).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 6 });
const int = (v) => Number(v).toLocaleString("en-US");
const day = (d) => d.toISOString().slice(0, 10);
const nanos = (v) => Number(v) / 1e9;

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fill(tbody, rows, empty, columns) {
  tbody.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(empty);
    td.colSpan = columns;
    tr.append(td);
    tbody.append(tr);
  }
  for (const row of rows) tbody.append(row);
  tbody.closest("table")?.classList.toggle("empty", !rows.length);
}

// -- sign-in: two forms, one shown at a time --------------------------------------------------------
function signIn() {
  for (const tab of document.querySelectorAll(".tabs a")) {
    tab.addEventListener("click", (e) => {
      e.preventDefault();
      for (const t of document.querySelectorAll(".tabs a")) t.setAttribute("aria-selected", String(t === tab));
      for (const f of document.querySelectorAll("form[id^=with-]")) f.classList.toggle("later", "#" + f.id !== tab.getAttribute("href"));
      document.querySelector(tab.getAttribute("href") + " input")?.focus();
    });
  }
}

// -- overview -----------------------------------------------------------------------------------------
async function overview() {
  const now = new Date();
  const today = day(now);
  const monthStart = today.slice(0, 8) + "01";
  const [balance, month, free] = await Promise.all([
    api("/v1/organization/balance"),
    api(`/v1/organization/usage?group_by=day&start=${monthStart}&end=${today}`),
    api("/v1/organization/free-tier"),
  ]);
  document.getElementById("balance").textContent = usd(balance.available);
  document.getElementById("held").textContent = Number(balance.held) > 0 ? `${usd(balance.held)} held by requests in flight` : "";
  const spent = month.data.reduce((sum, r) => sum + nanos(r.cost), 0);
  document.getElementById("spend-month").textContent = usd(spent);
  const todays = month.data.find((r) => r.key === today);
  document.getElementById("requests-today").textContent = int(todays ? todays.requests : 0);
  document.getElementById("tokens-today").textContent = int(todays ? todays.prompt_tokens + todays.completion_tokens : 0);
  fill(document.getElementById("free-tier"), free.data.map((f) => {
    const tr = document.createElement("tr");
    tr.append(cell(f.model), cell(int(f.monthly_tokens), "num"), cell(int(f.used), "num"), cell(int(f.left), "num"));
    return tr;
  }), "No free tier for this organization.", 4);
}

// -- usage --------------------------------------------------------------------------------------------
const METRICS = {
  tokens: { label: "Tokens", of: (r) => r.prompt_tokens + r.completion_tokens },
  requests: { label: "Requests", of: (r) => r.requests },
  cost: { label: "Cost (USD)", of: (r) => nanos(r.cost) },
};
const charts = {};
let byDay = [];

function draw(id, type, labels, values, label) {
  charts[id]?.destroy();
  charts[id] = new Chart(document.getElementById(id), {
    type,
    data: { labels, datasets: [{ label, data: values, backgroundColor: "#2356c7", borderColor: "#2356c7", maxBarThickness: 48 }] },
    options: {
      responsive: true, maintainAspectRatio: false, animation: false,
      indexAxis: type === "bar" && id === "by-model" ? "y" : "x",
      plugins: { legend: { display: false } },
    },
  });
}

function daysBetween(start, end) {
  const out = [];
  for (let d = new Date(start + "T00:00:00Z"); day(d) <= end; d.setUTCDate(d.getUTCDate() + 1)) out.push(day(d));
  return out;
}

async function usage() {
  const form = document.getElementById("range");
  const end = new Date();
  const start = new Date(end.getTime() - 29 * 86400e3);
  form.start.value = day(start);
  form.end.value = day(end);
  document.getElementById("statement").href = `/v1/organization/statements/${day(end).slice(0, 7)}?format=csv`;
  async function load() {
    const q = `start=${form.start.value}&end=${form.end.value}`;
    const [days, models] = await Promise.all([
      api(`/v1/organization/usage?group_by=day&${q}`),
      api(`/v1/organization/usage?group_by=model&${q}`),
    ]);
    byDay = days.data;
    const metric = METRICS[form.metric.value];
    const found = Object.fromEntries(days.data.map((r) => [r.key, r]));
    const labels = daysBetween(days.start, days.end);
    draw("by-day", "bar", labels, labels.map((d) => (found[d] ? metric.of(found[d]) : 0)), metric.label);
    draw("by-model", "bar", models.data.map((r) => r.key), models.data.map(metric.of), metric.label);
    fill(document.getElementById("usage-table"), days.data.map((r) => {
      const tr = document.createElement("tr");
      tr.append(cell(r.key), cell(int(r.requests), "num"), cell(int(r.input_tokens), "num"), cell(int(r.cached_tokens), "num"),
        cell(int(r.completion_tokens), "num"), cell(r.cost_usd, "num"));
      return tr;
    }), "No usage in these days.", 6);
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load().catch(showError); });
  form.metric.addEventListener("change", () => load().catch(showError));
  document.getElementById("csv").addEventListener("click", () => {
    const head = ["day", "requests", "input_tokens", "cached_tokens", "completion_tokens", "cost_usd"];
    const lines = [head.join(","), ...byDay.map((r) => head.map((h) => (h === "day" ? r.key : r[h])).join(","))];
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
    link.download = `usage-${form.start.value}-${form.end.value}.csv`;
    link.click();
    URL.revokeObjectURL(link.href);
  });
  await load();
}

// -- keys ---------------------------------------------------------------------------------------------
const when = (iso) => (iso ? new Date(iso).toISOString().slice(0, 16).replace("T", " ") : "never");

async function keys() {
  async function load() {
    const found = await api("/v1/organization/keys");
    fill(document.getElementById("keys"), found.data.map((k) => {
      const tr = document.createElement("tr");
      if (k.revoked_at) tr.className = "revoked";
      const limits = [k.rpm_limit && `${int(k.rpm_limit)} rpm`, k.tpm_limit && `${int(k.tpm_limit)} tpm`].filter(Boolean).join(", ");
      tr.append(cell(k.name), cell(k.prefix + "…"), cell(k.role), cell(when(k.last_used_at)), cell(limits || "org's"),
        cell(when(k.expires_at)), cell(k.revoked_at ? "revoked " + when(k.revoked_at) : "active"));
      const act = document.createElement("td");
      if (!k.revoked_at) {
        const b = document.createElement("button");
        b.className = "danger";
        b.textContent = "Revoke";
        b.setAttribute("aria-label", `Revoke ${k.name}`);
        b.addEventListener("click", async () => {
          if (!window.confirm(`Revoke the key "${k.name}"? Requests with it are refused from then on.`)) return;
          await api(`/v1/organization/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" }).catch(showError);
          await load().catch(showError);
        });
        act.append(b);
      }
      tr.append(act);
      return tr;
    }), "No keys yet.", 8);
  }
  const form = document.getElementById("new-key");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: form.elements["name"].value, role: form.elements["role"].value };
    if (form.rpm_limit.value) body.rpm_limit = Number(form.rpm_limit.value);
    if (form.tpm_limit.value) body.tpm_limit = Number(form.tpm_limit.value);
    if (form.expires_days.value) body.expires_at = new Date(Date.now() + Number(form.expires_days.value) * 86400e3).toISOString();
    try {
      const made = await api("/v1/organization/keys", { method: "POST", body });
      document.getElementById("secret").textContent = made.secret;
      document.getElementById("secret-box").hidden = false;
      form.reset();
      await load();
    } catch (err) { showError(err); }
  });
  document.getElementById("copy").addEventListener("click", async (e) => {
    await navigator.clipboard.writeText(document.getElementById("secret").textContent);
    e.target.textContent = "Copied";
  });
  await load();
}

// -- account ------------------------------------------------------------------------------------------
function account() {
  const form = document.getElementById("password-form");
  form?.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("/console/api/password", {
        method: "POST", body: { current_password: form.current_password.value, new_password: form.new_password.value },
      });
      form.reset();
      document.getElementById("password-done").hidden = false;
    } catch (err) { showError(err); }
  });
}

const PAGES = { overview, usage, keys, account };
const page = PAGES[document.body.dataset.page];
if (page) Promise.resolve().then(page).catch(showError);
else if (!document.body.dataset.page) signIn(); // other pages bring their own script (playground.js, ...)
