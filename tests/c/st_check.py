#!/usr/bin/env python3
"""Checks on safetensors files and metrics.csv for the command-line tests (tests/c/cli_*.sh), standard library only.

  st_check.py eq A B                  same tensor names, every tensor byte for byte; prints the tensor count
  st_check.py finite A                every F32 value is finite
  st_check.py meta A KEY              prints __metadata__[KEY] ('' if absent)
  st_check.py shape A NAME            prints the tensor's shape
  st_check.py close A B KIND ATOL RTOL  KIND params|stats: |a-b| <= atol + rtol*|b| everywhere; prints the worst error
  st_check.py maxdiff A B KIND        prints the largest |a-b| over KIND params|stats
  st_check.py untouched A             running stats are still the initial 0 / 1 and num_batches_tracked 0
  st_check.py rows METRICS.csv        metrics.csv without the timing columns (images_per_s, seconds, comm_ms)
Exits non-zero with a message naming the first difference when a check fails.
"""
import json
import math
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
