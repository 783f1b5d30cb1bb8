// Yun console, Models: the catalog the organization may use (/v1/models with its cards), the current prices
// (/v1/organization/prices), its own fine-tuned models, and its dedicated deployments with their
// replica-seconds (/v1/organization/deployments). Needs console.js (api, cell, fill, int, usd) loaded first.
"use strict";

const perM = (p, field) => (p && p.priced ? "$" + Number(p[field]) : p ? "free" : "–");

function tryLink(id) {
  const a = document.createElement("a");
  a.href = `/console/playground?model=${encodeURIComponent(id)}`;
  a.textContent = "Try";
  a.setAttribute("aria-label", `Try ${id} in the playground`);
  const td = document.createElement("td");
  td.append(a);
  return td;
}

function statusCell(status) {
  const td = cell(status);
  td.className = status === "ready" ? "ok-text" : "muted";
  return td;
}

async function models() {
  const [me, catalog, prices, deployments] = await Promise.all([
    api("/console/api/me"),
    api("/v1/models"),
    api("/v1/organization/prices"),
    api("/v1/organization/deployments"),
  ]);
  const price = Object.fromEntries(prices.data.map((p) => [p.model, p]));
  const shared = catalog.data.filter((m) => !m.card?.base_model && m.owned_by !== me.org_id);
  const own = catalog.data.filter((m) => m.card?.base_model || m.owned_by === me.org_id);

  fill(document.getElementById("catalog"), shared.map((m) => {
    const c = m.card || {};
    const tr = document.createElement("tr");
    const p = price[m.id];
    tr.append(cell(m.id), cell(m.kind, "opt"), cell(c.family || "–"), cell(c.parameters || "–"), cell(c.quantization || "–", "opt"),
      cell(c.context_length ? int(c.context_length) : "–", "num"), cell(c.license || "–", "opt"),
      cell(perM(p, "input"), "num"), cell(perM(p, "cached_input"), "num opt"), cell(perM(p, "output"), "num"),
      statusCell(m.status), m.kind === "chat" ? tryLink(m.id) : cell(""));
    return tr;
  }), "No models for this organization yet.", 12);

  fill(document.getElementById("fine-tuned"), own.map((m) => {
    const tr = document.createElement("tr");
    const p = price[m.id];
    tr.append(cell(m.id, "wrap"), cell(m.card?.base_model || "–"), cell(perM(p, "input"), "num"), cell(perM(p, "output"), "num"),
      statusCell(m.status), tryLink(m.id));
    return tr;
  }), "No fine-tuned models yet: start one on the Fine-tuning page.", 6);

  fill(document.getElementById("deployments"), deployments.data.map((d) => {
    const tr = document.createElement("tr");
    const state = d.message ? `${d.state}: ${d.message}` : d.state;
    tr.append(cell(d.id), cell(d.model), cell(d.shape, "opt"), cell(`${d.ready} / ${d.desired}`, "num"), cell(state),
      cell(int(d.replica_seconds), "num"), cell(usd(d.charged), "num"),
      cell(d.price_per_replica_hour === null ? "–" : usd(d.price_per_replica_hour), "num opt"));
    return tr;
  }), "No deployment is dedicated to your organization: its requests run on shared replicas, paid by the token.", 8);
}

models().catch(showError);
