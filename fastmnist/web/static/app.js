// The draw-a-digit page: strokes on a canvas (Pointer Events: mouse, touch, pen), sent as a
// PNG to /api/predict while drawing (debounced), and the answer shown as a digit, ten bars and
// the 28x28 picture the network saw.
"use strict";

const PEN = 0.075;        // stroke width as a fraction of the pad: a marker
const DEBOUNCE_MS = 180;  // ask again this long after the last movement

const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");
const pad = document.getElementById("pad");
const photo = document.getElementById("photo");
const hint = document.getElementById("hint");
const fileInput = document.getElementById("file");
const digitOut = document.getElementById("digit");
const confidence = document.getElementById("confidence");
const seen = document.getElementById("seen");
const seenEmpty = document.getElementById("seen-empty");
const bars = document.getElementById("bars");
const statusLine = document.getElementById("status");
const message = document.getElementById("message");

let strokes = [];          // each stroke: a list of [x, y] in canvas pixels
let current = null;
let timer = null;
let asked = 0;             // numbers requests so that a late answer never overwrites a newer one
let classes = [...Array(10).keys()].map(String);

function makeBars() {
  bars.replaceChildren(...classes.map((name, k) => {
    const li = document.createElement("li");
    li.innerHTML = `<span class="label"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>`;
    li.querySelector(".label").textContent = name;
    li.dataset.k = k;
    return li;
  }));
}

function showBars(probabilities) {
  const best = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
  bars.querySelectorAll("li").forEach((li, k) => {
    const p = probabilities ? probabilities[k] : 0;
    li.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    li.querySelector(".pct").textContent = probabilities ? `${(100 * p).toFixed(1)}%` : "";
    li.classList.toggle("best", k === best);
  });
}

function showIdle(text) {
  digitOut.textContent = "?";
  digitOut.className = "idle";
  confidence.innerHTML = "&nbsp;";
  seen.hidden = true;
  seenEmpty.hidden = false;
  showBars(null);
  message.hidden = !text;
  message.className = "message info";
  message.textContent = text || "";
}

function showError(text) {
  showIdle();
  message.hidden = false;
  message.className = "message";
  message.textContent = text;
  statusLine.textContent = text;
}

function showAnswer(r) {
  message.hidden = true;
  seen.src = r.image;
  seen.hidden = false;
  seenEmpty.hidden = true;
  if (r.digit === null) {  // a number written in a row
    digitOut.textContent = r.number;
    digitOut.className = "number";
    seen.className = "strip";
    const sure = Math.min(...r.digits.map(d => d.probabilities[d.digit]));
    confidence.textContent = `${r.digits.length} digits, each at least ${(100 * sure).toFixed(0)}% sure`;
    showBars(null);
    statusLine.textContent = `The network reads the number ${r.number}.`;
    return;
  }
  digitOut.textContent = r.label;
  digitOut.className = "";
  seen.className = "";
  const p = r.probabilities[r.digit];
  confidence.textContent = `${(100 * p).toFixed(1)}% sure`;
  showBars(r.probabilities);
  statusLine.textContent = `The network reads ${r.label}, ${(100 * p).toFixed(0)} percent sure.`;
}

async function ask(body, type) {
  const id = ++asked;
  let answer;
  try {
    const response = await fetch("/api/predict", { method: "POST", headers: { "Content-Type": type }, body });
    answer = { ok: response.ok, status: response.status, json: await response.json() };
  } catch (err) {
    if (id === asked) showError(`The server did not answer (${err.message}). Is fastmnist serve still running?`);
    return;
  }
  if (id !== asked) return;  // a newer drawing was sent meanwhile
  if (answer.ok) showAnswer(answer.json);
  else if (answer.status === 422) showIdle("No digit found yet: draw a bit bigger or darker.");
  else showError(answer.json.detail || `The server answered ${answer.status}.`);
}

// -- drawing ---------------------------------------------------------------------------------
function redraw() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#111";
  ctx.fillStyle = "#111";
  ctx.lineWidth = PEN * canvas.width;
  ctx.lineCap = ctx.lineJoin = "round";
  for (const s of strokes) {
    if (s.length === 1) {  // a dot
      ctx.beginPath();
      ctx.arc(s[0][0], s[0][1], ctx.lineWidth / 2, 0, 2 * Math.PI);
      ctx.fill();
      continue;
    }
    ctx.beginPath();
    ctx.moveTo(...s[0]);
    for (const p of s.slice(1)) ctx.lineTo(...p);
    ctx.stroke();
  }
  hint.hidden = strokes.length > 0 || !photo.hidden;
}

function point(e) {
  const box = canvas.getBoundingClientRect();
  return [(e.clientX - box.left) * canvas.width / box.width, (e.clientY - box.top) * canvas.height / box.height];
}

function changed(now) {
  clearTimeout(timer);
  if (!strokes.length) { asked++; showIdle(); return; }
  const send = () => canvas.toBlob(blob => ask(blob, "image/png"), "image/png");
  if (now) send(); else timer = setTimeout(send, DEBOUNCE_MS);
}

function leavePhoto() {
  if (!photo.hidden) {
    photo.hidden = true;
    URL.revokeObjectURL(photo.src);
  }
}

canvas.addEventListener("pointerdown", e => {
  if (e.button !== 0) return;
  leavePhoto();
  canvas.setPointerCapture(e.pointerId);
  current = [point(e)];
  strokes.push(current);
  redraw();
  e.preventDefault();
});
canvas.addEventListener("pointermove", e => {
  if (!current) return;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const ev of (events.length ? events : [e])) current.push(point(ev));
  redraw();
  changed(false);
});
const finish = () => {
  if (!current) return;
  current = null;
  changed(true);
};
canvas.addEventListener("pointerup", finish);
canvas.addEventListener("pointercancel", finish);

function undo() {
  strokes.pop();
  redraw();
  changed(true);
}

function clearAll() {
  strokes = [];
  leavePhoto();
  fileInput.value = "";
  redraw();
  changed(true);
}

document.getElementById("undo").addEventListener("click", undo);
document.getElementById("clear").addEventListener("click", clearAll);
document.addEventListener("keydown", e => {
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); }
  else if (e.key === "Escape") clearAll();
});

// -- photos ----------------------------------------------------------------------------------
function readFile(file) {
  if (!file) return;
  strokes = [];
  redraw();
  photo.src = URL.createObjectURL(file);
  photo.hidden = false;
  hint.hidden = true;
  ask(file, file.type || "application/octet-stream");
}

fileInput.addEventListener("change", () => readFile(fileInput.files[0]));
for (const name of ["dragenter", "dragover"]) {
  pad.addEventListener(name, e => { e.preventDefault(); pad.classList.add("dropping"); });
}
pad.addEventListener("dragleave", () => pad.classList.remove("dropping"));
pad.addEventListener("drop", e => {
  e.preventDefault();
  pad.classList.remove("dropping");
  readFile(e.dataTransfer.files[0]);
});

// -- start -----------------------------------------------------------------------------------
async function start() {
  makeBars();
  redraw();
  showIdle();
  try {
    const m = await (await fetch("/api/model")).json();
    classes = m.classes || classes;
    makeBars();
    const acc = typeof m.test_accuracy === "number" ? `, test accuracy ${(100 * m.test_accuracy).toFixed(1)}%` : "";
    document.getElementById("model").textContent =
      `Model ${m.sizes.join("-")} trained on ${m.dataset || "unknown data"}${acc}, running on ${m.device}.`;
  } catch (err) {
    document.getElementById("model").textContent = "Could not read the model's description.";
  }
}
start();
