"""Minimal safetensors reader/writer (numpy only; torch tensors are accepted on write).

Format: 8-byte little-endian u64 header length N, then N bytes of JSON
    {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}
padded with spaces to a multiple of 8, then the tensor bytes (little-endian, C order) back to back;
data_offsets are relative to the end of the header.

    import st_io
    st_io.save("w.safetensors", {"x": np.zeros((2, 3), np.float32)}, metadata={"labels": "[]"})
    tensors, meta = st_io.load("w.safetensors")        # BF16 comes back as float32
    st_io.save(path, tensors, dtypes={"x": "BF16"})    # convert on write (round to nearest even)

Used by gen_fixtures_resnet.py, check_resnet50_full.py and make_onnx_resnet50.py with Debian's /usr/bin/python3.
"""
import json
import os
import struct

import numpy as np

# safetensors dtype -> numpy dtype of the stored bytes (BF16 is kept as raw uint16)
_NP = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "U16": np.dtype("<u2"),
    "BOOL": np.dtype("?"),
}
_FROM_NP = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("uint16"): "U16",
    np.dtype("bool"): "BOOL",
}

MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    pass


def f32_to_bf16_bits(a):
    """float32 array -> uint16 bf16 bit patterns, round to nearest even (NaN stays NaN), like torch's .bfloat16()."""
    a = np.asarray(a, dtype=np.float32, order="C")
    u = a.view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    out = rounded.astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        out[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return out


def bf16_bits_to_f32(bits):
    """uint16 bf16 bit patterns -> float32 (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def _to_numpy(t):
    """numpy array or torch tensor -> (numpy array, safetensors dtype)."""
    if hasattr(t, "detach") and hasattr(t, "cpu"):  # torch tensor, without importing torch here
        t = t.detach().cpu().contiguous()
        name = str(t.dtype)
        if name == "torch.bfloat16":
            import torch  # only reached when the caller already has torch

            return t.view(torch.int16).numpy().view(np.uint16), "BF16"
        t = t.numpy()
    a = np.asarray(t)
    if a.dtype not in _FROM_NP:
        raise SafetensorsError(f"unsupported numpy dtype {a.dtype}")
    return a, _FROM_NP[a.dtype]


def dumps(tensors, metadata=None, dtypes=None):
    """Serialize {name: array} (insertion order kept) to bytes. dtypes: optional {name: "F32"|"F16"|"BF16"|...}
    to convert on write; float tensors only change between float types, integers stay as they are."""
    dtypes = dtypes or {}
    header = {}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        if name == "__metadata__":
            raise SafetensorsError("'__metadata__' is not a tensor name")
        a, dt = _to_numpy(t)
        want = dtypes.get(name, dt)
        if want == "BF16" and a.dtype == np.uint16:  # raw bf16 bits, as load(..., bf16="bits") returns them
            dt = "BF16"
        if want != dt:
            if dt not in ("F32", "F64", "F16", "BF16") or want not in ("F32", "F64", "F16", "BF16"):
                raise SafetensorsError(f"{name}: cannot convert {dt} to {want}")
            f = bf16_bits_to_f32(a) if dt == "BF16" else a.astype(np.float32)
            a = f32_to_bf16_bits(f) if want == "BF16" else f.astype(_NP[want])
            dt = want
        a = np.asarray(a, dtype=_NP[dt], order="C")  # (ascontiguousarray would turn shape [] into [1])
        raw = a.tobytes(order="C")
        header[name] = {"dtype": dt, "shape": [int(s) for s in a.shape], "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata is not None:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise SafetensorsError("__metadata__ must map strings to strings")
        header["__metadata__"] = dict(metadata)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    return struct.pack("<Q", len(hb)) + hb + b"".join(blobs)


def save(path, tensors, metadata=None, dtypes=None):
    """Write atomically (temp file + rename) so a failed run never leaves half a file."""
    data = dumps(tensors, metadata, dtypes)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return len(data)


def parse_header(buf):
    """bytes -> (header dict without __metadata__, metadata dict or None, data start). Validates offsets."""
    if len(buf) < 8:
        raise SafetensorsError("file shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", buf[:8])
    if n > MAX_HEADER or 8 + n > len(buf):
        raise SafetensorsError(f"header length {n} does not fit in a {len(buf)}-byte file")
    try:
        header = json.loads(bytes(buf[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"bad JSON header: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError("header is not a JSON object")
    meta = header.pop("__metadata__", None)
    start = 8 + n
    data_len = len(buf) - start
    spans = []
    for name, info in header.items():
        dt = info.get("dtype")
        if dt not in _NP:
            raise SafetensorsError(f"{name}: unsupported dtype {dt!r}")
        shape = info.get("shape")
        b, e = info.get("data_offsets", (None, None))
        if not isinstance(shape, list) or any((not isinstance(s, int)) or s < 0 for s in shape):
            raise SafetensorsError(f"{name}: bad shape {shape!r}")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not (isinstance(b, int) and isinstance(e, int) and 0 <= b <= e <= data_len):
            raise SafetensorsError(f"{name}: data_offsets {[b, e]} outside the {data_len}-byte data")
        if e - b != count * _NP[dt].itemsize:
            raise SafetensorsError(f"{name}: {e - b} bytes for shape {shape} {dt}")
        spans.append((b, e, name))
    spans.sort()
    pos = 0
    for b, e, name in spans:
        if b != pos:
            raise SafetensorsError(f"{name}: data not contiguous (gap or overlap at byte {pos})")
        pos = e
    if pos != data_len:
        raise SafetensorsError(f"{data_len - pos} trailing bytes after the last tensor")
    return header, meta, start


def loads(buf, bf16="float32"):
    """bytes -> ({name: numpy array} in header order, metadata or None).
    BF16 tensors become float32 (bf16="float32") or stay raw uint16 bits (bf16="bits")."""
    header, meta, start = parse_header(buf)
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt = info["dtype"]
        a = np.frombuffer(buf, dtype=_NP[dt], count=(e - b) // _NP[dt].itemsize, offset=start + b)
        a = a.reshape(info["shape"]).copy()
        if dt == "BF16" and bf16 == "float32":
            a = bf16_bits_to_f32(a)
        out[name] = a
    return out, meta


def load(path, bf16="float32"):
    with open(path, "rb") as f:
        return loads(f.read(), bf16)


def dtypes_of(path):
    """{name: safetensors dtype} as stored in the file."""
    with open(path, "rb") as f:
        buf = f.read()
    header, _, _ = parse_header(buf)
    return {k: v["dtype"] for k, v in header.items()}


def load_torch(path, dtype=None):
    """{name: torch tensor}, metadata. Float tensors are converted to `dtype` when given (e.g. torch.float32)."""
    import torch

    arrays, meta = load(path)
    out = {}
    for k, a in arrays.items():
        t = torch.from_numpy(a)
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[k] = t
    return out, meta


if __name__ == "__main__":
    import sys

    for p in sys.argv[1:]:
        ts, meta = load(p)
        kinds = dtypes_of(p)
        print(f"{p}: {len(ts)} tensors, metadata={meta}")
        for k, a in ts.items():
            print(f"  {k:60s} {kinds[k]:5s} {list(a.shape)}")
