// Yun console, People: an organization's owners and admins list its members, invite someone (a single-use
// link, shown once) and remove someone, through /v1/organization/members and /v1/organization/invitations.
// Loaded after console.js (api, showError, cell, fill, when).
"use strict";

async function people() {
  async function load() {
    const [members, invitations] = await Promise.all([api("/v1/organization/members"), api("/v1/organization/invitations")]);
    fill(document.getElementById("people"), members.data.map((m) => {
      const tr = document.createElement("tr");
      const act = document.createElement("td");
      const b = document.createElement("button");
      b.className = "danger";
      b.textContent = "Remove";
      b.setAttribute("aria-label", `Remove ${m.email}`);
      b.addEventListener("click", async () => {
        if (!window.confirm(`Remove ${m.email} from this organization?`)) return;
        await api(`/v1/organization/members/${encodeURIComponent(m.id)}`, { method: "DELETE" }).catch(showError);
        await load().catch(showError);
      });
      act.append(b);
      tr.append(cell(m.email), cell(m.name || ""), cell(m.role), act);
      return tr;
    }), "No members yet.", 4);
    fill(document.getElementById("invitations"), invitations.data.map((i) => {
      const tr = document.createElement("tr");
      tr.append(cell(i.email), cell(i.role), cell(i.state), cell(when(i.expires_at)));
      return tr;
    }), "No invitations yet.", 4);
  }
  const form = document.getElementById("invite-form");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const made = await api("/v1/organization/invitations", {
        method: "POST", body: { email: form.elements["email"].value, role: form.elements["role"].value },
      });
      document.getElementById("invite-link").textContent = made.url;
      document.getElementById("invite-expires").textContent = when(made.expires_at);
      document.getElementById("invite-box").hidden = false;
      form.reset();
      await load();
    } catch (err) { showError(err); }
  });
  document.getElementById("copy-invite").addEventListener("click", async (e) => {
    await navigator.clipboard.writeText(document.getElementById("invite-link").textContent);
    e.target.textContent = "Copied";
  });
  await load();
}

if (document.body.dataset.page === "people") Promise.resolve().then(people).catch(showError);
