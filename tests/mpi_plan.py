#!/usr/bin/env python3
"""Data-parallel ResNet-50 at 224x224 past this machine, on paper: bytes and collectives per step of
`bnlab train --sync-bn` as implemented (src/train/dist.c), and the step times they imply on 10 and
100 Gb/s links at 8 and 64 hosts. Every assumption is a named constant below; prints a Markdown table.
usage: python3 tests/mpi_plan.py
"""
import math

# ResNet-50 (torchvision layout): stem, stages of bottleneck blocks, fc
STAGES = [(3, 64), (4, 128), (6, 256), (3, 512)]   # (blocks, mid width); out = 4 * mid
CLASSES = 1000


def resnet50():
    params, bn = 0, []

    def conv_bn(cin, cout, k):
        nonlocal params
        params += cout * cin * k * k + 2 * cout
        bn.append(cout)

    conv_bn(3, 64, 7)
    cin = 64
    for blocks, mid in STAGES:
        for b in range(blocks):
            conv_bn(cin, mid, 1)
            conv_bn(mid, mid, 3)
            conv_bn(mid, 4 * mid, 1)
            if b == 0:
                conv_bn(cin, 4 * mid, 1)   # downsample
            cin = 4 * mid
    params += CLASSES * cin + CLASSES
    return params, bn


# Assumptions
IMAGES_PER_S_PER_CORE = 8.07 / 2   # the earlier 2-core Xeon: ResNet-50 224x224 train step, batch 8, 2 threads (README; the Zen 5: 5.53)
CORES_PER_HOST = 32
BATCH_PER_HOST = 64
BACKWARD_SHARE = 2 / 3             # of a step's compute; the gradient sums can hide behind it
LINKS = {10: (1.25e9 * 0.9, 30e-6), 100: (12.5e9 * 0.9, 10e-6)}   # Gb/s: (bytes/s achieved, latency per message)
BUCKETS = 8                        # dist.c: about np/8 values per bucket (64K..4M floats)


def main():
    params, bn = resnet50()
    C = sum(bn)
    grad_bytes = 4 * params
    bn_msg = sum((2 * c + 1) * 8 for c in bn)   # one rank's part of all gathers in one direction
    compute = BATCH_PER_HOST / (IMAGES_PER_S_PER_CORE * CORES_PER_HOST)
    backward = BACKWARD_SHARE * compute
    print('ResNet-50: %d parameters (%.1f MB of float32 gradients), %d BatchNorm layers, %d channels' %
          (params, grad_bytes / 1e6, len(bn), C))
    print('collectives per step: %d BatchNorm allgathers forward + %d backward, %d gradient allreduce buckets, '
          '1 step-end allgather = %d' % (len(bn), len(bn), BUCKETS, 2 * len(bn) + BUCKETS + 1))
    print('per host: %d images per step, %.2f s of compute (%d cores at %.2f images/s each), %.2f s of it backward' %
          (BATCH_PER_HOST, compute, CORES_PER_HOST, IMAGES_PER_S_PER_CORE, backward))
    print()
    print('| link | hosts | gradient bytes sent (= received) per host | BatchNorm bytes received per host | gradient sums | '
          'BatchNorm sync (not hidden) | step without --sync-bn | step with --sync-bn | images/s, all hosts |')
    print('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
    for gbps, (bw, lat) in LINKS.items():
        for P in (8, 64):
            # ring allreduce per bucket: 2(P-1) messages of size/P each way
            g_bytes = 2 * (P - 1) / P * grad_bytes
            g_time = g_bytes / bw + BUCKETS * 2 * (P - 1) * lat
            # buckets start as the backward finishes them: all but the last hide behind the backward
            exposed = max(g_time - backward * (BUCKETS - 1) / BUCKETS, g_time / BUCKETS)
            # allgather of every rank's (count, mean, M2) / (count, two sums): receive (P-1) parts,
            # recursive doubling: log2(P) rounds of latency, per layer and direction
            b_bytes = 2 * (P - 1) * bn_msg
            b_time = b_bytes / bw + 2 * len(bn) * math.ceil(math.log2(P)) * lat
            plain = compute + exposed + lat * math.ceil(math.log2(P))
            sync = plain + b_time
            print('| %d Gb/s | %d | %.0f MB | %.1f MB | %.0f ms (%.0f ms exposed) | %.1f ms | %.3f s | %.3f s (%.2fx) | '
                  '%.0f |' % (gbps, P, g_bytes / 1e6, b_bytes / 1e6, g_time * 1e3, exposed * 1e3, b_time * 1e3,
                              plain, sync, sync / plain, P * BATCH_PER_HOST / sync))


if __name__ == '__main__':
    main()
