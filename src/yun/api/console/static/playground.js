// Yun console, Playground: chat with a model through Yun's own /v1/chat/completions, streamed (the SSE read
// with fetch + ReadableStream), with the session cookie and its CSRF token. Each answer shows its tokens,
// time to first token, total time and cost: what the request was charged, from the stream's usage (or, for an
// answer stopped before it, from the organization's usage record of that request); the model's list price is
// shown beside the model. Needs console.js (api, showError, usd, int) loaded first.
"use strict";

const play = {
  models: [],
  prices: {},
  history: [], // {role, content}, the turns sent back with every request
  running: null, // the AbortController of the answer being streamed
};

function priceText(p) {
  if (!p) return "";
  if (!p.priced) return "No price set: answers from this model cost nothing.";
  return `Input $${Number(p.input)} · cached $${Number(p.cached_input)} · output $${Number(p.output)} per 1M tokens`;
}

function listCost(p, usage) {
  // What the answer costs at the model's list price (a free-tier allowance may make the charge lower).
  if (!p || !p.priced || !usage) return 0;
  const cached = usage.prompt_tokens_details?.cached_tokens || 0;
  return ((usage.prompt_tokens - cached) * Number(p.input) + cached * Number(p.cached_input)
    + usage.completion_tokens * Number(p.output)) / 1e6;
}

function bubble(role, text) {
  const li = document.createElement("li");
  li.className = `msg ${role}`;
  const who = document.createElement("div");
  who.className = "who-said";
  who.textContent = role === "user" ? "You" : role === "assistant" ? document.getElementById("model").value : role;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  li.append(who, body);
  document.getElementById("messages").append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function stat(li, parts) {
  let line = li.querySelector(".stats");
  if (!line) {
    line = document.createElement("div");
    line.className = "stats";
    li.append(line);
  }
  line.replaceChildren();
  for (const [name, value] of parts) {
    const span = document.createElement("span");
    span.dataset.stat = name;
    span.textContent = value;
    line.append(span);
  }
}

function chatError(message) {
  const box = document.getElementById("chat-error");
  box.textContent = message;
  box.hidden = !message;
}

// The server's SSE: `data: {json}` events separated by blank lines, `data: [DONE]` last. An error after the
// stream began comes as an event whose JSON has `error`.
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

async function refusal(r) {
  // An OpenAI-shaped error body, said with its status and code: 429 insufficient_quota (no credit left, as
  // OpenAI says it), 429 rate_limit_exceeded, 400 for a bad parameter (named) ...
  let message = `${r.status} ${r.statusText}`;
  let code = null;
  try {
    const body = await r.json();
    code = body?.error?.code || body?.error?.type || null;
    if (body?.error?.message) message = `${r.status}${code ? " " + code : ""}: ${body.error.message}`;
    if (body?.error?.param) message += ` (parameter: ${body.error.param})`;
  } catch { /* not JSON: the status says it */ }
  if (code !== "insufficient_quota" && r.status === 429) message += " Wait a moment and send again.";
  return message;
}

async function charged(requestId, li) {
  // The usage record is written when the request settles (at once, or within a few seconds when busy).
  for (let i = 0; i < 20 && requestId; i++) {
    const found = await api("/v1/organization/usage/records?limit=20").catch(() => null);
    const record = found?.data.find((r) => r.request_id === requestId);
    if (record) {
      const cost = li.querySelector('[data-stat="cost"]');
      if (cost) cost.textContent = `cost ${usd(record.cost_usd)} charged`;
      li.dataset.charged = record.cost_usd;
      return;
    }
    await new Promise((done) => setTimeout(done, 500));
  }
}

function setRunning(controller) {
  play.running = controller;
  document.getElementById("send").disabled = controller !== null;
  document.getElementById("stop").disabled = controller === null;
}

function params() {
  const body = {};
  for (const name of ["temperature", "top_p", "max_tokens"]) {
    const v = document.getElementById(name).value;
    if (v !== "") body[name] = name === "max_tokens" ? parseInt(v, 10) : Number(v);
  }
  return body;
}

async function send(text) {
  const model = document.getElementById("model").value;
  if (!model) { chatError("Choose a model first."); return; }
  chatError("");
  const system = document.getElementById("system").value.trim();
  play.history.push({ role: "user", content: text });
  const asked = bubble("user", text);
  const messages = system ? [{ role: "system", content: system }, ...play.history] : [...play.history];
  const li = bubble("assistant", "");
  li.classList.add("streaming");
  const out = li.querySelector(".text");
  const controller = new AbortController();
  setRunning(controller);
  const started = performance.now();
  let firstToken = null;
  let usage = null;
  let requestId = null;
  let stopped = false;
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST",
      credentials: "same-origin",
      signal: controller.signal,
      headers: { "Content-Type": "application/json", Accept: "text/event-stream", "X-CSRF-Token": csrf },
      body: JSON.stringify({ model, messages, stream: true, stream_options: { include_usage: true }, ...params() }),
    });
    if (r.status === 401) { window.location.assign("/console/sign-in"); return; }
    if (!r.ok) throw new ApiError(await refusal(r));
    for await (const chunk of sseEvents(r.body)) {
      if (chunk.error) throw new ApiError(`Stopped by the server: ${chunk.error.message || "error"}`);
      requestId = requestId || chunk.id;
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) {
        if (firstToken === null) firstToken = performance.now();
        out.textContent += delta;
        li.dataset.chunks = String(Number(li.dataset.chunks || 0) + 1);
        li.scrollIntoView({ block: "end" });
      }
      if (chunk.usage) usage = chunk.usage;
    }
  } catch (err) {
    if (err.name === "AbortError") stopped = true;
    else {
      // Nothing was answered: the turn is taken back so the conversation can go on from before it.
      play.history.pop();
      asked.classList.add("failed");
      li.remove();
      chatError(err instanceof ApiError ? err.message : `The request failed: ${err.message}`);
      document.getElementById("prompt").value = text;
      return;
    }
  } finally {
    setRunning(null);
    li.classList.remove("streaming");
  }
  const total = (performance.now() - started) / 1000;
  play.history.push({ role: "assistant", content: out.textContent });
  const parts = [];
  if (stopped) parts.push(["stopped", "stopped"]);
  if (usage) parts.push(["tokens", `${int(usage.prompt_tokens)} prompt + ${int(usage.completion_tokens)} completion tokens`]);
  parts.push(["ttft", `TTFT ${firstToken === null ? "–" : ((firstToken - started) / 1000).toFixed(2) + " s"}`]);
  parts.push(["total", `total ${total.toFixed(2)} s`]);
  li.dataset.requestId = requestId || "";
  if (usage && typeof usage.cost === "number") {
    // Yun's usage carries what the request was charged (USD; the free tier included), as OpenRouter's does.
    parts.push(["cost", `cost ${usd(usage.cost)}`]);
    li.dataset.charged = String(usage.cost);
    stat(li, parts);
  } else if (usage) {
    parts.push(["cost", `cost ${usd(listCost(play.prices[model], usage))} at list price`]);
    stat(li, parts);
  } else {
    // Stopped before the usage chunk: the gateway still bills what it streamed; its usage record says what.
    parts.push(["cost", "cost …"]);
    stat(li, parts);
    await charged(requestId, li);
  }
}

async function playground() {
  const select = document.getElementById("model");
  const [models, prices] = await Promise.all([api("/v1/models"), api("/v1/organization/prices")]);
  play.models = models.data.filter((m) => m.kind === "chat");
  play.prices = Object.fromEntries(prices.data.map((p) => [p.model, p]));
  select.replaceChildren(...play.models.map((m) => {
    const o = document.createElement("option");
    o.value = m.id;
    o.textContent = m.status === "ready" ? m.id : `${m.id} (${m.status})`;
    return o;
  }));
  if (!play.models.length) chatError("Your organization may use no chat model yet.");
  const wanted = new URLSearchParams(window.location.search).get("model");
  if (wanted) {
    if (play.models.some((m) => m.id === wanted)) select.value = wanted;
    else chatError(`The model "${wanted}" is not one your organization may chat with (yet).`);
  }
  const showPrice = () => { document.getElementById("model-price").textContent = priceText(play.prices[select.value]); };
  select.addEventListener("change", showPrice);
  showPrice();

  const form = document.getElementById("composer");
  const prompt = document.getElementById("prompt");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = prompt.value.trim();
    if (!text || play.running) return;
    prompt.value = "";
    send(text).catch(showError);
  });
  prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit();
  });
  document.getElementById("stop").addEventListener("click", () => play.running?.abort());
  document.getElementById("clear").addEventListener("click", () => {
    play.running?.abort();
    play.history = [];
    document.getElementById("messages").replaceChildren();
    chatError("");
  });
}

playground().catch(showError);
