// jobs.mjs: the page's client of web/worker.mjs, and its status line.
//
// The page asks the worker for one thing at a time (a queue), except `stop`, which goes straight
// through. call(cmd, args, { label, onProgress, transfer }) queues one command; its label and the
// worker's progress phases show in the status line (data-testid="status") with the time taken.
// initJobs(hooks) wires it: hooks.restart() reloads the model into a fresh worker after a cancel,
// hooks.onCancel() drops what the page had queued, hooks.readyText() is the status text of "ready".

const $ = (id) => document.getElementById(id);
let H = { restart: async () => {}, onCancel: () => {}, readyText: () => 'ready', debug: { errors: [] } };
export function initJobs(hooks) { H = { ...H, ...hooks }; }

// One worker at a time. "cancel" asks a long job (spread, PreciseBN, train) to stop after its current
// batch; one that does not within a second and a half, and any other job (one forward cannot be
// interrupted), is ended by terminating the worker, and a new one is started with the same model file
// and photos. Jobs queued behind it wait for that restart.
let worker = null;
const pending = new Map();
let nextId = 1;
let queue = Promise.resolve();
let outstanding = 0;
export const outstandingJobs = () => outstanding;
export const currentJob = () => current;
let workerReady = Promise.resolve();
let generation = 0;        // bumped by every cancel
let current = null;        // the job the worker is running: { id, label, t0, est, phase }

function startWorker() {
  worker = new Worker(new URL('./worker.mjs', import.meta.url), { type: 'module' });
  worker.onmessage = (ev) => {
    const { id, ok, result, error, progress } = ev.data;
    const p = pending.get(id);
    if (!p) return;
    if (progress !== undefined) return p.onProgress && p.onProgress(progress);
    pending.delete(id);
    if (ok) p.resolve(result);
    else p.reject(Object.assign(new Error(error), { stopped: !!ev.data.stopped }));
  };
  worker.onerror = (ev) => {
    ev.preventDefault();
    setStatus('error', `error: the worker failed: ${ev.message || 'could not start (is bnlab.wasm built?)'}`);
  };
}
startWorker();

// Posts straight to the worker (no queue): used by the queue and by a restart.
export function post(cmd, args, { onProgress, transfer } = {}) {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject, onProgress });
    worker.postMessage({ id, cmd, args }, transfer || []);
  });
}

// Sends one command after the previous ones have finished. `label` is shown in the status line,
// with the time it has taken (and the estimate, when the job gives one) while it runs.
export function call(cmd, args, { label, onProgress, transfer } = {}) {
  outstanding++;
  const gen = generation;
  const job = queue.then(async () => {
    await workerReady;
    // a cancel drops what was queued before it, not only the running job
    if (gen !== generation) throw Object.assign(new Error('cancelled'), { cancelled: true });
    const me = { label: label || `busy: ${cmd}…`, t0: performance.now(), est: 0, phase: null, cmd };
    current = me;
    if (label) setStatus('busy', label);
    showBusy();
    try {
      const answer = post(cmd, args, {
        transfer,
        onProgress: (p) => {
          if (p && p.phase) { me.phase = p.phase; me.est = p.est || 0; me.phaseT0 = performance.now(); showBusy(); }
          if (onProgress) onProgress(p);
        },
      });
      // stopped while it waited in the queue: the stop follows the command (the worker reads it after
      // the job's first batch; sent earlier, it would have ended the job before it)
      if (stopPending === cmd) { stopPending = null; stopWorker(); }
      return await answer;
    } finally {
      if (current === me) current = null;
      showBusy();
    }
  });
  const settle = () => { outstanding--; };
  queue = job.then(settle, settle);
  return job;
}
export const stopWorker = () => worker.postMessage({ cmd: 'stop' });
// Asks the long job `cmd` (spread, precise, train) to stop after its current batch: at once if it
// runs, else as soon as it starts (the page queues it behind the job before it, e.g. the channel view).
let stopPending = null;
export function stopJob(cmd) {
  if (current && current.cmd === cmd) stopWorker();
  else stopPending = cmd;
}

// The busy line: what runs, for how long, against its estimate; the cancel button while it runs.
let busyTimer = 0;
function showBusy() {
  const btn = $('cancel'), bar = $('busy-bar');
  if (!current) {
    clearInterval(busyTimer);
    busyTimer = 0;
    btn.hidden = true;
    bar.hidden = true;
    return;
  }
  btn.hidden = false;
  btn.disabled = false;
  if (!busyTimer) busyTimer = setInterval(showBusy, 250);
  const t = (performance.now() - current.t0) / 1000;
  statusEl.dataset.tick = String(Math.floor(t * 2) % 2);   // the busy dot: on for 0.5 s, dim for 0.5 s
  if (current.phase) {
    const pt = (performance.now() - (current.phaseT0 || current.t0)) / 1000;
    setStatus('busy', `busy: ${current.phase} · ${pt.toFixed(1)} s${current.est ? ` of ~${(current.est / 1000).toFixed(1)} s` : ''}`);
    bar.hidden = !current.est;
    if (current.est) bar.value = Math.min(0.99, (pt * 1000) / current.est);
  } else if (t > 1 && statusEl.dataset.state === 'busy') {
    statusEl.textContent = `${current.label.replace(/ · [\d.]+ s$/, '')} · ${t.toFixed(1)} s`;
  }
}

// Jobs that check for `stop` between their batches; the others are one uninterruptible computation.
const STOPPABLE = new Set(['spread', 'precise', 'train']);
export async function cancelJob() {
  const job = current;
  if (!job) return;
  $('cancel').disabled = true;
  generation++;
  stopPending = null;
  H.onCancel();   // and the batch requested while this one ran
  if (STOPPABLE.has(job.cmd)) {
    stopWorker();
    await new Promise((r) => setTimeout(r, 1500));
    if (current !== job) return;   // it stopped by itself
  }
  worker.terminate();
  for (const p of pending.values()) p.reject(Object.assign(new Error('cancelled'), { cancelled: true }));
  pending.clear();
  current = null;
  showBusy();
  const lost = H.modelModified && H.modelModified();
  startWorker();
  workerReady = (async () => {
    setStatus('busy', 'cancelled: restarting WebAssembly…');
    await post('init', {});
    await H.restart();   // the model file and the user's photos again
  })();
  try {
    await workerReady;
    setStatus('ready', `ready · cancelled ${job.cmd === 'run' ? 'the batch' : job.cmd}${lost ? ' (the model was reloaded from its file: changes made in this tab are gone)' : ''}`);
    H.debug.cancelled = (H.debug.cancelled || 0) + 1;
  } catch (e) {
    fail('restart after cancel', e);
  }
}

// ---- status -----------------------------------------------------------------------------------
const statusEl = $('status') || document.querySelector('[data-testid="status"]');
export function setStatus(state, text) {
  statusEl.dataset.state = state;
  statusEl.textContent = text;
  statusEl.title = text;
}
export function ready() {
  if (outstanding === 0) setStatus('ready', H.readyText());
}
// An error shows in the status line and, until dismissed, beside the control that caused it
// (where: 'model', 'batch', 'images', 'spread', 'train', 'precise'): a later job's "ready" does not
// hide it, and it is in view where the user acted.
export function fail(what, e, where = 'model') {
  if (e && e.cancelled) return;   // cancelJob says what happened
  const msg = e && e.message ? e.message : String(e);
  H.debug.errors.push(`${what}: ${msg}`);
  setStatus('error', `error: ${what}: ${msg}`);
  showError(where, `${what}: ${msg}`);
}
export function showError(where, text) {
  const box = $(`err-${where}`) || $('err-model');
  const line = document.createElement('div');
  line.className = 'error-line';
  const t = document.createElement('span');
  t.textContent = text;
  const x = document.createElement('button');
  x.type = 'button';
  x.className = 'dismiss';
  x.textContent = '×';
  x.title = x.ariaLabel = 'dismiss this error';
  x.addEventListener('click', () => { line.remove(); box.hidden = !box.children.length; });
  line.append(t, x);
  box.append(line);
  box.hidden = false;
}
