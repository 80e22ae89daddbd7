// What every browser test needs, in one place: web/serve.mjs on a free port, Debian's chromium through
// playwright-core (installs nothing: without /usr/bin/chromium the tests skip with SKIP_NO_CHROMIUM), the page's
// error log, and the waits on the page's state (window.__bnlab, the status line's data-state).
// Not a test file: `node --test tests/browser/` runs only *.test.mjs.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// screenshots (gitignored)
export const ARTIFACTS = path.join(ROOT, 'tests', 'artifacts');
export const CHROMIUM = '/usr/bin/chromium';
// a test's skip reason when chromium is missing, false when it is there
export const SKIP_NO_CHROMIUM = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (tests/build.sh installs it)`;
// the default wait for the page (a run on a 2-core machine under load)
export const WAIT = 120_000;

export const tid = (id) => `[data-testid="${id}"]`;

// Starts web/serve.mjs --port 0 (env added to this process's); resolves { proc, url } once it prints its URL.
// Its stderr is passed through and also quoted in the error if it exits or prints no URL within 30 s.
export function startServer(env = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [path.join(ROOT, 'web', 'serve.mjs'), '--port', '0'],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    const timer = setTimeout(() => reject(new Error(`serve.mjs printed no URL: ${out}`)), 30_000);
    p.stdout.on('data', (d) => {
      out += d;
      const m = /bnlab demo: (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
      if (m) { clearTimeout(timer); resolve({ proc: p, url: m[1] }); }
    });
    p.stderr.on('data', (d) => { out += d; process.stderr.write(d); });
    p.on('exit', (code) => { clearTimeout(timer); reject(new Error(`serve.mjs exited with ${code}: ${out}`)); });
  });
}

// Headless chromium with nothing in the background (no network but the test server); makes ARTIFACTS.
export async function launchBrowser() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--disable-quic', '--no-first-run'],
  });
}

// For after(): closes the browser and stops the servers (any of them may be undefined: skipped or failed before()).
export async function shutDown(browser, ...servers) {
  if (browser) await browser.close();
  for (const s of servers) if (s) s.kill();
}

// Appends the page's uncaught exceptions (and, unless console is false, its console.error lines) to errors;
// returns errors. Tests end with assert.deepEqual(errors, []).
export function collectErrors(page, errors = [], { console = true } = {}) {
  if (console) page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  return errors;
}

// A new tab (1280 x 900 unless options say otherwise; the other options go to browser.newPage) on url, once the
// page has loaded its first model; errors: a list for collectErrors (consoleErrors false: exceptions only).
export async function openPage(browser, url, { errors, consoleErrors = true, timeout = WAIT, ...options } = {}) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, ...options });
  if (errors) collectErrors(page, errors, { console: consoleErrors });
  await page.goto(url);
  await waitLoaded(page, timeout);
  return page;
}

// The page's module has started and loaded its first model (window.__bnlab.ready).
export const waitLoaded = (page, timeout = WAIT) =>
  page.waitForFunction(() => window.__bnlab && window.__bnlab.ready, null, { timeout });
// The status line says ready: no job running.
export const waitReady = (page, timeout = WAIT) =>
  page.waitForFunction(() => document.querySelector('[data-testid="status"]').dataset.state === 'ready', null, { timeout });

// Does `action` and waits for the run it causes (window.__bnlab.runs moves) and for the page to be ready again;
// resolves the run's summary, window.__bnlab.last.
export async function runAfter(page, action) {
  const n = await page.evaluate(() => window.__bnlab.runs);
  await action();
  await page.waitForFunction((k) => window.__bnlab.runs > k, n, { timeout: WAIT });
  await waitReady(page);
  return page.evaluate(() => window.__bnlab.last);
}

// Fills the plots that need jobs of their own: the 1/sqrt(B) sweep (K = 4, B up to 32) and three
// "train here" steps, each waited for until the page is ready again.
export async function fillSweepAndSteps(page) {
  await page.selectOption('#spread-k', '4');
  await page.selectOption('#spread-max', '32');
  await page.click('#spread-run');
  await page.waitForFunction(() => window.__bnlab.spread && window.__bnlab.spread.points.length === 6, null, { timeout: WAIT });
  await waitReady(page);
  await page.fill('#train-steps', '3');
  await page.click('#train-start');
  await page.waitForFunction(() => window.__bnlab.train.length === 3, null, { timeout: WAIT });
  await waitReady(page);
}
