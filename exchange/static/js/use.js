// The Use page's playground: a chat with a model through the gateway (/v1/chat/completions),
// with this browser session (CSRF header, as Django checks a form post). The reply is read as a
// server-sent event stream with fetch + ReadableStream and shown token by token; the gateway's
// last chunk carries the usage (tokens drawn from each market, cost, credit, tokens/s, service
// level) and the generation record (by its x-generation-id) the time to first token.
import { EMPTY, currencyDecimals, number, tokens } from "exchange/format";

const config = JSON.parse(document.getElementById("use-config").textContent);
const labels = config.labels;
const form = document.getElementById("chat-form");

// Money of one request is fractions of a cent: the currency's decimals, then every ledger digit.
function exactMoney(text, currency) {
  if (text === null || text === undefined) return EMPTY;
  return `${number(text, currencyDecimals(currency), 8)} ${currency}`;
}

function fill(template, values) {
  const node = template.content.firstElementChild.cloneNode(true);
  for (const [name, value] of Object.entries(values)) {
    const field = node.querySelector(`[data-field="${name}"]`);
    if (field) field.textContent = value;
  }
  return node;
}

// --- server-sent events: "data: …" lines, events separated by a blank line -------------------
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n/)) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer[end] === "\r" ? 2 : 1));
      if (line === "") {
        if (data.length) yield data.join("\n");
        data = [];
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      }
    }
  }
  if (data.length) yield data.join("\n");
}

// --- the models the session can use now (/v1/models) -------------------------------------------
let models = new Map();

function showModel() {
  const info = document.getElementById("model-info");
  const model = models.get(document.getElementById("chat-model").value);
  const snippetModel = document.querySelector("[data-field=snippet-model]");
  if (snippetModel && model) snippetModel.textContent = model.id;
  if (!model) {
    info.textContent = "";
    return;
  }
  info.textContent = labels.available
    .replace("{input}", tokens(model.available.input_tokens))
    .replace("{output}", tokens(model.available.output_tokens))
    .replace("{providers}", tokens(model.providers))
    .replace("{expiry}", model.earliest_expiry.slice(0, 16).replace("T", " "));
  // a reply needs both sides: say which one is missing and where to buy it
  for (const kind of ["input", "output"]) {
    if (Number(model.available[`${kind}_tokens`]) > 0) continue;
    const warning = document.createElement("span");
    warning.className = "model-missing";
    warning.dataset.testid = "model-missing";
    const link = document.createElement("a");
    link.href = config.urls.trade.replace("SYMBOL", encodeURIComponent(model.markets[kind]));
    link.textContent = model.markets[kind];
    warning.append(` ${labels.missing.replace("{kind}", labels[kind])} `, link, ".");
    info.append(warning);
  }
}

async function loadModels() {
  const select = document.getElementById("chat-model");
  try {
    const response = await fetch(config.urls.models, { headers: { Accept: "application/json" } });
    if (!response.ok) return;
    const listing = await response.json();
    models = new Map(listing.data.map((model) => [model.id, model]));
  } catch {
    return; // the server-rendered options stay
  }
  const chosen = select.value;
  select.replaceChildren(
    ...[...models.keys()].map((id) => {
      const option = document.createElement("option");
      option.value = id;
      option.textContent = id;
      option.selected = id === chosen;
      return option;
    }),
  );
  showModel();
}

// --- the conversation ---------------------------------------------------------------------------
const transcript = document.getElementById("transcript");
const prompt = document.getElementById("chat-prompt");
const send = document.getElementById("chat-send");
const stop = document.getElementById("chat-stop");
const statsTemplate = document.getElementById("reply-stats-template");
let messages = [];
let running = null; // the AbortController of the request in flight

function bubble(role, text) {
  document.getElementById("transcript-empty")?.remove();
  const node = document.createElement("div");
  node.className = `message ${role}`;
  node.dataset.testid = role === "user" ? "message-user" : "message-assistant";
  const body = document.createElement("div");
  body.className = "message-text";
  body.textContent = text;
  node.append(body);
  transcript.append(node);
  transcript.scrollTop = transcript.scrollHeight;
  return node;
}

function showError(node, error) {
  const box = document.createElement("div");
  box.className = "flash error message-error";
  box.dataset.testid = "reply-error";
  box.textContent = error.code ? `${error.message} (${error.code})` : error.message;
  node.append(box);
}

function sla(usage) {
  const level = usage.sla || {};
  if (level.met === true) return labels.sla_met;
  if (level.met === false) return `${labels.sla_missed}${level.reason ? ` (${level.reason})` : ""}`;
  return EMPTY;
}

function showStats(node, usage, generationId) {
  const currency = usage.currency;
  const markets = usage.markets || {};
  const stats = fill(statsTemplate, {
    prompt_tokens: tokens(usage.prompt_tokens),
    completion_tokens: tokens(usage.completion_tokens),
    input_market: markets.input ? markets.input.market : "",
    output_market: markets.output ? markets.output.market : "",
    cost: exactMoney(usage.cost, currency),
    input_cost: markets.input ? exactMoney(markets.input.cost, currency) : EMPTY,
    output_cost: markets.output ? exactMoney(markets.output.cost, currency) : EMPTY,
    credit: exactMoney(usage.credit, currency),
    first_token: EMPTY,
    tokens_per_second: usage.output_tokens_per_second
      ? number(usage.output_tokens_per_second, 1, 1)
      : EMPTY,
    provider: usage.provider || EMPTY,
    sla: usage.usage_source === "estimated" ? `${sla(usage)} · ${labels.estimated}` : sla(usage),
    generation_id: generationId || EMPTY,
  });
  if (usage.credit && Number(usage.credit) !== 0) {
    stats.querySelector("[data-part=credit]").hidden = false;
  }
  node.append(stats);
  transcript.scrollTop = transcript.scrollHeight;
  return stats;
}

// The gateway's own time to first token (from forwarding to the provider's first token) is on
// the generation record, written when the reply was settled.
async function showFirstToken(stats, generationId) {
  if (!generationId) return;
  try {
    const response = await fetch(`${config.urls.generations}/${encodeURIComponent(generationId)}`, {
      headers: { Accept: "application/json" },
    });
    if (!response.ok) return;
    const generation = await response.json();
    if (generation.first_token_ms !== null) {
      stats.querySelector("[data-field=first_token]").textContent =
        `${number(generation.first_token_ms, 0)} ms`;
    }
  } catch {
    // the figure stays a dash; the reply and its cost are shown already
  }
}

async function ask(text) {
  const user = { role: "user", content: text };
  bubble("user", text);
  const node = bubble("assistant", "");
  node.classList.add("pending");
  const output = node.querySelector(".message-text");
  const controller = new AbortController();
  running = controller;
  send.disabled = true;
  stop.hidden = false;
  let reply = "";
  let usage = null;
  let failure = null;
  let generationId = null;
  try {
    const maxTokens = Number.parseInt(document.getElementById("chat-max-tokens").value, 10);
    const body = {
      model: document.getElementById("chat-model").value,
      messages: [...messages, user],
      stream: true,
    };
    if (Number.isInteger(maxTokens) && maxTokens > 0) body.max_tokens = maxTokens;
    const response = await fetch(config.urls.chat, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "text/event-stream",
        "X-CSRFToken": config.csrf_token,
      },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    generationId = response.headers.get("x-generation-id");
    if (!response.ok) {
      const answer = await response.json().catch(() => ({}));
      failure = answer.error || { message: `HTTP ${response.status}` };
    } else {
      for await (const data of sseData(response.body)) {
        if (data === "[DONE]") break;
        let chunk;
        try {
          chunk = JSON.parse(data);
        } catch {
          continue;
        }
        // usage rides on the finishing chunk, or on the error event of a broken stream
        if (chunk.usage) usage = chunk.usage;
        if (chunk.error && chunk.error.usage) usage = chunk.error.usage;
        if (chunk.error) {
          failure = chunk.error;
          continue;
        }
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          node.classList.remove("pending");
          reply += delta.content;
          output.textContent = reply;
          transcript.scrollTop = transcript.scrollHeight;
        }
      }
    }
  } catch (error) {
    failure = { message: error.name === "AbortError" ? labels.stopped : labels.network };
  } finally {
    running = null;
    send.disabled = false;
    stop.hidden = true;
    node.classList.remove("pending");
  }
  if (reply) {
    // what was delivered is part of the conversation (and was charged), even if cut short
    messages.push(user, { role: "assistant", content: reply });
  }
  if (!reply) output.remove(); // nothing was generated: only the reason is shown
  if (failure) showError(node, failure);
  transcript.scrollTop = transcript.scrollHeight;
  if (usage) {
    const stats = showStats(node, usage, generationId);
    node.dataset.status = failure ? "broken" : "done";
    await showFirstToken(stats, generationId);
  } else {
    node.dataset.status = "failed";
  }
  // the lots table (htmx: hx-trigger "allocations-changed from:body") and the picker's figures
  document.body.dispatchEvent(new CustomEvent("allocations-changed"));
  await loadModels();
}

if (form) {
  document.getElementById("chat-model").addEventListener("change", showModel);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text || running) return;
    prompt.value = "";
    ask(text);
  });
  prompt.addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter is a new line (as chat boxes do)
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  stop.addEventListener("click", () => running && running.abort());
  document.getElementById("chat-new").addEventListener("click", () => {
    if (running) running.abort();
    messages = [];
    transcript.replaceChildren();
  });
  loadModels();
}
