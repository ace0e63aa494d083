// protoskel web page: upload a clip, draw its skeleton, show predictions and the explanation.
// Plain browser JavaScript, no external assets. Values from the server are inserted with
// textContent (never innerHTML), so class names or file names cannot inject markup.
"use strict";

const $ = (id) => document.getElementById(id);
const PART_COLORS = ["#34495e", "#c0392b", "#2c6fbb", "#d68910", "#1e8449", "#8e44ad",
  "#16a085", "#7f8c8d"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function setStatus(text, kind) {
  const s = $("status");
  s.textContent = text;
  s.className = kind || "";
}

function fmt(x, digits) {
  return typeof x === "number" ? x.toFixed(digits) : String(x);
}

// ------------------------------------------------------------------------------ model info
async function loadModel() {
  try {
    const res = await fetch("/models");
    const body = await res.json();
    const m = body.models[0];
    const inv = m.invariance ? `, ${m.invariance} (${m.invariance_mode})` : "";
    const head = m.prototypes ? "prototype head" : `${m.head} head`;
    $("model-info").textContent =
      `model ${m.name}: ${m.num_classes} actions, layout ${m.layout}, ${m.stream} stream, ` +
      `${m.backbone} with ${head}${inv}`;
    const sel = $("layout");
    for (const name of body.limits.layouts) sel.append(el("option", { value: name }, name));
    $("formats").textContent =
      `Skeleton files: ${body.limits.skeleton_formats.join(" ")}; videos: ` +
      `${body.limits.video_formats.join(" ")}. Up to ${body.limits.max_upload_mb} MB and ` +
      `${body.limits.max_frames} frames.`;
  } catch (err) {
    $("model-info").textContent = `could not read /models (${err})`;
  }
}

// ------------------------------------------------------------------------------- requests
function errorText(body, status) {
  const d = body && body.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
  return `request failed (HTTP ${status})`;
}

async function send(endpoint) {
  const file = $("file").files[0];
  if (!file) {
    setStatus("choose a skeleton file or a video first", "error");
    return;
  }
  const data = new FormData();
  data.append("file", file, file.name);
  if ($("layout").value) data.append("layout", $("layout").value);
  setStatus(endpoint === "/explain" ? "predicting and explaining…" : "predicting…", "busy");
  for (const b of [$("predict-btn"), $("explain-btn")]) b.disabled = true;
  try {
    const res = await fetch(endpoint, { method: "POST", body: data });
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) {
      setStatus(`error ${res.status}: ${errorText(body, res.status)}`, "error");
      return;
    }
    showResult(body, endpoint === "/explain");
    setStatus(`done: ${file.name}`, "");
  } catch (err) {
    setStatus(`request failed: ${err}`, "error");
  } finally {
    for (const b of [$("predict-btn"), $("explain-btn")]) b.disabled = false;
  }
}

function showResult(body, explained) {
  renderPredictions(body.predictions);
  player.load(body.skeleton);
  const i = body.input;
  $("input-info").textContent =
    `${i.name}: ${i.frames} frames, ${i.persons} person(s), layout ${i.layout}` +
    (i.layout !== i.model_layout ? ` (mapped to ${i.model_layout})` : "") +
    (i.fps ? `, ${fmt(i.fps, 1)} fps` : "");
  const t = body.timing_ms || {};
  $("timing").textContent = Object.entries(t).map(([k, v]) => `${k} ${fmt(v, 0)} ms`).join(", ");
  if (explained) renderExplanation(body);
  else $("explanation").classList.add("hidden");
}

function renderPredictions(preds) {
  const list = $("predictions");
  list.replaceChildren();
  for (const p of preds) {
    const pct = Math.max(0, Math.min(100, 100 * p.prob));
    const fill = el("span");
    fill.style.width = `${pct.toFixed(1)}%`;
    list.append(el("li", { class: "prediction", "data-label": p.label, "data-prob": p.prob },
      el("span", { class: "label" }, p.label.replaceAll("_", " ")), " ",
      el("span", { class: "bar" }, fill), " ",
      el("span", { class: "prob" }, `${pct.toFixed(1)}%`)));
  }
}

// ---------------------------------------------------------------------------- explanation
function renderExplanation(body) {
  const ex = body.explanation;
  const files = body.files || {};
  $("explanation").classList.remove("hidden");
  const top = ex.explained_class;
  const method = ex.importance ? ex.importance.method.replaceAll("_", " ") : "";
  $("explanation-summary").textContent =
    `Explained class: ${top.label} (${fmt(100 * top.prob, 1)}%). Importance by ${method}.`;
  $("report-link").href = body.report_url;
  if (files.gif) $("explanation-gif").src = files.gif;
  if (files.importance) $("importance-img").src = files.importance;
  const box = $("prototypes");
  box.replaceChildren();
  const protos = ex.prototypes || [];
  if (!protos.length) {
    $("prototypes-note").textContent = ex.model && ex.model.head === "prototype"
      ? "No prototype contributed positively to the top class."
      : "This model has no prototype head; the importance maps above are its explanation.";
    return;
  }
  const lg = ex.logit || {};
  $("prototypes-note").textContent =
    `The ${protos.length} prototypes with the largest contributions to the logit of ` +
    `${top.label} (logit ${fmt(lg.value, 2)} = bias ${fmt(lg.bias, 2)} + ` +
    `${lg.num_contributing} positive prototype contributions).`;
  for (const p of protos) {
    const card = el("div", { class: "prototype", "data-part": p.part });
    card.append(el("strong", {}, `#${p.rank} prototype ${p.prototype} (${p.class_name})`));
    const img = files[`prototype_${p.rank}`];
    if (img) card.append(el("img", { src: img, alt: `prototype ${p.prototype}: input vs source` }));
    const src = sourceText(p.source);
    const dl = el("dl");
    const rows = [
      ["part", p.part.replaceAll("_", " ")],
      ["similarity", fmt(p.similarity, 3)],
      ["contribution", `${fmt(p.contribution, 3)} (${fmt(100 * p.share, 1)}%)`],
      ["this clip", `frames ${p.input.clip_frame_start + 1}-${p.input.clip_frame_end}`],
      ["source", src],
    ];
    for (const [k, v] of rows) dl.append(el("dt", {}, k), el("dd", {}, v));
    card.append(dl);
    box.append(card);
  }
}

function sourceText(prov) {
  if (!prov) return "not projected onto a training segment";
  if (prov.enrolled) return `enrolled example ${prov.clip_id}`;
  const frames = "orig_frame_start" in prov
    ? `${prov.orig_frame_start + 1}-${prov.orig_frame_end}`
    : `${prov.frame_start + 1}-${prov.frame_end} of ${prov.num_frames} sampled`;
  return `training clip ${prov.clip_id}, frames ${frames}`;
}

// --------------------------------------------------------------------------------- player
const player = {
  clip: null, frame: 0, playing: true, start: 0, startFrame: 0, raf: 0,

  load(sk) {
    this.clip = sk;
    const persons = sk.persons || [];
    this.n = persons.length ? persons[0].length : 0;
    // One square view that holds every point of every frame, so the body does not jump.
    let lo = [Infinity, Infinity], hi = [-Infinity, -Infinity];
    for (const person of persons) for (const frame of person) for (const p of frame) {
      if (!p) continue;
      lo = [Math.min(lo[0], p[0]), Math.min(lo[1], p[1])];
      hi = [Math.max(hi[0], p[0]), Math.max(hi[1], p[1])];
    }
    if (!isFinite(lo[0])) { lo = [-1, -1]; hi = [1, 1]; }
    this.center = [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2];
    this.radius = Math.max(hi[0] - lo[0], hi[1] - lo[1], 1e-3) / 2 * 1.1;
    const part = new Array(sk.joints.length).fill(0);
    Object.values(sk.parts).forEach((js, k) => js.forEach((j) => { part[j] = k; }));
    this.partOf = part;
    const slider = $("frame-slider");
    slider.max = String(Math.max(0, this.n - 1));
    slider.disabled = this.n < 2;
    $("play-btn").disabled = this.n < 2;
    this.frame = 0;
    this.setPlaying(true);
  },

  setPlaying(on) {
    this.playing = on;
    $("play-btn").textContent = on ? "Pause" : "Play";
    this.start = performance.now();
    this.startFrame = this.frame;
    cancelAnimationFrame(this.raf);
    this.raf = requestAnimationFrame((t) => this.tick(t));
  },

  tick(now) {
    if (!this.clip) return;
    if (this.playing && this.n > 1) {
      const fps = Math.min(Math.max(this.clip.fps || 30, 1), 60);
      this.frame = (this.startFrame + Math.floor((now - this.start) / 1000 * fps)) % this.n;
    }
    this.draw();
    if (this.playing) this.raf = requestAnimationFrame((t) => this.tick(t));
  },

  draw() {
    const c = $("skeleton"), ctx = c.getContext("2d"), sk = this.clip;
    ctx.clearRect(0, 0, c.width, c.height);
    const s = (Math.min(c.width, c.height) / 2) / this.radius;
    const px = (p) => [c.width / 2 + (p[0] - this.center[0]) * s,
      c.height / 2 - (sk.y_up ? 1 : -1) * (p[1] - this.center[1]) * s];
    ctx.lineWidth = 3;
    ctx.lineCap = "round";
    for (const person of sk.persons) {
      const pts = person[this.frame] || [];
      for (const [child, parent] of sk.bones) {
        const a = pts[child], b = pts[parent];
        if (!a || !b) continue;
        ctx.strokeStyle = PART_COLORS[this.partOf[child] % PART_COLORS.length];
        const [x1, y1] = px(a), [x2, y2] = px(b);
        ctx.beginPath(); ctx.moveTo(x1, y1); ctx.lineTo(x2, y2); ctx.stroke();
      }
      ctx.fillStyle = "#222";
      for (const p of pts) {
        if (!p) continue;
        const [x, y] = px(p);
        ctx.beginPath(); ctx.arc(x, y, 3, 0, 2 * Math.PI); ctx.fill();
      }
    }
    const shown = this.frame * (sk.step || 1) + 1;
    $("frame-label").textContent = `frame ${shown} / ${sk.frames}`;
    $("frame-slider").value = String(this.frame);
    c.dataset.frame = String(this.frame);
    c.dataset.frames = String(this.n);
  },
};

$("upload-form").addEventListener("submit", (e) => { e.preventDefault(); send("/predict"); });
$("explain-btn").addEventListener("click", () => send("/explain"));
$("play-btn").addEventListener("click", () => player.setPlaying(!player.playing));
$("frame-slider").addEventListener("input", (e) => {
  player.frame = Number(e.target.value);
  if (player.playing) player.setPlaying(false);
  player.draw();
});
loadModel();
