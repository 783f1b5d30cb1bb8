// Yun console, Fine-tuning: the organization's files (/v1/files: list, multipart upload, delete) and its jobs
// (/v1/fine_tuning/jobs: start, list, follow one with its events, loss curve and checkpoints, cancel), and
// "Try in playground" for a job's fine-tuned model. Needs console.js (api, cell, fill, int, when) first.
"use strict";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const ft = { followed: null, timer: null, chart: null, files: [] };
const allClear = () => { document.getElementById("error").hidden = true; };
const stamp = (seconds) => (seconds ? when(new Date(seconds * 1000).toISOString()) : "–");

function button(text, label, onClick, cls) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  if (cls) b.className = cls;
  b.addEventListener("click", onClick);
  const td = document.createElement("td");
  td.append(b);
  return td;
}

async function upload(form) {
  // Multipart straight to /v1/files, as the openai client sends it; the CSRF token goes in its header.
  const data = new FormData();
  data.append("purpose", form.purpose.value);
  data.append("file", form.file.files[0]);
  const r = await fetch("/v1/files", {
    method: "POST", credentials: "same-origin", body: data, headers: { Accept: "application/json", "X-CSRF-Token": csrf },
  });
  if (r.status === 401) { window.location.assign("/console/sign-in"); throw new ApiError("signed out"); }
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(`${r.status}: ${body?.error?.message || r.statusText}`);
  return body;
}

async function loadFiles() {
  const found = await api("/v1/files?order=desc");
  ft.files = found.data;
  fill(document.getElementById("files"), found.data.map((f) => {
    const tr = document.createElement("tr");
    tr.append(cell(f.id), cell(f.filename), cell(f.purpose), cell(int(f.bytes), "num"), cell(stamp(f.created_at)),
      button("Delete", `Delete ${f.filename}`, async () => {
        if (!window.confirm(`Delete the file "${f.filename}"?`)) return;
        await api(`/v1/files/${encodeURIComponent(f.id)}`, { method: "DELETE" }).catch(showError);
        await loadFiles().catch(showError);
      }, "danger"));
    return tr;
  }), "No files yet: upload a JSONL dataset above.", 6);
  const select = document.getElementById("training-file");
  const chosen = select.value;
  const usable = found.data.filter((f) => f.purpose === "fine-tune");
  select.replaceChildren(...usable.map((f) => {
    const o = document.createElement("option");
    o.value = f.id;
    o.textContent = `${f.filename} (${f.id})`;
    return o;
  }));
  if (!usable.length) {
    const none = document.createElement("option");
    none.value = "";
    none.textContent = "upload a fine-tune file first";
    select.append(none);
  }
  if (chosen) select.value = chosen;
}

async function loadJobs() {
  const found = await api("/v1/fine_tuning/jobs?limit=50");
  fill(document.getElementById("jobs"), found.data.map((j) => {
    const tr = document.createElement("tr");
    tr.append(cell(j.id), cell(j.model), cell(j.status), cell(j.trained_tokens === null ? "–" : int(j.trained_tokens), "num"),
      cell(j.fine_tuned_model || "–", "wrap"), cell(stamp(j.created_at)), button("View", `View ${j.id}`, () => follow(j.id)));
    return tr;
  }), "No fine-tuning jobs yet.", 7);
  return found.data;
}

async function allEvents(jobId) {
  // Newest first, up to 1000 a page: read every page, so the loss curve has every step.
  const events = [];
  let after = "";
  for (let page = 0; page < 20; page++) {
    const found = await api(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/events?limit=1000${after}`);
    events.push(...found.data);
    if (!found.has_more || !found.data.length) break;
    after = `&after=${encodeURIComponent(found.data[found.data.length - 1].id)}`;
  }
  return events.reverse();
}

function drawLoss(events) {
  const steps = events.filter((e) => e.type === "metrics" && e.data && "total_steps" in e.data && e.data.train_loss != null);
  const valid = events.filter((e) => e.type === "metrics" && e.data?.valid_loss != null && e.data.step != null);
  const datasets = [{
    label: "Training loss", data: steps.map((e) => ({ x: e.data.step, y: e.data.train_loss })),
    borderColor: "#2356c7", backgroundColor: "#2356c7", pointRadius: 0, borderWidth: 2,
  }];
  if (valid.length) {
    datasets.push({
      label: "Validation loss", data: valid.map((e) => ({ x: e.data.step, y: e.data.valid_loss })),
      borderColor: "#c76a23", backgroundColor: "#c76a23", pointRadius: 3, showLine: false,
    });
  }
  if (ft.chart) {
    ft.chart.data.datasets = datasets;
    ft.chart.update();
    return;
  }
  ft.chart = new Chart(document.getElementById("loss"), {
    type: "line",
    data: { datasets },
    options: {
      responsive: true, maintainAspectRatio: false, animation: false, parsing: true,
      scales: { x: { type: "linear", ticks: { precision: 0 }, title: { display: true, text: "Step" } }, y: { title: { display: true, text: "Loss" } } },
      plugins: { legend: { display: valid.length > 0 } },
    },
  });
}

async function showJob(jobId) {
  const id = encodeURIComponent(jobId);
  const [job, events, checkpoints] = await Promise.all([
    api(`/v1/fine_tuning/jobs/${id}`), allEvents(jobId), api(`/v1/fine_tuning/jobs/${id}/checkpoints?limit=100`),
  ]);
  if (ft.followed !== jobId) return job; // another job was chosen meanwhile
  document.getElementById("job").hidden = false;
  document.getElementById("job-title").textContent = `Job ${job.id}`;
  const status = document.getElementById("job-status");
  status.textContent = job.status;
  status.dataset.status = job.status;
  document.getElementById("job-model").textContent = job.fine_tuned_model
    ? `${job.model} → ${job.fine_tuned_model}` : `base ${job.model}`;
  const err = document.getElementById("job-error");
  err.hidden = !job.error?.message;
  err.textContent = job.error?.message || "";
  document.getElementById("job-cancel").hidden = FINISHED.has(job.status);
  const tryIt = document.getElementById("job-try");
  tryIt.hidden = !(job.status === "succeeded" && job.fine_tuned_model);
  if (job.fine_tuned_model) tryIt.href = `/console/playground?model=${encodeURIComponent(job.fine_tuned_model)}`;
  const list = document.getElementById("events");
  list.replaceChildren(...events.slice(-200).reverse().map((e) => {
    const li = document.createElement("li");
    li.className = e.level === "error" ? "error" : "";
    li.textContent = `${stamp(e.created_at)} ${e.message}`;
    return li;
  }));
  drawLoss(events);
  fill(document.getElementById("checkpoints"), checkpoints.data.map((c) => {
    const tr = document.createElement("tr");
    const loss = c.metrics?.train_loss;
    tr.append(cell(int(c.step_number), "num"), cell(c.fine_tuned_model_checkpoint),
      cell(loss == null ? "–" : Number(loss).toFixed(4), "num"));
    return tr;
  }), "No checkpoints yet.", 3);
  return job;
}

async function follow(jobId) {
  ft.followed = jobId;
  clearTimeout(ft.timer);
  ft.chart?.destroy();
  ft.chart = null;
  const tick = async () => {
    try {
      const job = await showJob(jobId);
      if (ft.followed !== jobId) return;
      if (FINISHED.has(job.status)) { await loadJobs(); return; }
      ft.timer = setTimeout(tick, 2000);
    } catch (err) { showError(err); }
  };
  await tick();
  document.getElementById("job").scrollIntoView({ block: "start" });
}

async function fineTuning() {
  const models = await api("/v1/models");
  const bases = models.data.filter((m) => m.kind === "chat" && !m.card?.base_model && m.card?.format === "gguf");
  document.getElementById("base-model").replaceChildren(...bases.map((m) => {
    const o = document.createElement("option");
    o.value = o.textContent = m.id;
    return o;
  }));
  await Promise.all([loadFiles(), loadJobs()]);

  const up = document.getElementById("upload");
  up.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const made = await upload(up);
      allClear();
      up.reset();
      await loadFiles();
      document.getElementById("training-file").value = made.id;
    } catch (err) { showError(err); }
  });
  const form = document.getElementById("new-job");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { model: form.model.value, training_file: form.training_file.value };
    if (form.suffix.value.trim()) body.suffix = form.suffix.value.trim();
    if (form.n_epochs.value) body.hyperparameters = { n_epochs: parseInt(form.n_epochs.value, 10) };
    try {
      const job = await api("/v1/fine_tuning/jobs", { method: "POST", body });
      allClear();
      await loadJobs();
      await follow(job.id);
    } catch (err) { showError(err); }
  });
  document.getElementById("job-cancel").addEventListener("click", async () => {
    if (!ft.followed || !window.confirm(`Cancel the job ${ft.followed}?`)) return;
    try {
      await api(`/v1/fine_tuning/jobs/${encodeURIComponent(ft.followed)}/cancel`, { method: "POST" });
      await follow(ft.followed);
      await loadJobs();
    } catch (err) { showError(err); }
  });
}

fineTuning().catch(showError);
