#!/usr/bin/env python3
"""The blog's batch-size experiment on Fashion-MNIST, with the rules of tests/batch_size_experiment.py, several seeds,
and the same recipe in PyTorch 1.13 as a cross-check.

bnlab runs: `bnlab train --data fashion-mnist` on a fixed subset of --train-size training images (--data-seed) with
--val-size test images held out, resnet18 at --width-mult, 28x28, --epochs epochs at every batch size B (the same
images seen by every run), lr = base_lr * B / base_batch (linear scaling), the same warmup (in epochs) and cosine
schedule, default augmentation (pad-crop 3 + flip), BatchNorm momentum 0.9 (Flax convention), biased running variance.
Seeds --seeds at every B, and --more-seeds at --more-batch-sizes.

PyTorch runs (demo-models/experiments/fashion_batch_size/pytorch/train_pytorch.py, /usr/bin/python3): the same
subsets (subset.json, drawn with lab.permutation: the permutation bnlab train draws its subsets from), network,
normalization, augmentation, optimizer, schedule and BatchNorm rule, at --pytorch-batch-sizes with --pytorch-seeds.

Probe (node + web/bnlab.mjs, wasm, the real test images through lab.loadIdxDataset): every final model, bnlab's and
PyTorch's, on the --val-size held-out images in eval mode, in train mode in batches of its own B, and in train mode in
batches of 128. For bnlab's models the eval probe must equal the trainer's own val_top1 (same images, same weights):
the script stops if it does not.

Writes to --out: results.csv (every run), results.md (per-B summary: mean and the two seeds' spread, PyTorch beside),
plot.svg, subset.json, command.txt, and copies of the final models at the smallest and largest batch size.
Runs live in --runs-dir (ignored by git); finished runs are skipped, interrupted bnlab runs resumed.

  python3 tests/fashion_batch_size_experiment.py                 # the committed experiment (about 30 min of 1 core)
  python3 tests/fashion_batch_size_experiment.py --report-only   # redraw from the runs
"""
import argparse
import csv
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot_svg  # noqa: E402
from experiment_common import (ACCURACY_JS, ROOT, finished, git_commit, lr_for, pct, read_metrics,  # noqa: E402
                               run_node, train_timed, wall_seconds)

PYTORCH = os.path.join("demo-models", "experiments", "fashion_batch_size", "pytorch", "train_pytorch.py")

SUBSET_JS = r"""
import { createBnLab } from %(bridge)s;
const cfg = JSON.parse(process.argv[1]);
const lab = await createBnLab();
const train = Array.from(lab.permutation(60000, { seed: cfg.dataSeed, epoch: 1 }).slice(0, cfg.trainSize));
const val = Array.from(lab.permutation(10000, { seed: cfg.dataSeed, epoch: 2 }).slice(0, cfg.valSize));
console.log(JSON.stringify({ train, val }));
"""

PROBE_JS = r"""
import { createBnLab } from %(bridge)s;
import fs from 'node:fs';
""" + ACCURACY_JS + r"""
const cfg = JSON.parse(process.argv[1]);
const lab = await createBnLab();
const images = fs.readFileSync(cfg.dir + '/t10k-images-idx3-ubyte.gz'), labels = fs.readFileSync(cfg.dir + '/t10k-labels-idx1-ubyte.gz');
const out = [];
for (const run of cfg.runs) {
  const m = lab.loadModel(new Uint8Array(fs.readFileSync(run.model)));
  const data = await lab.loadIdxDataset(images, labels, { model: m, fashionMnist: true });
  const acc = (mode, B) => accuracy(m, data, cfg.val, data.height, mode, B);
  const r = { key: run.key, probe_eval: acc('eval', 100) };   // eval first: train mode moves running stats
  r.probe_train_own = acc('train', run.B);
  r.probe_train_128 = acc('train', 128);
  out.push(r);
  data.dispose();
  m.dispose();
}
console.log(JSON.stringify(out));
"""


def runs_list(a):
    runs = [(B, s) for s in a.seeds for B in a.batch_sizes]
    runs += [(B, s) for s in a.more_seeds for B in a.more_batch_sizes]
    return runs


def bnlab_dir(a, B, seed):
    return os.path.join(a.runs_dir, f"B{B}-s{seed}")


def pt_base(a, B, seed):
    return os.path.join(a.runs_dir, f"pytorch-B{B}-s{seed}")


def train_cmd(a, B, seed, run_dir, resume):
    cmd = [a.bnlab, "train", "--out", run_dir, "--data", "fashion-mnist" + (f":{a.data_dir}" if a.data_dir else ""),
           "--train-size", str(a.train_size), "--val-size", str(a.val_size), "--data-seed", str(a.data_seed),
           "--arch", "resnet18", "--width-mult", str(a.width_mult), "--epochs", str(a.epochs), "--batch-size", str(B),
           "--lr", f"{lr_for(a, B):.6g}", "--warmup-epochs", str(a.warmup_epochs), "--schedule", "cosine",
           "--seed", str(seed), "--threads", str(a.threads), "--quiet"]
    if resume:
        cmd.append("--resume")
    return cmd


def pt_cmd(a, B, seed):
    return ["/usr/bin/python3", PYTORCH, "--batch-size", str(B), "--seed", str(seed), "--epochs", str(a.epochs),
            "--base-lr", str(a.base_lr * 128 / a.base_batch), "--subset", os.path.join(a.out, "subset.json"),
            "--data", a.data_dir or "/usr/share/datasets/fashion-mnist", "--out", pt_base(a, B, seed) + ".safetensors"]


def run_logged(cmd, log):
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)


def run_bnlab(a):
    for B, seed in runs_list(a):
        d = bnlab_dir(a, B, seed)
        if finished(d, a.epochs):
            continue
        resume = os.path.exists(os.path.join(d, "last.safetensors"))
        os.makedirs(a.runs_dir, exist_ok=True)
        cmd = train_cmd(a, B, seed, d, resume)
        print(f"bnlab B={B} seed {seed}: lr {lr_for(a, B):.6g}{' (resuming)' if resume else ''}", flush=True)
        wall = train_timed(cmd, d, resume)
        print(f"bnlab B={B} seed {seed}: {wall:.0f} s", flush=True)


def write_subset(a):
    """The subsets bnlab train draws (permutation of (data seed, 1) and (data seed, 2)), with the normalization it used."""
    p = os.path.join(a.out, "subset.json")
    cfg = {"dataSeed": a.data_seed, "trainSize": a.train_size, "valSize": a.val_size}
    sub = run_node(SUBSET_JS, cfg)
    meta = st_meta(os.path.join(bnlab_dir(a, *runs_list(a)[0]), "model.safetensors"))
    sub["mean"], sub["std"] = json.loads(meta["mean"])[0], json.loads(meta["std"])[0]
    sub["labels"] = json.loads(meta["labels"])
    sub["note"] = (f"bnlab train --data-seed {a.data_seed} --train-size {a.train_size} --val-size {a.val_size}: "
                   "indices into the train and t10k files; mean/std of the whole training split")
    os.makedirs(a.out, exist_ok=True)
    with open(p, "w") as f:
        json.dump(sub, f)
    return sub


def run_pytorch(a):
    for B in a.pytorch_batch_sizes:
        for seed in a.pytorch_seeds:
            base = pt_base(a, B, seed)
            if os.path.exists(base + ".json"):
                continue
            print(f"pytorch B={B} seed {seed}", flush=True)
            run_logged(pt_cmd(a, B, seed), base + ".log")
            last = open(base + ".log").read().strip().splitlines()[-1]
            with open(base + ".json", "w") as f:
                f.write(last + "\n")
            print(f"pytorch B={B} seed {seed}: {json.loads(last)['val_top1']:.4f}", flush=True)


def st_meta(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n)).get("__metadata__", {})


def probe(a, sub, runs):
    cfg = {"runs": runs, "dir": a.data_dir or "/usr/share/datasets/fashion-mnist", "val": sub["val"]}
    return {row["key"]: row for row in run_node(PROBE_JS, cfg)}


def report(a, argv):
    sub = json.load(open(os.path.join(a.out, "subset.json")))
    rows = []
    for B, seed in runs_list(a):
        d = bnlab_dir(a, B, seed)
        m = read_metrics(os.path.join(d, "metrics.csv"))
        last = m[-1]
        rows.append({"framework": "bnlab", "batch_size": B, "seed": seed, "lr": f"{lr_for(a, B):.6g}", "steps": last["step"],
                     "val_top1": last["val_top1"], "val_loss": last["val_loss"], "train_acc_last_epoch": last["train_acc"],
                     "train_loss_last_epoch": last["train_loss"],
                     "seconds": f"{sum(float(r['seconds']) for r in m):.1f}",
                     "wall_seconds": wall_seconds(d),
                     "model": os.path.join(d, "model.safetensors")})
    for B in a.pytorch_batch_sizes:
        for seed in a.pytorch_seeds:
            base = pt_base(a, B, seed)
            if not os.path.exists(base + ".json"):
                continue
            j = json.load(open(base + ".json"))
            rows.append({"framework": "pytorch", "batch_size": B, "seed": seed, "lr": f"{j['lr']:.6g}", "steps": j["steps"],
                         "val_top1": f"{j['val_top1']:.6f}", "val_loss": f"{j['val_loss']:.6f}",
                         "train_acc_last_epoch": f"{j['train_acc_last_epoch']:.6f}",
                         "train_loss_last_epoch": f"{j['train_loss_last_epoch']:.6f}", "seconds": f"{j['seconds']}",
                         "wall_seconds": "", "model": base + ".safetensors"})
    probes = {} if a.no_probe else probe(a, sub, [{"key": f"{r['framework']}-{r['batch_size']}-{r['seed']}",
                                                  "B": r["batch_size"], "model": r["model"]} for r in rows])
    for r in rows:
        p = probes.get(f"{r['framework']}-{r['batch_size']}-{r['seed']}")
        if p:
            r.update({k: f"{p[k]:.6f}" for k in ("probe_eval", "probe_train_own", "probe_train_128")})
            if r["framework"] == "bnlab" and abs(p["probe_eval"] - float(r["val_top1"])) > 0.0015:
                sys.exit(f"probe: {r['model']}: eval accuracy {p['probe_eval']} in wasm on the held-out subset, "
                         f"the trainer said {r['val_top1']}: not the same images or not the same model")
    fields = [k for k in rows[0] if k not in ("model", "probe_eval", "probe_train_own", "probe_train_128")]
    fields += ["probe_eval", "probe_train_own", "probe_train_128"] if probes else []
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    # per (framework, B): mean, min, max over seeds
    def group(fw, B, key="val_top1"):
        return [float(r[key]) for r in rows if r["framework"] == fw and r["batch_size"] == B and key in r]

    def cell(v):
        if not v:
            return ""
        s = f"{100 * statistics.mean(v):.1f}"
        return s + (f" ({', '.join(pct(x) for x in v)})" if len(v) > 1 else "")

    md = ["# Batch size and BatchNorm on Fashion-MNIST: bnlab and PyTorch", "",
          f"Settings: resnet18 --width-mult {a.width_mult} (stem 8, widths 8/16/32/64), Fashion-MNIST 28x28 gray as 3 "
          f"channels, {a.train_size} training images (a fixed subset, --data-seed {a.data_seed}), {a.val_size} held-out "
          f"test images, {a.epochs} epochs at every B (the same images seen), lr = {a.base_lr} x B / {a.base_batch}, "
          f"{a.warmup_epochs} warmup epoch then cosine per step, SGD momentum 0.9, weight decay 5e-4, pad-crop 3 + flip, "
          "BatchNorm momentum 0.9 (Flax convention), biased running variance, 1 thread. PyTorch 1.13 (Debian): the "
          "same images (subset.json), network, initialization scheme, augmentation, schedule and BatchNorm rule "
          "(pytorch/train_pytorch.py).", "",
          "Eval top-1 % on the held-out images: the mean over seeds, each seed in brackets.", "",
          "| B | lr | bnlab eval top-1 % | PyTorch eval top-1 % | bnlab train-mode @B % | PyTorch train-mode @B % "
          "| bnlab train-mode @128 % | bnlab train acc last epoch % |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for B in a.batch_sizes:
        md.append(f"| {B} | {lr_for(a, B):.6g} | {cell(group('bnlab', B))} | {cell(group('pytorch', B))} | "
                  f"{cell(group('bnlab', B, 'probe_train_own'))} | {cell(group('pytorch', B, 'probe_train_own'))} | "
                  f"{cell(group('bnlab', B, 'probe_train_128'))} | {cell(group('bnlab', B, 'train_acc_last_epoch'))} |")
    cmp = []
    for B in a.pytorch_batch_sizes:
        b, p = group("bnlab", B), group("pytorch", B)
        if len(b) >= 2 and len(p) >= 2:
            spread = max(max(b) - min(b), max(p) - min(p))
            diff = statistics.mean(b) - statistics.mean(p)
            cmp.append(f"- B = {B}: bnlab {100 * statistics.mean(b):.2f} %, PyTorch {100 * statistics.mean(p):.2f} % "
                       f"(difference {100 * diff:+.2f} points; seed-to-seed range: bnlab {100 * (max(b) - min(b)):.2f}, "
                       f"PyTorch {100 * (max(p) - min(p)):.2f} points): "
                       + ("within the spread" if abs(diff) <= spread else "OUTSIDE the spread"))
    md += ["", "bnlab against PyTorch:", ""] + (cmp or ["- (not enough seeds)"])
    md += ["", "- eval top-1: the last epoch's eval-mode accuracy (running statistics) on the held-out images; for "
           "bnlab from metrics.csv, checked equal to the wasm probe's (same images through lab.loadIdxDataset).",
           "- train-mode @B / @128: the same final model in train mode (batch statistics) on the held-out images in "
           "batches of its own B, and of 128 (web/bnlab.mjs, wasm).", "",
           "![eval top-1 against batch size](plot.svg)", "", "Command:", "", "```",
           "python3 tests/fashion_batch_size_experiment.py " + shlex.join(argv), "```", "",
           f"Code: git {git_commit()}; binary {a.bnlab}. Per-run rows: results.csv.", ""]
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(md))
    with open(os.path.join(a.out, "command.txt"), "w") as f:
        f.write("python3 tests/fashion_batch_size_experiment.py " + shlex.join(argv) + f"\n# git {git_commit()}\n")
        for B, seed in runs_list(a):
            f.write("# " + shlex.join(train_cmd(a, B, seed, bnlab_dir(a, B, seed), False)) + "\n")
        for B in a.pytorch_batch_sizes:
            for seed in a.pytorch_seeds:
                f.write("# " + shlex.join(pt_cmd(a, B, seed)) + "\n")

    colors = ["#1f77b4", "#6baed6", "#9ecae1"]
    series = []
    for i, seed in enumerate(sorted(set(a.seeds + a.more_seeds))):
        pts = [(r["batch_size"], float(r["val_top1"])) for r in rows if r["framework"] == "bnlab" and r["seed"] == seed]
        if pts:
            series.append({"label": f"bnlab seed {seed}", "color": colors[i % 3], "points": sorted(pts), "dash": i > 0})
    mean_pts = [(B, statistics.mean(group("pytorch", B))) for B in a.pytorch_batch_sizes if group("pytorch", B)]
    if mean_pts:
        series.append({"label": "PyTorch (mean)", "color": "#d62728", "points": mean_pts})
    tr = [(B, statistics.mean(group("bnlab", B, "probe_train_own"))) for B in a.batch_sizes if group("bnlab", B, "probe_train_own")]
    if tr:
        series.append({"label": "bnlab train mode @B", "color": "#2ca02c", "points": tr, "dash": True})
    series.append({"label": "chance (10%)", "color": "#999999", "dash": True,
                   "points": [(a.batch_sizes[0], 0.1), (a.batch_sizes[-1], 0.1)]})
    plot_svg.line_plot(series, os.path.join(a.out, "plot.svg"),
                       title=f"Fashion-MNIST, resnet18 x{a.width_mult}, {a.epochs} epochs, lr = {a.base_lr}·B/{a.base_batch}",
                       xlabel="training batch size B (log2 axis)", ylabel="eval top-1 on held-out images")
    # the models at the extremes, for the page
    for B in (a.batch_sizes[0], 128 if 128 in a.batch_sizes else a.batch_sizes[-1]):
        src = os.path.join(bnlab_dir(a, B, a.seeds[0]), "model.safetensors")
        shutil.copyfile(src, os.path.join(a.out, f"resnet18-fashion-B{B}.safetensors"))
    print("\n".join(md))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--bnlab", default=os.path.join("build", "native", "bnlab"))
    ap.add_argument("--runs-dir", default=os.path.join("build", "experiments", "fashion_batch_size"))
    ap.add_argument("--out", default=os.path.join("demo-models", "experiments", "fashion_batch_size"))
    ap.add_argument("--data-dir", default="", help="Fashion-MNIST folder (default: bnlab's, /usr/share/datasets/fashion-mnist)")
    ap.add_argument("--batch-sizes", default="2,4,8,16,32,64,128,256")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--more-seeds", default="2")
    ap.add_argument("--more-batch-sizes", default="2,8,128")
    ap.add_argument("--pytorch-batch-sizes", default="8,128")
    ap.add_argument("--pytorch-seeds", default="0,1,2")
    ap.add_argument("--width-mult", type=float, default=0.125)
    ap.add_argument("--train-size", type=int, default=10000)
    ap.add_argument("--val-size", type=int, default=2000)
    ap.add_argument("--data-seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--base-lr", type=float, default=0.2)
    ap.add_argument("--base-batch", type=int, default=128)
    ap.add_argument("--warmup-epochs", type=float, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-pytorch", action="store_true")
    ap.add_argument("--no-probe", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    argv = sys.argv[1:]
    a = ap.parse_args(argv)
    ints = lambda s: [int(v) for v in s.split(",") if v != ""]  # noqa: E731
    a.batch_sizes, a.seeds, a.more_seeds = ints(a.batch_sizes), ints(a.seeds), ints(a.more_seeds)
    a.more_batch_sizes, a.pytorch_batch_sizes, a.pytorch_seeds = ints(a.more_batch_sizes), ints(a.pytorch_batch_sizes), ints(a.pytorch_seeds)
    if a.no_pytorch:
        a.pytorch_batch_sizes = []
    os.chdir(ROOT)
    if not a.report_only:
        t = time.time()
        run_bnlab(a)
        write_subset(a)
        run_pytorch(a)
        print(f"all runs: {time.time() - t:.0f} s", flush=True)
    report(a, [x for x in argv if x != "--report-only"])


if __name__ == "__main__":
    main()
