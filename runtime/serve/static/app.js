// The stmae-serve page. Open a video file, image files (frames in name order) or the webcam;
// paint the objects of the first frame (brush, eraser, a GrabCut box); Run streams the frames
// over WS /v1/sessions/{id}/stream and draws each returned label map over its frame; Pause,
// correct or add objects, Continue; Download zips the label maps. Wire protocol: docs/serve.md.
// Label maps are Uint8Array(width * height): 0 background, 1..254 objects, 255 void.
'use strict';

const $ = (id) => document.getElementById(id);
const PALETTE = davisPalette();
const VOID = 255;
const MAX_IN_FLIGHT = 4;  // frames sent but not yet answered (at most the server's queue_depth)
const TOKEN_KEY = 'stmae-serve-token';
const canvas = $('view');
const scratch = document.createElement('canvas');

const state = {
  source: null,         // {kind, count, name(i), read(i) -> Promise<ImageData>}
  index: -1,            // the frame on the canvas
  frame: null,          // its pixels (ImageData)
  labels: null,         // the label map on the canvas: the mask being painted, or the last result
  objects: [1], current: 1,
  touched: new Set(),   // objects edited by hand since the last result (sent as a correction)
  session: null, ws: null, running: false, paused: false, finishing: false,
  next: 0, end: 0,      // the next frame to send; frames from `end` on are not sent
  window: 2,            // frames in flight at most
  inFlight: new Map(),  // frame index -> {sent: ms, frame: ImageData}
  sent: [],             // the frame index of each frame sent on the stream, by its "sequence" there
  pingMs: 20000,        // while paused, a ping this often keeps the session from the idle timeout
  pinger: null,
  correction: null,     // {index, png}: a mask sent just before frame `index`
  header: null,         // the JSON of the result whose label map comes next
  display: Promise.resolve(),
  results: new Map(),   // frame index -> PNG bytes of its label map
  arrivals: [],         // times of the last results (frames/s)
};

// ---- messages, modes, token -------------------------------------------------------------

function say(text) { $('message').textContent = text; }

function setMode(mode, text) {
  document.body.dataset.state = mode;
  $('state').textContent = text;
  const enable = { run: mode === 'ready', pause: mode === 'running', continue: mode === 'paused',
                   stop: mode === 'running' || mode === 'paused',
                   download: ['paused', 'done', 'failed'].includes(mode) && state.results.size > 0 };
  for (const [id, on] of Object.entries(enable)) $(id).disabled = !on;
}

function token() { return $('token').value.trim(); }
function authHeaders() { return token() ? { Authorization: `Bearer ${token()}` } : {}; }

async function refusal(response) {  // the server's one-line reason
  try { return `${response.status}: ${(await response.json()).error.message}`; }
  catch { return `${response.status} ${response.statusText}`; }
}

async function serverInfo() {
  const response = await fetch('/v1/info', { headers: authHeaders() });
  if (!response.ok) { $('server-info').textContent = `server: ${await refusal(response)}`; return null; }
  const info = await response.json();
  const model = info.model || {};
  $('server-info').textContent = `model ${model.name || '?'} (${model.backend || '?'})`;
  return info;
}

// ---- frame sources -----------------------------------------------------------------------

function pad(i) { return String(i).padStart(5, '0'); }

function once(target, event) {  // the next `event` of a media element (or its error)
  return new Promise((resolve, reject) => {
    const done = (error) => {
      target.removeEventListener(event, ok);
      target.removeEventListener('error', bad);
      if (error) reject(new Error(`cannot read the video (${event})`)); else resolve();
    };
    const ok = () => done(false), bad = () => done(true);
    target.addEventListener(event, ok);
    target.addEventListener('error', bad);
  });
}

function pixels(image, width, height) {  // any drawable -> ImageData of its pixels
  scratch.width = width; scratch.height = height;
  const context = scratch.getContext('2d', { willReadFrequently: true });
  context.drawImage(image, 0, 0, width, height);
  return context.getImageData(0, 0, width, height);
}

function imageSource(files) {
  const collator = new Intl.Collator(undefined, { numeric: true });
  const sorted = [...files].sort((a, b) => collator.compare(a.name, b.name));
  return {
    kind: 'frames', count: sorted.length,
    name: (i) => sorted[i].name.replace(/\.[^.]*$/, ''),
    async read(i) {  // the stored pixels: no colour management, no premultiplication
      const bitmap = await createImageBitmap(sorted[i], { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
      try { return pixels(bitmap, bitmap.width, bitmap.height); } finally { bitmap.close(); }
    },
  };
}

function stopWebcam(video) {
  if (video.srcObject) for (const track of video.srcObject.getTracks()) track.stop();
  video.srcObject = null;
}

async function videoSource(file) {
  const video = $('video'), fps = Number($('video-fps').value) || 25;
  stopWebcam(video);
  video.src = URL.createObjectURL(file);
  await once(video, 'loadedmetadata');
  return {
    kind: 'video', count: Math.max(1, Math.floor(video.duration * fps)), name: pad,
    async read(i) {  // seek to the middle of frame i
      const time = Math.min((i + 0.5) / fps, video.duration);
      if (video.currentTime !== time) { video.currentTime = time; await once(video, 'seeked'); }
      return pixels(video, video.videoWidth, video.videoHeight);
    },
  };
}

async function webcamSource() {
  const video = $('video');
  video.removeAttribute('src');
  video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  await video.play();
  return { kind: 'webcam', count: Infinity, name: pad,
           read: async () => pixels(video, video.videoWidth, video.videoHeight) };
}

async function openSource(make) {
  if (state.running) return say('stop the running session first');
  try {
    setMode('loading', 'loading...');
    const source = await make();
    if (!source.count) throw new Error('no frames');
    Object.assign(state, { source, index: 0, frame: await source.read(0), results: new Map(), objects: [1],
                           current: 1, touched: new Set(), correction: null });
    state.labels = new Uint8Array(state.frame.width * state.frame.height);
    $('frame-count').textContent = source.count === Infinity ? 'live' : source.count;
    $('frame-index').textContent = 0;
    showObjects(); render(); say('');
    setMode('ready', 'paint the objects of the first frame, then Run');
  } catch (err) {
    state.source = null;
    setMode('idle', 'open a video, frames or the webcam');
    say(`cannot open it: ${err.message}`);
  }
}

// ---- drawing -----------------------------------------------------------------------------

function render(box = null) {  // the frame, each object's pixels blended half with its colour
  const { width, height, data } = state.frame;
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  const out = new ImageData(width, height), px = out.data, labels = state.labels;
  for (let i = 0, j = 0; i < labels.length; i++, j += 4) {
    const k = labels[i];
    for (let c = 0; c < 3; c++) px[j + c] = k === 0 || k === VOID ? data[j + c] : (data[j + c] + PALETTE[3 * k + c] + 1) >> 1;
    px[j + 3] = 255;
  }
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.putImageData(out, 0, 0);
  if (box) { context.strokeStyle = '#ff0'; context.strokeRect(box[0] + 0.5, box[1] + 0.5, box[2] - box[0] - 1, box[3] - box[1] - 1); }
}

function colour(k) { return `rgb(${PALETTE[3 * k]}, ${PALETTE[3 * k + 1]}, ${PALETTE[3 * k + 2]})`; }

function showObjects() {
  $('objects').replaceChildren(...state.objects.map((k) => {
    const button = document.createElement('button');
    Object.assign(button, { type: 'button', id: `object-${k}`, textContent: k, title: `object ${k}`,
                            className: `object${k === state.current ? ' current' : ''}` });
    button.style.background = colour(k);
    button.onclick = () => { state.current = k; showObjects(); };
    return button;
  }));
}

function tool() { return document.querySelector('input[name="tool"]:checked').value; }
function editable() { return state.frame && (document.body.dataset.state === 'ready' || document.body.dataset.state === 'paused'); }

function toPixel(event) {  // pointer position -> frame pixel coordinates (the canvas is scaled by CSS)
  const rect = canvas.getBoundingClientRect();
  return [(event.clientX - rect.left) * canvas.width / rect.width, (event.clientY - rect.top) * canvas.height / rect.height];
}

function paintDisc(cx, cy, radius, value) {
  const { width, height } = state.frame, labels = state.labels;
  for (let y = Math.max(0, Math.floor(cy - radius)); y <= Math.min(height - 1, Math.floor(cy + radius)); y++) {
    for (let x = Math.max(0, Math.floor(cx - radius)); x <= Math.min(width - 1, Math.floor(cx + radius)); x++) {
      if ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 > radius * radius) continue;
      if (!value && labels[y * width + x]) state.touched.add(labels[y * width + x]);  // erased from it
      labels[y * width + x] = value;
    }
  }
}

function paintLine(from, to) {  // brush: the current object (over any other); eraser: background
  const radius = Math.max(0.75, Number($('brush-size').value) / 2);
  const value = tool() === 'eraser' ? 0 : state.current;
  if (value) state.touched.add(value);
  const steps = Math.max(1, Math.ceil(Math.hypot(to[0] - from[0], to[1] - from[1]) / (radius / 2)));
  for (let s = 0; s <= steps; s++) {
    paintDisc(from[0] + (to[0] - from[0]) * s / steps, from[1] + (to[1] - from[1]) * s / steps, radius, value);
  }
}

function boxOf(a, b) {  // two corners -> [x0, y0, x1, y1] inside the frame, x1/y1 exclusive
  const { width, height } = state.frame;
  const clampX = (v) => Math.min(width, Math.max(0, v)), clampY = (v) => Math.min(height, Math.max(0, v));
  return [Math.floor(clampX(Math.min(a[0], b[0]))), Math.floor(clampY(Math.min(a[1], b[1]))),
          Math.ceil(clampX(Math.max(a[0], b[0]))), Math.ceil(clampY(Math.max(a[1], b[1])))];
}

let drag = null;
canvas.addEventListener('pointerdown', (event) => {
  if (!editable() || event.button !== 0) return;
  canvas.setPointerCapture(event.pointerId);
  const point = toPixel(event);
  drag = { start: point, last: point };
  if (tool() !== 'box') { paintLine(point, point); render(); }
});
canvas.addEventListener('pointermove', (event) => {
  if (!drag) return;
  const point = toPixel(event);
  if (tool() === 'box') render(boxOf(drag.start, point)); else { paintLine(drag.last, point); render(); }
  drag.last = point;
});
canvas.addEventListener('pointerup', (event) => {
  if (!drag) return;
  const start = drag.start;
  drag = null;
  if (tool() === 'box') grabcut(boxOf(start, toPixel(event)));
});
canvas.addEventListener('pointercancel', () => { drag = null; render(); });

// ---- bytes to the server -----------------------------------------------------------------

function encodeFrame(frame, type) {  // ImageData -> Blob (PNG: exact pixels; JPEG: quality 0.9)
  scratch.width = frame.width; scratch.height = frame.height;
  scratch.getContext('2d').putImageData(frame, 0, 0);
  return new Promise((resolve, reject) => scratch.toBlob(
    (blob) => (blob ? resolve(blob) : reject(new Error('the browser cannot encode the frame'))), type, 0.9));
}

function pngBlob(bytes) { return new Blob([bytes], { type: 'image/png' }); }

async function grabcut([x0, y0, x1, y1]) {
  if (x1 - x0 < 2 || y1 - y0 < 2) { render(); return say('drag a box around the object'); }
  const { width, height } = state.frame, labels = state.labels, k = state.current;
  const hint = labels.map((v) => (v === k ? 1 : v ? 2 : 0));  // this object: object; others: background
  const form = new FormData();
  form.append('frame', await encodeFrame(state.frame, 'image/png'), 'frame.png');
  form.append('box', `${x0},${y0},${x1},${y1}`);
  if (hint.some((v) => v)) form.append('mask', pngBlob(await encodePng(hint, width, height)), 'hint.png');
  $('state').textContent = 'asking GrabCut...';
  const response = await fetch('/v1/grabcut', { method: 'POST', headers: authHeaders(), body: form });
  if (!response.ok) { render(); return say(`GrabCut: ${await refusal(response)}`); }
  const proposal = (await decodePng(new Uint8Array(await response.arrayBuffer()))).labels;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (proposal[i] && (labels[i] === 0 || labels[i] === k)) labels[i] = k;
      else if (!proposal[i] && labels[i] === k && x >= x0 && x < x1 && y >= y0 && y < y1) labels[i] = 0;
    }
  }
  state.touched.add(k);
  render(); say('');
  $('state').textContent = 'GrabCut proposal: correct it with the brush and eraser';
}

// ---- a session ---------------------------------------------------------------------------

async function run() {
  if (!state.labels.some((v) => v !== 0 && v !== VOID)) return say('paint at least one object on the first frame');
  say('');
  setMode('opening', 'opening a session...');
  const started = performance.now();
  try {
    const info = await serverInfo();
    state.window = Math.max(1, Math.min(MAX_IN_FLIGHT, info?.limits?.queue_depth || 2));
    state.pingMs = Math.max(250, 1000 * (info?.limits?.idle_timeout_s || 60) / 3);
    const { width, height } = state.frame;
    const form = new FormData();
    form.append('frame', await encodeFrame(state.frame, $('frame-format').value), 'frame');
    form.append('mask', pngBlob(await encodePng(state.labels, width, height)), 'mask.png');
    const response = await fetch('/v1/sessions', { method: 'POST', headers: authHeaders(), body: form });
    if (!response.ok) throw new Error(`the server refused the session: ${await refusal(response)}`);
    state.session = (await response.json()).session_id;
  } catch (err) {
    setMode('ready', 'paint the objects of the first frame, then Run');
    return say(err.message);
  }
  // the session's frame 0 is the first frame: its result comes first on the stream
  Object.assign(state, { running: true, paused: false, finishing: false, next: 1, end: state.source.count,
                         inFlight: new Map([[0, { sent: started, frame: state.frame }]]), results: new Map(), sent: [],
                         correction: null, header: null, arrivals: [], touched: new Set() });
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${scheme}//${location.host}/v1/sessions/${encodeURIComponent(state.session)}/stream`);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => { ws.send(JSON.stringify({ type: 'auth', token: token() })); pump(); };
  ws.onmessage = (event) => receive(event.data);
  ws.onclose = (event) => closed(event);
  state.ws = ws;
  clearInterval(state.pinger);
  state.pinger = setInterval(() => {  // paused: nothing else is sent, and an idle session would be closed
    if (state.paused && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'ping' }));
  }, state.pingMs);
  setMode('running', 'running');
}

let pumping = false;
async function pump() {  // send frames until `window` are in flight, the end, or a pause
  if (pumping) return;
  pumping = true;
  try {
    while (state.running && !state.paused && state.next < state.end && state.inFlight.size < state.window &&
           state.ws.readyState === WebSocket.OPEN) {
      const i = state.next++;
      const frame = i === state.index && state.frame ? state.frame : await state.source.read(i);
      const bytes = await (await encodeFrame(frame, $('frame-format').value)).arrayBuffer();
      if (state.correction && state.correction.index === i) {  // applies to the next frame sent
        state.ws.send(JSON.stringify({ type: 'mask' }));
        state.ws.send(state.correction.png);
        state.correction = null;
      }
      state.inFlight.set(i, { sent: performance.now(), frame });
      state.sent.push(i);
      state.ws.send(bytes);
    }
    if (state.running && state.next >= state.end && state.inFlight.size === 0) await finish();
    else if (state.paused && state.inFlight.size === 0 && document.body.dataset.state === 'pausing') await settlePause();
  } catch (err) {
    fail(`cannot send frame ${state.next - 1}: ${err.message}`);
  } finally {
    pumping = false;
  }
}

function receive(data) {
  if (typeof data === 'string') {
    const message = JSON.parse(data);
    if (message.type === 'result') state.header = message;
    else if (message.type === 'error' && message.frame_index != null) {  // that frame is skipped
      say(`frame ${message.frame_index} refused: ${message.message}`);
      if (state.inFlight.delete(message.frame_index)) state.display = state.display.then(pump);
    } else if (message.type === 'error' && state.running && !state.finishing) {  // a refused frame: stop
      const which = message.sequence != null && state.sent[message.sequence] != null
        ? `frame ${state.sent[message.sequence]}` : 'a frame';
      state.display = state.display.then(() => fail(`the server refused ${which}: ${message.message}`));
    }
    return;
  }
  const header = state.header, entry = header && state.inFlight.get(header.frame_index);
  state.header = null;
  if (!entry) return say('a label map came for a frame that was not sent; ignored');
  state.inFlight.delete(header.frame_index);
  const png = new Uint8Array(data);
  state.results.set(header.frame_index, png);
  state.display = state.display.then(() => show(header, entry, png)).then(pump)
    .catch((err) => fail(`cannot show frame ${header.frame_index}: ${err.message}`));
}

async function show(header, entry, png) {
  const { labels } = await decodePng(png);
  const now = performance.now();
  state.arrivals.push(now);
  if (state.arrivals.length > 30) state.arrivals.shift();
  if (state.arrivals.length > 1) {
    $('fps').textContent = ((state.arrivals.length - 1) / ((now - state.arrivals[0]) / 1000)).toFixed(1);
  }
  $('latency').textContent = (now - entry.sent).toFixed(0);
  if (header.latency_ms != null) $('server-latency').textContent = Number(header.latency_ms).toFixed(1);
  for (const k of header.objects || []) if (!state.objects.includes(k)) state.objects.push(k);
  Object.assign(state, { index: header.frame_index, frame: entry.frame, labels, touched: new Set() });
  $('frame-index').textContent = header.frame_index;
  showObjects(); render();
}

function pause() {
  state.paused = true;
  setMode('pausing', 'pausing: waiting for the frames in flight...');
  state.display = state.display.then(pump);
}

async function settlePause() {  // nothing in flight: show the next frame with the last masks to correct
  if (state.next < state.end) {
    state.frame = await state.source.read(state.next);
    state.index = state.next;
    $('frame-index').textContent = state.index;
    render();
  }
  setMode('paused', `paused at frame ${state.index}: correct or add objects, then Continue`);
}

async function resume() {
  if (state.touched.size) {  // the objects edited by hand, as a grey label map for this frame
    const keep = state.labels.map((v) => (state.touched.has(v) ? v : 0));
    state.correction = { index: state.index, png: await encodePng(keep, state.frame.width, state.frame.height) };
  }
  state.paused = false;
  setMode('running', 'running');
  pump();
}

function stop() {
  state.end = Math.min(state.end, state.next);
  state.paused = false;
  setMode('stopping', 'stopping: waiting for the frames in flight...');
  state.display = state.display.then(pump);
}

async function finish() {
  if (state.finishing) return;
  state.finishing = true;
  clearInterval(state.pinger);
  state.ws.send(JSON.stringify({ type: 'close' }));
  state.ws.close(1000);
  const response = await fetch(`/v1/sessions/${encodeURIComponent(state.session)}`, { method: 'DELETE', headers: authHeaders() });
  // the server may have closed it already on {"type": "close"}: 404/409 are fine
  if (!response.ok && ![404, 409].includes(response.status)) say(`closing the session: ${await refusal(response)}`);
  state.running = false;
  setMode('done', `done: ${state.results.size} masks`);
}

function fail(text) {
  state.running = false;
  clearInterval(state.pinger);
  if (state.ws && state.ws.readyState <= WebSocket.OPEN) state.ws.close(1000);
  say(text);
  setMode('failed', 'stopped: see the message');
}

function closed(event) {
  if (!state.running || state.finishing) return;
  fail(event.code === 4401 ? 'the server refused the token (WebSocket closed 4401)'
                           : `the server closed the stream (${event.code} ${event.reason || 'no reason given'})`);
}

// ---- download ----------------------------------------------------------------------------

function download() {
  const indices = [...state.results.keys()].sort((a, b) => a - b);
  const zip = makeZip(indices.map((i) => ({ name: `${state.source.name(i)}.png`, data: state.results.get(i) })));
  const link = Object.assign(document.createElement('a'), { href: URL.createObjectURL(zip), download: 'masks.zip' });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}

// ---- controls ----------------------------------------------------------------------------

$('token').value = sessionStorage.getItem(TOKEN_KEY) || '';
$('token').addEventListener('input', () => sessionStorage.setItem(TOKEN_KEY, token()));
$('token').addEventListener('change', () => serverInfo().catch((err) => say(err.message)));
$('brush-size').addEventListener('input', () => { $('brush-size-value').textContent = $('brush-size').value; });
$('image-files').addEventListener('change', (e) => e.target.files.length && openSource(() => imageSource(e.target.files)));
$('video-file').addEventListener('change', (e) => e.target.files.length && openSource(() => videoSource(e.target.files[0])));
$('webcam').addEventListener('click', () => openSource(webcamSource));
$('add-object').addEventListener('click', () => {
  const k = Math.max(0, ...state.objects) + 1;
  if (k >= VOID) return say('at most 254 objects');
  state.objects.push(k);
  state.current = k;
  showObjects();
});
$('clear-mask').addEventListener('click', () => {
  if (!editable()) return;
  for (const k of state.labels) if (k) state.touched.add(k);
  state.labels.fill(0);
  render();
});
$('run').addEventListener('click', run);
$('pause').addEventListener('click', pause);
$('continue').addEventListener('click', resume);
$('stop').addEventListener('click', stop);
$('download').addEventListener('click', download);
showObjects();
setMode('idle', 'open a video, frames or the webcam');
if (token()) serverInfo().catch(() => {});
window.stmaePage = { state };  // for the browser test and the curious
