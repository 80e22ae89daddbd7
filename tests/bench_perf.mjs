// The one benchmark command: bnlab against a peer, both measured in the same run, one key=value
// line per figure (ratios travel between machines, absolute times do not):
//
//   node tests/bench_perf.mjs [--rounds 5] [--only wasm,forward,train] [--threads 2]
//
//   bench=resnet50.forward.wasm threads=1 ms=... peer=tfjs-wasm peer_ms=... ratio=... target=0.80 met=0|1
//   bench=resnet50.forward.wasm threads=1 ms=... peer=onnxruntime-web peer_ms=... ratio=... target=0.60 met=0|1
//       224x224 batch 1, eval: bnlab's wasm build against TensorFlow.js's wasm backend (XNNPACK) and
//       onnxruntime-web's wasm backend, SIMD, on the same weights (tests/bench_wasm_vs_ort.mjs,
//       interleaved runs, logits checked to agree); then the same on --threads threads (peer_threads
//       says what each peer really ran; TF.js's threads under Node need tests/peer_tfjs.mjs's shim)
//   bench=resnet50.forward.native ms=... peer=pytorch peer_ms=... ratio=... target=1.25 met=0|1
//       the same weights and batch, `bnlab bench resnet50 --mode eval` against torchvision resnet50
//       eval under torch.inference_mode (channels_last or default, whichever is faster), both on
//       --threads threads (torch.set_num_threads)
//   bench=resnet50.train_step.native ms=... images_per_s=... peer=pytorch peer_ms=... peer_images_per_s=...
//       ratio=... target=1.00 met=0|1
//       batch 8, 224x224: forward, softmax cross-entropy, backward, SGD (momentum 0.9, weight decay
//       1e-4), `bnlab bench resnet50 --mode train` against the same step in PyTorch
//
// ratio = ms / peer_ms (below 1: bnlab is faster). The native figures alternate bnlab and PyTorch
// for --rounds rounds (default 5) and report the median of each side's per-round medians, so that
// a machine busy with other work slows both alike; ms_min/peer_ms_min/ratio_min are the fastest
// round of each side, and `#` lines show every round with the load average. Run it on a quiet
// machine: with other jobs on the cores, OpenMP threads wait for each other and the 2-thread
// figures of both sides swing by several times.
// Needs build/native/bnlab and web/bnlab.wasm (the two CMake builds), Debian's /usr/bin/python3
// with torch + torchvision, and onnxruntime-web (npm ci); the weights (a seeded torchvision
// resnet50 with populated running stats) are made once under build/bench/ by
// tests/bench_wasm_vs_ort.mjs. A figure whose peer is missing prints SKIP.
// Exits 1 if a check fails (wasm logits against onnxruntime-web), 0 otherwise: missed targets are
// reported (met=0), not failures.
import { existsSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { availableParallelism, loadavg } from 'node:os';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const PY = '/usr/bin/python3';
const BNLAB = join(ROOT, 'build/native/bnlab');
const WEIGHTS = join(ROOT, 'build/bench/resnet50.safetensors');
const TARGETS = { wasm: 0.6, forward: 1.25, train: 1.0 };

function parseArgs(argv) {
  const a = { rounds: 5, only: ['wasm', 'forward', 'train'], threads: 2, wasmRuns: 7 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) fail(`${k} needs a value`);
      return argv[++i];
    };
    if (k === '--rounds') a.rounds = Number(val());
    else if (k === '--only') a.only = val().split(',');
    else if (k === '--threads') a.threads = Number(val());
    else if (k === '--wasm-runs') a.wasmRuns = Number(val());
    else if (k === '--help' || k === '-h') {
      console.log('usage: node tests/bench_perf.mjs [--rounds 5] [--only wasm,forward,train] [--threads 2] [--wasm-runs 7]');
      process.exit(0);
    } else fail(`unknown argument ${k}`);
  }
  if (!(Number.isInteger(a.rounds) && a.rounds >= 1)) fail('--rounds must be an integer >= 1');
  if (!(Number.isInteger(a.threads) && a.threads >= 1)) fail('--threads must be an integer >= 1');
  for (const o of a.only) if (!(o in TARGETS)) fail(`--only: unknown figure '${o}' (wasm, forward, train)`);
  return a;
}

function fail(msg) {
  console.error(`bench_perf: error: ${msg}`);
  process.exit(2);
}

const median = (xs) => {
  const s = [...xs].sort((p, q) => p - q), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const kv = (line) => Object.fromEntries(line.trim().split(/\s+/).map((t) => t.split('=')).filter((p) => p.length === 2));
const f = (v, d = 1) => v.toFixed(d);

function run(cmd, args, what) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) {
    process.stdout.write(r.stdout || '');
    process.stderr.write(r.stderr || '');
    throw new Error(`${what} failed (exit ${r.status})`);
  }
  return r.stdout;
}

// ---- the wasm figures: tests/bench_wasm_vs_ort.mjs does the work (and makes the weights), once
// with 1 thread and once with --threads (bnlab's threaded build against the peers' threaded ones)
function benchWasm(a) {
  let rc = 0;
  for (const threads of [...new Set([1, a.threads])]) {
    // with relaxed SIMD on: bnlab's plain and relaxed-SIMD files both run, interleaved with the peers
    const r = spawnSync(process.execPath, ['--experimental-wasm-relaxed-simd', join(ROOT, 'tests/bench_wasm_vs_ort.mjs'), '--runs', String(a.wasmRuns),
      '--warmup', '2', '--threads', String(threads)], { encoding: 'utf8', maxBuffer: 1 << 26 });
    const lines = (r.stdout || '').split('\n').filter(Boolean);
    for (const l of lines) console.log(/^(#|check=|bench=|SKIP)/.test(l) ? l : `# ${l}`);
    if (!lines.some((l) => l.startsWith('bench=resnet50.forward.wasm') && l.includes('peer_ms='))) {
      console.log(`SKIP bench=resnet50.forward.wasm threads=${threads}: no peer ran (npm ci)`);
      if (r.stderr) process.stderr.write(r.stderr);
    }
    if (r.status === 1) rc = 1;
  }
  return rc;
}

// ---- the PyTorch peer ---------------------------------------------------------------------------
const PEER = String.raw`
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch, torchvision
import st_io
mode, threads, reps, batch, size, weights = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
torch.set_num_threads(threads)
state, _ = st_io.load_torch(weights)
torch.manual_seed(0)
x0 = torch.randn(batch, 3, size, size)
labels = torch.randint(0, state["fc.weight"].shape[0], (batch,))

def median_ms(fn, warmup=2):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]

res = {}
for fmt in ("channels_last", "contiguous"):
    mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    m = torchvision.models.resnet50(num_classes=state["fc.weight"].shape[0])
    m.load_state_dict(state)
    m = m.to(memory_format=mf)
    x = x0.contiguous(memory_format=mf)
    if mode == "eval":
        m.eval()
        with torch.inference_mode():
            res[fmt] = median_ms(lambda: m(x))
    else:
        m.train()
        opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
        def step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(m(x), labels).backward()
            opt.step()
        res[fmt] = median_ms(step, warmup=2)
best = min(res, key=res.get)
print(json.dumps({"ms": res[best], "format": best, "all": res, "torch": torch.__version__, "threads": torch.get_num_threads()}))
`;

function havePeer() {
  const r = spawnSync(PY, ['-c', 'import torch, torchvision'], { encoding: 'utf8' });
  return r.status === 0;
}

function peerOnce(mode, a, reps, batch) {
  const out = run(PY, ['-c', PEER, join(ROOT, 'tests'), mode, String(a.threads), String(reps), String(batch), '224', WEIGHTS],
    `PyTorch ${mode}`);
  return JSON.parse(out.trim().split('\n').pop());
}

function oursOnce(mode, a, reps, batch) {
  const out = run(BNLAB, ['bench', 'resnet50', '--mode', mode, '--batch', String(batch), '--size', '224', '--reps',
    String(reps), '--threads', String(a.threads), '--weights', WEIGHTS], `bnlab bench resnet50 --mode ${mode}`);
  const line = out.split('\n').find((l) => l.startsWith('bench=resnet50.'));
  if (!line) throw new Error(`bnlab bench printed no result:\n${out}`);
  return kv(line);
}

function benchNative(which, a) {
  const mode = which === 'forward' ? 'eval' : 'train';
  const batch = which === 'forward' ? 1 : 8, reps = which === 'forward' ? 15 : 4;
  const name = which === 'forward' ? 'resnet50.forward.native' : 'resnet50.train_step.native';
  if (!existsSync(BNLAB)) {
    console.log(`SKIP bench=${name}: ${BNLAB} is missing (cmake --build build/native)`);
    return;
  }
  if (!existsSync(WEIGHTS)) {
    console.log(`SKIP bench=${name}: ${WEIGHTS} is missing (node tests/bench_wasm_vs_ort.mjs makes it)`);
    return;
  }
  if (!havePeer()) {
    const o = oursOnce(mode, a, reps, batch);
    console.log(`SKIP peer=pytorch: ${PY} cannot import torch/torchvision`);
    console.log(`bench=${name} ms=${o.ms} threads=${a.threads} batch=${batch} size=224x224`);
    return;
  }
  const ours = [], peer = [];
  let p = null, o = null;
  for (let r = 0; r < a.rounds; r++) {
    o = oursOnce(mode, a, reps, batch);
    p = peerOnce(mode, a, which === 'forward' ? reps : 3, batch);
    ours.push(Number(o.ms)), peer.push(p.ms);
    console.log(`# ${name} round ${r + 1}: bnlab ${f(Number(o.ms))} ms (cpu ${o.cpu_ms} ms), pytorch ${f(p.ms)} ms ` +
      `(${Object.entries(p.all).map(([k, v]) => `${k} ${f(v)}`).join(', ')}), load ${loadavg().map((v) => f(v, 2)).join(' ')}`);
  }
  const ms = median(ours), pms = median(peer), ratio = ms / pms, target = TARGETS[which];
  // the least disturbed round of each side as well: on a shared machine the medians carry the noise
  const mn = Math.min(...ours), pmn = Math.min(...peer);
  const common = `target=${f(target, 2)} met=${ratio <= target ? 1 : 0} threads=${a.threads} batch=${batch} size=224x224 ` +
    `rounds=${a.rounds} ms_min=${f(mn)} peer_ms_min=${f(pmn)} ratio_min=${f(mn / pmn, 2)} isa=${o.isa} ` +
    `peer_format=${p.format} peer_threads=${p.threads} torch=${p.torch}`;
  if (which === 'forward') {
    console.log(`bench=${name} ms=${f(ms)} peer=pytorch peer_ms=${f(pms)} ratio=${f(ratio, 2)} ${common}`);
  } else {
    console.log(`bench=${name} ms=${f(ms)} images_per_s=${f(1000 * batch / ms, 2)} peer=pytorch peer_ms=${f(pms)} ` +
      `peer_images_per_s=${f(1000 * batch / pms, 2)} ratio=${f(ratio, 2)} ${common}`);
  }
}

function cpuName() {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)?.[1] ?? 'cpu ?';
  } catch {
    return 'cpu ?';
  }
}

const a = parseArgs(process.argv.slice(2));
console.log(`# bench_perf: ${new Date().toISOString()}, load ${loadavg().map((v) => f(v, 2)).join(' ')}, ` +
  `${cpuName()}, ${availableParallelism()} cores`);
let rc = 0;
try {
  if (a.only.includes('wasm')) rc |= benchWasm(a);
  if (a.only.includes('forward')) benchNative('forward', a);
  if (a.only.includes('train')) benchNative('train', a);
} catch (e) {
  console.error(`bench_perf: ${e.message}`);
  rc = 1;
}
process.exitCode = rc;
