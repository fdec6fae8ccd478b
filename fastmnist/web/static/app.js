// The draw-a-digit page: strokes on a canvas (Pointer Events: mouse, touch, pen), sent as a
// PNG to /api/predict while drawing, and the answer shown as a digit, ten bars and the 28x28
// picture the network saw.
"use strict";

const PEN = 0.075;         // stroke width as a fraction of the pad: a marker
const QUIET_MS = 150;      // ask this long after the pen stops moving...
const EVERY_MS = 350;      // ... and at least this often while it keeps moving

const $ = id => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const pad = $("pad");
const photo = $("photo");
const hint = $("hint");
const digitOut = $("digit");
const confidence = $("confidence");
const seen = $("seen");
const seenBox = $("seen-box");
const picks = $("picks");
const bars = $("bars");
const barsTitle = $("bars-title");
const statusLine = $("status");
const message = $("message");
const resultCard = $("result-card");

let strokes = [];          // each stroke: a list of [x, y] in canvas pixels
let current = null;        // the stroke being drawn
let timer = null;
let lastAsked = 0;         // when the drawing was last sent (performance.now())
let inFlight = false;      // one request at a time goes to the server...
let waiting = null;        // ... and only the newest waits for its answer
let asked = 0;             // numbers the requests, so a late answer never overwrites a newer one
let classes = [...Array(10).keys()].map(String);

const percent = p => `${(100 * p).toFixed(1)}%`;

// -- showing an answer -----------------------------------------------------------------------
function makeBars() {
  bars.replaceChildren(...classes.map(name => {
    const li = document.createElement("li");
    li.innerHTML = '<span class="label"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>';
    li.querySelector(".label").textContent = name;
    return li;
  }));
}

function showBars(probabilities) {
  const best = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
  bars.querySelectorAll("li").forEach((li, k) => {
    const p = probabilities ? probabilities[k] : 0;
    li.querySelector(".fill").style.width = percent(p);
    li.querySelector(".pct").textContent = probabilities ? percent(p) : "";
    li.classList.toggle("best", k === best);
    li.setAttribute("aria-label", probabilities ? `${classes[k]}: ${percent(p)}` : classes[k]);
  });
}

function showSeen(src, digits) {
  seen.hidden = !src;
  seenBox.closest(".answer").classList.toggle("wide", digits > 1);
  if (src) seen.src = src;
  seenBox.classList.toggle("strip", digits > 1);
  seenBox.style.setProperty("--cols", 28 * Math.max(digits, 1));
  if (digits > 1) {  // whole screen pixels per pixel, as many as fit
    const room = seenBox.closest(".card").clientWidth - 40;
    const cell = Math.max(1, Math.min(4, Math.floor(room / (28 * digits))));
    seenBox.style.width = `${28 * digits * cell}px`;
    seenBox.style.height = `${28 * cell}px`;
  } else {
    seenBox.style.width = seenBox.style.height = "";
  }
  seen.alt = src ? `the ${digits > 1 ? `${digits} digits` : "digit"} as the network saw ${digits > 1 ? "them" : "it"}, 28 by 28 pixels each` : "";
}

function showIdle(text) {
  digitOut.textContent = "?";
  digitOut.className = "idle";
  confidence.innerHTML = "&nbsp;";
  picks.hidden = true;
  barsTitle.textContent = "Probability of each digit";
  showSeen(null, 1);
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

function pickDigit(r, i) {
  const d = r.digits[i];
  picks.querySelectorAll("button").forEach((b, k) => b.setAttribute("aria-pressed", k === i));
  barsTitle.textContent = `Probabilities of digit ${i + 1} of ${r.digits.length} (read as ${d.label})`;
  showBars(d.probabilities);
}

function showAnswer(r) {
  message.hidden = true;
  if (r.digit === null) {  // a number written in a row
    digitOut.textContent = r.number;
    digitOut.className = "number";
    showSeen(r.image, r.digits.length);
    const sure = Math.min(...r.digits.map(d => d.probabilities[d.digit]));
    confidence.textContent = `${r.digits.length} digits, each at least ${Math.floor(100 * sure)}% sure`;
    picks.replaceChildren(...r.digits.map((d, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = d.label;
      b.title = `digit ${i + 1}: ${percent(d.probabilities[d.digit])} sure`;
      b.addEventListener("click", () => pickDigit(r, i));
      return b;
    }));
    picks.hidden = false;
    pickDigit(r, 0);
    statusLine.textContent = `The network reads the number ${r.number}.`;
    return;
  }
  const p = r.probabilities[r.digit];
  digitOut.textContent = r.label;
  digitOut.className = r.label.length > 1 ? "label" : "";
  confidence.textContent = `${percent(p)} sure`;
  picks.hidden = true;
  barsTitle.textContent = classes.every((c, k) => c === String(k))
    ? "Probability of each digit" : "Probability of each class";
  showSeen(r.image, 1);
  showBars(r.probabilities);
  statusLine.textContent = `The network reads ${r.label}, ${(100 * p).toFixed(0)} percent sure.`;
}

async function ask(body, type) {
  const id = ++asked;
  let response, answer;
  try {
    response = await fetch("/api/predict", { method: "POST", headers: { "Content-Type": type }, body });
    answer = await response.json();
  } catch (err) {
    if (id === asked) showError(`The server did not answer (${err.message}). Is fastmnist serve still running?`);
    return;
  }
  if (id !== asked) return;  // a newer drawing or photo was sent meanwhile
  if (response.ok) showAnswer(answer);
  else if (response.status === 422) {  // no digit: not an error while drawing
    showIdle(photo.hidden ? "No digit found yet: draw a bit bigger or darker." : answer.detail);
  }
  else showError(answer.detail || `The server answered ${response.status}.`);
}

// -- drawing ---------------------------------------------------------------------------------
function redraw() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = ctx.fillStyle = "#111";
  ctx.lineWidth = PEN * canvas.width;
  ctx.lineCap = ctx.lineJoin = "round";
  for (const s of strokes) {
    ctx.beginPath();
    if (s.length === 1) {  // a dot
      ctx.arc(s[0][0], s[0][1], ctx.lineWidth / 2, 0, 2 * Math.PI);
      ctx.fill();
      continue;
    }
    ctx.moveTo(...s[0]);
    for (const p of s.slice(1)) ctx.lineTo(...p);
    ctx.stroke();
  }
  hint.hidden = strokes.length > 0 || !photo.hidden;
}

function point(e) {
  const box = canvas.getBoundingClientRect();
  return [(e.clientX - box.left) * canvas.width / box.width,
          (e.clientY - box.top) * canvas.height / box.height];
}

// Send what ``request()`` gives ([body, content type]) once the answer in flight is back;
// the result card is aria-busy while any request is outstanding.
async function submit(request) {
  resultCard.setAttribute("aria-busy", "true");
  if (inFlight) { waiting = request; return; }
  inFlight = true;
  while (request) {
    await ask(...await request());
    [request, waiting] = [waiting, null];
  }
  inFlight = false;
  resultCard.setAttribute("aria-busy", "false");
}

function sendDrawing() {
  clearTimeout(timer);
  lastAsked = performance.now();
  submit(() => new Promise(done => canvas.toBlob(blob => done([blob, "image/png"]), "image/png")));
}

// The drawing changed: ask soon, not for every movement of the pen.
function changed(now) {
  clearTimeout(timer);
  if (!strokes.length) { asked++; waiting = null; showIdle(); return; }
  if (now || performance.now() - lastAsked > EVERY_MS) sendDrawing();
  else timer = setTimeout(sendDrawing, QUIET_MS);
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
  lastAsked = performance.now();
  redraw();
  e.preventDefault();
});
canvas.addEventListener("pointermove", e => {
  if (!current) return;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
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
  for (const input of document.querySelectorAll("input[type=file]")) input.value = "";
  redraw();
  changed(true);
}

$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clearAll);
document.addEventListener("keydown", e => {
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); }
  else if (e.key === "Escape") clearAll();
});

// -- photos ----------------------------------------------------------------------------------
function readFile(file) {
  if (!file) return;
  strokes = [];
  clearTimeout(timer);
  leavePhoto();
  photo.src = URL.createObjectURL(file);
  photo.hidden = false;
  redraw();
  submit(async () => [file, file.type || "application/octet-stream"]);
}

for (const input of document.querySelectorAll("input[type=file]")) {
  input.addEventListener("change", () => readFile(input.files[0]));
}
for (const name of ["dragenter", "dragover"]) {
  pad.addEventListener(name, e => { e.preventDefault(); pad.classList.add("dropping"); });
}
pad.addEventListener("dragleave", () => pad.classList.remove("dropping"));
pad.addEventListener("drop", e => {
  e.preventDefault();
  pad.classList.remove("dropping");
  readFile(e.dataTransfer.files[0]);
});
document.addEventListener("paste", e => {
  const file = [...e.clipboardData.files].find(f => f.type.startsWith("image/"));
  if (file) { e.preventDefault(); readFile(file); }
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
    showBars(null);
    const acc = typeof m.test_accuracy === "number" ? `, ${percent(m.test_accuracy)} right on its test set` : "";
    $("model").textContent =
      `Model ${m.sizes.join("-")} trained on ${m.dataset || "unknown data"}${acc}, running on ${m.device}.`;
  } catch (err) {
    $("model").textContent = "Could not read the model's description.";
  }
}
start();
