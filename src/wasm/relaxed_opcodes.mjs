// Rewrites clang 14's prototype relaxed-SIMD FMA (f32x4.fma, 0xfd 0xaf 0x01) into the final
// f32x4.relaxed_madd (0xfd 0x85 0x02) in a linked module, in place: both encodings are three
// bytes, so no offset or size in the module moves. Debian's Emscripten 3.1.6 (clang 14, Binaryen
// 108) can only produce the prototype; engines only run the final one (V8: Chromium by default,
// Node 20 with --experimental-wasm-relaxed-simd). See src/ops/gemm__wasmsimd.c.
//
// The code section is walked instruction by instruction (every immediate decoded), so the three
// bytes are only rewritten where they are an instruction, never inside a constant, a shuffle's
// lanes or an offset. An opcode this walker does not know fails the build instead of guessing.
//
//   node src/wasm/relaxed_opcodes.mjs FILE.wasm     rewrites FILE.wasm (temp file + rename)
//   import { relaxOpcodes } from './relaxed_opcodes.mjs'   ->  { bytes, rewritten, relaxedMadd }

import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

export const PROTO_FMA_F32X4 = 0xaf;       // LLVM 14: f32x4.fma (a*b + c)
export const RELAXED_MADD_F32X4 = 0x105;   // final spec: f32x4.relaxed_madd (a*b + c)
// 0xaf is a gap in the final simd128 numbering (i32x4.add 0xae, i32x4.sub 0xb1), so it can only be
// the prototype. Clang emits relaxed instructions only for their builtins, and the sources use the
// FMA alone.

class Reader {
  constructor(b, pos, end) { this.b = b; this.pos = pos; this.end = end; }
  byte() {
    if (this.pos >= this.end) throw new Error(`relaxed_opcodes: unexpected end of data at byte ${this.pos}`);
    return this.b[this.pos++];
  }
  u32() {   // unsigned LEB128 (up to 5 bytes)
    let r = 0, shift = 0, x;
    do {
      x = this.byte();
      r += (x & 0x7f) * 2 ** shift;
      shift += 7;
      if (shift > 35) throw new Error(`relaxed_opcodes: LEB128 too long at byte ${this.pos}`);
    } while (x & 0x80);
    return r;
  }
  sleb(maxBytes) {   // signed LEB128: skipped, value not needed
    for (let i = 0; i < maxBytes; i++) if (!(this.byte() & 0x80)) return;
    throw new Error(`relaxed_opcodes: signed LEB128 too long at byte ${this.pos}`);
  }
  skip(n) {
    if (this.pos + n > this.end) throw new Error(`relaxed_opcodes: unexpected end of data at byte ${this.pos}`);
    this.pos += n;
  }
  memarg() { this.u32(); this.u32(); }
}

function blocktype(r) {
  const t = r.b[r.pos];
  if (t === 0x40 || (t >= 0x6f && t <= 0x7f)) r.pos++;   // empty, or a value type
  else r.sleb(5);                                        // a type index (s33)
}

// 0xfd prefix: the immediates of each SIMD opcode (final numbering; 0xaf is the prototype FMA)
function simd(r, op, found, where) {
  if (op === RELAXED_MADD_F32X4) { found.final++; return; }
  if (op <= 0x0b || op === 0x5c || op === 0x5d) return r.memarg();   // loads, store, load*_zero
  if (op === 0x0c || op === 0x0d) return r.skip(16);                 // v128.const, i8x16.shuffle
  if (op >= 0x15 && op <= 0x22) return r.skip(1);                    // extract/replace lane
  if (op >= 0x54 && op <= 0x5b) { r.memarg(); return r.skip(1); }    // load/store lane
  if (op === PROTO_FMA_F32X4) return found.proto.push(where);
  // everything else up to 0x113 (the final relaxed-SIMD instructions) has no immediate
  if (op > 0x113) throw new Error(`relaxed_opcodes: SIMD opcode 0x${op.toString(16)} at byte ${where}: not handled`);
}

function body(r, found) {
  for (let n = r.u32(); n > 0; n--) { r.u32(); r.byte(); }   // locals: count, type
  while (r.pos < r.end) {
    const at = r.pos, op = r.byte();
    if (op === 0x02 || op === 0x03 || op === 0x04) blocktype(r);
    else if (op === 0x0c || op === 0x0d || op === 0x10 || (op >= 0x20 && op <= 0x26) || op === 0xd2) r.u32();
    else if (op === 0x0e) { for (let n = r.u32(); n >= 0; n--) r.u32(); }   // br_table: n labels + default
    else if (op === 0x11) { r.u32(); r.u32(); }                             // call_indirect type table
    else if (op === 0x1c) { for (let n = r.u32(); n > 0; n--) r.byte(); }  // select t*
    else if (op >= 0x28 && op <= 0x3e) r.memarg();
    else if (op === 0x3f || op === 0x40) r.byte();
    else if (op === 0x41) r.sleb(5);
    else if (op === 0x42) r.sleb(10);
    else if (op === 0x43) r.skip(4);
    else if (op === 0x44) r.skip(8);
    else if (op === 0xd0) r.byte();
    else if (op === 0xfc) {
      const sub = r.u32();
      if (sub <= 7) { /* trunc_sat */ }
      else if (sub === 8) { r.u32(); r.byte(); }        // memory.init data mem
      else if (sub === 9 || sub === 13 || sub === 15 || sub === 16 || sub === 17) r.u32();   // data.drop, elem.drop, table.grow/size/fill
      else if (sub === 10) { r.byte(); r.byte(); }      // memory.copy
      else if (sub === 11) r.byte();                    // memory.fill
      else if (sub === 12 || sub === 14) { r.u32(); r.u32(); }   // table.init, table.copy
      else throw new Error(`relaxed_opcodes: opcode 0xfc ${sub} at byte ${at}: not handled`);
    } else if (op === 0xfd) {
      const opAt = r.pos, sop = r.u32();
      simd(r, sop, found, opAt);
    } else if (op === 0xfe) {
      const sub = r.u32();
      if (sub === 0x03) r.byte();   // atomic.fence
      else if (sub <= 0x02 || (sub >= 0x10 && sub <= 0x4e)) r.memarg();
      else throw new Error(`relaxed_opcodes: opcode 0xfe ${sub} at byte ${at}: not handled`);
    } else if ((op >= 0x05 && op <= 0x0b) || op === 0x00 || op === 0x01 || op === 0x0f || op === 0x1a || op === 0x1b ||
               (op >= 0x45 && op <= 0xc4) || op === 0xd1) { /* no immediate */ }
    else throw new Error(`relaxed_opcodes: opcode 0x${op.toString(16)} at byte ${at}: not handled`);
  }
}

// Returns { bytes (a copy, rewritten), rewritten (how many instructions), relaxedMadd (how many
// f32x4.relaxed_madd the returned bytes hold) }.
export function relaxOpcodes(input) {
  const b = Uint8Array.from(input);
  const magic = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  if (b.length < 8 || magic.some((x, i) => b[i] !== x)) throw new Error('relaxed_opcodes: not a WebAssembly module');
  const r = new Reader(b, 8, b.length);
  const found = { proto: [], final: 0 };   // prototype f32x4.fma positions; relaxed_madd already final
  while (r.pos < b.length) {
    const id = r.byte(), size = r.u32(), start = r.pos, end = start + size;
    if (end > b.length) throw new Error(`relaxed_opcodes: section ${id} runs past the end`);
    if (id === 10) {
      const c = new Reader(b, start, end);
      for (let n = c.u32(); n > 0; n--) {
        const len = c.u32(), bstart = c.pos;
        body(new Reader(b, bstart, bstart + len), found);
        c.pos = bstart + len;
      }
    }
    r.pos = end;
  }
  for (const at of found.proto) {   // 0xaf 0x01 -> 0x85 0x02 (LEB128 of 0xaf and 0x105: two bytes each)
    if (b[at] !== 0xaf || b[at + 1] !== 0x01) throw new Error(`relaxed_opcodes: unexpected encoding at byte ${at}`);
    b[at] = 0x85, b[at + 1] = 0x02;
  }
  return { bytes: b, rewritten: found.proto.length, relaxedMadd: found.final + found.proto.length };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: node src/wasm/relaxed_opcodes.mjs FILE.wasm');
    process.exit(2);
  }
  try {
    const { bytes, rewritten } = relaxOpcodes(readFileSync(file));
    if (rewritten === 0) throw new Error(`${file} holds no f32x4.fma (0xfd 0xaf 0x01): built without BNL_WASM_RELAXED?`);
    writeFileSync(file + '.tmp', bytes);
    renameSync(file + '.tmp', file);
    console.log(`relaxed_opcodes: ${file}: ${rewritten} f32x4.fma -> f32x4.relaxed_madd`);
  } catch (e) {
    console.error(e.message);
    process.exit(1);
  }
}
