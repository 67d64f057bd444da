// zoo-serve's page: plain JS, no build step, nothing from the internet. It reads GET /v1/models, builds
// the chosen model's form from its inputs and options (types, ranges, defaults), POSTs /v1/generate and
// shows the result: text streams in (server-sent events over fetch), images and piano rolls appear,
// audio plays, files download. #output gets data-state="done" or "error" when a request ends.
// Pixel art (8x8 digits) is shown enlarged by a whole factor with nearest-neighbour scaling (CSS
// image-rendering: pixelated) so that each image is at least MIN_CELL_PX on screen; downloads are the PNG
// the server sent, at its own size.
"use strict";

const $ = (sel) => document.querySelector(sel);
let models = {};
const MIN_CELL_PX = 128;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = v; else e.setAttribute(k, v === true ? "" : v);
  }
  e.append(...children);
  return e;
}

function fieldFor(name, spec) {
  const id = `f-${name}`;
  let input;
  if (spec.type === "integer" || spec.type === "number") {
    input = el("input", {type: "number", id, name, step: spec.type === "integer" ? "1" : "any",
                         min: spec.minimum ?? spec.exclusiveMinimum, max: spec.maximum,
                         placeholder: spec.nullable ? "null" : ""});
    if (spec.default !== null && spec.default !== undefined) input.value = spec.default;
  } else if (spec.type === "boolean") {
    input = el("input", {type: "checkbox", id, name});
    input.checked = !!spec.default;
  } else if (spec.type === "midi") {
    input = el("input", {type: "file", id, name, accept: ".mid,.midi,audio/midi"});
  } else if (spec.type === "string" && ["prompt", "caption"].includes(name)) {
    input = el("textarea", {id, name, maxlength: spec.maxLength, placeholder: spec.description});
    input.value = spec.default ?? "";
  } else {  // strings (one per line), labels (comma-separated), other strings
    input = el("input", {type: "text", id, name,
                         placeholder: spec.type === "strings" ? "one per line: \\n = newline, | separates" :
                                      spec.type === "labels" ? "e.g. 3, 7 (empty = every class)" : ""});
    if (Array.isArray(spec.default)) input.value = spec.default.join("|");
    else if (spec.default !== null && spec.default !== undefined) input.value = spec.default;
  }
  input.dataset.kind = spec.type;
  input.dataset.nullable = spec.nullable ? "1" : "";
  return el("div", {class: "field", "data-field": name},
            el("label", {for: id, text: name}), input, el("span", {class: "hint", text: spec.accepted}));
}

function renderForm() {
  const m = models[$("#model").value];
  const inputs = $("#inputs"), options = $("#options");
  for (const fs of [inputs, options]) fs.replaceChildren(fs.querySelector("legend"));
  for (const [name, spec] of Object.entries(m.inputs)) inputs.append(fieldFor(name, spec));
  if (m.streams) {
    inputs.append(fieldFor("stream", {type: "boolean", default: true, accepted: "text streams as it is generated"}));
  }
  for (const [name, spec] of Object.entries(m.options)) options.append(fieldFor(name, spec));
  const metric = m.card.metric_value !== undefined ? ` · ${m.card.metric}: ${m.card.metric_value}` : "";
  $("#model-info").textContent = `${m.member} · ${m.model_type} · codec ${m.codec} · ` +
    `${m.parameters.toLocaleString()} parameters · ${m.device}/${m.dtype}${metric}`;
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result.split(",", 2)[1]);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

async function collect() {
  const body = {model: $("#model").value};
  for (const input of $("#form").querySelectorAll("input, textarea")) {
    const kind = input.dataset.kind, raw = input.value;
    let value;
    if (kind === "boolean") value = input.checked;
    else if (kind === "midi") { if (!input.files.length) continue; value = await readFile(input.files[0]); }
    else if (raw.trim() === "" && kind !== "string") { if (input.dataset.nullable) value = null; else continue; }
    else if (kind === "integer" || kind === "number") value = Number(raw);
    else if (kind === "strings") value = raw.split(/\||\n/).filter((s) => s).map((s) => s.replace(/\\n/g, "\n").replace(/\\t/g, "\t"));
    else if (kind === "labels") value = raw.split(",").map((s) => s.trim()).filter((s) => s).map((s) => /^\d+$/.test(s) ? Number(s) : s);
    else value = raw;
    body[input.name] = value;
  }
  return body;
}

function showError(err) {
  const box = $("#error");
  box.hidden = false;
  box.textContent = `${err.status || ""} ${err.message}` + (err.accepted ? `\naccepted: ${JSON.stringify(err.accepted)}` : "");
  const f = err.field && document.querySelector(`.field[data-field="${err.field}"]`);
  if (f) f.classList.add("bad");
  $("#output").dataset.state = "error";
}

function download(label, href, filename) {
  $("#downloads").append(el("a", {href, download: filename, text: label}));
}

function showResult(env) {
  const r = env.result, stem = `${env.model}-${env.id.slice(0, 8)}`;
  if (env.member === "text") {
    const out = $("#text-out");
    out.hidden = false;
    out.replaceChildren(...r.completions.flatMap((c, i) => [
      ...(i ? ["\n\n———\n\n"] : []), el("span", {class: "prompt", text: r.prompt}), c]));
    const blob = new Blob([r.completions.map((c) => r.prompt + c).join("\n\n")], {type: "text/plain"});
    download("text (.txt)", URL.createObjectURL(blob), `${stem}.txt`);
  }
  if (r.png) {
    const src = `data:image/png;base64,${r.png}`, img = el("img", {id: "result-image", class: "pixel-art", src,
                                                                      alt: `${env.model} samples`});
    const [n, , , width] = r.shape, columns = Math.ceil(n / r.rows);
    img.addEventListener("load", () => {  // the grid's cells are width * (the server's upscale) pixels wide
      const cell = width * Math.max(1, Math.floor(img.naturalWidth / columns / width));
      const scale = Math.max(1, Math.ceil(MIN_CELL_PX / cell));
      img.dataset.scale = scale;
      img.style.width = `${img.naturalWidth * scale}px`;
    });
    $("#media-out").append(img);
    download("image grid (.png)", src, `${stem}.png`);
  }
  if (r.piano_roll_png) {
    const src = `data:image/png;base64,${r.piano_roll_png}`;
    $("#media-out").append(el("img", {id: "result-roll", class: "plot", src, alt: "piano roll"}));
    download("piano roll (.png)", src, `${stem}-roll.png`);
  }
  if (r.wav) {
    const src = `data:audio/wav;base64,${r.wav}`;
    $("#media-out").append(el("audio", {id: "result-audio", controls: true, src}));
    download("audio (.wav)", src, `${stem}.wav`);
  }
  if (r.midi) download("MIDI (.mid)", `data:audio/midi;base64,${r.midi}`, `${stem}.mid`);
  $("#status").textContent = `done in ${env.elapsed_s} s · seed ${env.seed ?? "random"} · id ${env.id}`;
  $("#output").dataset.state = "done";
}

async function streamText(body) {
  const res = await fetch("/v1/generate", {method: "POST", headers: {"Content-Type": "application/json"},
                                           body: JSON.stringify(body)});
  if (!res.ok) return showError((await res.json()).error);
  const out = $("#text-out");
  out.hidden = false;
  out.replaceChildren(el("span", {class: "prompt", text: body.prompt || ""}));
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const event = (block.match(/^event: (.*)$/m) || [])[1];
      const data = JSON.parse((block.match(/^data: (.*)$/m) || [, "null"])[1]);
      if (event === "token") out.append(data.text);
      else if (event === "error") return showError(data.error);
      else if (event === "done") return showResult(data);
    }
  }
}

async function generate(ev) {
  ev.preventDefault();
  const button = $("#generate");
  button.disabled = true;
  $("#output").dataset.state = "running";
  $("#error").hidden = true;
  document.querySelectorAll(".field.bad").forEach((f) => f.classList.remove("bad"));
  for (const id of ["#media-out", "#downloads"]) $(id).replaceChildren();
  $("#text-out").hidden = true;
  $("#status").textContent = "generating…";
  try {
    const body = await collect();
    if (body.stream) return await streamText(body);
    delete body.stream;
    const res = await fetch("/v1/generate", {method: "POST", headers: {"Content-Type": "application/json"},
                                             body: JSON.stringify(body)});
    const data = await res.json();
    if (!res.ok) return showError(data.error);
    showResult(data);
  } catch (e) {
    showError({message: String(e)});
  } finally {
    button.disabled = false;
    if ($("#output").dataset.state === "error") $("#status").textContent = "";
  }
}

async function init() {
  const res = await fetch("/v1/models");
  const list = (await res.json()).data;  // OpenAI's list shape; each entry carries zoo's description
  models = Object.fromEntries(list.map((m) => [m.name, m]));
  const select = $("#model");
  select.replaceChildren(...list.map((m) => el("option", {value: m.name, text: `${m.name} (${m.member})`})));
  const wanted = new URLSearchParams(location.search).get("model");
  if (wanted in models) select.value = wanted;
  select.addEventListener("change", renderForm);
  $("#form").addEventListener("submit", generate);
  renderForm();
  document.body.dataset.ready = "1";
}

init();
