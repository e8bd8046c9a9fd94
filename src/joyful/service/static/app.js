// The joyful web page: predict a pasted dialogue or stream one utterance at a time,
// show each utterance's label and probabilities, explain it on click, correct it.
// A label has the form of the model's task (GET /model): a class name; the list of
// labels present, each with its probability (multilabel); or a score on a scale
// (regression). Corrections are made in the same form: a menu, checkboxes, a number.
// Predictions under the confidence threshold are marked uncertain and wait in the review
// queue (GET /review) until an annotator corrects them; the drift panel shows GET /monitor.
// Everything goes through the service's JSON API; user text is only ever set as
// textContent, never parsed as HTML.
"use strict";

const COLOURS = {
  hap: "#e0a800", joy: "#e0a800", happy: "#e0a800", exc: "#f07b19", surprise: "#f07b19",
  sad: "#3c6fd1", sadness: "#3c6fd1", neu: "#7d8593", neutral: "#7d8593",
  ang: "#d2342c", anger: "#d2342c", fru: "#8e4ec6", disgust: "#3f8f4f", fear: "#5b5f97",
};
const MODALITY_NAMES = { t: "text", a: "audio", v: "visual" };

const NEUTRAL = "#7d8593";

const state = {
  task: "classification", labels: [], thresholds: null, range: [-3, 3],
  mode: "stream", dialogue: null, session: null, utterances: [], selected: null,
};
const $ = (id) => document.getElementById(id);

function colour(label) {
  if (COLOURS[label]) return COLOURS[label];
  let h = 0;
  for (const ch of label) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return `hsl(${h}, 55%, 45%)`;
}

// A label as text, as a colour, and as the page's data-label attribute (for tests and styles).
function labelText(label) {
  if (typeof label === "number") return label.toFixed(2);
  if (Array.isArray(label)) return label.length ? label.join(" + ") : "none";
  return label;
}

function labelColour(label) {
  if (typeof label === "number") return label < 0 ? COLOURS.anger : label > 0 ? COLOURS.disgust : NEUTRAL;
  if (Array.isArray(label)) return label.length ? colour(label[0]) : NEUTRAL;
  return colour(label);
}

function labelData(label) {
  return Array.isArray(label) ? label.join(",") : String(label);
}

// The label an utterance has now: a correction made on this page, else the prediction.
function current(u) {
  return "corrected" in u ? u.corrected : u.label;
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

// ------------------------------------------------------------------ API token
// The token is kept in sessionStorage: for this tab only, gone when it closes, never in a
// cookie (so no other site's page can make the browser send it).
const TOKEN_KEY = "joyful-token";

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function askForToken(reason) {
  $("token-info").textContent = reason;
  $("token-form").hidden = false;
  $("token").focus();
}

async function useToken(event) {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  $("token-form").hidden = true;
  $("token-forget").hidden = false;
  status("token saved for this tab");
  await loadModel();
  await loadReview();
}

function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  $("token-forget").hidden = true;
  askForToken("token forgotten; enter one to go on");
}

// Refusals of the token checks, in words: 401 asks for a token, 403 says the role is too low.
const REFUSALS = { 401: "a valid API token is needed", 403: "not allowed with this token", 429: "refused for now" };

async function api(method, path, body) {
  const options = { method, headers: authHeaders() };
  if (body instanceof FormData) {
    options.body = body;  // a recording: the browser sets the multipart Content-Type with its boundary
  } else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) {
    const detail = data.detail || response.statusText;
    if (response.status === 401) askForToken(detail);
    throw new Error(`${REFUSALS[response.status] || response.status}: ${detail}`);
  }
  return data;
}

// ------------------------------------------------------------------ model and tabs
async function loadModel() {
  try {
    const model = await api("GET", "/model");
    Object.assign(state, {
      task: model.task, labels: model.labels, thresholds: model.thresholds, range: model.score_range || state.range,
    });
    const inputs = Object.entries(model.widths).map(([field, width]) => `${field} (${width})`).join(", ");
    const predicts = {
      classification: `labels: ${model.labels.join(" ")}`,
      multilabel: `multilabel · labels: ${model.labels.join(" ")} (any of them, or none)`,
      regression: `regression · score in [${state.range.join(", ")}]`,
    }[model.task];
    showRecording(model.recordings);
    $("model-info").textContent =
      `${predicts} · inputs: ${inputs}` +
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
  const consent = $("consent").value;
  const session = await api("POST", "/sessions", dialogue ? { dialogue, consent } : { consent });
  reset(session.dialogue, session.session);
  status(`session started for dialogue ${session.dialogue} (consent: ${session.consent})`);
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
    await added(await api("POST", `/sessions/${encodeURIComponent(state.session)}/utterances`, body), { text });
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

// An utterance the service has labelled joins the timeline; `display` is what only the page knows of it.
async function added(result, display) {
  state.utterances.push({ ...result, ...display });
  render();
  status(`utterance ${result.index}${display.recorded ? " (recorded)" : ""}: ${labelText(result.label)}`);
  if (result.uncertain) await loadReview();
}

// ------------------------------------------------------------------ recordings (push-to-talk)
// The microphone (and the camera, when the model reads faces) records one utterance, which
// is uploaded as multipart/form-data; the service extracts its features as `joyful extract`
// made the model's, and labels it like a typed one. Hold the button while speaking, or
// press it briefly once to start and again to stop.
const HOLD_MS = 300;  // a press at least this long is held: releasing it stops the recording
const recording = { capture: null, recorder: null, pressed: 0, starting: false };

// `recordings`: the modalities the service can extract from a recording (GET /model).
function showRecording(recordings) {
  const capture = { audio: recordings.includes("a"), video: recordings.includes("v") };
  recording.capture = capture;
  $("recording").hidden = !(capture.audio || capture.video);
  const possible = Boolean(navigator.mediaDevices && window.MediaRecorder);
  $("talk").disabled = !possible;
  $("talk-info").textContent = !possible
    ? "recording needs a browser with MediaRecorder, on a secure page (HTTPS, or this machine)"
    : `records the ${capture.video ? "camera and " : ""}microphone: hold while speaking, or press to start and again to stop`;
}

function showTalking(talking) {
  $("talk").textContent = talking ? "Recording… release or press to stop" : "Hold to talk";
  $("talk").classList.toggle("recording", talking);
  $("talk").setAttribute("aria-pressed", String(talking));
}

async function pressTalk() {
  if (recording.starting) return;
  if (recording.recorder) {  // the second press of press-to-start
    stopRecording();
    return;
  }
  const speaker = $("speaker").value.trim();
  if (!speaker) throw new Error("enter the speaker before recording");
  recording.pressed = performance.now();
  recording.starting = true;
  try {
    const { audio, video } = recording.capture;
    const stream = await navigator.mediaDevices.getUserMedia({ audio, video });
    const recorder = new MediaRecorder(stream);
    const chunks = [];
    recorder.addEventListener("dataavailable", (event) => { if (event.data.size) chunks.push(event.data); });
    recorder.addEventListener("stop", () => {
      for (const track of stream.getTracks()) track.stop();
      const type = recorder.mimeType.split(";")[0];
      // A video also carries the sound; the service takes the audio features from it.
      sendRecording(new Blob(chunks, { type }), speaker, video ? "video" : "audio", type.split("/")[1] || "webm")
        .catch((error) => status(error.message, true));
    });
    recorder.start();
    recording.recorder = recorder;
    showTalking(true);
    status(`recording ${speaker}…`);
  } finally {
    recording.starting = false;
  }
}

function releaseTalk() {
  if (recording.recorder && performance.now() - recording.pressed >= HOLD_MS) stopRecording();
}

function stopRecording() {
  const { recorder } = recording;
  recording.recorder = null;
  showTalking(false);
  recorder.stop();  // its "stop" event sends the recording
}

async function sendRecording(blob, speaker, field, extension) {
  const text = $("text").value;
  const form = new FormData();
  form.append("speaker", speaker);
  if (text.trim()) form.append("text", text);
  form.append(field, blob, `utterance.${extension}`);
  if (!state.session) await startSession();
  $("text").value = "";
  status("recording sent: extracting its features…");
  try {
    await added(await api("POST", `/sessions/${encodeURIComponent(state.session)}/utterances`, form),
      { text, recorded: true });
  } catch (error) {
    if (!$("text").value) $("text").value = text;  // give the text back, as for a refused typed utterance
    throw error;
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
  const result = await api("POST", "/predict?explain=true", { consent: $("consent").value, ...record });
  reset(result.dialogue, null);
  const texts = Array.isArray(record.utterances) ? record.utterances.map((u) => (u && u.text) || "") : [];
  state.utterances = result.utterances.map((u) => ({ ...u, text: texts[u.index] || "" }));
  render();
  status(`${result.utterances.length} utterances labelled` + (result.stored ? "" : " (not stored)"));
  await loadReview();
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

// One bar per (name, value); a bar is full at |value| = scale; names in `marked` are highlighted,
// and `ticks` (name → value) marks a threshold on its bar.
function bars(values, emotionOf, { scale = 1, marked = [], ticks = {} } = {}) {
  const grid = el("div", { class: "bars" });
  const at = (value) => `${Math.min(100, (Math.abs(value) / scale) * 100).toFixed(1)}%`;
  for (const [name, value] of values) {
    const bar = el("span", { class: value < 0 ? "bar negative" : "bar", style: { "--emotion": emotionOf(name) } },
      el("span", { class: "fill", style: { width: at(value) } }));
    if (name in ticks) bar.append(el("span", { class: "tick", title: `present from ${ticks[name]}`, style: { left: at(ticks[name]) } }));
    grid.append(
      el("span", { class: marked.includes(name) ? "name on" : "name" }, name),
      bar,
      el("span", { class: "value" }, value.toFixed(3)),
    );
  }
  return grid;
}

// A score on the model's scale: a bar from 0 to the score, the zero marked.
function scoreBar(score) {
  const [low, high] = state.range;
  const at = (v) => ((Math.min(high, Math.max(low, v)) - low) / (high - low)) * 100;
  const fill = el("span", { class: "fill",
    style: { left: `${Math.min(at(0), at(score)).toFixed(1)}%`, width: `${Math.abs(at(score) - at(0)).toFixed(1)}%` } });
  return el("div", { class: "score", "aria-label": `score ${score.toFixed(2)} on [${low}, ${high}]` },
    el("span", { class: "muted" }, String(low)),
    el("span", { class: "track" }, fill, el("span", { class: "zero", style: { left: `${at(0).toFixed(1)}%` } })),
    el("span", { class: "muted" }, String(high)),
    el("span", { class: "value" }, score.toFixed(2)));
}

function prediction(u) {
  if (state.task === "regression") return scoreBar(u.label);
  if (state.task === "classification") return bars(Object.entries(u.probabilities), colour, { marked: [u.label] });
  const ticks = Object.fromEntries(state.labels.map((label, k) => [label, state.thresholds[k]]));
  return bars(Object.entries(u.probabilities), colour, { marked: u.label, ticks });
}

// The correction's input in the task's form, and a function reading the label it holds.
function correctionInput(u) {
  const now = current(u);
  if (state.task === "regression") {
    const [low, high] = state.range;
    const input = el("input", { type: "number", class: "correct-score", min: low, max: high, step: "0.1",
      "aria-label": `correct score of utterance ${u.index}` });
    input.value = now.toFixed(2);
    return [[input], () => {
      if (!Number.isFinite(input.valueAsNumber)) throw new Error("the corrected score must be a number");
      return input.valueAsNumber;
    }];
  }
  if (state.task === "multilabel") {
    const boxes = state.labels.map((label) => {
      const box = el("input", { type: "checkbox", class: "correct-emotion", value: label });
      box.checked = now.includes(label);
      return box;
    });
    const group = el("span", { class: "emotions", role: "group", "aria-label": `labels present in utterance ${u.index}` },
      ...boxes.map((box) => el("label", {}, box, box.value)));
    return [[group], () => boxes.filter((box) => box.checked).map((box) => box.value)];
  }
  const select = el("select", { class: "correct-label", "aria-label": `correct label of utterance ${u.index}` },
    ...state.labels.map((label) => el("option", { value: label }, label)));
  select.value = now;
  return [[select], () => select.value];
}

// `dialogue`: the one the utterance belongs to (the review queue holds several).
function correctionControl(u, dialogue = null) {
  const [inputs, read] = correctionInput(u);
  const button = el("button", { type: "button", class: "correct-button" }, "Correct");
  button.addEventListener("click",
    () => Promise.resolve().then(() => correct(u, read(), dialogue)).catch((e) => status(e.message, true)));
  const box = el("div", { class: "correct" }, ...inputs, button);
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
      "data-label": labelData(current(u)),
      tabindex: "0",
      style: { "--emotion": labelColour(current(u)) },
      onclick: () => explain(u),
      onkeydown: (event) => { if (event.key === "Enter") explain(u); },
    },
    head(u),
    prediction(u),
    correctionControl(u));
    if (u.uncertain) item.classList.add("uncertain");
    if ("corrected" in u) item.append(el("span", { class: "corrected" }, `corrected to ${labelText(u.corrected)}`));
    return item;
  });
  $("timeline").replaceChildren(...items);
}

function head(u) {
  const sure = typeof u.confidence === "number"
    ? el("span", { class: "confidence" }, `${u.uncertain ? "uncertain · " : ""}confidence ${u.confidence.toFixed(2)}`)
    : "";
  return el("div", { class: "head" },
    el("span", { class: "muted" }, `#${u.index}`),
    el("span", { class: "who" }, u.speaker),
    el("span", { class: "said" }, u.text || (u.recorded ? "(recorded)" : "")),
    sure,
    el("span", { class: "chip" }, labelText(u.label)));
}

function explain(u) {
  state.selected = u.index;
  render();
  const shown = labelText(u.label);
  const panel = [el("h2", {}, `Explanation: #${u.index} ${u.speaker} → ${shown}`)];
  const x = u.explanation;
  // What the explanation measures: the label's probability, the confidence in the whole decision, or the score.
  const [measure, delta, scale] = {
    classification: [`Drop in p(${shown}) when a modality is left out:`, "Δp", 1],
    multilabel: ["Drop in the confidence in this decision (mean over the labels) when a modality is left out:", "Δ", 1],
    regression: ["Change in the score when a modality is left out (positive: it raised the score):", "Δ score",
      (state.range[1] - state.range[0]) / 2],
  }[state.task];
  if (!x) {
    panel.push(el("p", { class: "muted" }, "No explanation was computed for this prediction."));
  } else {
    panel.push(el("p", { class: "muted" }, measure));
    panel.push(bars(Object.entries(x.modalities).map(([m, d]) => [MODALITY_NAMES[m] || m, d]), () => labelColour(u.label), { scale }));
    panel.push(el("p", { class: "muted" }, "Context utterances whose removal changes it most:"));
    const rows = x.context.map((c) => el("tr", {}, el("td", {}, `#${c.index}`), el("td", {}, c.speaker), el("td", {}, c.influence.toFixed(3))));
    panel.push(rows.length
      ? el("table", { id: "context-table" }, el("tr", {}, el("th", {}, "utterance"), el("th", {}, "speaker"), el("th", {}, delta)), ...rows)
      : el("p", { class: "muted" }, "No context utterance."));
  }
  $("explanation").replaceChildren(...panel);
}

async function correct(u, label, dialogue = null) {
  const body = { dialogue: dialogue || state.dialogue, index: u.index, label };
  const annotator = $("annotator").value.trim();
  if (annotator) body.annotator = annotator;
  const saved = await api("POST", "/corrections", body);
  if (!dialogue) {
    u.corrected = saved.label;
    render();
  }
  status(`utterance ${u.index} corrected to ${labelText(saved.label)}`);
  await loadReview();
}

// ------------------------------------------------------------------ review queue and drift
async function loadReview() {
  const queue = await api("GET", "/review");
  const items = queue.map((u) => el("li", {
    class: "utterance uncertain",
    "data-dialogue": u.dialogue,
    "data-index": u.index,
    style: { "--emotion": labelColour(u.label) },
  },
  el("div", { class: "muted" }, `dialogue ${u.dialogue}`),
  head(u),
  prediction(u),
  correctionControl(u, u.dialogue)));
  $("review").replaceChildren(...items);
  $("review-info").textContent = queue.length
    ? `${queue.length} uncertain prediction${queue.length === 1 ? "" : "s"} to review, oldest first.`
    : "Nothing to review: no uncertain prediction is waiting.";
}

function shown(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "object") return Object.entries(value).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(" · ");
  return value.toFixed(3);
}

async function loadMonitor() {
  const report = await api("GET", "/monitor");
  const rows = Object.entries(report.statistics).map(([name, s]) => el("tr",
    { class: report.shifted.includes(name) ? "shifted" : "", "data-statistic": name },
    el("td", {}, name), el("td", {}, shown(s.value)), el("td", {}, shown(s.reference)), el("td", {}, shown(s.psi))));
  $("monitor-table").replaceChildren(
    el("tr", {}, el("th", {}, "statistic"), el("th", {}, "live"), el("th", {}, "validation"), el("th", {}, "PSI")), ...rows);
  const info = $("monitor-info");
  info.classList.toggle("alert", report.alert);
  info.textContent = report.alert
    ? `Drift: ${report.shifted.join(", ")} past PSI ${report.threshold} over the last ${report.n} predictions.`
    : `No drift alert over the last ${report.n} predictions (PSI threshold ${report.threshold}` +
      (report.n < report.min_utterances ? `; alerts need at least ${report.min_utterances}` : "") + ").";
}

async function forget() {
  const result = await api("DELETE", `/dialogues/${encodeURIComponent(state.dialogue)}`);
  const what = Object.entries(result.removed).map(([k, n]) => `${n} ${k}`).join(", ");
  reset(null, null);
  status(`forgot dialogue ${result.dialogue}: removed ${what}`);
  await loadReview();
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
  const talk = $("talk");
  talk.addEventListener("pointerdown", (event) => { if (event.button === 0) guarded(pressTalk)(); });
  talk.addEventListener("pointerup", releaseTalk);
  talk.addEventListener("pointercancel", releaseTalk);
  talk.addEventListener("keydown", (event) => {
    if ((event.key === " " || event.key === "Enter") && !event.repeat) {
      event.preventDefault();  // no click, and no submit of the form
      guarded(pressTalk)();
    }
  });
  talk.addEventListener("keyup", (event) => { if (event.key === " " || event.key === "Enter") releaseTalk(); });
  $("predict").addEventListener("click", guarded(predictDialogue));
  $("dialogue-file").addEventListener("change", guarded(readFile));
  $("forget").addEventListener("click", guarded(forget));
  $("review-refresh").addEventListener("click", guarded(loadReview));
  // Drift is asked for, not polled: the report is an administrator's, and a model saved
  // without validation outputs has none (the panel then shows why).
  $("monitor-refresh").addEventListener("click", guarded(loadMonitor));
  $("token-form").addEventListener("submit", guarded(useToken));
  $("token-forget").addEventListener("click", forgetToken);
  $("token-forget").hidden = !sessionStorage.getItem(TOKEN_KEY);
  loadModel();
  loadReview().catch((error) => status(error.message, true));
});
