// The joyful web page: predict a pasted dialogue or stream one utterance at a time,
// show each utterance's label and probabilities, explain it on click, correct it.
// Everything goes through the service's JSON API; user text is only ever set as
// textContent, never parsed as HTML.
"use strict";

const COLOURS = {
  hap: "#e0a800", joy: "#e0a800", exc: "#f07b19", surprise: "#f07b19",
  sad: "#3c6fd1", sadness: "#3c6fd1", neu: "#7d8593", neutral: "#7d8593",
  ang: "#d2342c", anger: "#d2342c", fru: "#8e4ec6", disgust: "#3f8f4f", fear: "#5b5f97",
};
const MODALITY_NAMES = { t: "text", a: "audio", v: "visual" };

const state = { labels: [], mode: "stream", dialogue: null, session: null, utterances: [], selected: null };
const $ = (id) => document.getElementById(id);

function colour(label) {
  if (COLOURS[label]) return COLOURS[label];
  let h = 0;
  for (const ch of label) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return `hsl(${h}, 55%, 45%)`;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "style") for (const [p, v] of Object.entries(value)) node.style.setProperty(p, v);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function status(message, isError = false) {
  const node = $("status");
  node.textContent = message;
  node.classList.toggle("error", isError);
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) throw new Error(`${response.status}: ${data.detail || response.statusText}`);
  return data;
}

// ------------------------------------------------------------------ model and tabs
async function loadModel() {
  try {
    const model = await api("GET", "/model");
    state.labels = model.labels;
    const inputs = Object.entries(model.widths).map(([field, width]) => `${field} (${width})`).join(", ");
    $("model-info").textContent =
      `labels: ${model.labels.join(" ")} · inputs: ${inputs}` +
      (model.text_encoder ? ` · texts encoded by ${model.text_encoder}` : "") +
      (model.causal ? " · causal: live labels are final" : " · not causal: live labels may differ from whole-dialogue ones");
  } catch (error) {
    $("model-info").textContent = `model unavailable (${error.message})`;
  }
}

function showTab(mode) {
  state.mode = mode;
  for (const [tab, panel] of [["tab-stream", "panel-stream"], ["tab-dialogue", "panel-dialogue"]]) {
    const active = tab === `tab-${mode}`;
    $(tab).setAttribute("aria-selected", String(active));
    $(panel).hidden = !active;
  }
}

// ------------------------------------------------------------------ streaming
async function startSession() {
  const dialogue = $("session-dialogue").value.trim();
  const session = await api("POST", "/sessions", dialogue ? { dialogue } : {});
  reset(session.dialogue, session.session);
  status(`session started for dialogue ${session.dialogue}`);
}

function featureFields() {
  const raw = $("features").value.trim();
  if (!raw) return {};
  let fields;
  try {
    fields = JSON.parse(raw);
  } catch (error) {
    throw new Error(`feature vectors are not valid JSON (${error.message})`);
  }
  if (typeof fields !== "object" || fields === null || Array.isArray(fields)) {
    throw new Error("feature vectors must be a JSON object such as {\"audio\": [0.1, 0.2]}");
  }
  return fields;
}

async function addUtterance(event) {
  event.preventDefault();
  const speaker = $("speaker").value.trim();
  const text = $("text").value;
  const features = $("features").value;
  const body = { ...featureFields(), speaker };
  if (text.trim()) body.text = text;
  if (!state.session) await startSession();
  $("add").disabled = true;
  // Cleared now, not when the answer comes, so the next utterance can be typed meanwhile.
  $("text").value = "";
  $("features").value = "";
  try {
    const result = await api("POST", `/sessions/${encodeURIComponent(state.session)}/utterances`, body);
    state.utterances.push({ ...result, text });
    render();
    status(`utterance ${result.index}: ${result.label}`);
  } catch (error) {
    if (!$("text").value && !$("features").value) {  // give the refused utterance back to edit
      $("text").value = text;
      $("features").value = features;
    }
    throw error;
  } finally {
    $("add").disabled = false;
  }
}

// ------------------------------------------------------------------ whole dialogues
function parseDialogue(raw) {
  const text = raw.trim();
  try {
    return JSON.parse(text);
  } catch {
    const first = text.split("\n").find((line) => line.trim());
    if (!first) throw new Error("paste a dialogue first");
    try {
      return JSON.parse(first);
    } catch (error) {
      throw new Error(`not a JSON dialogue (${error.message})`);
    }
  }
}

async function predictDialogue() {
  const record = parseDialogue($("dialogue-json").value);
  const result = await api("POST", "/predict?explain=true", record);
  reset(result.dialogue, null);
  const texts = Array.isArray(record.utterances) ? record.utterances.map((u) => (u && u.text) || "") : [];
  state.utterances = result.utterances.map((u) => ({ ...u, text: texts[u.index] || "" }));
  render();
  status(`${result.utterances.length} utterances labelled` + (result.stored ? "" : " (not stored)"));
}

async function readFile() {
  const file = $("dialogue-file").files[0];
  if (file) $("dialogue-json").value = await file.text();
}

// ------------------------------------------------------------------ timeline
function reset(dialogue, session) {
  Object.assign(state, { dialogue, session, utterances: [], selected: null });
  $("explanation").replaceChildren(el("h2", {}, "Explanation"), el("p", { class: "muted" }, "Click an utterance to see why it got its label."));
  render();
}

function bars(values, emotionOf) {
  const grid = el("div", { class: "bars" });
  for (const [name, value] of values) {
    const width = `${Math.min(100, Math.abs(value) * 100).toFixed(1)}%`;
    grid.append(
      el("span", { class: "name" }, name),
      el("span", { class: value < 0 ? "bar negative" : "bar", style: { "--emotion": emotionOf(name) } },
        el("span", { style: { width } })),
      el("span", { class: "value" }, value.toFixed(3)),
    );
  }
  return grid;
}

function correctionControl(u) {
  const select = el("select", { class: "correct-label", "aria-label": `correct label of utterance ${u.index}` },
    ...state.labels.map((label) => el("option", { value: label }, label)));
  select.value = u.corrected || u.label;
  const button = el("button", { type: "button", class: "correct-button" }, "Correct");
  button.addEventListener("click", () => correct(u, select.value).catch((e) => status(e.message, true)));
  const box = el("div", { class: "correct" }, select, button);
  box.addEventListener("click", (event) => event.stopPropagation());
  return box;
}

function render() {
  $("dialogue-title").textContent = state.dialogue ? `Dialogue ${state.dialogue}` : "No dialogue yet";
  $("forget").hidden = !state.dialogue;
  const items = state.utterances.map((u) => {
    const item = el("li", {
      class: "utterance" + (state.selected === u.index ? " selected" : ""),
      "data-index": u.index,
      "data-label": u.corrected || u.label,
      tabindex: "0",
      style: { "--emotion": colour(u.corrected || u.label) },
      onclick: () => explain(u),
      onkeydown: (event) => { if (event.key === "Enter") explain(u); },
    },
    el("div", { class: "head" },
      el("span", { class: "muted" }, `#${u.index}`),
      el("span", { class: "who" }, u.speaker),
      el("span", { class: "said" }, u.text || ""),
      el("span", { class: "chip" }, u.label)),
    bars(Object.entries(u.probabilities), colour),
    correctionControl(u));
    if (u.corrected) item.append(el("span", { class: "corrected" }, `corrected to ${u.corrected}`));
    return item;
  });
  $("timeline").replaceChildren(...items);
}

function explain(u) {
  state.selected = u.index;
  render();
  const panel = [el("h2", {}, `Explanation: #${u.index} ${u.speaker} → ${u.label}`)];
  const x = u.explanation;
  if (!x) {
    panel.push(el("p", { class: "muted" }, "No explanation was computed for this prediction."));
  } else {
    panel.push(el("p", { class: "muted" }, `Drop in p(${u.label}) when a modality is left out:`));
    panel.push(bars(Object.entries(x.modalities).map(([m, d]) => [MODALITY_NAMES[m] || m, d]), () => colour(u.label)));
    panel.push(el("p", { class: "muted" }, "Context utterances whose removal changes it most:"));
    const rows = x.context.map((c) => el("tr", {}, el("td", {}, `#${c.index}`), el("td", {}, c.speaker), el("td", {}, c.influence.toFixed(3))));
    panel.push(rows.length
      ? el("table", { id: "context-table" }, el("tr", {}, el("th", {}, "utterance"), el("th", {}, "speaker"), el("th", {}, "Δp")), ...rows)
      : el("p", { class: "muted" }, "No context utterance."));
  }
  $("explanation").replaceChildren(...panel);
}

async function correct(u, label) {
  const body = { dialogue: state.dialogue, index: u.index, label };
  const annotator = $("annotator").value.trim();
  if (annotator) body.annotator = annotator;
  await api("POST", "/corrections", body);
  u.corrected = label;
  render();
  status(`utterance ${u.index} corrected to ${label}`);
}

async function forget() {
  const result = await api("DELETE", `/dialogues/${encodeURIComponent(state.dialogue)}`);
  const what = Object.entries(result.removed).map(([k, n]) => `${n} ${k}`).join(", ");
  reset(null, null);
  status(`forgot dialogue ${result.dialogue}: removed ${what}`);
}

// ------------------------------------------------------------------ wiring
function guarded(action) {
  return (event) => action(event).catch((error) => status(error.message, true));
}

document.addEventListener("DOMContentLoaded", () => {
  $("tab-stream").addEventListener("click", () => showTab("stream"));
  $("tab-dialogue").addEventListener("click", () => showTab("dialogue"));
  $("session-start").addEventListener("click", guarded(startSession));
  $("utterance-form").addEventListener("submit", guarded(addUtterance));
  $("predict").addEventListener("click", guarded(predictDialogue));
  $("dialogue-file").addEventListener("change", guarded(readFile));
  $("forget").addEventListener("click", guarded(forget));
  loadModel();
});
