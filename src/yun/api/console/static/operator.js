// Yun console, the operator's pages: Organizations, Deployments, Economics. Loaded after console.js (its
// api(), showError(), cell(), fill(), usd(), int(), day(), when() helpers); every call goes to Yun's admin
// API (/admin/...) with the session cookie and, on state changes, its CSRF token, as the CLI does with a key.
"use strict";

const enc = encodeURIComponent;

// Signed dollars: "-$0.0009", not "$-0.0009".
const signedUsd = (v) => (v < 0 ? "-" : "") + usd(Math.abs(v));

function clearError() {
  document.getElementById("error").hidden = true;
}

function button(text, cls, label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (cls) b.className = cls;
  if (label) b.setAttribute("aria-label", label);
  b.addEventListener("click", () => Promise.resolve().then(onClick).catch(showError));
  return b;
}

function row(...cells) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  return tr;
}

function formBody(form, names) {
  const body = {};
  for (const n of names) {
    const v = form.elements[n].value.trim();
    if (v !== "") body[n] = v;
  }
  return body;
}

// -- organizations --------------------------------------------------------------------------------------
async function organizations() {
  const ROLES = ["owner", "admin", "member", "billing-viewer"];
  let current = null;

  async function loadOrgs() {
    const found = await api("/admin/orgs");
    fill(document.getElementById("orgs"), found.data.map((o) => {
      const name = document.createElement("td");
      const link = document.createElement("a");
      link.href = "#" + o.id;
      link.textContent = o.name;
      name.append(link);
      const limits = [o.rpm_limit && `${int(o.rpm_limit)} rpm`, o.tpm_limit && `${int(o.tpm_limit)} tpm`].filter(Boolean).join(", ");
      const tr = row(name, cell(o.id), cell(usd(o.balance.available), "num"), cell(usd(o.balance.held), "num"),
        cell(limits || "none"), cell(when(o.created_at)));
      tr.dataset.org = o.id;
      return tr;
    }), "No organizations.", 6);
  }

  async function loadOrg(id) {
    const end = new Date();
    const start = new Date(end.getTime() - 89 * 86400e3);
    const base = `/admin/orgs/${enc(id)}`;
    const [org, ledger, members, invitations, keys] = await Promise.all([
      api(base), api(`${base}/ledger?start=${day(start)}&end=${day(end)}`), api(`${base}/members`),
      api(`${base}/invitations`), api(`${base}/keys`),
    ]);
    current = org.id;
    document.getElementById("org").hidden = false;
    document.getElementById("org-name").textContent = org.name;
    document.getElementById("org-id").textContent = org.id;
    document.getElementById("org-balance").textContent = usd(org.balance.available);
    document.getElementById("org-held").textContent = `balance ${usd(org.balance.balance)}, ${usd(org.balance.held)} held`;
    fill(document.getElementById("ledger"), ledger.data.slice().reverse().map((e) =>
      row(cell(when(e.created_at)), cell(e.kind), cell(e.amount_usd, "num"), cell(e.reference || ""), cell(e.note || ""))),
    "No ledger entries in these 90 days.", 5);
    fill(document.getElementById("members"), members.data.map((m) => {
      const select = document.createElement("select");
      select.setAttribute("aria-label", `Role of ${m.email}`);
      for (const r of ROLES) select.append(new Option(r, r, false, r === m.role));
      select.addEventListener("change", () => api(`${base}/members/${enc(m.id)}`, { method: "PATCH", body: { role: select.value } })
        .then(() => loadOrg(current)).catch(showError));
      const roleCell = document.createElement("td");
      roleCell.append(select);
      const act = document.createElement("td");
      act.append(button("Remove", "danger", `Remove ${m.email}`, async () => {
        if (!window.confirm(`Remove ${m.email} from ${org.name}?`)) return;
        await api(`${base}/members/${enc(m.id)}`, { method: "DELETE" });
        await loadOrg(current);
      }));
      return row(cell(m.email), cell(m.name || ""), roleCell, act);
    }), "No people in this organization.", 4);
    fill(document.getElementById("invitations"), invitations.data.map((i) =>
      row(cell(i.email), cell(i.role), cell(i.state), cell(when(i.expires_at)))), "No invitations.", 4);
    fill(document.getElementById("org-keys"), keys.data.map((k) =>
      row(cell(k.name), cell(k.prefix + "…"), cell(k.role), cell(when(k.last_used_at)), cell(when(k.expires_at)),
        cell(k.revoked_at ? "revoked " + when(k.revoked_at) : "active"))), "No keys.", 6);
  }

  async function loadPrices() {
    const [prices, models] = await Promise.all([api("/admin/prices"), api("/admin/models").catch(() => ({ data: [] }))]);
    const list = document.getElementById("models");
    list.replaceChildren(...(models.data || []).map((m) => new Option(m.id, m.id)));
    fill(document.getElementById("price-list"), prices.data.map((p) => {
      const act = document.createElement("td");
      act.append(button("History", "secondary", `Price history of ${p.model}`, () => loadHistory(p.model)));
      return row(cell(p.model), cell(int(p.version), "num"), cell(p.input, "num"), cell(p.cached_input, "num"),
        cell(p.output, "num"), cell(p.training ?? "–", "num"), cell(when(p.created_at)), act);
    }), "No prices set.", 8);
  }

  async function loadHistory(model) {
    const found = await api(`/admin/prices/${model.split("/").map(enc).join("/")}`);
    document.getElementById("history-model").textContent = model;
    document.getElementById("history-box").hidden = false;
    fill(document.getElementById("price-history"), found.data.slice().reverse().map((p) =>
      row(cell(int(p.version), "num"), cell(p.input, "num"), cell(p.cached_input, "num"), cell(p.output, "num"),
        cell(p.training ?? "–", "num"), cell(when(p.created_at)))), "No price versions.", 6);
  }

  function onSubmit(id, action) {
    const form = document.getElementById(id);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try { await action(form); clearError(); } catch (err) { showError(err); }
    });
  }

  onSubmit("new-org", async (form) => {
    const made = await api("/admin/orgs", { method: "POST", body: { name: form.elements["name"].value } });
    form.reset();
    await loadOrgs();
    window.location.hash = made.id;
  });
  onSubmit("grant", async (form) => {
    const body = formBody(form, ["amount", "kind", "note"]);
    await api(`/admin/orgs/${enc(current)}/credits`, { method: "POST", body });
    form.reset();
    await Promise.all([loadOrg(current), loadOrgs()]);
  });
  onSubmit("add-member", async (form) => {
    await api(`/admin/orgs/${enc(current)}/members`, { method: "POST", body: formBody(form, ["email", "role"]) });
    form.reset();
    await loadOrg(current);
  });
  document.getElementById("invite").addEventListener("click", async () => {
    const form = document.getElementById("add-member");
    if (!form.reportValidity()) return;
    try {
      const made = await api(`/admin/orgs/${enc(current)}/invitations`, { method: "POST", body: formBody(form, ["email", "role"]) });
      document.getElementById("invite-link").textContent = made.url;
      document.getElementById("invite-expires").textContent = when(made.expires_at);
      document.getElementById("invite-box").hidden = false;
      form.reset();
      await loadOrg(current);
    } catch (err) { showError(err); }
  });
  document.getElementById("copy-invite").addEventListener("click", async (e) => {
    await navigator.clipboard.writeText(document.getElementById("invite-link").textContent);
    e.target.textContent = "Copied";
  });
  onSubmit("set-price", async (form) => {
    const body = formBody(form, ["input", "output", "cached_input", "training"]);
    const model = form.elements["model"].value.trim();
    await api(`/admin/prices/${model.split("/").map(enc).join("/")}`, { method: "PUT", body });
    form.reset();
    await loadPrices();
    await loadHistory(model);
  });

  async function route() {
    const id = decodeURIComponent(window.location.hash.slice(1));
    for (const tr of document.querySelectorAll("#orgs tr")) tr.classList.toggle("chosen", tr.dataset.org === id);
    if (id) await loadOrg(id);
  }
  window.addEventListener("hashchange", () => route().catch(showError));
  await Promise.all([loadOrgs(), loadPrices()]);
  await route();
}

// -- deployments ----------------------------------------------------------------------------------------
const REFRESH_MS = 3000;

function events(dep) {
  // What happened lately, from the replicas' own records (started, ready, failed) and why the deployment
  // is not as asked: newest first.
  const out = [];
  for (const r of dep.replicas) {
    out.push([r.created_at, `${r.id} placed on ${r.node || "?"} (generation ${r.generation})`]);
    if (r.ready_at) out.push([r.ready_at, `${r.id} ready at ${r.endpoint || "?"}`]);
    if (r.error) out.push([r.ready_at || r.created_at, `${r.id} ${r.state}: ${r.error}`]);
  }
  out.push([dep.updated_at, `deployment changed (generation ${dep.generation}, desired ${dep.desired})`]);
  return out.sort((a, b) => String(b[0]).localeCompare(String(a[0]))).slice(0, 8);
}

async function deployments() {
  const box = document.getElementById("deployments");
  const template = document.getElementById("deployment");
  const cards = new Map();

  function card(id) {
    if (cards.has(id)) return cards.get(id);
    const node = template.content.firstElementChild.cloneNode(true);
    node.dataset.deployment = id;
    node.querySelector(".dep-title").textContent = id;
    const scale = node.querySelector("form.scale");
    scale.addEventListener("submit", async (e) => {
      e.preventDefault();
      const body = {};
      for (const n of ["replicas", "min", "max"]) if (scale.elements[n].value !== "") body[n] = Number(scale.elements[n].value);
      try {
        await api(`/admin/deployments/${enc(id)}/scale`, { method: "POST", body });
        clearError();
        scale.reset();
        await refresh();
      } catch (err) { showError(err); }
    });
    const update = node.querySelector("form.update");
    update.addEventListener("submit", async (e) => {
      e.preventDefault();
      const body = {};
      for (const n of ["parallel", "threads", "context"]) if (update.elements[n].value !== "") body[n] = Number(update.elements[n].value);
      if (!Object.keys(body).length) return;
      try {
        await api(`/admin/deployments/${enc(id)}`, { method: "PATCH", body });
        clearError();
        update.reset();
        await refresh();
      } catch (err) { showError(err); }
    });
    for (const input of node.querySelectorAll("input")) input.setAttribute("aria-label", `${input.name} of ${id}`);
    for (const b of node.querySelectorAll("button")) b.setAttribute("aria-label", `${b.textContent} ${id}`);
    cards.set(id, node);
    box.append(node);
    return node;
  }

  async function refresh() {
    const [list, health] = await Promise.all([api("/admin/deployments"), api("/health")]);
    const details = await Promise.all(list.data.map((d) => api(`/admin/deployments/${enc(d.id)}`)));
    if (!details.length) box.replaceChildren(Object.assign(document.createElement("p"), { textContent: "No deployments." }));
    else box.querySelector(":scope > p")?.remove();
    const seen = new Set();
    for (const d of details) {
      seen.add(d.id);
      const node = card(d.id);
      const h = health.deployments?.[d.id] || {};
      const pool = health.models?.[d.id];
      const set = (sel, text) => { node.querySelector(sel).textContent = text; };
      set(".dep-title", `${d.id} · ${d.model}${d.owner ? " · dedicated to " + d.owner : " · shared"}`);
      set(".desired", String(d.desired));
      set(".ready", String(d.ready));
      set(".minmax", `min ${d.min}, max ${d.max}${Object.keys(d.autoscale || {}).length ? ", autoscaled" : ""}`);
      set(".queued", h.queued == null ? "?" : int(h.queued));
      set(".in-flight", h.in_flight == null ? "" : `${int(h.in_flight)} in flight`);
      const healthy = pool ? pool.healthy_replicas : d.ready;
      set(".health", d.ready >= d.desired ? "ok" : "degraded");
      node.querySelector(".health").className = "big health " + (d.ready >= d.desired ? "ok" : "error");
      set(".state", `${d.state}; ${healthy} healthy here`);
      set(".engine", `${d.engine} ${d.shape}: ${d.parallel ?? "default"} slots, ${d.threads ?? "default"} threads, ` +
        `context ${d.context ?? "default"}; generation ${d.generation}`);
      const message = node.querySelector(".message");
      message.textContent = d.message ? `Failing: ${d.message}` : "";
      message.hidden = !d.message;
      fill(node.querySelector(".replicas"), d.replicas.map((r) =>
        row(cell(r.id), cell(r.state), cell(String(r.generation), "num"), cell(r.node || ""), cell(r.endpoint || ""),
          cell(int(r.restarts), "num"), cell(r.ready_at ? when(r.ready_at) : ""), cell(r.error || ""))),
      "No replicas running.", 8);
      node.querySelector(".events").replaceChildren(...events(d).map(([t, text]) =>
        Object.assign(document.createElement("li"), { textContent: `${when(t)} ${text}` })));
    }
    for (const [id, node] of cards) if (!seen.has(id)) { node.remove(); cards.delete(id); }
    document.getElementById("refreshed").textContent = "Last refreshed " + new Date().toLocaleTimeString();
  }

  await refresh();
  setInterval(() => { if (!document.hidden) refresh().catch(showError); }, REFRESH_MS);
}

// -- economics ------------------------------------------------------------------------------------------
const econCharts = {};

function econChart(id, type, labels, datasets, horizontal) {
  econCharts[id]?.destroy();
  econCharts[id] = new Chart(document.getElementById(id), {
    type,
    data: { labels, datasets },
    options: {
      responsive: true, maintainAspectRatio: false, animation: false, indexAxis: horizontal ? "y" : "x",
      plugins: { legend: { position: "bottom" } },
    },
  });
}

async function economics() {
  const form = document.getElementById("econ-range");
  const end = new Date();
  form.start.value = day(new Date(end.getTime() - 29 * 86400e3));
  form.end.value = day(end);
  async function load() {
    const by = form.by.value;
    const [found, orgs] = await Promise.all([
      api(`/admin/economics?by=${by}&start=${form.start.value}&end=${form.end.value}`),
      by === "org" ? api("/admin/orgs") : { data: [] },
    ]);
    const orgName = Object.fromEntries(orgs.data.map((o) => [o.id, o.name]));
    const t = found.totals;
    document.getElementById("revenue").textContent = usd(nanos(t.revenue));
    document.getElementById("cost").textContent = usd(nanos(t.cost));
    const margin = document.getElementById("margin");
    margin.textContent = signedUsd(nanos(t.margin));
    margin.className = "big " + (t.margin >= 0 ? "ok" : "error");
    document.getElementById("margin-pct").textContent = t.revenue > 0 ? `${((100 * t.margin) / t.revenue).toFixed(1)}% of revenue` : "no revenue";
    document.getElementById("replica-hours").textContent = (t.replica_seconds / 3600).toFixed(3);
    document.getElementById("replica-seconds").textContent = `${int(t.replica_seconds)} replica-seconds`;

    const keyOf = (r) => (by === "model" ? r.model : r.org_id === null ? "shared compute (operator)" : orgName[r.org_id] || r.org_id);
    const perDay = {};
    const perKey = {};
    for (const r of found.data) {
      const d = (perDay[r.day] ||= { revenue: 0, cost: 0 });
      d.revenue += r.revenue; d.cost += r.cost;
      const k = (perKey[keyOf(r)] ||= { token_revenue: 0, training_revenue: 0, compute_revenue: 0, revenue: 0, cost: 0, margin: 0, replica_seconds: 0 });
      for (const f of Object.keys(k)) k[f] += r[f];
    }
    const days = daysBetween(found.start, found.end);
    econChart("econ-days", "line", days, [
      { label: "Revenue (USD)", data: days.map((d) => nanos(perDay[d]?.revenue || 0)), borderColor: "#1b7f3b", backgroundColor: "#1b7f3b" },
      { label: "Compute cost (USD)", data: days.map((d) => nanos(perDay[d]?.cost || 0)), borderColor: "#b3261e", backgroundColor: "#b3261e" },
    ]);
    const keys = Object.keys(perKey).sort((a, b) => perKey[b].revenue - perKey[a].revenue);
    document.getElementById("econ-keys-title").textContent = by === "model" ? "Per model" : "Per organization";
    document.getElementById("econ-key-head").textContent = by === "model" ? "Model" : "Organization";
    econChart("econ-keys", "bar", keys, [
      { label: "Revenue", data: keys.map((k) => nanos(perKey[k].revenue)), backgroundColor: "#1b7f3b" },
      { label: "Cost", data: keys.map((k) => nanos(perKey[k].cost)), backgroundColor: "#b3261e" },
      { label: "Margin", data: keys.map((k) => nanos(perKey[k].margin)), backgroundColor: "#2356c7" },
    ], true);
    fill(document.getElementById("econ-table"), keys.map((k) => {
      const v = perKey[k];
      const pct = v.revenue > 0 ? `${((100 * v.margin) / v.revenue).toFixed(1)}%` : "–";
      const tr = row(cell(k), cell(usd(nanos(v.token_revenue)), "num"), cell(usd(nanos(v.training_revenue)), "num"),
        cell(usd(nanos(v.compute_revenue)), "num"), cell(usd(nanos(v.revenue)), "num"), cell(usd(nanos(v.cost)), "num"),
        cell(signedUsd(nanos(v.margin)), "num " + (v.margin >= 0 ? "ok" : "error")), cell(pct, "num"), cell((v.replica_seconds / 3600).toFixed(3), "num"));
      return tr;
    }), "Nothing earned or spent in these days.", 9);
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load().catch(showError); });
  form.by.addEventListener("change", () => load().catch(showError));
  await load();
}

const OPERATOR_PAGES = { organizations, deployments, economics };
const operatorPage = OPERATOR_PAGES[document.body.dataset.page];
if (operatorPage) Promise.resolve().then(operatorPage).catch(showError);
