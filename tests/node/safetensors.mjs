// A minimal safetensors reader/writer for the node tests (the C core has its own, strict one).
import { readFileSync } from 'node:fs';

const DTYPES = { F32: [4, Float32Array], F64: [8, Float64Array], I64: [8, BigInt64Array], I32: [4, Int32Array],
  U8: [1, Uint8Array], F16: [2, Uint16Array], BF16: [2, Uint16Array] };

export function parseSafetensors(bytes) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const base = 8 + n, tensors = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [size, Ctor] = DTYPES[t.dtype];
    const [b, e] = t.data_offsets;
    const copy = bytes.slice(base + b, base + e);   // aligned copy
    tensors[name] = { dtype: t.dtype, shape: t.shape, data: new Ctor(copy.buffer, 0, (e - b) / size) };
  }
  return { tensors, metadata: header.__metadata__ || {} };
}

export function readSafetensors(path) { return parseSafetensors(new Uint8Array(readFileSync(path))); }

// tensors: { name: { dtype: 'F32'|'I64'|..., shape, data: TypedArray } }
export function writeSafetensors(tensors, metadata) {
  const header = {};
  if (metadata) header.__metadata__ = metadata;
  let off = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.data.byteLength] };
    off += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8) json += ' ';
  const hb = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + hb.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  let p = 8 + hb.length;
  for (const t of Object.values(tensors)) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), p);
    p += t.data.byteLength;
  }
  return out;
}

// |got - want| <= atol + rtol*|want| everywhere; throws naming the first mismatches and the worst error.
export function assertClose(got, want, { atol = 1e-5, rtol = 1e-4, what = 'values' } = {}) {
  if (got.length !== want.length) throw new Error(`${what}: length ${got.length}, want ${want.length}`);
  let bad = 0, worst = 0, worstAt = 0; const first = [];
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= atol + rtol * Math.abs(want[i]))) { bad++; if (first.length < 5) first.push(`[${i}] got ${got[i]} want ${want[i]}`); }
    if (!(d <= worst)) { worst = d; worstAt = i; }
  }
  if (bad) throw new Error(`${what}: ${bad} of ${got.length} differ (max abs err ${worst} at [${worstAt}]; atol ${atol} rtol ${rtol}): ${first.join(', ')}`);
}
