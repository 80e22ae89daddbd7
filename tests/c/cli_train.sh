#!/usr/bin/env bash
# `bnlab train` from the command line: --help; bad options give one error line and leave nothing
# behind; a straight run writes the checkpoints, the final model (with labels) and metrics.csv
# atomically; --epochs 1 then --resume --epochs 2 is bit-identical to --epochs 2 straight (also when
# stopped inside an epoch with a cosine schedule and warmup); a resume with other settings is
# refused; a diverging run (--lr 1e6, or an lr that explodes in epoch 2) stops with a clear message
# and the last checkpoint intact and finite; --init with another class count trains a new head.
# usage: bash tests/c/cli_train.sh build/native/bnlab
set -u
BIN=${1:?usage: cli_train.sh path/to/bnlab}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/sh_common.sh"   # $T, ok, bad, st, error_verdict

# expect_error WHAT SUBSTRING ARGS...: non-zero exit, exactly one stderr line "bnlab: error: ...SUBSTRING..."
expect_error() {
    local what=$1 sub=$2
    shift 2
    "$BIN" train "$@" >"$T/out" 2>"$T/err"
    error_verdict "$what" "$sub" $? && ok
}

no_tmp_files() {
    local left
    left=$(find "$T" -name '*.tmp.*' | head -3)
    if [ -n "$left" ]; then bad "$1: temporary files left: $left"; else ok; fi
}

TINY=(--classes 4 --image-size 16 --train-size 48 --val-size 16 --data-seed 3 --arch resnet18 --width-mult 0.125
    --batch-size 8 --threads 1 --seed 5 --quiet)
CONST=(--schedule step --step-epochs 10 --lr 0.05)   # a constant lr: --epochs 1 and 2 share their first epoch

# --- help
if "$BIN" train --help >"$T/help" 2>&1 && grep -q -- '--resume' "$T/help" && grep -q -- '--sync-bn' "$T/help" &&
    grep -q -- '--max-steps' "$T/help" && grep -q 'metrics.csv' "$T/help"; then ok; else bad "train --help"; fi

# --- bad options: one line each, no outputs
expect_error "no --out" "missing required option --out"
expect_error "bad data" "--data" --data imagenet --out "$T/x"
expect_error "bad arch" "--arch" --arch resnet42 --out "$T/x"
expect_error "bad schedule" "--schedule" --schedule linear --out "$T/x"
expect_error "bad milestones" "--step-epochs" --schedule step --step-epochs 5,3 --out "$T/x"
expect_error "bad lr" "--lr" --lr fast --out "$T/x"
expect_error "negative lr" "--lr" --lr -1 --out "$T/x"
expect_error "batch 0" "--batch-size" --batch-size 0 --out "$T/x"
expect_error "bad running-var" "--running-var" --running-var sometimes --out "$T/x"
expect_error "augment both" "contradict" --augment --no-augment --out "$T/x"
expect_error "classes with cifar" "--classes" --data "cifar10:$T/nope" --classes 3 --out "$T/x"
expect_error "missing cifar" "$T/nope" --data "cifar10:$T/nope" --out "$T/x"
expect_error "missing folder" "$T/nofolder/train" --data "folder:$T/nofolder" --out "$T/x"
expect_error "missing init" "$T/missing.safetensors" --init "$T/missing.safetensors" --out "$T/x"
expect_error "init and arch" "--init" --init "$T/w.safetensors" --arch resnet50 --out "$T/x"
expect_error "unknown option" "--bogus" --bogus --out "$T/x"
expect_error "resume nothing" "nothing to resume" "${TINY[@]}" --resume --out "$T/x"
expect_error "tiny train set" "fewer than one global batch" "${TINY[@]}" --train-size 4 --out "$T/x"
if [ -e "$T/x/last.safetensors" ] || [ -e "$T/x/model.safetensors" ]; then bad "a failed start left files in $T/x"; else ok; fi

# --- a straight run: files, metrics, labels
if "$BIN" train "${TINY[@]}" "${CONST[@]}" --epochs 2 --out "$T/straight" 2>"$T/err"; then ok; else
    bad "straight run failed: $(cat "$T/err")"
fi
for f in last.safetensors best.safetensors model.safetensors metrics.csv; do
    [ -s "$T/straight/$f" ] && ok || bad "straight run: no $f"
done
hdr=$(head -1 "$T/straight/metrics.csv")
if [ "$hdr" = "epoch,step,lr,train_loss,train_acc,val_loss,val_top1,val_top5,images_per_s,seconds,comm_ms" ]; then ok; else
    bad "metrics.csv header: $hdr"
fi
rows=$(tail -n +2 "$T/straight/metrics.csv" | awk -F, 'NF == 11 && $6 != "" && $7 != "" && $8 != ""' | wc -l)
[ "$rows" -eq 2 ] && ok || bad "metrics.csv: expected 2 complete rows, got: $(cat "$T/straight/metrics.csv")"
if tail -n +2 "$T/straight/metrics.csv" | awk -F, '{print $1","$2}' | tr '\n' ' ' | grep -qx '1,6 2,12 '; then ok; else
    bad "metrics.csv epoch/step columns: $(cat "$T/straight/metrics.csv")"
fi
labels=$(st meta "$T/straight/model.safetensors" labels)
if python3 -c 'import json,sys; l=json.loads(sys.argv[1]); assert isinstance(l, list) and len(l) == 4 and all(isinstance(x, str) for x in l)' "$labels" 2>/dev/null; then
    ok
else bad "model.safetensors labels: '$labels'"; fi
"$BIN" info "$T/straight/model.safetensors" >"$T/info" 2>&1 && grep -q "classes: 4" "$T/info" && ok || bad "bnlab info model: $(cat "$T/info")"
"$BIN" info "$T/straight/best.safetensors" >/dev/null 2>&1 && ok || bad "best.safetensors does not load as a model"
no_tmp_files "straight run"

# --- --epochs 1, then --resume --epochs 2: bit-identical weights, momentum, running statistics
"$BIN" train "${TINY[@]}" "${CONST[@]}" --epochs 1 --out "$T/res" 2>"$T/err" || bad "resume part 1: $(cat "$T/err")"
[ "$(st meta "$T/res/last.safetensors" train.step)" = "6" ] && ok || bad "checkpoint after epoch 1 is not at step 6"
"$BIN" train "${TINY[@]}" "${CONST[@]}" --epochs 2 --resume --out "$T/res" 2>"$T/err" || bad "resume part 2: $(cat "$T/err")"
if n=$(st eq "$T/straight/model.safetensors" "$T/res/model.safetensors" 2>&1); then ok; else
    bad "resumed model differs from the straight run: $n"
fi
if n=$(st eq "$T/straight/last.safetensors" "$T/res/last.safetensors" 2>&1); then ok; else
    bad "resumed checkpoint (with momentum) differs from the straight run: $n"
fi
rows=$(tail -n +2 "$T/res/metrics.csv" | wc -l)
[ "$rows" -eq 2 ] && ok || bad "resumed metrics.csv: expected 2 rows, got $rows"
no_tmp_files "resume"

# --- stopped inside epoch 1 of a cosine schedule with warmup, resumed: the same weights
COS=(--epochs 2 --lr 0.05 --warmup-epochs 0.5 --threads 2)   # and with two threads: same threads, same bits
"$BIN" train "${TINY[@]}" "${COS[@]}" --out "$T/cos" 2>"$T/err" || bad "cosine straight: $(cat "$T/err")"
"$BIN" train "${TINY[@]}" "${COS[@]}" --max-steps 4 --out "$T/cos2" 2>"$T/err" || bad "cosine part 1: $(cat "$T/err")"
[ "$(st meta "$T/cos2/last.safetensors" train.step)" = "4" ] && ok || bad "checkpoint after --max-steps 4 is not at step 4"
"$BIN" train "${TINY[@]}" "${COS[@]}" --resume --out "$T/cos2" 2>"$T/err" || bad "cosine part 2: $(cat "$T/err")"
if n=$(st eq "$T/cos/model.safetensors" "$T/cos2/model.safetensors" 2>&1); then ok; else
    bad "mid-epoch resume (cosine, warmup) differs from the straight run: $n"
fi

# --- a resume with other settings is refused, and leaves the checkpoint alone
sum_before=$(cksum <"$T/res/last.safetensors")
expect_error "resume with another lr" "--lr" "${TINY[@]}" --schedule step --step-epochs 10 --lr 0.1 --epochs 3 --resume --out "$T/res"
expect_error "resume with another batch" "--batch-size" "${TINY[@]}" "${CONST[@]}" --batch-size 4 --epochs 3 --resume --out "$T/res"
[ "$(cksum <"$T/res/last.safetensors")" = "$sum_before" ] && ok || bad "a refused resume changed last.safetensors"
expect_error "run into a used directory" "--resume" "${TINY[@]}" "${CONST[@]}" --epochs 1 --out "$T/res"

# --- divergence: --lr 1e6 from the start; the checkpoint written before the first step survives
expect_error "lr 1e6" "training diverged" "${TINY[@]}" --lr 1e6 --epochs 2 --out "$T/nan1"
# a non-finite loss, or a huge one with a non-finite gradient: caught before the update either way
if grep -Eq 'loss is [^ ]+ (with a non-finite gradient )?at epoch [0-9]+ step [0-9]+' "$T/err"; then ok; else
    bad "divergence message: $(cat "$T/err")"
fi
[ "$(st meta "$T/nan1/last.safetensors" train.step)" = "0" ] && ok || bad "lr 1e6: the step-0 checkpoint is gone"
st finite "$T/nan1/last.safetensors" >/dev/null 2>"$T/fin" && ok || bad "lr 1e6: checkpoint not finite: $(cat "$T/fin")"
[ ! -e "$T/nan1/model.safetensors" ] && ok || bad "lr 1e6: a final model was written"
# an lr that explodes in epoch 2 (x1e8 after epoch 1): the epoch-1 checkpoint survives, finite, and resumable
expect_error "lr explodes in epoch 2" "at epoch 2 step" "${TINY[@]}" --schedule step --step-epochs 1 --step-gamma 1e8 \
    --lr 0.05 --epochs 3 --out "$T/nan2"
grep -q "training diverged" "$T/err" && ok || bad "epoch-2 divergence message: $(cat "$T/err")"
[ "$(st meta "$T/nan2/last.safetensors" train.step)" = "6" ] && ok || bad "the epoch-1 checkpoint is not at step 6"
st finite "$T/nan2/last.safetensors" >/dev/null 2>"$T/fin" && ok || bad "epoch-1 checkpoint not finite: $(cat "$T/fin")"
"$BIN" info "$T/nan2/best.safetensors" >/dev/null 2>&1 && ok || bad "best.safetensors after divergence does not load"
rows=$(tail -n +2 "$T/nan2/metrics.csv" | wc -l)
[ "$rows" -eq 1 ] && ok || bad "metrics.csv after divergence: expected 1 row, got $rows"
no_tmp_files "divergence"

# --- --norm none: the network without normalization (per-channel scale and shift, no statistics)
expect_error "bad norm" "--norm" --norm layer --out "$T/x"
expect_error "norm with init" "--init" --init "$T/straight/model.safetensors" --norm none --out "$T/x"
expect_error "sync-bn without norm" "nothing to synchronize" --norm none --sync-bn --out "$T/x"
if "$BIN" train "${TINY[@]}" "${CONST[@]}" --epochs 1 --norm none --zero-init-residual --out "$T/nonorm" 2>"$T/err"; then
    [ "$(st meta "$T/nonorm/model.safetensors" bnlab.norm)" = "none" ] && ok || bad "--norm none: model lacks bnlab.norm"
    [ "$(st meta "$T/nonorm/last.safetensors" train.zero-init-residual)" = "1" ] && ok || bad "zero-init-residual not recorded"
    "$BIN" info "$T/nonorm/model.safetensors" | grep -q '^normalization: none' && ok || bad "info: no 'normalization: none'"
    st untouched "$T/nonorm/model.safetensors" 2>"$T/e2" && ok || bad "--norm none: $(cat "$T/e2")"
    expect_error "resume norm mismatch" "--norm" "${TINY[@]}" "${CONST[@]}" --epochs 2 --zero-init-residual --resume \
        --out "$T/nonorm"
    if "$BIN" train "${TINY[@]}" "${CONST[@]}" --epochs 2 --norm none --zero-init-residual --resume --out "$T/nonorm" \
        2>"$T/err"; then
        [ "$(st meta "$T/nonorm/last.safetensors" train.step)" = "12" ] && ok || bad "--norm none resume: not at step 12"
        st untouched "$T/nonorm/model.safetensors" 2>"$T/e2" && ok || bad "resumed: $(cat "$T/e2")"
    else
        bad "--norm none --resume failed: $(cat "$T/err")"
    fi
else
    bad "--norm none run failed: $(cat "$T/err")"
fi

# --- the other normalizations (--norm group:G|renorm|ghost:V|frozen): recorded, printed, statistics as each kind does
expect_error "bad group" "--norm: 'group:x'" --norm group:x --out "$T/x"
expect_error "group not dividing" "3 groups do not divide the 8 channels of layer 'bn1'" "${TINY[@]}" --norm group:3 --out "$T/x"
expect_error "ghost not dividing" "ghost:3: 3 images per virtual batch do not divide the batch size 8" "${TINY[@]}" --norm ghost:3 \
    --out "$T/x"
expect_error "sync-bn with group" "nothing to synchronize with --norm group:2" --norm group:2 --sync-bn --out "$T/x"
for k in group:2 renorm ghost:2 frozen; do
    d="$T/norm-${k%%:*}"
    if "$BIN" train "${TINY[@]}" "${CONST[@]}" --epochs 1 --norm "$k" --out "$d" 2>"$T/err"; then
        [ "$(st meta "$d/model.safetensors" bnlab.norm)" = "$k" ] && ok || bad "--norm $k: model lacks bnlab.norm"
        [ "$(st meta "$d/last.safetensors" train.norm)" = "$k" ] && ok || bad "--norm $k: train.norm not recorded"
        "$BIN" info "$d/model.safetensors" | grep -q "^normalization: $k" && ok || bad "info: no 'normalization: $k'"
        case $k in
        group:2)   # nn.GroupNorm's names: weight and bias only
            st shape "$d/model.safetensors" bn1.weight >/dev/null 2>&1 && ok || bad "group: no bn1.weight"
            st shape "$d/model.safetensors" bn1.running_mean >/dev/null 2>&1 && bad "group: running_mean saved" || ok ;;
        frozen) st untouched "$d/model.safetensors" 2>"$T/e2" && ok || bad "frozen: $(cat "$T/e2")" ;;
        *) st untouched "$d/model.safetensors" 2>/dev/null && bad "--norm $k: running statistics never moved" || ok ;;
        esac
    else
        bad "--norm $k run failed: $(cat "$T/err")"
    fi
done

# --- --init with another class count: a new fc
if "$BIN" train --classes 3 --image-size 16 --train-size 24 --val-size 8 --batch-size 8 --threads 1 --epochs 1 \
    --init "$T/straight/model.safetensors" --out "$T/init" >"$T/out" 2>"$T/err"; then
    grep -q "new fc" "$T/out" && ok || bad "--init with 3 classes: no note about the new fc: $(cat "$T/out")"
    [ "$(st shape "$T/init/model.safetensors" fc.weight)" = "[3, 64]" ] && ok || bad "--init: fc.weight shape"
else
    bad "--init with another class count failed: $(cat "$T/err")"
fi

echo "cli_train: $pass checks, $fail failed"
[ $fail -eq 0 ]
