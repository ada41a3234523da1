// The page of app.py (issue #24): annotate references, segment every target, download the masks.
//
// References are annotated at their own pixel size: points and boxes as coordinates, scribbles and
// masks as strokes rasterised here into a 0/1 array of the image's size (no anti-aliasing, so
// the PNG sent is exactly what was drawn). After each mark the references are sent once
// (POST /api/references); every target is then sent to /api/predict with the id the server gave
// them, and a target whose answer belongs to older references is sent again. The server keeps a
// few reference sets, one per page in use (this one, other tabs): when it has dropped this page's
// set, or a reference image, it answers 409 and the page sends them again (the id, a digest of
// the references, stays the same), then the target. window.vrp exposes the state the browser test reads.
"use strict";

const MAX_IN_FLIGHT = 2;  // targets being uploaded or segmented at once: the server has one model
const MAX_RESENDS = 3;  // the references sent again in a row without a mask: the server keeps dropping them
const APPLY_DELAY_MS = 120;  // a burst of marks (undo, undo, undo) is sent once
const RASTER_KINDS = ["scribble", "mask"];
const TOOL_OF_LABEL = {mask: "mask", point: "points", box: "box", scribble: "scribble"};  // train.py --label -> tool
const ANNOTATION_RGBA = [60, 255, 60, 150];  // as segment.py's ANNOTATION_COLOUR
const MASK_RGBA = [255, 0, 255, 110];  // as segment.py's PREDICTION_COLOUR

const state = {
  info: null,
  tool: "mask",
  references: [],  // see addReference
  active: null,  // the reference the tools draw on
  referencesId: null,  // the server's id of the annotations on the page, once it has encoded them
  sentPayload: null,  // the JSON of the references last sent
  resends: 0,  // the references sent again because the server had dropped them, since the last mask
  applySerial: 0,
  applyTimer: null,
  targets: [],  // see addTargets
  inFlight: 0,
  nextKey: 1,
  demoName: null,  // the class to mark in the demo's reference
};

const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---------------------------------------------------------------------------------------------
// Talking to the server
// ---------------------------------------------------------------------------------------------

async function request(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw Object.assign(new Error("the server does not answer: is app.py still running?"), {status: 0});
  }
  if (response.ok) return response;
  let message = `${response.status} ${response.statusText}`;
  try {
    message = (await response.json()).error || message;
  } catch (error) { /* not JSON: keep the status line */ }
  throw Object.assign(new Error(message), {status: response.status});
}

async function postJSON(path, payload) {
  const response = await request(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                        body: JSON.stringify(payload)});
  return response;
}

function showError(message) {
  const banner = $("error");
  banner.textContent = message;
  banner.hidden = !message;
}

function showWarnings(messages) {
  const banner = $("warning");
  banner.textContent = messages.join(" ");
  banner.hidden = messages.length === 0;
}

function dataURLBlob(url) {
  const [header, base64] = url.split(",");
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Blob([bytes], {type: header.slice(5).split(";")[0]});
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the browser could not show this image"));
    image.src = url;
  });
}

// ---------------------------------------------------------------------------------------------
// References and their annotation
// ---------------------------------------------------------------------------------------------

async function addReference(blob, name) {
  const ref = {
    key: state.nextKey++, name, blob, url: URL.createObjectURL(blob), imageId: null, width: 0, height: 0,
    kind: state.tool, marks: {points: [], box: [], scribble: [], mask: []}, rasters: {}, pngs: {},
    drag: null, card: null, overlay: null, tint: null,
  };
  state.references.push(ref);
  buildReferenceCard(ref);
  activate(ref);
  try {
    const uploaded = await (await request("/api/images", {method: "POST", body: blob})).json();
    Object.assign(ref, {imageId: uploaded.id, width: uploaded.width, height: uploaded.height});
    ref.overlay.width = ref.width;
    ref.overlay.height = ref.height;
    ref.card.querySelector(".size").textContent = `${ref.width}×${ref.height}`;
    redraw(ref);
    showError("");
  } catch (error) {
    removeReference(ref);
    showError(`${name}: ${error.message}`);
    return;
  }
  scheduleApply();
}

function buildReferenceCard(ref) {
  const card = element("figure", "reference");
  const stage = element("div", "stage");
  const image = element("img");
  image.src = ref.url;
  image.alt = ref.name;
  image.draggable = false;
  const overlay = element("canvas", "overlay");
  stage.append(image, overlay);
  const caption = element("figcaption");
  const remove = element("button", "remove", "×");
  remove.type = "button";
  remove.title = "remove this reference";
  remove.addEventListener("click", (event) => { event.stopPropagation(); removeReference(ref); scheduleApply(); });
  caption.append(element("span", "title"), element("span", "size"), remove);
  card.append(stage, caption);
  card.addEventListener("pointerdown", () => { if (state.active !== ref) activate(ref); });
  overlay.addEventListener("pointerdown", (event) => startMark(ref, event));
  overlay.addEventListener("pointermove", (event) => moveMark(ref, event));
  overlay.addEventListener("pointerup", (event) => endMark(ref, event));
  overlay.addEventListener("pointercancel", (event) => endMark(ref, event));
  Object.assign(ref, {card, overlay, image});
  $("references").append(card);
  renumber();
}

function removeReference(ref) {
  state.references = state.references.filter((r) => r !== ref);
  ref.card.remove();
  URL.revokeObjectURL(ref.url);
  if (state.active === ref) activate(state.references[state.references.length - 1] || null);
  renumber();
}

function renumber() {
  state.references.forEach((ref, i) => {
    ref.card.querySelector(".title").textContent = `Reference ${i + 1} · ${ref.kind}`;
  });
  const k = state.references.length;
  $("shots").textContent = k ? `${k}-shot` : "";
}

function activate(ref) {
  state.active = ref;
  for (const r of state.references) r.card.classList.toggle("active", r === ref);
  if (ref) selectTool(ref.kind, false);
  updateHint();
}

function selectTool(tool, apply = true) {
  state.tool = tool;
  for (const input of document.querySelectorAll("input[name=tool]")) input.checked = input.value === tool;
  $("mask-tools").hidden = tool !== "mask";
  const ref = state.active;
  if (ref && ref.kind !== tool) {
    ref.kind = tool;
    renumber();
    redraw(ref);
    if (apply) scheduleApply();
  }
  updateHint();
}

function imagePoint(ref, event) {
  const box = ref.overlay.getBoundingClientRect();
  const x = Math.floor((event.clientX - box.left) * ref.width / box.width);
  const y = Math.floor((event.clientY - box.top) * ref.height / box.height);
  return [Math.min(Math.max(x, 0), ref.width - 1), Math.min(Math.max(y, 0), ref.height - 1)];
}

function strokeRadius(ref) {
  if (ref.kind === "scribble") return Math.max(1, Math.round(Math.min(ref.width, ref.height) / 200));
  const displayed = ref.overlay.getBoundingClientRect().width || ref.width;
  return Math.max(1, Math.round(Number($("brush").value) / 2 * ref.width / displayed));
}

function startMark(ref, event) {
  if (event.button !== 0 || !ref.imageId) return;
  event.preventDefault();
  const point = imagePoint(ref, event);
  if (ref.kind === "points") {
    ref.marks.points.push(point);
    redraw(ref);
    scheduleApply();
    return;
  }
  ref.overlay.setPointerCapture(event.pointerId);
  if (ref.kind === "box") {
    ref.drag = {start: point, end: point};
  } else {
    const stroke = {points: [point], radius: strokeRadius(ref), erase: ref.kind === "mask" && $("eraser").checked};
    ref.marks[ref.kind].push(stroke);
    ref.drag = {stroke};
    paint(ref, stroke, point, point);
  }
  redraw(ref);
}

function moveMark(ref, event) {
  if (!ref.drag) return;
  const point = imagePoint(ref, event);
  if (ref.kind === "box") {
    ref.drag.end = point;
    redraw(ref);
    return;
  }
  const stroke = ref.drag.stroke;
  const last = stroke.points[stroke.points.length - 1];
  if (last[0] === point[0] && last[1] === point[1]) return;
  stroke.points.push(point);
  paint(ref, stroke, last, point);
}

function endMark(ref, event) {
  if (!ref.drag) return;
  if (ref.kind === "box") {
    const [x0, y0] = ref.drag.start;
    const [x1, y1] = imagePoint(ref, event);
    ref.marks.box.push([Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)]);
  }
  ref.drag = null;
  delete ref.pngs[ref.kind];
  redraw(ref);
  scheduleApply();
}

function undo() {
  const ref = state.active;
  if (!ref || !ref.marks[ref.kind].length) return;
  ref.marks[ref.kind].pop();
  rebuildRaster(ref);
  redraw(ref);
  scheduleApply();
}

function clearMarks() {
  const ref = state.active;
  if (!ref) return;
  ref.marks[ref.kind] = [];
  rebuildRaster(ref);
  redraw(ref);
  scheduleApply();
}

// Strokes become pixels: discs of the stroke's radius stamped one pixel apart along each segment.
function raster(ref, kind) {
  if (!ref.rasters[kind]) ref.rasters[kind] = new Uint8Array(ref.width * ref.height);
  return ref.rasters[kind];
}

function stamp(pixels, width, height, cx, cy, radius, value, dirty) {
  for (let dy = -radius; dy <= radius; dy++) {
    const y = cy + dy;
    if (y < 0 || y >= height) continue;
    const span = Math.floor(Math.sqrt(radius * radius - dy * dy));
    const from = Math.max(0, cx - span), to = Math.min(width - 1, cx + span);
    pixels.fill(value, y * width + from, y * width + to + 1);
  }
  if (dirty) {
    dirty.x0 = Math.min(dirty.x0, cx - radius); dirty.y0 = Math.min(dirty.y0, cy - radius);
    dirty.x1 = Math.max(dirty.x1, cx + radius); dirty.y1 = Math.max(dirty.y1, cy + radius);
  }
}

function stampSegment(pixels, width, height, [x0, y0], [x1, y1], radius, value, dirty) {
  const steps = Math.max(1, Math.ceil(Math.hypot(x1 - x0, y1 - y0)));
  for (let i = 0; i <= steps; i++) {
    const x = Math.round(x0 + (x1 - x0) * i / steps), y = Math.round(y0 + (y1 - y0) * i / steps);
    stamp(pixels, width, height, x, y, radius, value, dirty);
  }
}

function paint(ref, stroke, from, to) {
  const dirty = {x0: Infinity, y0: Infinity, x1: -Infinity, y1: -Infinity};
  stampSegment(raster(ref, ref.kind), ref.width, ref.height, from, to, stroke.radius, stroke.erase ? 0 : 1, dirty);
  showRaster(ref, dirty);
}

function rebuildRaster(ref) {
  if (!RASTER_KINDS.includes(ref.kind)) return;
  const pixels = raster(ref, ref.kind);
  pixels.fill(0);
  for (const stroke of ref.marks[ref.kind]) {
    const points = stroke.points;
    for (let i = 0; i < points.length; i++) {
      stampSegment(pixels, ref.width, ref.height, points[Math.max(0, i - 1)], points[i], stroke.radius,
                   stroke.erase ? 0 : 1, null);
    }
  }
  delete ref.pngs[ref.kind];
}

// The overlay canvas has the reference's own size; CSS scales it over the image.
function showRaster(ref, dirty) {
  const {width, height} = ref;
  if (!ref.tint || ref.tint.width !== width) ref.tint = new ImageData(width, height);
  const pixels = raster(ref, ref.kind), rgba = ref.tint.data;
  const x0 = Math.max(0, dirty.x0), y0 = Math.max(0, dirty.y0);
  const x1 = Math.min(width - 1, dirty.x1), y1 = Math.min(height - 1, dirty.y1);
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const on = pixels[y * width + x], at = 4 * (y * width + x);
      rgba[at] = ANNOTATION_RGBA[0]; rgba[at + 1] = ANNOTATION_RGBA[1]; rgba[at + 2] = ANNOTATION_RGBA[2];
      rgba[at + 3] = on ? ANNOTATION_RGBA[3] : 0;
    }
  }
  if (x1 >= x0 && y1 >= y0) ref.overlay.getContext("2d").putImageData(ref.tint, 0, 0, x0, y0, x1 - x0 + 1, y1 - y0 + 1);
}

function redraw(ref) {
  if (!ref.width) return;
  const context = ref.overlay.getContext("2d");
  context.clearRect(0, 0, ref.width, ref.height);
  if (RASTER_KINDS.includes(ref.kind)) {
    showRaster(ref, {x0: 0, y0: 0, x1: ref.width - 1, y1: ref.height - 1});
    return;
  }
  const line = Math.max(1, Math.round(Math.max(ref.width, ref.height) / 250));
  context.lineWidth = line;
  context.strokeStyle = `rgb(${ANNOTATION_RGBA.slice(0, 3)})`;
  context.fillStyle = `rgb(${ANNOTATION_RGBA.slice(0, 3)})`;
  if (ref.kind === "points") {
    for (const [x, y] of ref.marks.points) {
      context.beginPath();
      context.arc(x + 0.5, y + 0.5, 3 * line, 0, 2 * Math.PI);
      context.fill();
      context.strokeStyle = "black";
      context.stroke();
    }
    return;
  }
  const boxes = ref.marks.box;
  const box = ref.drag ? [...ref.drag.start, ...ref.drag.end] : boxes[boxes.length - 1];
  if (box) {
    const [x0, y0, x1, y1] = box;
    context.strokeRect(Math.min(x0, x1) + 0.5, Math.min(y0, y1) + 0.5, Math.abs(x1 - x0), Math.abs(y1 - y0));
  }
}

// The annotation the server gets, or null when the reference's current kind has no mark yet.
function annotation(ref) {
  const marks = ref.marks[ref.kind];
  if (ref.kind === "points") return marks.length ? {points: marks} : null;
  if (ref.kind === "box") return marks.length ? {box: marks[marks.length - 1]} : null;
  const pixels = marks.length ? raster(ref, ref.kind) : null;
  if (!pixels || !pixels.includes(1)) return null;
  if (!ref.pngs[ref.kind]) {
    const canvas = element("canvas");
    canvas.width = ref.width;
    canvas.height = ref.height;
    const grey = new ImageData(ref.width, ref.height);
    for (let i = 0; i < pixels.length; i++) {
      const v = pixels[i] ? 255 : 0;
      grey.data[4 * i] = v; grey.data[4 * i + 1] = v; grey.data[4 * i + 2] = v; grey.data[4 * i + 3] = 255;
    }
    canvas.getContext("2d").putImageData(grey, 0, 0);
    ref.pngs[ref.kind] = canvas.toDataURL("image/png");
  }
  return {[ref.kind]: ref.pngs[ref.kind]};
}

function scheduleApply() {
  clearTimeout(state.applyTimer);
  state.applyTimer = setTimeout(applyReferences, APPLY_DELAY_MS);
}

async function applyReferences() {
  const serial = ++state.applySerial;
  const annotated = state.references.map((ref) => ref.imageId && annotation(ref));
  if (!state.references.length || annotated.some((a) => !a)) {
    state.referencesId = null;
    state.sentPayload = null;
    showWarnings([]);
    updateHint();
    pump();
    return;
  }
  const payload = JSON.stringify({references: state.references.map((ref, i) => ({image: ref.imageId,
                                                                                 annotation: annotated[i]}))});
  if (payload === state.sentPayload && state.referencesId) return;
  state.referencesId = null;  // the targets wait for the new references
  updateProgress();
  try {
    const answer = await postReferences(payload);
    if (serial !== state.applySerial) return;  // newer marks were sent meanwhile
    state.referencesId = answer.id;
    state.sentPayload = payload;
    showWarnings(answer.warnings);
    showError("");
  } catch (error) {
    if (serial !== state.applySerial) return;
    showError(`references: ${error.message}`);
  }
  updateHint();
  pump();
}

// POST /api/references; a 409 says a reference image was dropped from the server to make room
// (other pages' uploads): the images are uploaded again (same ids) and the references sent once more.
async function postReferences(payload) {
  try {
    return await (await postJSON("/api/references", JSON.parse(payload))).json();
  } catch (error) {
    if (error.status !== 409) throw error;
  }
  for (const ref of state.references) await request("/api/images", {method: "POST", body: ref.blob});
  return (await postJSON("/api/references", JSON.parse(payload))).json();
}

// The server no longer holds the references `referencesId` (it keeps the sets used last): send them again.
function resendReferences(referencesId) {
  if (referencesId !== state.referencesId) return;  // already being sent again, or changed
  state.resends++;
  state.referencesId = null;
  state.sentPayload = null;
  applyReferences();
}

function updateHint() {
  const hint = $("hint");
  const ref = state.active;
  const how = {points: "click on the object", box: "drag a box around the object",
               scribble: "draw a stroke over the object", mask: "paint over the object (Eraser to fix)"}[state.tool];
  if (!state.references.length) {
    hint.textContent = "Load a reference image (or the demo scenes), then mark the object in it.";
  } else if (state.references.some((r) => r.imageId && !annotation(r))) {
    const n = state.references.findIndex((r) => !annotation(r)) + 1;
    hint.textContent = `Reference ${n}: ${how}. ${state.demoName && n === 1 ? `Mark the ${state.demoName}.` : ""}`;
  } else {
    hint.textContent = `${ref ? `Reference ${state.references.indexOf(ref) + 1}: ` : ""}${how}; ` +
      "add another reference for k-shot.";
  }
}

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

function addTargets(items) {
  for (const {blob, name} of items) {
    const target = {key: state.nextKey++, name, blob, url: URL.createObjectURL(blob), addedAt: performance.now(),
                    status: "queued", result: null, drawnAt: null, latencyMs: null, error: null};
    const card = element("figure", "target queued");
    const stage = element("div", "stage");
    const image = element("img");
    image.addEventListener("error", () => image.classList.add("broken"));  // not an image: the card says why
    image.src = target.url;
    image.alt = name;
    const overlay = element("canvas", "overlay");
    stage.append(image, overlay, element("div", "spinner"));
    const caption = element("figcaption");
    caption.append(element("span", "name", name), element("span", "area"));
    card.append(stage, caption);
    Object.assign(target, {card, overlay});
    state.targets.push(target);
    $("targets").append(card);
  }
  pump();
}

function removeTargets() {
  for (const target of state.targets) URL.revokeObjectURL(target.url);
  state.targets = [];
  $("targets").replaceChildren();
  updateProgress();
}

function isCurrent(target) {
  return target.status === "done" && target.result && target.result.references === state.referencesId;
}

function pump() {
  while (state.referencesId && state.inFlight < MAX_IN_FLIGHT) {
    const target = state.targets.find((t) => t.status !== "running" && t.status !== "error" && !isCurrent(t));
    if (!target) break;
    segmentTarget(target);
  }
  updateProgress();
}

async function segmentTarget(target) {
  const referencesId = state.referencesId;
  target.status = "running";
  target.card.className = "target running" + (target.result ? " stale" : "");
  state.inFlight++;
  try {
    const response = await request(`/api/predict?references=${referencesId}`, {method: "POST", body: target.blob});
    const result = await response.json();
    if (state.targets.includes(target) && result.references === state.referencesId) {
      await drawMask(target, result);
      target.result = result;
      target.status = "done";
      state.resends = 0;
    } else {
      target.status = "queued";  // the references changed while it was segmented
    }
  } catch (error) {
    if (error.status === 409 && state.resends < MAX_RESENDS) {
      target.status = "queued";  // the server dropped these references: sent again, then this target
      resendReferences(referencesId);
    } else {
      target.status = "error";
      target.error = error.message;
      target.card.querySelector(".area").textContent = error.message;
    }
  } finally {
    state.inFlight--;
  }
  target.card.className = `target ${target.status}` + (target.status !== "done" && target.result ? " stale" : "");
  pump();
}

async function drawMask(target, result) {
  const mask = await loadImage(result.mask);
  const overlay = target.overlay;
  overlay.width = result.width;
  overlay.height = result.height;
  const context = overlay.getContext("2d", {willReadFrequently: true});  // read back once per mask
  context.drawImage(mask, 0, 0);
  const pixels = context.getImageData(0, 0, result.width, result.height);
  const rgba = pixels.data;
  for (let at = 0; at < rgba.length; at += 4) {
    const on = rgba[at] > 127;
    rgba[at] = MASK_RGBA[0]; rgba[at + 1] = MASK_RGBA[1]; rgba[at + 2] = MASK_RGBA[2];
    rgba[at + 3] = on ? MASK_RGBA[3] : 0;
  }
  context.putImageData(pixels, 0, 0);
  if (target.drawnAt === null) {
    target.drawnAt = performance.now();
    target.latencyMs = target.drawnAt - target.addedAt;
  }
  target.card.querySelector(".area").textContent =
    `area ${(100 * result.area).toFixed(1)} % · ${result.width}×${result.height}`;
}

function updateProgress() {
  const total = state.targets.filter((t) => t.status !== "error").length;
  const done = state.targets.filter(isCurrent).length;
  const progress = $("progress");
  progress.max = Math.max(total, 1);
  progress.value = done;
  let text = "";
  if (total && !state.referencesId) text = "waiting for an annotated reference";
  else if (total && done < total) text = `segmenting: ${done} / ${total} done`;
  else if (total) text = `all ${total} segmented`;
  $("progress-text").textContent = text;
  $("count").textContent = state.targets.length ? `(${state.targets.length})` : "";
  $("download").disabled = done === 0;
}

function zipRequest() {
  return {references: state.referencesId,
          targets: state.targets.filter(isCurrent).map((t) => ({id: t.result.target, name: t.name}))};
}

async function downloadMasks() {
  try {
    const blob = await (await postJSON("/api/masks.zip", zipRequest())).blob();
    const link = element("a");
    link.href = URL.createObjectURL(blob);
    link.download = "vrp-sam-masks.zip";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  } catch (error) {
    showError(`download: ${error.message}`);
  }
}

async function loadDemo() {
  const choice = $("demo-class").value;
  try {
    const demo = await (await request(`/api/demo?class=${encodeURIComponent(choice)}`)).json();
    for (const ref of [...state.references]) removeReference(ref);
    removeTargets();
    state.demoName = demo.name;
    addTargets(demo.targets.map((t) => ({blob: dataURLBlob(t.data), name: t.name})));
    await addReference(dataURLBlob(demo.reference.data), demo.reference.name);
  } catch (error) {
    showError(`demo: ${error.message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------

function files(input) {
  return [...input.files].map((file) => ({blob: file, name: file.name}));
}

function dropZone(zone) {
  zone.addEventListener("dragenter", () => zone.classList.add("over"));
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", () => zone.classList.remove("over"));
}

async function start() {
  // A file dropped outside a drop zone must not replace the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  dropZone($("reference-drop"));
  dropZone($("target-drop"));
  $("reference-file").addEventListener("change", async (event) => {
    state.demoName = null;
    for (const {blob, name} of files(event.target)) await addReference(blob, name);
    event.target.value = "";
  });
  $("target-files").addEventListener("change", (event) => {
    addTargets(files(event.target));
    event.target.value = "";
  });
  for (const input of document.querySelectorAll("input[name=tool]")) {
    input.addEventListener("change", () => selectTool(input.value));
  }
  $("error").addEventListener("click", () => showError(""));
  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clearMarks);
  $("download").addEventListener("click", downloadMasks);
  $("clear-targets").addEventListener("click", removeTargets);
  $("demo").addEventListener("click", loadDemo);
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "z") { event.preventDefault(); undo(); }
  });
  try {
    state.info = await (await request("/api/info")).json();
  } catch (error) {
    showError(error.message);
    return;
  }
  const info = state.info;
  const label = info.trained_label || "any";
  $("info").textContent = `${info.checkpoint} · trained with ${label} annotations · ` +
    `${info.image_size}×${info.image_size} network input · ${info.device}`;
  for (const {id, name} of info.demo_classes) $("demo-class").append(new Option(name, id));
  $("demo").disabled = $("demo-class").disabled = info.demo_classes.length === 0;
  if (!info.demo_classes.length) $("demo").title = "the demo scenes are synthetic: start app.py on a synthetic run";
  selectTool(TOOL_OF_LABEL[label] || "points");
  updateProgress();
  document.body.dataset.ready = "true";
}

window.vrp = {
  state,
  // The references as last sent to the server ({references: [{image, annotation}]}), or null.
  sentReferences: () => state.sentPayload && JSON.parse(state.sentPayload),
  targets: () => state.targets.map((t) => ({name: t.name, status: t.status, current: isCurrent(t),
                                            target: t.result && t.result.target, area: t.result && t.result.area,
                                            latencyMs: t.latencyMs, error: t.error})),
  zipRequest,
};

start();
