#!/usr/bin/env python3
"""Checks on safetensors files and metrics.csv for the command-line tests (tests/c/cli_*.sh), standard library only.

  st_check.py eq A B                  same tensor names, every tensor byte for byte; prints the tensor count
  st_check.py finite A                every F32 value is finite
  st_check.py meta A KEY              prints __metadata__[KEY] ('' if absent)
  st_check.py shape A NAME            prints the tensor's shape
  st_check.py close A B KIND ATOL RTOL  KIND params|stats: |a-b| <= atol + rtol*|b| everywhere; prints the worst error
  st_check.py maxdiff A B KIND        prints the largest |a-b| over KIND params|stats
  st_check.py reldiff A B             the largest relative difference in any tensor (params and running stats):
                                      max over tensors of max|a-b| / max|b|; prints it and the tensor's name
  st_check.py relnorm A B             |a-b| / |b| over all parameters together (Euclidean norms)
  st_check.py nudge A OUT [SEED]      writes A with every F32 parameter (not running stats, not optimizer state)
                                      moved away from zero by one ulp (with SEED: each one up or down by one ulp
                                      at random): a float32 perturbation of a model
  st_check.py untouched A             running stats are still the initial 0 / 1 and num_batches_tracked 0
  st_check.py rows METRICS.csv        metrics.csv without the timing columns (images_per_s, seconds, comm_ms)
Exits non-zero with a message naming the first difference when a check fails.
"""
import json
import math
import random
import struct
import sys


def load(path):
    """{name: (dtype, shape, raw bytes)}, metadata"""
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop('__metadata__', {})
    data = b[8 + n:]
    return {k: (v['dtype'], v['shape'], data[v['data_offsets'][0]:v['data_offsets'][1]]) for k, v in h.items()}, meta


def values(dtype, raw):
    fmt = {'F32': 'f', 'I64': 'q'}[dtype]
    return struct.unpack('<%d%s' % (len(raw) // struct.calcsize(fmt), fmt), raw)


def is_stat(k):
    return k.endswith('running_mean') or k.endswith('running_var')


def pairs(a, b, kind):
    """(name, index, a value, b value) over the parameters or the running statistics (no optimizer state)."""
    for k in a:
        if k.startswith('optimizer.') or is_stat(k) != (kind == 'stats') or k.endswith('num_batches_tracked'):
            continue
        for i, (x, y) in enumerate(zip(values(*a[k][::2]), values(*b[k][::2]))):
            yield k, i, x, y


def main():
    cmd = sys.argv[1]
    if cmd == 'eq':
        (a, _), (b, _) = load(sys.argv[2]), load(sys.argv[3])
        if sorted(a) != sorted(b):
            sys.exit('tensor names differ: %s' % sorted(set(a) ^ set(b)))
        diff = [k for k in a if a[k] != b[k]]
        if diff:
            sys.exit('%d of %d tensors differ, first: %s' % (len(diff), len(a), diff[0]))
        print(len(a))
    elif cmd == 'finite':
        for k, (dt, shape, raw) in load(sys.argv[2])[0].items():
            if dt == 'F32' and not all(math.isfinite(v) for v in values(dt, raw)):
                sys.exit('%s holds a non-finite value' % k)
    elif cmd == 'meta':
        print(load(sys.argv[2])[1].get(sys.argv[3], ''))
    elif cmd == 'shape':
        print(load(sys.argv[2])[0][sys.argv[3]][1])
    elif cmd == 'close':
        (a, _), (b, _) = load(sys.argv[2]), load(sys.argv[3])
        kind, atol, rtol = sys.argv[4], float(sys.argv[5]), float(sys.argv[6])
        worst, bad, n = (0.0, ''), 0, 0
        for k, i, x, y in pairs(a, b, kind):
            d = abs(x - y)
            n += 1
            if not d <= atol + rtol * abs(y):
                bad += 1
            if d > worst[0] or math.isnan(d):
                worst = (d, '%s[%d]: %r vs %r' % (k, i, x, y))
        print('%s: %d values, %d outside atol %g rtol %g, max abs err %.3g at %s' % (kind, n, bad, atol, rtol, worst[0],
                                                                                   worst[1]))
        sys.exit(1 if bad or n == 0 else 0)
    elif cmd == 'maxdiff':
        (a, _), (b, _) = load(sys.argv[2]), load(sys.argv[3])
        print(max(abs(x - y) for _, _, x, y in pairs(a, b, sys.argv[4])))
    elif cmd == 'reldiff':
        (a, _), (b, _) = load(sys.argv[2]), load(sys.argv[3])
        worst = (0.0, '')
        for k in a:
            if a[k][0] != 'F32' or k.startswith('optimizer.'):
                continue
            x, y = values(*a[k][::2]), values(*b[k][::2])
            scale = max(abs(v) for v in y)
            d = max(abs(p - q) for p, q in zip(x, y)) / (scale if scale > 0 else 1.0)
            if d > worst[0] or math.isnan(d):
                worst = (d, k)
        print('%.3g %s' % worst)
    elif cmd == 'relnorm':
        (a, _), (b, _) = load(sys.argv[2]), load(sys.argv[3])
        num = den = 0.0
        for _, _, x, y in pairs(a, b, 'params'):
            num += (x - y) ** 2
            den += y * y
        print('%.3g' % (math.sqrt(num / den) if den > 0 else math.sqrt(num)))
    elif cmd == 'nudge':
        raw = open(sys.argv[2], 'rb').read()
        n = struct.unpack('<Q', raw[:8])[0]
        h = json.loads(raw[8:8 + n])
        data = bytearray(raw[8 + n:])
        for k, v in h.items():
            if k == '__metadata__' or v['dtype'] != 'F32' or k.startswith('optimizer.') or is_stat(k):
                continue
            o0, o1 = v['data_offsets']
            bits = list(struct.unpack('<%dI' % ((o1 - o0) // 4), data[o0:o1]))
            # one ulp away from zero for x != 0 (the next float up in magnitude); 0 stays 0
            if len(sys.argv) > 4:
                rng = random.Random('%s:%s' % (sys.argv[4], k))
                bits = [u + rng.choice((-1, 1)) if u & 0x7fffff and (u & 0x7f800000) != 0x7f800000 else u
                        for u in bits]
            else:
                bits = [u + 1 if u & 0x7fffffff and (u & 0x7f800000) != 0x7f800000 else u for u in bits]
            data[o0:o1] = struct.pack('<%dI' % len(bits), *bits)
        open(sys.argv[3], 'wb').write(raw[:8 + n] + bytes(data))
    elif cmd == 'untouched':
        t, _ = load(sys.argv[2])
        moved = [k for k, (dt, sh, raw) in t.items() if
                 (k.endswith('running_mean') and set(values(dt, raw)) != {0.0}) or
                 (k.endswith('running_var') and set(values(dt, raw)) != {1.0}) or
                 (k.endswith('num_batches_tracked') and values(dt, raw)[0] != 0)]
        if moved:
            sys.exit('running statistics moved: %s' % moved[:3])
    elif cmd == 'rows':
        for line in open(sys.argv[2]).read().splitlines():
            print(','.join(line.split(',')[:8]))
    else:
        sys.exit('st_check.py: unknown command %r' % cmd)


if __name__ == '__main__':
    main()
