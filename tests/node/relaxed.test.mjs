// The relaxed-SIMD builds (web/bnlab-relaxed.wasm, web/threads/bnlab-threads-relaxed.*: the GEMM
// kernel's multiply-add as f32x4.relaxed_madd, README "Relaxed SIMD"): the post-link opcode rewrite
// (src/wasm/relaxed_opcodes.mjs), what the built files hold, which build createBnLab picks, and the
// numbers against the plain build and PyTorch's float64 reference.
//
// Node 20 runs relaxed SIMD only with --experimental-wasm-relaxed-simd: tests/run.sh runs the whole
// node suite a second time with it (BNL_EXPECT_RELAXED=1, where these tests must not skip).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createBnLab, relaxedSimdSupported } from '../../web/bnlab.mjs';
import { relaxOpcodes } from '../../src/wasm/relaxed_opcodes.mjs';
import { readSafetensors } from './safetensors.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RELAXED = relaxedSimdSupported();
const NEED = RELAXED ? false : 'this engine runs no relaxed SIMD (node --experimental-wasm-relaxed-simd runs these)';

test('the relaxed-SIMD tests run where they must (BNL_EXPECT_RELAXED=1)', () => {
  if (process.env.BNL_EXPECT_RELAXED === '1') assert.ok(RELAXED, 'BNL_EXPECT_RELAXED=1 but relaxed SIMD is not available');
  // Node 20 runs it with the flag (and engines that ship it, without)
  if (process.execArgv.includes('--experimental-wasm-relaxed-simd')) assert.ok(RELAXED, 'the flag is set but the probe fails');
});

// ---- the opcode rewrite ---------------------------------------------------------------------

const PATTERN = [0xfd, 0xaf, 0x01];   // what the rewrite looks for, planted inside immediates too
const C1 = [...PATTERN, 0, ...PATTERN, 0, ...PATTERN, 0, ...PATTERN, 0];
const C2 = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ...PATTERN];

// A module whose one function is (v128.const C1) (v128.load offset=22525) (i32.const 22525; drop)
// (v128.const C2) (f32x4.fma prototype): 22525 is LEB128 fd af 01. Returns the module and where
// the immediates and the instruction sit.
function moduleWith(body) {
  const code = [0x01, body.length, ...body];
  return new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b,   // type () -> v128
    0x03, 0x02, 0x01, 0x00,                     // one function
    0x05, 0x03, 0x01, 0x00, 0x01,               // memory 1 page
    0x0a, code.length, ...code]);
}
function fmaModule() {
  const body = [0x00,
    0xfd, 0x0c, ...C1,
    0x41, 0x00, 0xfd, 0x00, 0x00, ...PATTERN,   // i32.const 0; v128.load align=1 offset=22525
    0x41, ...PATTERN, 0x1a,                     // i32.const 22525; drop
    0xfd, 0x0c, ...C2,
    ...PATTERN,                                 // f32x4.fma (clang 14's prototype)
    0x0b];
  const bytes = moduleWith(body);
  const start = bytes.length - body.length;
  return { bytes, c1: start + 3, offset: start + 24, i32: start + 28, c2: start + 34, fma: start + 50 };
}

test('relaxOpcodes rewrites the prototype f32x4.fma and nothing inside immediates', () => {
  const m = fmaModule();
  assert.deepEqual([...m.bytes.subarray(m.fma, m.fma + 3)], PATTERN, 'fixture: the instruction is where expected');
  const { bytes, rewritten, relaxedMadd } = relaxOpcodes(m.bytes);
  assert.equal(rewritten, 1);
  assert.equal(relaxedMadd, 1);
  assert.deepEqual([...bytes.subarray(m.fma, m.fma + 3)], [0xfd, 0x85, 0x02], 'the instruction: f32x4.relaxed_madd');
  assert.deepEqual([...bytes.subarray(m.c1, m.c1 + 16)], C1, 'v128.const lanes untouched');
  assert.deepEqual([...bytes.subarray(m.c2, m.c2 + 16)], C2, 'v128.const lanes untouched');
  assert.deepEqual([...bytes.subarray(m.offset, m.offset + 3)], PATTERN, 'memarg offset untouched');
  assert.deepEqual([...bytes.subarray(m.i32, m.i32 + 3)], PATTERN, 'i32.const untouched');
  assert.equal(bytes.length, m.bytes.length);
  assert.deepEqual([...m.bytes.subarray(m.fma, m.fma + 3)], PATTERN, 'the input is not modified');
  // the prototype never validates; the rewritten module does exactly where relaxed SIMD runs
  assert.equal(WebAssembly.validate(m.bytes), false);
  assert.equal(WebAssembly.validate(bytes), RELAXED);
  // a second pass finds nothing left to rewrite, and counts the final instruction
  const again = relaxOpcodes(bytes);
  assert.equal(again.rewritten, 0);
  assert.equal(again.relaxedMadd, 1);
});

test('relaxOpcodes refuses what it cannot read', () => {
  assert.throws(() => relaxOpcodes(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])), /not a WebAssembly module/);
  assert.throws(() => relaxOpcodes(moduleWith([0x00, 0xd5, 0x0b])), /opcode 0xd5 .*not handled/);
  assert.throws(() => relaxOpcodes(moduleWith([0x00, 0x41])), /unexpected end/);
  const cut = fmaModule().bytes;
  assert.throws(() => relaxOpcodes(cut.subarray(0, cut.length - 5)), /past the end/);
});

// ---- the built files ------------------------------------------------------------------------

const FILES = {
  plain: ['web/bnlab.wasm', 'web/threads/bnlab-threads.wasm'],
  relaxed: ['web/bnlab-relaxed.wasm', 'web/threads/bnlab-threads-relaxed.wasm'],
};

test('the relaxed files hold only final relaxed_madd instructions, the plain files none', () => {
  for (const f of FILES.relaxed) {
    const r = relaxOpcodes(readFileSync(join(ROOT, f)));
    assert.equal(r.rewritten, 0, `${f}: a prototype f32x4.fma is left`);
    // the GEMM kernel's k loop: 4 rows x 2 vectors, in the packed and the in-place kernel
    assert.equal(r.relaxedMadd, 16, `${f}: f32x4.relaxed_madd count`);
  }
  for (const f of FILES.plain) {
    const r = relaxOpcodes(readFileSync(join(ROOT, f)));
    assert.equal(r.rewritten + r.relaxedMadd, 0, `${f}: holds relaxed instructions`);
    assert.equal(WebAssembly.validate(readFileSync(join(ROOT, f))), true, `${f}: validates everywhere`);
  }
  assert.equal(WebAssembly.validate(readFileSync(join(ROOT, FILES.relaxed[0]))), RELAXED);
});

test('createBnLab picks the build the engine runs; relaxed: true where it cannot is an Error', async () => {
  const lab = await createBnLab({ threads: 1 });
  assert.equal(lab.relaxed, RELAXED);
  assert.equal(lab.kernel, RELAXED ? 'gemm_4x8__wasmrelaxed' : 'gemm_4x8__wasmsimd');
  const plain = await createBnLab({ threads: 1, relaxed: false });
  assert.equal(plain.relaxed, false);
  assert.equal(plain.kernel, 'gemm_4x8__wasmsimd');
  if (!RELAXED) await assert.rejects(createBnLab({ threads: 1, relaxed: true }), /does not run relaxed SIMD/);
  await assert.rejects(createBnLab({ relaxed: 'yes' }), /relaxed must be true or false/);
});

// ---- numbers ----------------------------------------------------------------------------------

const FIX = join(ROOT, 'tests/fixtures/resnet');
const WEIGHTS = new Uint8Array(readFileSync(join(FIX, 'resnet50.weights.safetensors')));
const INPUT = readSafetensors(join(FIX, 'resnet50.input.safetensors')).tensors.input;
const EXPECTED = readSafetensors(join(FIX, 'resnet50.expected.safetensors')).tensors;   // float64 in PyTorch

function logits(lab) {
  const m = lab.loadModel(WEIGHTS);
  try {
    m.eval();
    const ev = m.forward(INPUT.data, INPUT.shape);
    m.train();
    const tr = m.forward(INPUT.data, INPUT.shape);
    return { eval: ev, train: tr };
  } finally {
    m.dispose();
  }
}
const maxErr = (got, want) => got.reduce((e, v, i) => Math.max(e, Math.abs(v - want[i])), 0);
const hasFma = () => { try { return /\bfma\b/.test(readFileSync('/proc/cpuinfo', 'utf8')); } catch { return false; } };

test('relaxed build: logits within the plain build\'s own float32 error of PyTorch float64', { skip: NEED }, async () => {
  const relaxed = logits(await createBnLab({ threads: 1, relaxed: true }));
  const plain = logits(await createBnLab({ threads: 1, relaxed: false }));
  for (const mode of ['eval', 'train']) {
    const want = EXPECTED[`logits_${mode}`].data;
    const eP = maxErr(plain[mode], want), eR = maxErr(relaxed[mode], want);
    const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    console.log(`# ${mode}: max |logit error| plain ${eP.toExponential(2)}, relaxed ${eR.toExponential(2)} (largest logit ${scale.toFixed(3)})`);
    // the yardstick: the plain build's error (two roundings per multiply-add) against float64
    assert.ok(eR <= 2 * eP + 1e-6 * scale, `${mode}: relaxed error ${eR} against plain ${eP}`);
    if (hasFma()) assert.ok(plain[mode].some((v, i) => v !== relaxed[mode][i]), `${mode}: identical bits: no FMA ran`);
  }
});

test('relaxed threaded build: bitwise the relaxed single-thread build at 1, 2 and 3 threads', { skip: NEED }, async () => {
  const want = logits(await createBnLab({ threads: 1, relaxed: true }));
  for (const threads of [1, 2, 3]) {
    const lab = await createBnLab({ threads, build: 'simd-threads', relaxed: true });
    try {
      assert.equal(lab.relaxed, true);
      const got = logits(lab);
      for (const mode of ['eval', 'train'])
        assert.deepEqual(new Uint32Array(got[mode].buffer), new Uint32Array(want[mode].buffer), `${threads} threads, ${mode}`);
    } finally {
      lab.terminate();
    }
  }
});

test('missing relaxed files: the default falls back to the plain build, with a warning', { skip: NEED }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bnlab-norelax-'));
  try {
    cpSync(join(ROOT, 'web'), dir, { recursive: true, filter: (src) => !/relaxed/.test(src) });
    assert.ok(!existsSync(join(dir, 'bnlab-relaxed.wasm')) && existsSync(join(dir, 'bnlab.wasm')));
    const { createBnLab: create } = await import(pathToFileURL(join(dir, 'bnlab.mjs')).href);
    const warnings = [];
    const warn = console.warn;
    console.warn = (m) => warnings.push(String(m));
    let lab;
    try {
      lab = await create({ threads: 1 });
    } finally {
      console.warn = warn;
    }
    assert.equal(lab.relaxed, false);
    assert.ok(warnings.some((w) => /relaxed-SIMD build did not load/.test(w)), warnings.join('\n'));
    await assert.rejects(create({ threads: 1, relaxed: true }), /bnlab-relaxed\.wasm|ENOENT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
