// ResNet-50 forward (torchvision architecture, batch 1, 224x224, eval mode) in Node: our wasm build
// (web/bnlab.mjs) against TensorFlow.js's wasm backend (XNNPACK, SIMD; tests/peer_tfjs.mjs) and
// onnxruntime-web's wasm backend (SIMD), on the same weights, all on --threads threads.
//
//   node tests/bench_wasm_vs_ort.mjs [--weights W.safetensors --onnx M.onnx] [--io IO.safetensors]
//                                    [--runs 5] [--warmup 1] [--threads 1] [--relaxed auto|on|off]
//
// Without --weights/--onnx it uses build/bench/resnet50.{safetensors,onnx,io.safetensors}, making
// whatever is missing with Debian's /usr/bin/python3 (torch): a seeded random torchvision resnet50
// with populated running stats (tests/check_resnet50_full.py's make_model), exported to ONNX by
// tests/make_onnx_resnet50.py, which also writes the test batch and torch's logits (--io-out).
// Prints SKIP and exits 0 when that python has no torch.
//
// bnlab runs in two variants where the engine runs relaxed SIMD (node --experimental-wasm-relaxed-simd;
// --relaxed auto, the default): the plain simd128 files and the relaxed-SIMD ones (kernel=
// gemm_4x8__wasmrelaxed), interleaved in the same rounds as the peers; --relaxed on/off: only one.
//
// Output (key=value lines, one bench= line per bnlab variant and peer; threads= says what each side really ran):
//   bench=resnet50.forward.wasm threads=1 ms=<median> peer=tfjs-wasm peer_ms=<median> ratio=<ms/peer_ms> ...
//   bench=resnet50.forward.wasm threads=1 ms=<median> peer=onnxruntime-web peer_ms=<median> ratio=...
//   check=resnet50.logits.wasm_vs_ort max_abs_diff=... max_abs_logit=... ok=1   (and wasm_vs_tfjs)
// Exits 1 when a peer's logits and ours disagree by more than 1e-4 of the largest |logit|.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBnLab, relaxedSimdSupported } from '../web/bnlab.mjs';
import { readSafetensors } from './node/safetensors.mjs';
import { tfjsResNet } from './peer_tfjs.mjs';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const PY = '/usr/bin/python3';
const SIZE = 224, BATCH = 1;
// ms / peer_ms targets (issue 12): 0.8x TF.js wasm, 0.6x onnxruntime-web
const TARGETS = { 'tfjs-wasm': 0.8, 'onnxruntime-web': 0.6 };

function parseArgs(argv) {
  const a = { runs: 5, warmup: 1, threads: 1, relaxed: 'auto' };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) fail(`${k} needs a value`);
      return argv[++i];
    };
    if (k === '--weights') a.weights = val();
    else if (k === '--onnx') a.onnx = val();
    else if (k === '--io') a.io = val();
    else if (k === '--runs') a.runs = Number(val());
    else if (k === '--warmup') a.warmup = Number(val());
    else if (k === '--threads') a.threads = Number(val());
    else if (k === '--relaxed') a.relaxed = val();
    else if (k === '--help' || k === '-h') {
      console.log('usage: node tests/bench_wasm_vs_ort.mjs [--weights W.safetensors --onnx M.onnx] [--io IO.safetensors] [--runs N] [--warmup N] [--threads N] [--relaxed auto|on|off]');
      process.exit(0);
    } else fail(`unknown argument ${k}`);
  }
  if (!!a.weights !== !!a.onnx) fail('give both --weights and --onnx, or neither');
  if (!(Number.isInteger(a.runs) && a.runs >= 1) || !(Number.isInteger(a.warmup) && a.warmup >= 0))
    fail('--runs must be >= 1 and --warmup >= 0');
  if (!(Number.isInteger(a.threads) && a.threads >= 1)) fail('--threads must be an integer >= 1');
  if (!['auto', 'on', 'off'].includes(a.relaxed)) fail('--relaxed must be auto, on or off');
  if (a.relaxed === 'on' && !relaxedSimdSupported()) fail('--relaxed on: this node runs no relaxed SIMD (add --experimental-wasm-relaxed-simd)');
  return a;
}

function fail(msg) {
  console.error(`bench_wasm_vs_ort: error: ${msg}`);
  process.exit(2);
}

// build/bench/resnet50.*: made once, reused afterwards.
function ensureGenerated() {
  const dir = join(ROOT, 'build/bench');
  const W = join(dir, 'resnet50.safetensors'), M = join(dir, 'resnet50.onnx'), IO = join(dir, 'resnet50.io.safetensors');
  if (existsSync(W) && existsSync(M) && existsSync(IO)) return { weights: W, onnx: M, io: IO };
  const probe = spawnSync(PY, ['-c', 'import torch, torchvision'], { encoding: 'utf8' });
  if (probe.status !== 0) {
    console.log(`SKIP bench=resnet50.forward.wasm: ${PY} cannot import torch/torchvision, so the ResNet-50 weights and ` +
      'ONNX export cannot be made; pass --weights W.safetensors --onnx M.onnx');
    process.exit(0);
  }
  mkdirSync(dir, { recursive: true });
  console.log(`# generating ${W}, ${M} and ${IO} with ${PY} (once)`);
  if (!existsSync(W)) {
    // seed 0, running stats from real activations (tests/check_resnet50_full.py); st_io.save is atomic
    const code = [
      'import sys', `sys.path.insert(0, ${JSON.stringify(join(ROOT, 'tests'))})`,
      'from check_resnet50_full import make_model, state_of', 'import st_io',
      `st_io.save(${JSON.stringify(W)}, state_of(make_model(0).eval()))`,
    ].join('\n');
    execFileSync(PY, ['-c', code], { stdio: ['ignore', 'inherit', 'inherit'] });
  }
  execFileSync(PY, [join(ROOT, 'tests/make_onnx_resnet50.py'), M, '--weights', W, '--io-out', IO,
    '--batch', String(BATCH), '--size', String(SIZE)], { stdio: ['ignore', 'inherit', 'inherit'] });
  return { weights: W, onnx: M, io: IO };
}

// The input: the generator's batch when there is one, else a seeded N(0,1) batch.
function makeInput(ioPath) {
  if (ioPath && existsSync(ioPath)) {
    const t = readSafetensors(ioPath).tensors;
    if (t.input && t.input_nchw && t.logits)
      return { nhwc: t.input.data, nchw: t.input_nchw.data, shape: t.input.shape, torchLogits: t.logits.data };
  }
  const shape = [BATCH, SIZE, SIZE, 3], n = shape.reduce((a, b) => a * b, 1);
  let s = 12345;
  const u = () => ((s = (s * 1664525 + 1013904223) >>> 0) + 0.5) / 4294967296;
  const nhwc = new Float32Array(n);
  for (let i = 0; i < n; i++) nhwc[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  const nchw = new Float32Array(n);
  const [N, H, W, C] = shape;
  for (let b = 0; b < N; b++)
    for (let h = 0; h < H; h++)
      for (let w = 0; w < W; w++)
        for (let c = 0; c < C; c++) nchw[((b * C + c) * H + h) * W + w] = nhwc[((b * H + h) * W + w) * C + c];
  return { nhwc, nchw, shape, torchLogits: null };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const maxAbsDiff = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
const maxAbs = (a) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
const f = (v, d = 1) => v.toFixed(d);
const g = (v) => v.toExponential(3);

// Runs every fn `warmup` times, then `runs` rounds of one timed call each (interleaved).
// Each run's process CPU time too (cpu): on one thread every side computes on this thread, so it
// is the work done, which other jobs on the machine disturb much less than the wall time.
async function timeRuns(fns, warmup, runs) {
  const res = fns.map(() => ({ ms: [], cpu: [], out: null }));
  for (let i = 0; i < warmup; i++) for (let j = 0; j < fns.length; j++) res[j].out = await fns[j]();
  for (let i = 0; i < runs; i++)
    for (let j = 0; j < fns.length; j++) {
      // a short idle gap first: a side's pool threads may spin for a while after its call returns
      // (onnxruntime-web's and XNNPACK's do, bnlab's for ~0.1 ms), and must not run into the next
      // side's timing
      await new Promise((r) => setTimeout(r, 30));
      const t0 = performance.now(), c0 = process.cpuUsage();
      res[j].out = await fns[j]();
      const c = process.cpuUsage(c0);
      res[j].ms.push(performance.now() - t0);
      res[j].cpu.push((c.user + c.system) / 1000);
    }
  return res;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const files = args.weights ? { weights: args.weights, onnx: args.onnx, io: args.io } : ensureGenerated();
  if (args.io) files.io = args.io;
  for (const p of [files.weights, files.onnx]) if (!existsSync(p)) fail(`${p} does not exist`);
  const x = makeInput(files.io);

  // ours: the wasm build exactly as a page loads it, eval mode; plain and relaxed SIMD
  const kinds = args.relaxed === 'on' ? [true] : args.relaxed === 'off' || !relaxedSimdSupported() ? [false] : [false, true];
  const weightBytes = new Uint8Array(readFileSync(files.weights));
  const ours = [];   // { lab, model, run }
  for (const relaxed of kinds) {
    const lab = await createBnLab({ threads: args.threads, relaxed });
    const model = lab.loadModel(weightBytes);
    const info = model.info;
    if (info.block !== 'bottleneck' || info.blocks.join(',') !== '3,4,6,3')
      console.log(`# note: ${files.weights} is ${info.block} [${info.blocks}], not ResNet-50`);
    model.eval();
    ours.push({ lab, model, run: () => model.forward(x.nhwc, x.shape) });
  }
  const [N, H, W, C] = x.shape;
  const peers = [];   // { name, run, threads, version, extra }

  // TensorFlow.js wasm backend (XNNPACK)
  const tensors = readSafetensors(files.weights).tensors;
  const tfp = await tfjsResNet(tensors, { threads: args.threads });
  if (tfp.why) console.log(`SKIP peer=tfjs-wasm: ${tfp.why}`);
  else {
    peers.push({ name: 'tfjs-wasm', run: () => tfp.run(x.nhwc, x.shape), threads: tfp.threads, version: tfp.version,
      extra: `peer_binary=${tfp.binary} peer_simd=${tfp.simd ? 1 : 0} peer_multithread=${tfp.multithread ? 1 : 0}` });
    if (tfp.threads !== args.threads)
      console.log(`# note: TF.js ran ${tfp.threads} thread(s), not ${args.threads}`);
  }

  // onnxruntime-web, wasm backend, SIMD
  let ort = null;
  try {
    ort = await import('onnxruntime-web');
  } catch (e) {
    console.log(`SKIP peer=onnxruntime-web: cannot import onnxruntime-web (${e.message}); run npm ci`);
  }
  let session = null;
  if (ort) {
    ort.env.wasm.numThreads = args.threads;
    ort.env.wasm.simd = true;
    session = await ort.InferenceSession.create(new Uint8Array(readFileSync(files.onnx)),
      { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x.nchw, [N, C, H, W]) };
    peers.push({ name: 'onnxruntime-web', run: async () => (await session.run(feeds))[session.outputNames[0]].data,
      threads: ort.env.wasm.numThreads, version: ort.env.versions?.web ?? '?', extra: '' });
  }

  // interleaved, so that a busy machine slows every side alike
  const res = await timeRuns([...ours.map((o) => o.run), ...peers.map((p) => p.run)], args.warmup, args.runs);
  const pres = res.slice(ours.length);
  let bad = 0;
  ours.forEach(({ lab }, v) => {
    const mine = res[v], ms = median(mine.ms), tag = `build=${lab.build} kernel=${lab.kernel}`;
    if (peers.length === 0)
      console.log(`bench=resnet50.forward.wasm threads=${lab.threads} ms=${f(ms)} runs=${args.runs} isa=${lab.isa} ${tag}`);
    peers.forEach((p, k) => {
      const r = pres[k], pms = median(r.ms), target = TARGETS[p.name];
      // one thread on each side: the CPU-time ratio as well (see timeRuns)
      const cpu = lab.threads === 1 && p.threads === 1
        ? ` cpu_ms=${f(median(mine.cpu))} peer_cpu_ms=${f(median(r.cpu))} cpu_ratio=${f(median(mine.cpu) / median(r.cpu), 2)}` : '';
      console.log(`bench=resnet50.forward.wasm threads=${lab.threads} ms=${f(ms)} peer=${p.name} peer_ms=${f(pms)} ` +
        `ratio=${f(ms / pms, 2)}${cpu} target=${f(target, 2)} met=${ms / pms <= target ? 1 : 0} batch=${N} size=${H}x${W} ` +
        `runs=${args.runs} warmup=${args.warmup} isa=${lab.isa} ${tag} peer_threads=${p.threads} ` +
        `peer_version=${p.version}${p.extra ? ' ' + p.extra : ''}`);
    });
  });
  console.log(`# ms per round: ${ours.map(({ lab }, v) => `bnlab (${lab.kernel}) ${res[v].ms.map((x) => f(x)).join(' ')}`).join('; ')}` +
    peers.map((p, k) => `; ${p.name} ${pres[k].ms.map((v) => f(v)).join(' ')}`).join(''));
  ours.forEach(({ lab }, v) => {
    const kind = lab.relaxed ? '_relaxed' : '';
    peers.forEach((p, k) => {
      const out = pres[k].out, scale = maxAbs(out), d = maxAbsDiff(res[v].out, out), ok = d <= 1e-4 * scale;
      const tag = p.name === 'onnxruntime-web' ? 'ort' : 'tfjs';
      console.log(`check=resnet50.logits.wasm${kind}_vs_${tag} max_abs_diff=${g(d)} max_abs_logit=${g(scale)} rel=${g(d / scale)} ok=${ok ? 1 : 0}`);
      if (!ok) {
        console.log(`MISMATCH: our logits (${lab.kernel}) and ${p.name}'s differ by more than 1e-4 of the largest |logit|`);
        bad = 1;
      }
    });
  });
  if (x.torchLogits)
    console.log(`check=resnet50.logits.vs_torch ${ours.map(({ lab }, v) => `wasm${lab.relaxed ? '_relaxed' : ''}_max_abs_diff=${g(maxAbsDiff(res[v].out, x.torchLogits))}`).join(' ')}` +
      peers.map((p, k) => ` ${p.name}_max_abs_diff=${g(maxAbsDiff(pres[k].out, x.torchLogits))}`).join(''));
  for (const o of ours) o.model.dispose();
  await session?.release?.();
  return bad;
}

// exit explicitly: TF.js's threaded build leaves its pthread workers running
process.exit(await main());
