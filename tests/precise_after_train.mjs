// Measures what the page's PreciseBN does to held-out accuracy on the default (Fashion-MNIST) model, as it
// loads and after "train here" (issue 17: "explain when recomputing helps"). Drives the page in headless
// chromium and prints the PreciseBN panel's text (accuracies with 95 % intervals on the held-out 2,000).
//   node tests/precise_after_train.mjs [--steps 60] [--lr 0.05]
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name, def) => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? process.argv[i + 1] : def; };
const steps = arg('steps', '60'), lr = arg('lr', '0.05');
const server = spawn(process.execPath, [path.join(ROOT, 'web', 'serve.mjs'), '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
const url = await new Promise((res) => { let o = ''; server.stdout.on('data', (d) => { o += d; const m = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(o); if (m) res(m[1]); }); });
const { chromium } = await import('playwright-core');
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu'] });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const idle = () => page.waitForFunction(() => window.__bnlab && window.__bnlab.ready && document.querySelector('[data-testid="status"]').dataset.state === 'ready' &&
    !document.getElementById('precise-run').disabled, null, { timeout: 600_000 });
  await page.goto(url);
  await idle();
  const precise = async (what) => {
    await page.click('#precise-run');
    await page.waitForFunction(() => document.getElementById('precise-panel').dataset.accN, null, { timeout: 600_000 });
    await idle();
    console.log(`${what}: ${await page.textContent('#precise-acc')}`);
  };
  await precise('as loaded');
  await page.click('#reset-model');
  await idle();
  await page.fill('#train-steps', steps);
  await page.fill('#train-lr', lr);
  await page.click('#train-start');
  await page.waitForFunction(() => document.getElementById('train-readout').textContent.includes('SGD steps'), null, { timeout: 600_000 });
  await idle();
  console.log(`train here: ${await page.textContent('#train-readout')}`);
  await precise(`after ${steps} steps of train here (lr ${lr})`);
} finally {
  await browser.close();
  server.kill();
}
