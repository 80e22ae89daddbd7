#!/usr/bin/python3
"""Which ReLU inputs change sign between two nearly equal training runs? (issue 16, the step-9 question)

For k = 1..K: the states of runs A and B after k-1 steps (bnlab model.safetensors) and the batch of step k
(`bnlab train --dump-batches`) go through PyTorch in float64, train mode (batch statistics), as the step's
forward does; every ReLU's input is compared between A and B. Prints, per step, how many ReLU inputs have
opposite signs in A and B, the smallest |input| among them relative to that layer's standard deviation, the ReLU
input of A closest to zero (relative to its layer's standard deviation), and how far apart A and B are before the
step (largest relative difference of any tensor).
usage: /usr/bin/python3 tests/relu_flip_probe.py DIR_A DIR_B BATCH_DIR K
  DIR_A/k.safetensors, DIR_B/k.safetensors: states after k steps (k = 0: the initial weights);
  BATCH_DIR/step-<k>.rank0.safetensors: the batch of step k
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402
from gen_fixtures_resnet import model_from_state  # noqa: E402


def relu_inputs(model, x):
    """Inputs of every ReLU call in forward order (float64)."""
    seen = []

    def pre(_mod, args):
        seen.append(args[0].detach().clone())

    hooks = []
    for m in model.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
            hooks.append(m.register_forward_pre_hook(pre))
    model.train()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def main():
    da, db, dbatch, K = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    print('step,max_rel_param_diff_before,relu_sign_flips,smallest_flipped_over_std,closest_to_zero_over_std,where')
    for k in range(1, K + 1):
        sa = st_io.load(os.path.join(da, '%d.safetensors' % (k - 1)))[0]
        sb = st_io.load(os.path.join(db, '%d.safetensors' % (k - 1)))[0]
        diff = max(float(abs(torch.as_tensor(sa[n]).double() - torch.as_tensor(sb[n]).double()).max() /
                         max(float(abs(torch.as_tensor(sb[n]).double()).max()), 1e-30))
                   for n in sa if not n.startswith('optimizer.') and 'num_batches' not in n)
        batch = st_io.load(os.path.join(dbatch, 'step-%06d.rank0.safetensors' % k))[0]
        x = torch.as_tensor(batch['input']).double().permute(0, 3, 1, 2).contiguous()
        ma = model_from_state({n: v for n, v in sa.items() if not n.startswith('optimizer.')})
        mb = model_from_state({n: v for n, v in sb.items() if not n.startswith('optimizer.')})
        ra, rb = relu_inputs(ma, x), relu_inputs(mb, x)
        flips, smallest, closest, where = 0, float('inf'), float('inf'), ''
        for i, (a, b) in enumerate(zip(ra, rb)):
            sd = float(a.std())
            f = (a > 0) != (b > 0)
            flips += int(f.sum())
            if f.any():
                smallest = min(smallest, float(a[f].abs().min()) / sd)
            c = float(a.abs().min()) / sd
            if c < closest:
                closest, where = c, 'ReLU call %d of %d' % (i + 1, len(ra))
        print('%d,%.3g,%d,%s,%.3g,%s' % (k, diff, flips, '%.3g' % smallest if flips else '', closest, where))


if __name__ == '__main__':
    main()
