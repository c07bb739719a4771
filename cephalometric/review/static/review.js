// Review page: shows one image's landmarks as draggable SVG points and asks the server for every
// number it shows (no measurement is computed here, and no number is rounded again here: the server
// rounds once). Plain JS, no libraries, nothing from the internet.
'use strict';

const SVG_NS = 'http://www.w3.org/2000/svg';
const REACH = 14;          // screen px: a press this close to a point picks it
const SAME_PRESS = 5;      // screen px: a second press this close cycles through overlapping points
const ZOOM_STEP = Math.SQRT2;
const state = {
  session: null,       // names, lines, help, estimated, score_threshold, measurement_info, colors
  images: [],          // listing from the server, in review order
  progress: null,      // {done, total, failure} of the background predictions
  name: null,          // current image file name
  detail: null,        // server's view of the current image
  points: [],          // current [x, y] or null (not visible) per landmark (image pixels)
  calibration: null,   // {points, length_mm} of the current image, or null
  edits: {},           // unsaved {points, calibration} per image name
  undo: {},            // undo stacks per image name: [{points, calibration}]
  hiddenAt: {},        // last position of a landmark marked not visible
  selected: -1,
  zoom: 1,
  digits: '', digitTimer: null,
  lastPress: null,     // {x, y, index}: screen position of the last press and what it picked
  space: false,        // space bar held: drags pan
  calibrating: null,   // [] or [[x, y]] while marking a known distance
  reviewer: sessionStorage.getItem('reviewer') || '',
  listShows: null,     // the image the list was last scrolled to
  photoSide: 0,        // longest side of the photo the page has loaded (px), 0 = full size
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
  if (!response.ok) {
    const error = new Error(data.error || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

const enc = (name) => encodeURIComponent(name);
const copyPoints = (points) => points.map((p) => (p ? p.slice() : null));
const svgEl = (tag, attrs) => {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
};
const landmarkLabel = (i) => `${i + 1} ${state.session.landmarks[i]}`;

// ---- image list ---------------------------------------------------------------------------------
function renderImageList() {
  const list = $('#images');
  // Rebuilt while predictions come in: keep the keyboard focus and the scroll position.
  const focused = document.activeElement && document.activeElement.closest('#images li');
  const focusedName = focused ? focused.dataset.image : null;
  list.replaceChildren();
  for (const item of state.images) {
    const li = document.createElement('li');
    li.dataset.image = item.name;
    li.className = item.status.replace(' ', '-') + (item.name === state.name ? ' current' : '');
    const button = document.createElement('button');
    button.type = 'button';
    const name = document.createElement('div');
    name.className = 'name'; name.textContent = item.name; name.title = item.name;
    const meta = document.createElement('div');
    meta.className = 'meta';
    const status = document.createElement('span');
    status.className = 'status'; status.textContent = item.status;
    meta.append(status);
    if (item.min_score !== null && item.min_score !== undefined) {
      const score = document.createElement('span');
      score.className = 'score';
      score.textContent = (item.max_radius90 !== null && item.max_radius90 !== undefined
        ? `widest 90% radius ${item.max_radius90.toFixed(1)} px`
        : `lowest score ${item.min_score.toFixed(2)}`) +
        (item.low_count ? `, ${item.low_count} to check` : '');
      meta.append(score);
    }
    if (state.edits[item.name]) {
      const unsaved = document.createElement('span');
      unsaved.className = 'unsaved'; unsaved.textContent = 'unsaved';
      meta.append(unsaved);
    }
    button.append(name, meta);
    if (item.name === state.name) button.setAttribute('aria-current', 'true');
    button.addEventListener('click', () => openImage(item.name));
    li.append(button);
    list.append(li);
  }
  if (focusedName) {
    const again = [...list.children].find((li) => li.dataset.image === focusedName);
    if (again) again.querySelector('button').focus({ preventScroll: true });
  }
  const current = list.querySelector('li.current');
  if (current && state.listShows !== state.name) {   // follow the current image, once per image
    current.scrollIntoView({ block: 'nearest' });
    state.listShows = state.name;
  }
  renderCounter();
}

function renderCounter() {
  const done = state.images.filter((i) => i.status === 'reviewed' || i.status === 'cannot trace').length;
  $('#counter').textContent = `${done} done / ${state.images.length - done} left`;
  const p = state.progress;
  const el = $('#progress');
  if (p && p.failure) { el.textContent = `prediction stopped: ${p.failure}`; el.className = 'busy'; }
  else if (p && p.done < p.total) { el.textContent = `predicting ${p.done}/${p.total}`; el.className = 'busy'; }
  else { el.textContent = p && p.total ? `all ${p.total} predicted` : ''; el.className = ''; }
}

async function pollImages() {
  try {
    const data = await api('/api/images');
    state.images = data.images;
    state.progress = data.progress;
    if (!state.session.landmarks.length && data.progress.done) {
      Object.assign(state.session, await api('/api/session'));   // names known once predicted
      buildHelp();
    }
    renderImageList();
    if (!state.name) {
      const first = state.images.find((i) => i.status !== 'predicting');
      if (first) await openImage(first.name);
    }
    if (data.progress.done < data.progress.total && !data.progress.failure) {
      setTimeout(pollImages, 700);
    }
  } catch (error) {
    message(error.message, true);
    setTimeout(pollImages, 2000);
  }
}

// ---- one image ------------------------------------------------------------------------------------
async function openImage(name) {
  if (!name) return;
  try {
    const detail = await api(`/api/image/${enc(name)}`);
    state.name = name;
    state.detail = detail;
    const edit = state.edits[name];
    state.points = copyPoints(edit ? edit.points : detail.points);
    state.calibration = edit ? edit.calibration : detail.calibration;
    state.selected = -1;
    state.lastPress = null;
    state.calibrating = null;
    state.request.token += 1;
    $('#waiting').hidden = true;
    renderTitle();
    buildCanvas();
    fitZoom();
    renderImageList();
    renderLandmarkList();
    if (edit) requestMeasurements(performance.now());
    else renderMeasurements(detail.measurements, detail.marks, detail.mm_per_pixel, detail.certainty);
    renderReportLink();
    if (detail.flagged.length) {
      message(`the model gave no position for ${detail.flagged.map(landmarkLabel).join(', ')}: ` +
              'placed in the middle, please place', true);
    } else message(detail.status === 'to review' ? '' : `showing the saved review (${detail.status}` +
      `${detail.reason ? ': ' + detail.reason : ''})`);
  } catch (error) {
    if (error.status === 409) message(`${name} is still being predicted; it opens when ready`);
    else message(error.message, true);
  }
}

function renderTitle() {
  const d = state.detail;
  $('#image-title').textContent = `${state.name} (${d.size[0]}x${d.size[1]} px, ${d.status})`;
}

function renderReportLink() {
  const link = $('#report-link');
  // The report is of the saved review: offered once saved, and not while edits are unsaved.
  const saved = state.detail && state.detail.status !== 'to review' && !state.edits[state.name];
  link.setAttribute('aria-disabled', saved ? 'false' : 'true');
  link.tabIndex = saved ? 0 : -1;
  link.href = saved ? `/api/report/${enc(state.name)}?format=pdf` : '#';
  const png = $('#report-png');
  png.setAttribute('aria-disabled', saved ? 'false' : 'true');
  png.tabIndex = saved ? 0 : -1;
  png.href = saved ? `/api/report/${enc(state.name)}?format=png` : '#';
}

function photoSideFor(zoom) {
  // The photo is sent at the screen's resolution; a larger one only when zoomed in beyond it.
  const [w, h] = state.detail.size;
  const longest = Math.max(w, h);
  const screenSide = Math.ceil(Math.max(screen.width, screen.height) * (window.devicePixelRatio || 1));
  const needed = longest * zoom * (window.devicePixelRatio || 1);
  if (longest <= screenSide || needed > screenSide * 1.5) return 0;
  return screenSide;
}

function loadPhoto(side) {
  const image = $('#photo');
  if (!image) return;
  state.photoSide = side;
  $('#loading').hidden = false;
  const url = `/api/pixels/${enc(state.name)}` + (side ? `?max=${side}` : '');
  image.onload = () => { $('#loading').hidden = true; };
  image.onerror = () => { $('#loading').hidden = true; message('could not load the photo', true); };
  image.setAttribute('href', url);
}

function buildCanvas() {
  const svg = $('#canvas');
  const [w, h] = state.detail.size;
  svg.replaceChildren();
  svg.setAttribute('viewBox', `-0.5 -0.5 ${w} ${h}`);
  svg.append(svgEl('image', { id: 'photo', x: -0.5, y: -0.5, width: w, height: h,
                              preserveAspectRatio: 'none' }));
  const lines = svgEl('g', { id: 'lines' });
  for (const [i, j] of state.session.lines) {
    lines.append(svgEl('line', { class: 'angle-line-shadow', 'data-from': i, 'data-to': j }));
    lines.append(svgEl('line', { class: 'angle-line', 'data-from': i, 'data-to': j }));
  }
  lines.append(svgEl('line', { class: 'calibration-line', id: 'calibration-line' }));
  svg.append(lines);
  const threshold = state.session.score_threshold;
  const points = svgEl('g', { id: 'points' });
  state.session.landmarks.forEach((landmarkName, i) => {
    const score = state.detail.scores[i];
    const g = svgEl('g', { class: 'landmark', 'data-index': i });
    const predicted = svgEl('circle', { class: 'predicted' });
    if (unsure(i, score, threshold)) {
      g.append(svgEl('circle', { class: 'low-ring-shadow' }), svgEl('circle', { class: 'low-ring' }));
    }
    const marker = svgEl('path', { class: 'point', 'data-landmark': landmarkName, 'data-index': i,
                                   fill: state.session.colors[i] });
    const title = svgEl('title');
    const help = state.session.help[i];
    title.textContent = `${landmarkLabel(i)}${help.estimated ? ' (estimate)' : ''}: ` +
      `${help.definition || ''} Score ${score.toFixed(2)}${score < threshold ? ', please check' : ''}.`;
    marker.append(title);
    const label = svgEl('text', { class: 'label' });
    label.textContent = String(i + 1);
    g.append(predicted, marker, label);
    points.append(g);
  });
  svg.append(points);
  state.photoSide = -1;    // the first updateCanvas loads the photo at the size it needs
}

function markerPath(x, y, r, diamond) {
  if (diamond) {
    const d = r * 1.35;
    return `M${x} ${y - d}L${x + d} ${y}L${x} ${y + d}L${x - d} ${y}Z`;
  }
  return `M${x - r} ${y}a${r} ${r} 0 1 0 ${2 * r} 0a${r} ${r} 0 1 0 ${-2 * r} 0Z`;
}

function updateCanvas() {
  const svg = $('#canvas');
  const unit = 1 / state.zoom;                   // image pixels per screen pixel
  const [w, h] = state.detail.size;
  svg.setAttribute('width', Math.max(1, Math.round(w * state.zoom)));
  svg.setAttribute('height', Math.max(1, Math.round(h * state.zoom)));
  svg.querySelectorAll('.angle-line, .angle-line-shadow').forEach((line) => {
    const a = state.points[Number(line.dataset.from)];
    const b = state.points[Number(line.dataset.to)];
    line.style.display = a && b ? '' : 'none';
    if (!a || !b) return;
    line.setAttribute('x1', a[0]); line.setAttribute('y1', a[1]);
    line.setAttribute('x2', b[0]); line.setAttribute('y2', b[1]);
    line.setAttribute('stroke-width', (line.classList.contains('angle-line') ? 1.5 : 3.5) * unit);
  });
  const calLine = $('#calibration-line');
  const cal = state.calibrating && state.calibrating.length ? state.calibrating
    : (state.calibration ? state.calibration.points : null);
  if (calLine) {
    calLine.style.display = cal && cal.length === 2 ? '' : 'none';
    if (cal && cal.length === 2) {
      calLine.setAttribute('x1', cal[0][0]); calLine.setAttribute('y1', cal[0][1]);
      calLine.setAttribute('x2', cal[1][0]); calLine.setAttribute('y2', cal[1][1]);
      calLine.setAttribute('stroke-width', 2 * unit);
    }
  }
  svg.querySelectorAll('g.landmark').forEach((g) => {
    const i = Number(g.dataset.index);
    const point = state.points[i];
    g.classList.toggle('hidden-point', !point);
    if (!point) return;
    const [x, y] = point;
    const [px, py] = state.detail.predicted[i];
    const moved = Math.abs(x - px) > 0.005 || Math.abs(y - py) > 0.005;
    g.classList.toggle('selected', i === state.selected);
    for (const c of g.querySelectorAll('circle')) {
      c.setAttribute('cx', c.classList.contains('predicted') ? px : x);
      c.setAttribute('cy', c.classList.contains('predicted') ? py : y);
    }
    const marker = g.querySelector('.point');
    marker.setAttribute('d', markerPath(x, y, 5.5 * unit, state.session.estimated[i]));
    marker.setAttribute('stroke-width', (i === state.selected ? 2.5 : 1.2) * unit);
    for (const ring of g.querySelectorAll('.low-ring, .low-ring-shadow')) {
      ring.setAttribute('r', 11 * unit);
      ring.setAttribute('stroke-width', (ring.classList.contains('low-ring') ? 2.5 : 5) * unit);
      if (ring.classList.contains('low-ring')) ring.setAttribute('stroke-dasharray', `${4 * unit} ${2.5 * unit}`);
    }
    const predicted = g.querySelector('.predicted');
    predicted.setAttribute('r', moved ? 3.5 * unit : 0);
    predicted.setAttribute('stroke-width', 1.2 * unit);
    const label = g.querySelector('.label');
    label.setAttribute('x', x + 8 * unit); label.setAttribute('y', y - 7 * unit);
    label.setAttribute('font-size', 12 * unit); label.setAttribute('stroke-width', 3 * unit);
  });
  $('#zoom-level').textContent = `${Math.round(state.zoom * 100)}%`;
  const side = photoSideFor(state.zoom);
  if (side !== state.photoSide && !(side && state.photoSide === 0)) loadPhoto(side);
}

function renderLandmarkList() {
  const list = $('#landmarks');
  list.replaceChildren();
  const threshold = state.session.score_threshold;
  state.session.landmarks.forEach((landmarkName, i) => {
    const li = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    const score = state.detail.scores[i];
    const point = state.points[i];
    const [px, py] = state.detail.predicted[i];
    const help = state.session.help[i];
    li.className = (unsure(i, score, threshold) ? 'low' : '') +
      (i === state.selected ? ' selected' : '');
    button.title = `${help.definition}${help.estimated ? ' An estimate: not visible on a photograph.' : ''}`;
    button.append(`${landmarkName} `);
    if (help.estimated) {
      const e = document.createElement('span');
      e.className = 'estimate'; e.textContent = 'estimate ';
      button.append(e);
    }
    const s = document.createElement('span');
    s.className = 'score'; s.textContent = score.toFixed(2) + (score < threshold ? ' check' : '');
    button.append(s);
    if (state.detail.flagged.includes(i)) {
      const f = document.createElement('span');
      f.className = 'missing'; f.textContent = ' no prediction: place it';
      button.append(f);
    }
    if (!point) {
      const m = document.createElement('span');
      m.className = 'missing'; m.textContent = ' not visible';
      button.append(m);
    } else if (Math.abs(point[0] - px) > 0.005 || Math.abs(point[1] - py) > 0.005) {
      const c = document.createElement('span');
      c.className = 'corrected'; c.textContent = ' corrected';
      button.append(c);
    }
    button.addEventListener('click', () => select(i));
    li.append(button);
    list.append(li);
  });
}

// The 90% interval of a measurement, or of the class its probability, from the model's expected
// errors (the server's `certainty`; a point the reviewer moved counts as exact).
function intervalText(key, value, certainty) {
  if (!certainty) return ['', ''];
  if (key === 'skeletal_class') {
    const p = certainty.class_probabilities;
    if (!p) return ['', ''];
    const names = state.session.class_names;
    const all = Object.keys(p).map((k) => `${names[k] || k} ${p[k].toFixed(2)}`).join(', ');
    const own = p[String(value)];
    return [(own === undefined ? '' : `p ${own.toFixed(2)}`) +
            (certainty.class_borderline ? ', borderline' : ''),
            `probability of each class: ${all}` +
            (certainty.class_borderline ? '; none reaches 0.7, so the class is borderline' : '')];
  }
  const pair = certainty.intervals && certainty.intervals[key];
  if (!pair) return ['', ''];
  return [`[${pair[0].toFixed(1)}, ${pair[1].toFixed(1)}]`,
          `90% interval [${pair[0].toFixed(2)}, ${pair[1].toFixed(2)}]: holds the true value 9 times ` +
          'in 10, given the model\'s expected errors (a point you moved counts as exact)'];
}

function renderMeasurements(values, marks, mmPerPixel, certainty) {
  const body = $('#measurements tbody');
  body.replaceChildren();
  const info = state.session.measurement_info;
  const signs = { 2: '++', 1: '+', 0: '', '-1': '\u2212', '-2': '\u2212\u2212' };
  for (const key of Object.keys(info)) {
    if (!(key in values)) continue;
    if (mmPerPixel && info[key].unit === 'px') continue;   // the mm row says it for this photo
    const level = (marks && marks[key]) || 0;
    const tr = document.createElement('tr');
    tr.className = (['SNA', 'SNB', 'ANB', 'skeletal_class'].includes(key) ? 'main ' : '') +
      (level ? `mark-${Math.abs(level)}` : '');
    const name = document.createElement('td');
    name.className = 'name';
    name.textContent = info[key].name;
    name.title = `${key}: ${info[key].description}`;
    // The value, and under it the 90% interval (or the class's probability), in one cell: the
    // panel has no room for another column.
    const cell = document.createElement('td');
    cell.className = 'value';
    const value = document.createElement('span');
    value.dataset.measurement = key;
    cell.append(value);
    const unit = document.createElement('td');
    unit.className = 'unit';
    const mark = document.createElement('td');
    mark.className = 'mark';
    if (key === 'skeletal_class') {
      value.textContent = state.session.class_names[String(values[key])] || String(values[key]);
      value.dataset.value = String(values[key]);
      mark.textContent = level ? '!' : '';
    } else {
      value.textContent = values[key].toFixed(2);    // the server rounded to 0.01 already
      value.dataset.value = String(values[key]);
      unit.textContent = info[key].unit;
      mark.textContent = signs[level];
      if (level) mark.title = `outside ${Math.abs(level)} SD of the norm, ${level > 0 ? 'above' : 'below'}`;
    }
    const [shown, why] = intervalText(key, values[key], certainty);
    if (shown) {
      const interval = document.createElement('span');
      interval.className = 'interval';
      interval.dataset.measurement = key;
      interval.textContent = shown;
      interval.title = why;
      cell.append(interval);
    }
    const norm = document.createElement('td');
    norm.className = 'norm'; norm.textContent = info[key].norm;
    tr.append(name, cell, unit, norm, mark);
    body.append(tr);
  }
  const note = $('#calibration-note');
  note.textContent = state.calibration
    ? `calibrated on this photo: ${state.calibration.length_mm} mm marked, ${Number(mmPerPixel).toPrecision(4)} mm per pixel`
    : (mmPerPixel ? `${mmPerPixel} mm per pixel (--mm-per-pixel)` : 'distances in pixels: calibrate this photo for mm');
}

// ---- measurements from the server, at most one request in flight ------------------------------------
function requestMeasurements(changedAt) {
  const r = state.request;
  if (r.since === null) r.since = changedAt;
  if (r.inFlight) { r.pending = true; return; }
  const since = r.since;
  const token = r.token;
  r.since = null; r.pending = false; r.inFlight = true;
  api('/api/measurements', { image: state.name, landmarks: state.points,
                             calibration: calibrationBody(state.calibration) })
    .then((data) => {
      if (token !== state.request.token) return;
      renderMeasurements(data.measurements, data.marks, data.mm_per_pixel, data.certainty);
      window.reviewLatencies.push(performance.now() - since);
    })
    .catch((error) => message(error.message, true))
    .finally(() => {
      r.inFlight = false;
      if (r.pending && token === state.request.token) requestMeasurements(r.since);
      else if (token !== state.request.token) { r.pending = false; r.since = null; }
    });
}

const calibrationBody = (c) => (c ? { points: c.points, length_mm: c.length_mm } : null);

// ---- editing ------------------------------------------------------------------------------------------
function snapshot() {
  return { points: copyPoints(state.points), calibration: state.calibration };
}

function pushUndo() {
  (state.undo[state.name] = state.undo[state.name] || []).push(snapshot());
}

function samePoints(a, b) {
  return a.length === b.length && a.every((p, i) => {
    const q = b[i];
    if (!p || !q) return !p && !q;
    return Math.abs(p[0] - q[0]) <= 0.005 && Math.abs(p[1] - q[1]) <= 0.005;
  });
}

function sameCalibration(a, b) {
  if (!a || !b) return !a && !b;
  return a.length_mm === b.length_mm && samePoints(a.points, b.points);
}

function changed(changedAt) {
  // Unsaved only while the points differ from the saved (or predicted) ones: undoing back to the
  // saved state is saved again.
  if (samePoints(state.points, state.detail.points) &&
      sameCalibration(state.calibration, state.detail.calibration)) delete state.edits[state.name];
  else state.edits[state.name] = snapshot();
  renderReportLink();
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

function toScreen(x, y) {
  const svg = $('#canvas');
  const p = svg.createSVGPoint();
  p.x = x; p.y = y;
  const q = p.matrixTransform(svg.getScreenCTM());
  return [q.x, q.y];
}

function candidatesAt(event) {
  // Points within REACH screen pixels of the press, nearest first.
  const [x, y] = toImage(event);
  const found = [];
  state.points.forEach((p, i) => {
    if (!p) return;
    const d = Math.hypot(p[0] - x, p[1] - y) * state.zoom;
    if (d <= REACH) found.push([d, i]);
  });
  return found.sort((a, b) => a[0] - b[0]).map((item) => item[1]);
}

function pick(event) {
  // The selected point when it is within reach (so it can be dragged), else the nearest.
  const candidates = candidatesAt(event);
  if (!candidates.length) return -1;
  return candidates.includes(state.selected) ? state.selected : candidates[0];
}

function clicked(event, candidates) {
  // A click (no drag) where the last click was: the next of the points there.
  const last = state.lastPress;
  if (last && candidates.length > 1 && candidates.includes(state.selected) &&
      Math.hypot(event.clientX - last.x, event.clientY - last.y) <= SAME_PRESS) {
    select(candidates[(candidates.indexOf(state.selected) + 1) % candidates.length]);
  }
  state.lastPress = { x: event.clientX, y: event.clientY };
}

function cycleOverlap() {
  if (state.selected < 0 || !state.points[state.selected]) { message('select a landmark first'); return; }
  const [sx, sy] = toScreen(...state.points[state.selected]);
  const near = [];
  state.points.forEach((p, i) => {
    if (!p) return;
    const [x, y] = toScreen(...p);
    if (Math.hypot(x - sx, y - sy) <= REACH) near.push(i);
  });
  if (near.length < 2) { message(`no other point under ${landmarkLabel(state.selected)}`); return; }
  select(near[(near.indexOf(state.selected) + 1) % near.length]);
}

// Pointers down on the viewer (touch: two of them pinch).
const pointers = new Map();

function onPointerDown(event) {
  if (!state.detail || event.button > 1) return;
  const viewer = $('#viewer');
  pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
  viewer.setPointerCapture(event.pointerId);
  if (pointers.size === 2) { startPinch(); return; }
  if (pointers.size > 2) return;
  event.preventDefault();
  viewer.focus({ preventScroll: true });
  const onPhoto = event.target.closest && event.target.closest('#canvas');
  if (state.calibrating && onPhoto && event.button === 0 && !state.space) {
    markCalibration(event); return;
  }
  const index = (state.space || event.button === 1 || !onPhoto) ? -1 : pick(event);
  if (index >= 0) startDrag(event, index);
  else startPan(event);
}

function startPan(event) {
  const viewer = $('#viewer');
  const start = { x: event.clientX, y: event.clientY, left: viewer.scrollLeft, top: viewer.scrollTop };
  viewer.classList.add('panning');
  const move = (e) => {
    if (e.pointerId !== event.pointerId || pointers.size > 1) return;
    viewer.scrollLeft = start.left - (e.clientX - start.x);
    viewer.scrollTop = start.top - (e.clientY - start.y);
  };
  followPointer(viewer, move, (e) => {
    if (e.pointerId !== event.pointerId) return false;
    viewer.classList.remove('panning');
    state.lastPress = null;
    return true;
  });
}

// Calls move(e) on every pointer move over `element` until the pointer is released, when
// done(e) (which may return false to keep following) ends it.
function followPointer(element, move, done) {
  const stop = (e) => {
    if (done(e) === false) return;
    element.removeEventListener('pointermove', move);
    element.removeEventListener('pointerup', stop);
    element.removeEventListener('pointercancel', stop);
  };
  element.addEventListener('pointermove', move);
  element.addEventListener('pointerup', stop);
  element.addEventListener('pointercancel', stop);
}

function startPinch() {
  const viewer = $('#viewer');
  const [a, b] = [...pointers.values()];
  const start = { distance: Math.hypot(a.x - b.x, a.y - b.y) || 1, zoom: state.zoom };
  const move = (e) => {
    if (!pointers.has(e.pointerId)) return;
    pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (pointers.size !== 2) return;
    const [p, q] = [...pointers.values()];
    const centre = { clientX: (p.x + q.x) / 2, clientY: (p.y + q.y) / 2 };
    setZoom(start.zoom * Math.hypot(p.x - q.x, p.y - q.y) / start.distance, centre);
  };
  followPointer(viewer, move, () => true);
}

function onPointerUp(event) {
  pointers.delete(event.pointerId);
}

function startDrag(event, index) {
  const candidates = candidatesAt(event);
  select(index);
  pushUndo();
  const viewer = $('#viewer');
  const [x0, y0] = toImage(event);
  const [px, py] = state.points[index];
  const offset = [px - x0, py - y0];      // keep the grab point under the cursor
  let moved = false;
  const move = (e) => {
    if (e.pointerId !== event.pointerId || pointers.size > 1) return;
    const now = performance.now();
    const [x, y] = toImage(e);
    state.points[index] = clampPoint(x + offset[0], y + offset[1]);
    moved = true;
    changed(now);
    showLoupe(index);
  };
  followPointer(viewer, move, (e) => {
    if (e.pointerId !== event.pointerId) return false;
    $('#loupe').hidden = true;
    if (!moved) { state.undo[state.name].pop(); clicked(event, candidates); }
    else { state.lastPress = null; renderLandmarkList(); renderImageList(); }
    return true;
  });
}

function showLoupe(index) {
  // A zoomed inset of the photo around the dragged point: 4x the view, at least 6 px per pixel.
  const loupe = $('#loupe');
  const [x, y] = state.points[index];
  const scale = Math.max(state.zoom * 4, 6);
  const half = 90 / scale;
  if (!loupe.firstChild) {
    loupe.append(svgEl('use', { href: '#photo' }),
                 svgEl('line', { class: 'cross-h', stroke: '#f0e442' }),
                 svgEl('line', { class: 'cross-v', stroke: '#f0e442' }));
  }
  loupe.setAttribute('viewBox', `${x - half} ${y - half} ${2 * half} ${2 * half}`);
  const h = loupe.querySelector('.cross-h');
  const v = loupe.querySelector('.cross-v');
  const width = 1 / scale;
  h.setAttribute('x1', x - half); h.setAttribute('x2', x - half / 8); h.setAttribute('y1', y); h.setAttribute('y2', y);
  v.setAttribute('y1', y - half); v.setAttribute('y2', y - half / 8); v.setAttribute('x1', x); v.setAttribute('x2', x);
  h.setAttribute('stroke-width', 1.5 * width); v.setAttribute('stroke-width', 1.5 * width);
  loupe.hidden = false;
}

function select(index) {
  state.selected = index;
  updateCanvas();
  renderLandmarkList();
  if (index >= 0) {
    const help = state.session.help[index];
    message(`${landmarkLabel(index)} selected${state.points[index] ? '' : ' (not visible)'}` +
      `${help.estimated ? ' - an estimate' : ''}: ${help.definition}`);
  }
}

function nudge(dx, dy) {
  if (state.selected < 0) { message('select a landmark first (click it or type its number)', true); return; }
  if (!state.points[state.selected]) { message('this landmark is marked not visible (v brings it back)', true); return; }
  pushUndo();
  const [x, y] = state.points[state.selected];
  // Steps in screen pixels: the same feel at every zoom.
  state.points[state.selected] = clampPoint(x + dx / state.zoom, y + dy / state.zoom);
  changed(performance.now());
  renderLandmarkList();
  renderImageList();
}

function toggleVisible() {
  const i = state.selected;
  if (i < 0) { message('select a landmark first, then mark it not visible', true); return; }
  pushUndo();
  const key = `${state.name}/${i}`;
  if (state.points[i]) {
    state.hiddenAt[key] = state.points[i];
    state.points[i] = null;
    message(`${landmarkLabel(i)}: not visible; saved as missing and left out of the measurements`);
  } else {
    state.points[i] = (state.hiddenAt[key] || state.detail.predicted[i]).slice();
    message(`${landmarkLabel(i)}: visible again`);
  }
  changed(performance.now());
  renderLandmarkList();
  renderImageList();
}

function resetToModel() {
  if (!state.detail) return;
  pushUndo();
  state.points = copyPoints(state.detail.predicted);
  changed(performance.now());
  renderLandmarkList();
  renderImageList();
  message("reset to the model's points (undo brings yours back)");
}

function undo() {
  const stack = state.undo[state.name];
  if (!stack || !stack.length) { message('nothing to undo'); return; }
  const last = stack.pop();
  state.points = last.points;
  state.calibration = last.calibration;
  changed(performance.now());
  renderLandmarkList();
  renderImageList();
  message(state.edits[state.name] ? 'undone' : 'undone: back to the saved state');
}

// ---- calibration ---------------------------------------------------------------------------------------
function startCalibration() {
  if (!state.detail) return;
  state.calibrating = [];
  $('#viewer').classList.add('calibrating');
  $('[data-action="calibrate"]').classList.add('active');
  message('calibration: click one end of a known distance (a ruler or marker in the photo); Esc leaves');
}

function stopCalibration() {
  state.calibrating = null;
  $('#viewer').classList.remove('calibrating');
  $('[data-action="calibrate"]').classList.remove('active');
  updateCanvas();
}

function markCalibration(event) {
  const point = clampPoint(...toImage(event));
  state.calibrating.push(point);
  if (state.calibrating.length === 1) {
    message('calibration: now click the other end');
    return;
  }
  updateCanvas();
  const points = state.calibrating.slice();
  askLength().then((length) => {
    stopCalibration();
    if (length === null) { message('calibration left unchanged'); return; }
    pushUndo();
    state.calibration = { points, length_mm: length };
    changed(performance.now());
    renderImageList();
    message(`calibrated: ${length} mm over ${Math.hypot(points[1][0] - points[0][0], points[1][1] - points[0][1]).toFixed(1)} px`);
  });
}

function askLength() {
  return new Promise((resolve) => {
    const dialog = $('#length-dialog');
    const input = $('#length-input');
    input.value = '';
    dialog.onclose = () => {
      const value = Number(input.value);
      resolve(dialog.returnValue === 'ok' && value > 0 ? value : null);
    };
    dialog.returnValue = '';
    dialog.showModal();
    input.focus();
  });
}

// ---- reviewer, saving ------------------------------------------------------------------------------------
function renderReviewer() {
  $('#reviewer').textContent = state.reviewer ? `reviewer ${state.reviewer}` : 'reviewer ?';
}

function askReviewer() {
  return new Promise((resolve) => {
    const dialog = $('#reviewer-dialog');
    const input = $('#reviewer-input');
    input.value = state.reviewer;
    dialog.onclose = () => {
      const value = input.value.trim().toUpperCase();
      if (/^[A-Z]{1,4}$/.test(value)) {
        state.reviewer = value;
        sessionStorage.setItem('reviewer', value);
      }
      renderReviewer();
      resolve(state.reviewer);
    };
    dialog.showModal();
    input.focus();
  });
}

async function save(status, reason) {
  if (!state.name || !state.detail) return false;
  if (!state.reviewer) await askReviewer();
  if (!state.reviewer) { message('not saved: type your initials first', true); return false; }
  const name = state.name;
  try {
    const data = await api(`/api/save/${enc(name)}`, {
      landmarks: state.points, status: status || 'reviewed', reason: reason || null,
      reviewer: state.reviewer, calibration: calibrationBody(state.calibration) });
    delete state.edits[name];
    state.images = data.images;
    if (state.name === name) {
      state.detail = data.detail;
      state.points = copyPoints(data.detail.points);
      state.calibration = data.detail.calibration;
      renderTitle();
      updateCanvas();
      renderLandmarkList();
      renderMeasurements(data.detail.measurements, data.detail.marks, data.detail.mm_per_pixel,
        data.detail.certainty);
      renderReportLink();
    }
    renderImageList();
    message(`saved ${data.saved} (${data.detail.status})`);
    return true;
  } catch (error) {
    message(`not saved: ${error.message}`, true);
    return false;
  }
}

async function saveAndNext() {
  const current = state.name;
  if (!(await save())) return;
  const next = state.images.find((i) => i.status === 'to review' && i.name !== current);
  if (next) openImage(next.name);
  else message('saved; no image left to review');
}

function cannotTrace() {
  if (!state.detail) return;
  const dialog = $('#trace-dialog');
  dialog.returnValue = '';
  dialog.onclose = () => {
    if (dialog.returnValue !== 'ok') return;
    const choice = $('#trace-reason').value;
    const reason = choice === 'other' ? $('#trace-other').value.trim() : choice;
    if (!reason) { message('not saved: give a reason', true); return; }
    save('cannot trace', reason);
  };
  dialog.showModal();
}

function step(delta) {
  const names = state.images.filter((i) => i.status !== 'predicting').map((item) => item.name);
  if (!names.length) return;
  const index = names.indexOf(state.name);
  // The list wraps around: after saving, the image moves to the end among the reviewed ones.
  const next = names[(index + delta + names.length) % names.length];
  if (next !== state.name) openImage(next);
}

// ---- zoom -----------------------------------------------------------------------------------------------
function setZoom(zoom, anchor) {
  // Zoom keeping the image point under `anchor` (client coordinates) where it is on the screen;
  // no anchor: the selected point, else the middle of the view.
  if (!state.detail) return;
  const viewer = $('#viewer');
  const rect = viewer.getBoundingClientRect();
  let screenPoint;
  if (anchor) screenPoint = [anchor.clientX, anchor.clientY];
  else if (state.selected >= 0 && state.points[state.selected]) {
    screenPoint = toScreen(...state.points[state.selected]);
    if (screenPoint[0] < rect.left || screenPoint[0] > rect.right ||
        screenPoint[1] < rect.top || screenPoint[1] > rect.bottom) {
      screenPoint = [rect.left + rect.width / 2, rect.top + rect.height / 2];
    }
  } else screenPoint = [rect.left + viewer.clientWidth / 2, rect.top + viewer.clientHeight / 2];
  const imagePoint = anchor || state.selected < 0 || !state.points[state.selected]
    ? toImage({ clientX: screenPoint[0], clientY: screenPoint[1] }) : state.points[state.selected];
  state.zoom = Math.min(Math.max(zoom, minZoom()), 40);
  updateCanvas();
  const [nx, ny] = toScreen(...imagePoint);
  viewer.scrollLeft += nx - screenPoint[0];
  viewer.scrollTop += ny - screenPoint[1];
}

function fitScale() {
  const viewer = $('#viewer');
  const [w, h] = state.detail.size;
  return Math.min((viewer.clientWidth - 16) / w, (viewer.clientHeight - 16) / h);
}

function minZoom() {
  return Math.min(fitScale() / 2, 0.5);
}

function fitZoom() {
  state.zoom = Math.max(fitScale(), 0.001);
  updateCanvas();
}

// ---- help ---------------------------------------------------------------------------------------------------
function openHelp() {
  const help = $('#help');
  help.showModal();
  help.scrollTop = 0;     // the key list first
}

function buildHelp() {
  const body = $('#definitions tbody');
  body.replaceChildren();
  state.session.help.forEach((item, i) => {
    const tr = document.createElement('tr');
    for (const text of [String(i + 1), item.name + (item.estimated ? ' (estimate)' : ''),
                        item.definition || '']) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    body.append(tr);
  });
}

// ---- keyboard ---------------------------------------------------------------------------------------------
function onKey(event) {
  if (document.querySelector('dialog[open]')) return;
  if (event.target.closest('input, textarea, select')) return;
  const key = event.key;
  if (key === '?' || key === 'h') { openHelp(); return; }
  if (!state.detail) return;
  const ctrl = event.ctrlKey || event.metaKey;
  if (ctrl && key.toLowerCase() === 'z') { event.preventDefault(); undo(); return; }
  if (ctrl && key.toLowerCase() === 's') { event.preventDefault(); save(); return; }
  if (ctrl || event.altKey) return;
  const onButton = event.target.closest('button, a');
  if (key === ' ' && !onButton) {
    event.preventDefault();
    state.space = true;
    $('#viewer').classList.add('space');
    return;
  }
  if (state.digits && !/^[0-9]$/.test(key)) commitDigits();   // '1' then an arrow: landmark 1
  const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  if (key in arrows) {
    event.preventDefault();
    const size = event.shiftKey ? 10 : 1;
    nudge(arrows[key][0] * size, arrows[key][1] * size);
  } else if (key === '0' && !state.digits) {
    fitZoom();
  } else if (/^[0-9]$/.test(key)) {
    selectByDigit(key);
  } else if (key === 'n' || key === 'PageDown' || key === ']') {
    event.preventDefault(); step(1);
  } else if (key === 'p' || key === 'PageUp' || key === '[') {
    event.preventDefault(); step(-1);
  } else if (key === 'Enter' && !onButton) {
    event.preventDefault(); saveAndNext();
  } else if (key === 'u') {
    undo();
  } else if (key === 's') {
    save();
  } else if (key === 'r') {
    resetToModel();
  } else if (key === 'v') {
    toggleVisible();
  } else if (key === 'c') {
    cycleOverlap();
  } else if (key === 'k') {
    startCalibration();
  } else if (key === '+' || key === '=') {
    setZoom(state.zoom * ZOOM_STEP);
  } else if (key === '-') {
    setZoom(state.zoom / ZOOM_STEP);
  } else if (key === 'Escape') {
    if (state.calibrating) { stopCalibration(); message('calibration left'); return; }
    select(-1); message('');
  }
}

function onKeyUp(event) {
  if (event.key === ' ') { state.space = false; $('#viewer').classList.remove('space'); }
}

function commitDigits() {
  clearTimeout(state.digitTimer);
  const n = Number(state.digits);
  state.digits = '';
  if (n >= 1 && n <= state.session.landmarks.length) select(n - 1);
  else message(`no landmark ${n}`, true);
}

function selectByDigit(digit) {
  const count = state.session.landmarks.length;
  clearTimeout(state.digitTimer);
  state.digits += digit;
  const number = Number(state.digits);
  // Commit at once when no further digit could make a valid number; otherwise wait briefly (or
  // until the next key that is not a digit).
  if (number * 10 > count || state.digits.length >= String(count).length) commitDigits();
  else state.digitTimer = setTimeout(commitDigits, 700);
}

// ---- start ------------------------------------------------------------------------------------------------
function on(action, handler) {
  document.querySelector(`[data-action="${action}"]`).addEventListener('click', handler);
}

async function start() {
  document.addEventListener('keydown', onKey);
  document.addEventListener('keyup', onKeyUp);
  on('save', () => save());
  on('save-next', saveAndNext);
  on('cannot-trace', cannotTrace);
  on('undo', undo);
  on('reset', resetToModel);
  on('not-visible', toggleVisible);
  on('calibrate', startCalibration);
  on('reviewer', askReviewer);
  on('help', openHelp);
  on('zoom-in', () => setZoom(state.zoom * ZOOM_STEP));
  on('zoom-out', () => setZoom(state.zoom / ZOOM_STEP));
  on('zoom-fit', fitZoom);
  for (const button of document.querySelectorAll('dialog [data-close]')) {
    button.addEventListener('click', () => button.closest('dialog').close('cancel'));
  }
  const viewer = $('#viewer');
  viewer.addEventListener('pointerdown', onPointerDown);
  viewer.addEventListener('pointerup', onPointerUp);
  viewer.addEventListener('pointercancel', onPointerUp);
  viewer.addEventListener('wheel', (event) => {
    if (!state.detail) return;
    event.preventDefault();
    // A sideways swipe or Shift+wheel pans; the wheel (or a trackpad pinch: ctrl) zooms.
    if (!event.ctrlKey && (event.shiftKey || Math.abs(event.deltaX) > Math.abs(event.deltaY))) {
      viewer.scrollLeft += event.shiftKey ? event.deltaY : event.deltaX;
      return;
    }
    const factor = Math.exp(-event.deltaY * (event.ctrlKey ? 0.01 : 0.0015));
    setZoom(state.zoom * Math.min(Math.max(factor, 0.5), 2), event);
  }, { passive: false });
  window.addEventListener('beforeunload', (event) => {
    if (Object.keys(state.edits).length) { event.preventDefault(); event.returnValue = ''; }
  });
  renderReviewer();
  try {
    state.session = await api('/api/session');
    state.images = state.session.images;
    state.progress = state.session.progress;
    buildHelp();
    renderImageList();
    if (!state.reviewer) askReviewer();
    const first = state.images.find((i) => i.status !== 'predicting');
    if (first) await openImage(first.name);
    else {
      $('#waiting').hidden = false;
      $('#waiting').textContent = 'predicting the first photos\u2026';
    }
    pollImages();
  } catch (error) {
    message(error.message, true);
  }
}

// For tests and the console: set every point at once (an undoable edit), image <-> screen.
function setPoints(points) {
  pushUndo();
  state.points = copyPoints(points);
  changed(performance.now());
  renderLandmarkList();
  renderImageList();
}

window.review = { setZoom, fitZoom, openImage, save, select, setPoints, toScreen, toImage, loadPhoto };
start();

// A landmark to check: the server says so (low score, or a 90% radius wider than the review
// radius when the model has an error calibration); older servers sent scores only.
function unsure(i, score, threshold) {
  return state.detail.unsure ? state.detail.unsure[i] : score < threshold;
}
