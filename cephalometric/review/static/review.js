// Review page: shows one image's landmarks as draggable SVG points and asks the server for every
// number it shows (no measurement is computed here). Plain JS, no libraries, nothing from the internet.
'use strict';

const SVG_NS = 'http://www.w3.org/2000/svg';
const state = {
  session: null,       // names, lines, score_threshold, measurement_info, colors, images
  images: [],          // listing from the server, in review order
  name: null,          // current image file name
  detail: null,        // server's view of the current image
  points: [],          // current [x, y] per landmark (image pixels)
  edits: {},           // unsaved points per image name
  undo: {},            // undo stacks per image name
  selected: -1,
  zoom: 1,
  digits: '', digitTimer: null,
  request: { inFlight: false, pending: false, since: null, token: 0 },
};
// Drag-to-update latencies (ms): from the pointer move that changed a point to the panel showing
// the server's numbers for it. Read by the browser test.
window.reviewLatencies = [];
window.reviewState = state;

const $ = (selector) => document.querySelector(selector);

function message(text, isError) {
  const el = $('#message');
  el.textContent = text;
  el.classList.toggle('error', Boolean(isError));
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) };
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

const enc = (name) => encodeURIComponent(name);
const svgEl = (tag, attrs) => {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
};

// ---- image list ---------------------------------------------------------------------------------
function renderImageList() {
  const list = $('#images');
  list.replaceChildren();
  for (const item of state.images) {
    const li = document.createElement('li');
    li.dataset.image = item.name;
    li.className = (item.status === 'reviewed' ? 'reviewed' : 'to-review') +
      (item.name === state.name ? ' current' : '');
    const name = document.createElement('div');
    name.className = 'name'; name.textContent = item.name; name.title = item.name;
    const meta = document.createElement('div');
    meta.className = 'meta';
    const status = document.createElement('span');
    status.className = 'status'; status.textContent = item.status;
    const score = document.createElement('span');
    score.className = 'score';
    score.textContent = `lowest score ${item.min_score.toFixed(2)}` +
      (item.low_count ? `, ${item.low_count} to check` : '');
    meta.append(status, score);
    if (state.edits[item.name]) {
      const unsaved = document.createElement('span');
      unsaved.className = 'unsaved'; unsaved.textContent = 'unsaved';
      meta.append(unsaved);
    }
    li.append(name, meta);
    li.addEventListener('click', () => openImage(item.name));
    list.append(li);
  }
}

// ---- one image ------------------------------------------------------------------------------------
async function openImage(name) {
  if (!name) return;
  try {
    const detail = await api(`/api/image/${enc(name)}`);
    state.name = name;
    state.detail = detail;
    state.points = (state.edits[name] || detail.points).map((p) => p.slice());
    state.selected = -1;
    state.request.token += 1;
    $('#image-title').textContent = `${name} (${detail.size[0]}x${detail.size[1]} px, ${detail.status})`;
    buildCanvas();
    fitZoom();
    renderImageList();
    renderLandmarkList();
    if (state.edits[name]) requestMeasurements(performance.now());
    else renderMeasurements(detail.measurements);
    message(detail.status === 'reviewed' ? 'showing the saved review' : '');
  } catch (error) {
    message(error.message, true);
  }
}

function buildCanvas() {
  const svg = $('#canvas');
  const [w, h] = state.detail.size;
  svg.replaceChildren();
  svg.setAttribute('viewBox', `-0.5 -0.5 ${w} ${h}`);
  svg.append(svgEl('image', { href: `/api/pixels/${enc(state.name)}`, x: -0.5, y: -0.5, width: w,
                              height: h, preserveAspectRatio: 'none' }));
  const lines = svgEl('g', { id: 'lines' });
  for (const [i, j] of state.session.lines) {
    lines.append(svgEl('line', { class: 'angle-line-shadow', 'data-from': i, 'data-to': j }));
    lines.append(svgEl('line', { class: 'angle-line', 'data-from': i, 'data-to': j }));
  }
  svg.append(lines);
  const threshold = state.session.score_threshold;
  const points = svgEl('g', { id: 'points' });
  state.session.landmarks.forEach((landmarkName, i) => {
    const score = state.detail.scores[i];
    const g = svgEl('g', { class: 'landmark', 'data-index': i });
    const predicted = svgEl('circle', { class: 'predicted' });
    if (score < threshold) {
      g.append(svgEl('circle', { class: 'low-ring-shadow' }), svgEl('circle', { class: 'low-ring' }));
    }
    const circle = svgEl('circle', { class: 'point', 'data-landmark': landmarkName, 'data-index': i,
                                     fill: state.session.colors[i] });
    const title = svgEl('title');
    title.textContent = `${i + 1} ${landmarkName} (score ${score.toFixed(2)}` +
      `${score < threshold ? ', please check' : ''})`;
    circle.append(title);
    const label = svgEl('text', { class: 'label' });
    label.textContent = String(i + 1);
    g.append(predicted, circle, label);
    circle.addEventListener('pointerdown', (event) => startDrag(event, i));
    points.append(g);
  });
  svg.append(points);
  updateCanvas();
}

function updateCanvas() {
  const svg = $('#canvas');
  const unit = 1 / state.zoom;                   // image pixels per screen pixel
  const [w, h] = state.detail.size;
  svg.setAttribute('width', Math.round(w * state.zoom));
  svg.setAttribute('height', Math.round(h * state.zoom));
  svg.querySelectorAll('.angle-line, .angle-line-shadow').forEach((line) => {
    const a = state.points[Number(line.dataset.from)];
    const b = state.points[Number(line.dataset.to)];
    line.setAttribute('x1', a[0]); line.setAttribute('y1', a[1]);
    line.setAttribute('x2', b[0]); line.setAttribute('y2', b[1]);
    line.setAttribute('stroke-width', (line.classList.contains('angle-line') ? 1.5 : 3.5) * unit);
  });
  svg.querySelectorAll('g.landmark').forEach((g) => {
    const i = Number(g.dataset.index);
    const [x, y] = state.points[i];
    const [px, py] = state.detail.predicted[i];
    const moved = Math.abs(x - px) > 0.005 || Math.abs(y - py) > 0.005;
    g.classList.toggle('selected', i === state.selected);
    for (const c of g.querySelectorAll('circle')) {
      c.setAttribute('cx', c.classList.contains('predicted') ? px : x);
      c.setAttribute('cy', c.classList.contains('predicted') ? py : y);
    }
    const point = g.querySelector('.point');
    point.setAttribute('r', 5.5 * unit);
    point.setAttribute('stroke-width', (i === state.selected ? 2.5 : 1.2) * unit);
    for (const ring of g.querySelectorAll('.low-ring, .low-ring-shadow')) {
      ring.setAttribute('r', 11 * unit);
      ring.setAttribute('stroke-width', (ring.classList.contains('low-ring') ? 2.5 : 5) * unit);
    }
    const predicted = g.querySelector('.predicted');
    predicted.setAttribute('r', moved ? 3.5 * unit : 0);
    predicted.setAttribute('stroke-width', 1.2 * unit);
    const label = g.querySelector('.label');
    label.setAttribute('x', x + 8 * unit); label.setAttribute('y', y - 7 * unit);
    label.setAttribute('font-size', 12 * unit); label.setAttribute('stroke-width', 3 * unit);
  });
  $('#zoom-level').textContent = `${Math.round(state.zoom * 100)}%`;
}

function renderLandmarkList() {
  const list = $('#landmarks');
  list.replaceChildren();
  const threshold = state.session.score_threshold;
  state.session.landmarks.forEach((landmarkName, i) => {
    const li = document.createElement('li');
    const score = state.detail.scores[i];
    const [x, y] = state.points[i];
    const [px, py] = state.detail.predicted[i];
    li.className = (score < threshold ? 'low' : '') + (i === state.selected ? ' selected' : '');
    li.append(`${landmarkName} `);
    const s = document.createElement('span');
    s.className = 'score'; s.textContent = score.toFixed(2) + (score < threshold ? ' check' : '');
    li.append(s);
    if (Math.abs(x - px) > 0.005 || Math.abs(y - py) > 0.005) {
      const c = document.createElement('span');
      c.className = 'corrected'; c.textContent = ' corrected';
      li.append(c);
    }
    li.addEventListener('click', () => select(i));
    list.append(li);
  });
}

function renderMeasurements(values) {
  const body = $('#measurements tbody');
  body.replaceChildren();
  const info = state.session.measurement_info;
  for (const key of Object.keys(info)) {
    if (!(key in values)) continue;
    const tr = document.createElement('tr');
    if (['SNA', 'SNB', 'ANB', 'skeletal_class'].includes(key)) tr.className = 'main';
    const name = document.createElement('td');
    name.textContent = key; name.title = info[key].description;
    const value = document.createElement('td');
    value.dataset.measurement = key;
    const unit = document.createElement('td');
    unit.className = 'unit';
    if (key === 'skeletal_class') {
      value.textContent = String(values[key]);
      unit.textContent = state.session.class_names[String(values[key])] || '';
    } else {
      value.textContent = values[key].toFixed(2);
      unit.textContent = info[key].unit;
    }
    const norm = document.createElement('td');
    norm.className = 'norm'; norm.textContent = info[key].norm; norm.title = info[key].norm;
    tr.append(name, value, unit, norm);
    body.append(tr);
  }
}

// ---- measurements from the server, at most one request in flight ------------------------------------
function requestMeasurements(changedAt) {
  const r = state.request;
  if (r.since === null) r.since = changedAt;
  if (r.inFlight) { r.pending = true; return; }
  const since = r.since;
  const token = r.token;
  r.since = null; r.pending = false; r.inFlight = true;
  api('/api/measurements', { image: state.name, landmarks: state.points })
    .then((data) => {
      if (token !== state.request.token) return;
      renderMeasurements(data.measurements);
      window.reviewLatencies.push(performance.now() - since);
    })
    .catch((error) => message(error.message, true))
    .finally(() => {
      r.inFlight = false;
      if (r.pending && token === state.request.token) requestMeasurements(r.since);
      else if (token !== state.request.token) { r.pending = false; r.since = null; }
    });
}

// ---- editing ------------------------------------------------------------------------------------------
function pushUndo() {
  (state.undo[state.name] = state.undo[state.name] || []).push(state.points.map((p) => p.slice()));
}

function changed(changedAt) {
  state.edits[state.name] = state.points.map((p) => p.slice());
  updateCanvas();
  requestMeasurements(changedAt);
}

function clampPoint(x, y) {
  const [w, h] = state.detail.size;
  return [Math.min(Math.max(x, 0), w), Math.min(Math.max(y, 0), h)];
}

function toImage(event) {
  const svg = $('#canvas');
  const p = svg.createSVGPoint();
  p.x = event.clientX; p.y = event.clientY;
  const q = p.matrixTransform(svg.getScreenCTM().inverse());
  return [q.x, q.y];
}

function startDrag(event, index) {
  event.preventDefault();
  select(index);
  pushUndo();
  const svg = $('#canvas');
  const [x0, y0] = toImage(event);
  const [px, py] = state.points[index];
  const offset = [px - x0, py - y0];      // keep the grab point under the cursor
  svg.setPointerCapture(event.pointerId);
  let moved = false;
  const move = (e) => {
    const now = performance.now();
    const [x, y] = toImage(e);
    state.points[index] = clampPoint(x + offset[0], y + offset[1]);
    moved = true;
    changed(now);
  };
  const stop = () => {
    svg.removeEventListener('pointermove', move);
    svg.removeEventListener('pointerup', stop);
    svg.removeEventListener('pointercancel', stop);
    if (!moved) state.undo[state.name].pop();
    else { renderLandmarkList(); renderImageList(); }
  };
  svg.addEventListener('pointermove', move);
  svg.addEventListener('pointerup', stop);
  svg.addEventListener('pointercancel', stop);
}

function select(index) {
  state.selected = index;
  updateCanvas();
  renderLandmarkList();
  if (index >= 0) message(`${index + 1} ${state.session.landmarks[index]} selected`);
}

function nudge(dx, dy) {
  if (state.selected < 0) { message('select a landmark first (click it or type its number)', true); return; }
  pushUndo();
  const [x, y] = state.points[state.selected];
  state.points[state.selected] = clampPoint(x + dx, y + dy);
  changed(performance.now());
  renderLandmarkList();
  renderImageList();
}

function undo() {
  const stack = state.undo[state.name];
  if (!stack || !stack.length) { message('nothing to undo'); return; }
  state.points = stack.pop();
  changed(performance.now());
  renderLandmarkList();
  renderImageList();
  message('undone');
}

async function save() {
  if (!state.name) return;
  const name = state.name;
  try {
    const data = await api(`/api/save/${enc(name)}`, { landmarks: state.points });
    delete state.edits[name];
    state.images = data.images;
    if (state.name === name) {
      state.detail = data.detail;
      state.points = data.detail.points.map((p) => p.slice());
      $('#image-title').textContent = `${name} (${data.detail.size[0]}x${data.detail.size[1]} px, reviewed)`;
      updateCanvas();
      renderLandmarkList();
      renderMeasurements(data.detail.measurements);
    }
    renderImageList();
    message(`saved ${data.saved}`);
  } catch (error) {
    message(`not saved: ${error.message}`, true);
  }
}

function step(delta) {
  const names = state.images.map((item) => item.name);
  const index = names.indexOf(state.name);
  // The list wraps around: after saving, the image moves to the end among the reviewed ones.
  const next = names[(index + delta + names.length) % names.length];
  if (next !== state.name) openImage(next);
}

// ---- zoom -----------------------------------------------------------------------------------------------
function setZoom(zoom, anchor) {
  const viewer = $('#viewer');
  const old = state.zoom;
  state.zoom = Math.min(Math.max(zoom, 0.25), 40);
  let keep = null;
  if (anchor) {
    const rect = viewer.getBoundingClientRect();
    keep = { ax: anchor.clientX - rect.left, ay: anchor.clientY - rect.top,
             x: (viewer.scrollLeft + anchor.clientX - rect.left) / old,
             y: (viewer.scrollTop + anchor.clientY - rect.top) / old };
  }
  updateCanvas();
  if (keep) {
    viewer.scrollLeft = keep.x * state.zoom - keep.ax;
    viewer.scrollTop = keep.y * state.zoom - keep.ay;
  }
}

function fitZoom() {
  const viewer = $('#viewer');
  const [w, h] = state.detail.size;
  const zoom = Math.min((viewer.clientWidth - 24) / w, (viewer.clientHeight - 24) / h);
  setZoom(Math.max(zoom, 0.25));
}

// ---- keyboard ---------------------------------------------------------------------------------------------
function onKey(event) {
  if (!state.detail || event.target.closest('input, textarea')) return;
  const key = event.key;
  const ctrl = event.ctrlKey || event.metaKey;
  if (ctrl && key.toLowerCase() === 'z') { event.preventDefault(); undo(); return; }
  if (ctrl && key.toLowerCase() === 's') { event.preventDefault(); save(); return; }
  if (ctrl || event.altKey) return;
  const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  if (key in arrows) {
    event.preventDefault();
    const size = event.shiftKey ? 0.25 : 1;
    nudge(arrows[key][0] * size, arrows[key][1] * size);
  } else if (key === '0' && !state.digits) {
    fitZoom();
  } else if (/^[0-9]$/.test(key)) {
    selectByDigit(key);
  } else if (key === 'n' || key === 'PageDown' || key === ']') {
    event.preventDefault(); step(1);
  } else if (key === 'p' || key === 'PageUp' || key === '[') {
    event.preventDefault(); step(-1);
  } else if (key === 'u') {
    undo();
  } else if (key === 's') {
    save();
  } else if (key === '+' || key === '=') {
    setZoom(state.zoom * 1.25);
  } else if (key === '-') {
    setZoom(state.zoom / 1.25);
  } else if (key === 'Escape') {
    select(-1); message('');
  }
}

function selectByDigit(digit) {
  const count = state.session.landmarks.length;
  clearTimeout(state.digitTimer);
  state.digits += digit;
  const number = Number(state.digits);
  const commit = () => {
    const n = Number(state.digits);
    state.digits = '';
    if (n >= 1 && n <= count) select(n - 1);
    else message(`no landmark ${n}`, true);
  };
  // Commit at once when no further digit could make a valid number; otherwise wait briefly.
  if (number * 10 > count || state.digits.length >= String(count).length) commit();
  else state.digitTimer = setTimeout(commit, 700);
}

// ---- start ------------------------------------------------------------------------------------------------
async function start() {
  document.addEventListener('keydown', onKey);
  document.querySelector('[data-action="save"]').addEventListener('click', save);
  document.querySelector('[data-action="undo"]').addEventListener('click', undo);
  document.querySelector('[data-action="zoom-in"]').addEventListener('click', () => setZoom(state.zoom * 1.25));
  document.querySelector('[data-action="zoom-out"]').addEventListener('click', () => setZoom(state.zoom / 1.25));
  document.querySelector('[data-action="zoom-fit"]').addEventListener('click', fitZoom);
  $('#viewer').addEventListener('wheel', (event) => {
    if (!state.detail) return;
    event.preventDefault();
    setZoom(state.zoom * (event.deltaY < 0 ? 1.15 : 1 / 1.15), event);
  }, { passive: false });
  window.addEventListener('beforeunload', (event) => {
    if (Object.keys(state.edits).length) { event.preventDefault(); event.returnValue = ''; }
  });
  try {
    state.session = await api('/api/session');
    state.images = state.session.images;
    renderImageList();
    if (state.images.length) await openImage(state.images[0].name);
  } catch (error) {
    message(error.message, true);
  }
}

start();
