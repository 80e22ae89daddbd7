"""What the batch-size experiments share (tests/batch_size_experiment.py, tests/fashion_batch_size_experiment.py;
standard library only): their runs' metrics.csv and wall time, the linear-scaling learning rate, the git commit, and
node scripts on the wasm build (web/bnlab.mjs) with the accuracy probe they run on each final model.
"""
import csv
import json
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# JS: top-1 accuracy of model m (mode 'eval' or 'train') on the images idx of data (S x S), in batches of B;
# a last partial batch is left out. For the probes' node scripts (no '%': they are %-formatted).
ACCURACY_JS = r"""
const accuracy = (m, data, idx, S, mode, B) => {
  const K = m.info.numClasses, N = idx.length;
  let right = 0, seen = 0;
  if (mode === 'eval') m.eval(); else m.train();
  for (let s = 0; s + B <= N; s += B) {
    const b = data.batchIndices(idx.slice(s, s + B));
    const z = m.forward(b.x, [B, S, S, 3]);
    for (let i = 0; i < B; i++) {
      let best = 0;
      for (let k = 1; k < K; k++) if (z[i * K + k] > z[i * K + best]) best = k;
      right += best === b.labels[i] ? 1 : 0;
    }
    seen += B;
  }
  return right / seen;
};
"""


def run_node(js, cfg):
    """Runs the ES module js (%(bridge)s: web/bnlab.mjs's URL) with JSON cfg as its argument; returns the JSON of
    its last output line."""
    bridge = json.dumps("file://" + os.path.join(ROOT, "web", "bnlab.mjs"))
    r = subprocess.run(["node", "--input-type=module", "-e", js % {"bridge": bridge}, json.dumps(cfg)], check=True,
                       capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def read_metrics(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def finished(run_dir, epochs):
    p = os.path.join(run_dir, "metrics.csv")
    if not os.path.exists(p) or not os.path.exists(os.path.join(run_dir, "model.safetensors")):
        return False
    rows = read_metrics(p)
    return bool(rows) and int(rows[-1]["epoch"]) >= epochs and rows[-1]["val_top1"] != ""


def lr_for(a, B):
    """The linear scaling rule: base_lr * B / base_batch."""
    return a.base_lr * B / a.base_batch


def train_timed(cmd, run_dir, resume):
    """Runs the `bnlab train` command cmd into run_dir and adds its wall time to run_dir/wall_s (which sums the
    pieces of a resumed run). Returns this piece's seconds."""
    t = time.time()
    subprocess.run(cmd, check=True)
    wall = time.time() - t
    wp = os.path.join(run_dir, "wall_s")
    prev = float(open(wp).read()) if resume and os.path.exists(wp) else 0.0
    with open(wp, "w") as f:
        f.write(f"{prev + wall:.1f}\n")
    return wall


def wall_seconds(run_dir):
    wp = os.path.join(run_dir, "wall_s")
    return open(wp).read().strip() if os.path.exists(wp) else ""


def git_commit():
    try:
        c = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return c + (" (working tree had local changes)" if dirty else "")
    except OSError:
        return "unknown"


def pct(v):
    return "" if v is None or v == "" else f"{100 * float(v):.1f}"
