#!/usr/bin/env python3
"""Writes malformed safetensors files, each with the phrase bnlab's error message must contain.

Usage: make_malformed.py VALID_WEIGHTS OUT_DIR   -> OUT_DIR/*.safetensors + OUT_DIR/manifest.tsv
Standard library only (runs without torch or numpy). The cases are the ones the ResNet issue
lists: not safetensors, header length beyond the file or absurd, bad JSON, offsets out of range,
overlapping or not covering the data, unknown dtype, shape not matching the byte size, missing or
unexpected keys (named), and shapes that do not form a ResNet. They double as a fuzzing seed corpus.
"""
import json
import os
import struct
import sys


def read(path):
    buf = open(path, "rb").read()
    (n,) = struct.unpack("<Q", buf[:8])
    return json.loads(buf[8:8 + n]), buf[8 + n:]


def pack(header, data, pad=True):
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def tensors(header):
    return [k for k in header if k != "__metadata__"]


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    header, data = read(src)
    cases = []

    def add(name, blob, phrase):
        with open(os.path.join(out, name + ".safetensors"), "wb") as f:
            f.write(blob)
        cases.append((name, phrase))

    add("too_short", b"\x01\x02\x03", "too short")
    add("empty", b"", "too short")
    add("absurd_header_length", struct.pack("<Q", 1 << 60) + b"{}", "absurd")
    add("header_beyond_file", struct.pack("<Q", 4096) + b'{"a":1}', "beyond file size")
    add("not_json", struct.pack("<Q", 8) + b"PK\x03\x04zip!", "bad JSON")
    add("truncated_json", pack(header, data)[:8] + json.dumps(header).encode()[:50], "beyond file size")
    h = dict(header)
    bad = json.dumps(h).encode()[:-1] + b",}"
    add("json_trailing_comma", struct.pack("<Q", len(bad)) + bad + data, "bad JSON")
    names = tensors(header)
    first, second = names[0], names[1]

    h = json.loads(json.dumps(header))
    h[first]["data_offsets"][1] = len(data) + 100
    add("offsets_out_of_range", pack(h, data), "out of range")

    h = json.loads(json.dumps(header))
    b0, e0 = h[first]["data_offsets"]
    b1, e1 = h[second]["data_offsets"]
    # second tensor starts inside the first one (same length, shifted back by 4 bytes)
    h[second]["data_offsets"] = [b1 - 4, e1 - 4]
    add("offsets_overlap", pack(h, data), "overlap")

    add("trailing_bytes", pack(header, data + b"\0" * 16), "trailing bytes")

    h = json.loads(json.dumps(header))
    h[first]["dtype"] = "F8_E9M9"
    add("unknown_dtype", pack(h, data), "unknown dtype 'F8_E9M9'")

    h = json.loads(json.dumps(header))
    shp = h["conv1.weight"]["shape"]
    h["conv1.weight"]["shape"] = [shp[0] * 2] + shp[1:]
    add("shape_vs_bytes", pack(h, data), "does not match byte size")

    h = json.loads(json.dumps(header))
    h[first]["shape"] = [-3]
    add("negative_dim", pack(h, data), "negative value")

    # drop one tensor (and its bytes): a missing key, named
    def without(hdr, dat, victim):
        hdr = json.loads(json.dumps(hdr))
        b, e = hdr[victim]["data_offsets"]
        del hdr[victim]
        for k in tensors(hdr):
            ob, oe = hdr[k]["data_offsets"]
            if ob >= e:
                hdr[k]["data_offsets"] = [ob - (e - b), oe - (e - b)]
        return hdr, dat[:b] + dat[e:]

    hm, dm = without(header, data, "layer1.0.bn1.running_var")
    add("missing_running_var", pack(hm, dm), "layer1.0.bn1.running_var")
    hm, dm = without(header, data, "fc.weight")
    add("missing_fc", pack(hm, dm), "fc.weight")

    h = json.loads(json.dumps(header))
    h["layer9.extra.weight"] = {"dtype": "F32", "shape": [2], "data_offsets": [len(data), len(data) + 8]}
    add("unexpected_key", pack(h, data + b"\0" * 8), "unexpected tensor 'layer9.extra.weight'")

    # a conv weight of the wrong width: valid file, not a ResNet
    h = json.loads(json.dumps(header))
    k = "layer1.0.conv2.weight"
    o, i, kh, kw = h[k]["shape"]
    if i % 2 == 0:
        h[k]["shape"] = [o * 2, i // 2, kh, kw]    # same byte size, wrong layout
        add("conv_wrong_shape", pack(h, data), "layer1.0.conv2.weight")

    h = json.loads(json.dumps(header))
    h["__metadata__"] = {"labels": 5}
    add("metadata_not_strings", pack(h, data), "__metadata__")

    with open(os.path.join(out, "manifest.tsv"), "w") as f:
        for name, phrase in cases:
            f.write(f"{name}\t{phrase}\n")
    print(f"{len(cases)} malformed files in {out}")


if __name__ == "__main__":
    main()
