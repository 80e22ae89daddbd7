#!/usr/bin/env python3
"""The blog's batch-size experiment, reproduced with the native trainer (standard library only).

Trains the same model with `bnlab train` at several batch sizes (default 2 4 8 16 32 64 128) for the
same number of epochs on the same procedural data, same seed, same schedule, then collects the final
eval top-1/top-5 from each run's metrics.csv and writes to --out (default
demo-models/experiments/batch_size/):

  results.csv   one row per batch size
  results.md    the same as a Markdown table, with the settings and the command
  plot.svg      final accuracy against batch size (log2 x axis), drawn by tests/plot_svg.py
  command.txt   the exact command line, the git commit and the binary used

Learning rate: the linear scaling rule lr = base_lr * B / base_batch (Goyal et al. 2017) with the
same warmup (in epochs) for every B. With a fixed number of epochs this keeps lr/B, the size of the
step each image contributes, the same for every B, so the SGD noise temperature matches across runs
and what still changes with B is what BatchNorm does: its batch statistics (the normalization seen in
training, and the running statistics used in eval) are estimated from B images.

After training, a probe (node + web/bnlab.mjs, the wasm build) measures on fresh procedural images
(a seed neither training nor validation uses), for each final model:
  eval acc      eval mode: running statistics
  train@B acc   train mode in batches of the model's own training B: batch statistics, as in training
  train@128 acc train mode in batches of 128: accurate batch statistics
so the gap between train-mode and eval-mode accuracy can be read per batch size.

Runs live in --runs-dir (default build/experiments/batch_size/B<B>, ignored by git); a finished run is
not trained again and an interrupted one is resumed (bnlab train --resume), so rerunning the script
only does what is missing. --report-only rebuilds the results from the runs.

  python3 tests/batch_size_experiment.py                      # the committed experiment
  python3 tests/batch_size_experiment.py --epochs 2 --train-size 2000 --out /tmp/bs   # a quick look
"""
import argparse
import csv
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot_svg  # noqa: E402
from experiment_common import (ACCURACY_JS, ROOT, finished, git_commit, lr_for, pct, read_metrics,  # noqa: E402
                               run_node, train_timed, wall_seconds)

PROBE_JS = r"""
import { createBnLab } from %(bridge)s;
import fs from 'node:fs';
""" + ACCURACY_JS + r"""
const cfg = JSON.parse(process.argv[1]);
const lab = await createBnLab();
const out = [];
for (const run of cfg.runs) {
  const bytes = new Uint8Array(fs.readFileSync(run.model));
  const m = lab.loadModel(bytes);
  const K = m.info.numClasses, S = cfg.size, N = cfg.n;
  const data = lab.procedural({ seed: cfg.seed, count: N, classes: K, size: S });
  // a fixed shuffle (labels cycle through the classes by index; training batches are shuffled)
  const order = Array.from({ length: N }, (_, i) => i);
  let st = 12345;
  for (let i = N - 1; i > 0; i--) { st = (st * 1103515245 + 12345) >>> 0; const j = st %% (i + 1); [order[i], order[j]] = [order[j], order[i]]; }
  const acc = (mode, B) => accuracy(m, data, order, S, mode, B);
  const r = { batch_size: run.B, probe_eval: acc('eval', 128) };   // eval first: train mode moves running stats
  r.probe_train_own = acc('train', run.B);
  r.probe_train_128 = acc('train', 128);
  out.push(r);
  data.dispose();
  m.dispose();
}
console.log(JSON.stringify(out));
"""


def train_cmd(a, B, run_dir, resume):
    cmd = [a.bnlab, "train", "--out", run_dir, "--data", "procedural", "--classes", str(a.classes),
           "--image-size", str(a.image_size), "--train-size", str(a.train_size), "--val-size", str(a.val_size),
           "--data-seed", str(a.data_seed), "--arch", a.arch, "--width-mult", str(a.width_mult),
           "--epochs", str(a.epochs), "--batch-size", str(B), "--lr", f"{lr_for(a, B):.6g}",
           "--warmup-epochs", str(a.warmup_epochs), "--schedule", "cosine", "--seed", str(a.seed),
           "--threads", str(a.threads), "--quiet"]
    if resume:
        cmd.append("--resume")
    return cmd


def run_all(a):
    for B in a.batch_sizes:
        run_dir = os.path.join(a.runs_dir, f"B{B}")
        if finished(run_dir, a.epochs):
            print(f"B={B}: done already ({run_dir})", flush=True)
            continue
        resume = os.path.exists(os.path.join(run_dir, "last.safetensors"))
        os.makedirs(a.runs_dir, exist_ok=True)
        cmd = train_cmd(a, B, run_dir, resume)
        print(f"B={B}: lr {lr_for(a, B):.6g}{' (resuming)' if resume else ''}: {shlex.join(cmd)}", flush=True)
        wall = train_timed(cmd, run_dir, resume)
        print(f"B={B}: {wall:.0f} s", flush=True)


def probe(a):
    runs = [{"B": B, "model": os.path.join(a.runs_dir, f"B{B}", "model.safetensors")} for B in a.batch_sizes]
    cfg = {"runs": runs, "seed": a.probe_seed, "n": a.probe_size, "size": a.image_size}
    return {row["batch_size"]: row for row in run_node(PROBE_JS, cfg)}


def report(a, argv):
    probes = {} if a.no_probe else probe(a)
    rows = []
    for B in a.batch_sizes:
        run_dir = os.path.join(a.runs_dir, f"B{B}")
        m = read_metrics(os.path.join(run_dir, "metrics.csv"))
        last = m[-1]
        row = {
            "batch_size": B, "lr": f"{lr_for(a, B):.6g}", "steps": last["step"], "epochs": last["epoch"],
            "val_top1": last["val_top1"], "val_top5": last["val_top5"], "val_loss": last["val_loss"],
            "best_val_top1": f"{max(float(r['val_top1']) for r in m if r['val_top1'] != ''):.6f}",
            "train_acc_last_epoch": last["train_acc"], "train_loss_last_epoch": last["train_loss"],
            "gap_train_minus_val": f"{float(last['train_acc']) - float(last['val_top1']):.6f}",
            "train_seconds": f"{sum(float(r['seconds']) for r in m):.1f}",
            "wall_seconds": wall_seconds(run_dir),
        }
        p = probes.get(B)
        if p:
            row.update({k: f"{p[k]:.6f}" for k in ("probe_eval", "probe_train_own", "probe_train_128")})
            row["probe_gap_trainB_minus_eval"] = f"{p['probe_train_own'] - p['probe_eval']:.6f}"
        rows.append(row)

    os.makedirs(a.out, exist_ok=True)
    fields = list(rows[0].keys())
    with open(os.path.join(a.out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)

    cmd = "python3 tests/batch_size_experiment.py " + shlex.join(argv)
    settings = (f"{a.arch} --width-mult {a.width_mult}, procedural data: {a.classes} classes, "
                f"{a.image_size}x{a.image_size}, {a.train_size} train / {a.val_size} val images (data seed "
                f"{a.data_seed}), {a.epochs} epochs, SGD momentum 0.9, weight decay 5e-4, cosine schedule with "
                f"{a.warmup_epochs} warmup epoch(s), lr = {a.base_lr} x B / {a.base_batch}, seed {a.seed}, "
                f"BatchNorm momentum 0.9 (Flax convention), biased running variance (the blog's jnp.var), "
                f"default augmentation (pad-crop + flip), {a.threads} thread(s)")
    md = ["# Batch size and BatchNorm: final accuracy against batch size", "",
          f"Settings: {settings}.", "",
          "| batch size | lr | steps | eval top-1 % | eval top-5 % | train acc (last epoch) % | gap train - eval (pts) |"
          + (" probe eval % | probe train-mode @B % | probe train-mode @128 % |" if probes else "")
          + " train time s |",
          "|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if probes else "") + "---:|"]
    for r in rows:
        line = (f"| {r['batch_size']} | {r['lr']} | {r['steps']} | {pct(r['val_top1'])} | {pct(r['val_top5'])} | "
                f"{pct(r['train_acc_last_epoch'])} | {100 * float(r['gap_train_minus_val']):+.1f} |")
        if probes:
            line += f" {pct(r['probe_eval'])} | {pct(r['probe_train_own'])} | {pct(r['probe_train_128'])} |"
        line += f" {r['train_seconds']} |"
        md.append(line)
    md += ["",
           "- eval top-1/top-5: the last epoch's validation accuracy from metrics.csv (eval mode: running statistics).",
           "- train acc (last epoch): the trainer's running accuracy over the last epoch's training batches "
           "(train mode, batch statistics of B images, augmented images, weights still moving); the gap is that minus eval top-1.",
           ]
    if probes:
        md += [f"- probe: {a.probe_size} fresh procedural images (seed {a.probe_seed}), the same final model in eval mode, "
               "in train mode in batches of its own B, and in train mode in batches of 128 (web/bnlab.mjs, wasm).", ]
    md += ["", "![final accuracy against batch size](plot.svg)", "", "Command:", "", "```", cmd, "```", "",
           f"Code: git {git_commit()}; binary {a.bnlab}.", ""]
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(md))
    with open(os.path.join(a.out, "command.txt"), "w") as f:
        f.write(cmd + "\n" + f"# git {git_commit()}; binary {a.bnlab}\n")
        for B in a.batch_sizes:
            f.write("# " + shlex.join(train_cmd(a, B, os.path.join(a.runs_dir, f"B{B}"), False)) + "\n")

    series = [
        {"label": "eval top-1", "color": "#1f77b4", "points": [(r["batch_size"], float(r["val_top1"])) for r in rows]},
        {"label": "eval top-5", "color": "#1f77b4", "dash": True,
         "points": [(r["batch_size"], float(r["val_top5"])) for r in rows]},
    ]
    if probes:
        series.append({"label": "train mode @ own B", "color": "#d62728",
                       "points": [(r["batch_size"], float(r["probe_train_own"])) for r in rows]})
        series.append({"label": "train mode @ 128", "color": "#2ca02c", "dash": True,
                       "points": [(r["batch_size"], float(r["probe_train_128"])) for r in rows]})
    chance = 1.0 / a.classes
    series.append({"label": f"chance ({100 * chance:.0f}%)", "color": "#999999", "dash": True,
                   "points": [(a.batch_sizes[0], chance), (a.batch_sizes[-1], chance)]})
    plot_svg.line_plot(series, os.path.join(a.out, "plot.svg"),
                       title=f"{a.arch} x{a.width_mult}, {a.epochs} epochs, lr = {a.base_lr}·B/{a.base_batch}",
                       xlabel="training batch size B (log2 axis)", ylabel="accuracy (top-1 unless marked)")
    print("\n".join(md))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--bnlab", default=os.path.join("build", "native", "bnlab"))
    ap.add_argument("--runs-dir", default=os.path.join("build", "experiments", "batch_size"))
    ap.add_argument("--out", default=os.path.join("demo-models", "experiments", "batch_size"))
    ap.add_argument("--batch-sizes", default="2,4,8,16,32,64,128")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--width-mult", type=float, default=0.25)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--train-size", type=int, default=10000)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--data-seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--base-lr", type=float, default=0.2, help="lr at --base-batch (linear scaling)")
    ap.add_argument("--base-batch", type=int, default=128)
    ap.add_argument("--warmup-epochs", type=float, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="threads per run (1: on a loaded 2-core machine two threads were up to 80x slower)")
    ap.add_argument("--probe-seed", type=int, default=777)
    ap.add_argument("--probe-size", type=int, default=1024)
    ap.add_argument("--no-probe", action="store_true", help="skip the node/wasm train-vs-eval probe")
    ap.add_argument("--report-only", action="store_true", help="do not train; rebuild the results from the runs")
    argv = sys.argv[1:]
    a = ap.parse_args(argv)
    a.batch_sizes = [int(b) for b in a.batch_sizes.split(",")]
    os.chdir(ROOT)
    if not a.report_only:
        t = time.time()
        run_all(a)
        print(f"all runs: {time.time() - t:.0f} s", flush=True)
    report(a, [x for x in argv if x != "--report-only"])


if __name__ == "__main__":
    main()
