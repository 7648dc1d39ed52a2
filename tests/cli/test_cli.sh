#!/usr/bin/env bash
# End-to-end test of the sedensenet tool on a small real image folder (Fashion-MNIST subset):
# train, resume, config files, evaluate, predict, info, --help, and bad input.
#   test_cli.sh SEDENSENET DATA_DIR WORK_DIR TORCHVISION_WEIGHTS
set -uo pipefail
tool=$1
data=$2
work=$3
torchvision_weights=$4
rm -rf "$work"
mkdir -p "$work"
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
expect_ok() { # description, command...
  local what=$1; shift
  "$@" > "$work/out.txt" 2>&1
  local code=$?
  if [ $code -ne 0 ]; then fail "$what (exit $code)"; cat "$work/out.txt"; fi
}
expect_error() { # description, expected text, command... : non-zero exit and a one-line message
  local what=$1 text=$2; shift 2
  "$@" > "$work/out.txt" 2>&1
  local code=$?
  if [ $code -eq 0 ]; then fail "$what: exit 0, expected an error"; fi
  if ! grep -q -- "$text" "$work/out.txt"; then fail "$what: message lacks '$text'"; cat "$work/out.txt"; fi
  if grep -q "frame #" "$work/out.txt"; then fail "$what: printed a stack trace"; fi
}
contains() { grep -q -- "$2" "$1" || { fail "$1 lacks '$2'"; }; }

common=(--preset densenet_bc_10_k4 --image-size 16 --batch-size 32 --threads 2 --workers 2)

# --help is complete, bad flags fail with a short message.
expect_ok "--help" "$tool" --help
contains "$work/out.txt" "train"
contains "$work/out.txt" "predict"
expect_ok "train --help" "$tool" train --help
for flag in --preset --recipe --epochs --lr --scheduler --mixup --cutmix --resume --config --memory --bad-files; do
  contains "$work/out.txt" "$flag"
done
expect_error "unknown flag" "--bogus" "$tool" train "$data" --bogus
expect_error "invalid value" "epochs" "$tool" train "$data" --epochs 0
expect_error "missing folder" "does not exist" "$tool" train "$work/nowhere" "${common[@]}"
expect_error "missing weights" "not found" "$tool" predict --weights "$work/none.pt" "$data"
echo "not a checkpoint" > "$work/fake.pt"
expect_error "corrupt weights" "fake.pt: not a PyTorch archive" "$tool" evaluate --weights "$work/fake.pt" "$data"

# train: two epochs, every file of the run folder.
expect_ok "train" "$tool" train "$data" "${common[@]}" --epochs 2 --run-dir "$work/run"
contains "$work/out.txt" "best epoch"
for f in config.json history.csv history.jsonl best.pt last.pt metrics.json confusion_matrix.json \
         confusion_matrix.csv loss.svg accuracy.svg lr.svg confusion_matrix.svg; do
  [ -s "$work/run/$f" ] || fail "run folder lacks $f"
done
[ "$(wc -l < "$work/run/history.csv")" -eq 3 ] || fail "history.csv should have a header and 2 rows"

# A run folder is never overwritten unasked: the same --run-dir again is refused (the first run
# intact), --overwrite replaces it, and without --run-dir each run gets a folder of its own.
cp "$work/run/best.pt" "$work/first-best.pt"
expect_error "same --run-dir again" "already holds a run" "$tool" train "$data" "${common[@]}" --epochs 1 --run-dir "$work/run"
contains "$work/out.txt" "--resume $work/run"
contains "$work/out.txt" "--overwrite"
cmp -s "$work/run/best.pt" "$work/first-best.pt" || fail "a refused run changed the first run's best.pt"
[ "$(wc -l < "$work/run/history.csv")" -eq 3 ] || fail "a refused run changed the first run's history"
mkdir -p "$work/cwd"
(cd "$work/cwd" && "$tool" train "$data" "${common[@]}" --epochs 1 > "$work/out.txt" 2>&1 &&
  "$tool" train "$data" "${common[@]}" --epochs 1 > "$work/out2.txt" 2>&1) || fail "two runs without --run-dir"
contains "$work/out.txt" "run folder runs/densenet_bc_10_k4"
contains "$work/out2.txt" "run folder runs/densenet_bc_10_k4-2"
[ -s "$work/cwd/runs/densenet_bc_10_k4/best.pt" ] && [ -s "$work/cwd/runs/densenet_bc_10_k4-2/best.pt" ] ||
  fail "the second run without --run-dir did not keep the first"
expect_ok "--overwrite" "$tool" train "$data" "${common[@]}" --epochs 2 --overwrite --run-dir "$work/cwd/runs/densenet_bc_10_k4-2"
[ "$(wc -l < "$work/cwd/runs/densenet_bc_10_k4-2/history.csv")" -eq 3 ] || fail "--overwrite did not replace the run"

# Under a 60-column pseudo-terminal the progress bar (in place), the epoch summaries, warnings
# and the closing lines fit the width, and the bar shows the whole run's ETA.
if command -v script > /dev/null; then
  script -q -e -c "stty cols 60; '$tool' train '$data' ${common[*]} --epochs 2 --run-dir '$work/run-pty'" \
    "$work/typescript" > /dev/null 2>&1 || fail "train under a 60-column pseudo-terminal"
  python3 - "$work/typescript" <<'PY' || fail "progress output wider than a 60-column terminal"
import re, sys
text = open(sys.argv[1], 'rb').read().decode('utf-8', 'replace').replace('\x1b[K', '')
segments = [s for s in re.split(r'[\r\n]+', text) if s]
checked = [s for s in segments if re.match(r'(epoch \d|  test loss|  recall|  lr |best epoch|warning|  )', s)
           and not s.startswith('Script ')]
bars = [s for s in checked if re.match(r'epoch 1/2 \[', s)]
assert bars and any('run 0:' in s for s in bars), bars[:3]
assert any(s.startswith('epoch 2: train loss') for s in checked), checked
wide = [s for s in checked if len(s) > 60 and ' ' in s.strip()]  # one long path cannot be broken
assert not wide, wide
PY
fi

# resume: extend the run to 3 epochs from its config.json alone.
expect_ok "resume" "$tool" train --resume "$work/run" --epochs 3
contains "$work/out.txt" "resuming"
[ "$(wc -l < "$work/run/history.csv")" -eq 4 ] || fail "resumed history.csv should have 3 rows"

# A JSON config file, overridden by a flag.
cat > "$work/config.json" <<JSON
{"preset": "densenet_bc_10_k4", "image_size": 16, "epochs": 5, "batch_size": 32, "threads": 2,
 "workers": 2, "recipe": "reference"}
JSON
expect_ok "config file" "$tool" train "$data" --config "$work/config.json" --epochs 1 --run-dir "$work/run2"
python3 - "$work/run2/config.json" <<'PY' || fail "config.json does not record the config file's values and the override"
import json, sys
c = json.load(open(sys.argv[1]))
cli = c["metadata"]["cli"]
assert cli["epochs"] == 1, cli["epochs"]          # the flag overrides the file
assert cli["recipe"] == "reference"               # from the file
assert c["trainer"]["lr"] == 1e-4                 # the reference recipe's learning rate
assert c["trainer"]["optimizer"] == "adam"
PY
echo '{"epochz": 3}' > "$work/bad.json"
expect_error "unknown config key" "unknown option 'epochz'" "$tool" train "$data" --config "$work/bad.json"

# One schema per options type: every option of TrainerOptions and DenseNetOptions (but the class
# count) is a flag under its own key, and the same key works in a config file and in config.json.
expect_ok "train --help (schema)" "$tool" train --help
python3 - "$work/out.txt" "$work/run2/config.json" <<'PY' || fail "a schema option has no flag, or config.json keys differ"
import json, sys
help_text = open(sys.argv[1]).read()
c = json.load(open(sys.argv[2]))
for key in list(c["trainer"]) + [k for k in c["metadata"]["model"] if k != "num_classes"]:
    flag = "--" + key.replace("_", "-")
    assert flag in help_text, flag
    assert key in c["metadata"]["cli"], key
PY
# Scheduler parameters from the tool (multistep needs milestones), model options from a config file.
cat > "$work/schema.json" <<JSON
{"growth_rate": 6, "block_config": [1, 1, 1], "num_init_features": 8, "se_reduction": 4,
 "scheduler": "multistep", "milestones": [1], "gamma": 0.5, "grad_clip": 1.0}
JSON
expect_ok "config: model options, multistep milestones, a former key" "$tool" train "$data" \
  --config "$work/schema.json" --image-size 16 --batch-size 32 --threads 2 --workers 2 --epochs 2 \
  --run-dir "$work/run-schema"
python3 - "$work/run-schema" <<'PY' || fail "schema options did not reach the run"
import csv, json, sys
c = json.load(open(sys.argv[1] + "/config.json"))
m, t = c["metadata"]["model"], c["trainer"]
assert m["growth_rate"] == 6 and m["block_config"] == [1, 1, 1] and m["num_init_features"] == 8, m
assert m["se_reduction"] == 4, m
assert t["scheduler"] == "multistep" and t["milestones"] == [1] and t["gamma"] == 0.5, t
assert t["grad_clip_norm"] == 1.0, t                     # from the former key grad_clip
rows = list(csv.DictReader(open(sys.argv[1] + "/history.csv")))
assert abs(float(rows[1]["lr"]) / float(rows[0]["lr"]) - 0.5) < 1e-9, rows  # decayed after epoch 1
PY
expect_ok "flags: step scheduler parameters" "$tool" train "$data" "${common[@]}" --epochs 1 \
  --scheduler step --step-size 1 --gamma 0.3 --optimizer sgd --momentum 0.8 --nesterov \
  --run-dir "$work/run-step"
python3 -c "import json; t=json.load(open('$work/run-step/config.json'))['trainer']; assert (t['step_size'], t['gamma'], t['momentum'], t['nesterov']) == (1, 0.3, 0.8, True), t" \
  || fail "step scheduler flags not recorded"
expect_error "a flag's range" "must be in (0, 1]" "$tool" train "$data" "${common[@]}" --gamma 2
expect_error "multistep without milestones" "needs milestones" "$tool" train "$data" "${common[@]}" \
  --scheduler multistep --run-dir "$work/run-nomilestones"

# A time budget: the count is fixed after epoch 1 and printed; a first epoch that depends on it is refused.
expect_error "time budget with onecycle" "onecycle" "$tool" train "$data" "${common[@]}" \
  --time-budget-minutes 5 --scheduler onecycle --run-dir "$work/run-onecycle"
expect_ok "time budget" "$tool" train "$data" "${common[@]}" --epochs 3 --time-budget-minutes 0.000001 \
  --run-dir "$work/run-budget"
contains "$work/out.txt" "as many as fit"
contains "$work/out.txt" "time budget 1e-06 min: epoch 1 took"
contains "$work/out.txt" "so the run trains 1 of at most 3 epochs"
python3 -c "import csv; assert len(list(csv.DictReader(open('$work/run-budget/history.csv')))) == 1" \
  || fail "time budget: history.csv should hold the one epoch that fit"

# --min-steps: the recommended recipe's 3000 raise the default epoch count on a small folder; a
# given --epochs is the count (config.json records min_steps 0), unless --min-steps is given too.
expect_ok "train --help (min-steps)" "$tool" train --help
contains "$work/out.txt" "--min-steps INT=3000"
python3 -c "import json; assert json.load(open('$work/run/config.json'))['metadata']['cli']['min_steps'] == 0" \
  || fail "--epochs given: config.json should record min_steps 0"
images=$(find "$data/train" -type f | wc -l)
steps=$(( (images + 31) / 32 + 1 ))  # one more than an epoch of batches of 32 makes
expect_ok "min-steps" "$tool" train "$data" "${common[@]}" --epochs 1 --min-steps "$steps" \
  --run-dir "$work/run-minsteps"
contains "$work/out.txt" "training: 2 epochs, raised from --epochs 1 by --min-steps"
python3 -c "import csv; assert len(list(csv.DictReader(open('$work/run-minsteps/history.csv')))) == 2" \
  || fail "--min-steps $steps: history.csv should hold 2 epochs"
# That run's config.json with --epochs 1 on the command line: 1 epoch, its recorded --min-steps off.
expect_ok "min-steps from a config, --epochs given" "$tool" train "$data" --config "$work/run-minsteps/config.json" \
  --epochs 1 --run-dir "$work/run-minsteps-config"
python3 -c "import csv; assert len(list(csv.DictReader(open('$work/run-minsteps-config/history.csv')))) == 1" \
  || fail "--epochs 1 on the command line over a config's --min-steps: history.csv should hold 1 epoch"

# evaluate: metrics and confusion matrix, JSON output.
expect_ok "evaluate" "$tool" evaluate --weights "$work/run/best.pt" "$data" --threads 2 --output "$work/eval.json"
contains "$work/out.txt" "accuracy"
contains "$work/out.txt" "confusion matrix"
python3 -c "import json,sys; d=json.load(open('$work/eval.json')); assert len(d['matrix'])==10 and 'macro_f1' in d" \
  || fail "evaluate --output JSON"

# evaluate on a folder without train/ and test/ sides scores the images the run held out (the
# checkpoint records the split); --all scores every image, saying that training images are in.
cp -r "$data/train" "$work/own"
expect_ok "train on a folder without sides" "$tool" train "$work/own" "${common[@]}" --epochs 1 \
  --train-fraction 0.75 --run-dir "$work/run-own"
expect_ok "evaluate: the held-out images" "$tool" evaluate --weights "$work/run-own/best.pt" "$work/own" --threads 2
held_out=$(sed -n 's/^scoring the \([0-9]*\) images the run held out.*/\1/p' "$work/out.txt")
scored=$(sed -n 's/^.*: \([0-9]*\) images, loss.*/\1/p' "$work/out.txt")
total=$(find "$work/own" -name '*.png' | wc -l)
[[ -n $held_out && $held_out == "$scored" && $held_out -lt $total && $held_out -gt 0 ]] ||
  fail "evaluate did not score the held-out images only (held out '$held_out', scored '$scored' of $total)"
expect_ok "evaluate --all" "$tool" evaluate --weights "$work/run-own/best.pt" "$work/own" --all --threads 2
contains "$work/out.txt" "--all: scoring all $total images of $work/own, $((total - held_out)) of them images the model trained on"
contains "$work/out.txt" ": $total images, loss"
mv "$work/own" "$work/own-moved"
expect_ok "evaluate: the folder moved" "$tool" evaluate --weights "$work/run-own/best.pt" "$work/own-moved" --threads 2
contains "$work/out.txt" "scoring the $held_out images the run held out"
mv "$work/own-moved" "$work/own"
cp "$(find "$work/own/Bag" -name '*.png' | head -1)" "$work/own/Bag/zz_new.png"
expect_error "evaluate: the folder changed" "has changed since" "$tool" evaluate --weights "$work/run-own/best.pt" "$work/own" --threads 2
contains "$work/out.txt" "--all"
expect_ok "evaluate: another folder" "$tool" evaluate --weights "$work/run-own/best.pt" "$data/test" --threads 2
contains "$work/out.txt" "is not the folder"

# predict: text and JSON, files and folders.
img=$(find "$data/test" -name '*.png' | sort | head -1)
expect_ok "predict" "$tool" predict --weights "$work/run/best.pt" "$img" --top-k 3 --threads 2
contains "$work/out.txt" "%"
expect_ok "predict --json" "$tool" predict --weights "$work/run/best.pt" "$data/test/Bag" --json --threads 2
python3 - "$work/out.txt" "$data/test/Bag" <<'PY' || fail "predict --json output"
import json, os, sys
results = json.load(open(sys.argv[1]))
assert len(results) == len(os.listdir(sys.argv[2])), len(results)
top = results[0]["top"]
assert len(top) == 3 and abs(sum(t["probability"] for t in top)) <= 1.0 + 1e-6
assert all(t["class"] in ("Ankle_boot", "Bag", "Coat", "Dress", "Pullover", "Sandal", "Shirt", "Sneaker", "T-shirt_top", "Trouser") for t in top)
PY

# predict on a folder holding an unusable file: the others are classified, the file is named, the
# exit status says so.
mkdir -p "$work/mixed"
cp "$data/test/Bag/"*.png "$work/mixed/"
head -c 40 "$img" > "$work/mixed/cut.png"
expect_error "predict with a broken file" "1 of" "$tool" predict --weights "$work/run/best.pt" "$work/mixed" --threads 2
contains "$work/out.txt" "cut.png"
[ "$(grep -c '%' "$work/out.txt")" -eq "$(ls "$data/test/Bag" | wc -l)" ] \
  || fail "predict with a broken file: the other files were not all classified"

# export: ONNX and TorchScript (the files are run by ONNX Runtime, OpenCV and Python in
# test_serve.cpp); nothing is overwritten unasked.
expect_ok "export torchscript" "$tool" export "$work/run/best.pt" "$work/model.ts"
contains "$work/out.txt" "checked: torch::jit::load runs it"
contains "$work/out.txt" "10 classes recorded"
expect_error "export over a file" "add --overwrite" "$tool" export "$work/run/best.pt" "$work/model.ts"
if "$tool" export "$work/run/best.pt" "$work/model.onnx" > "$work/out.txt" 2>&1; then
  contains "$work/out.txt" "ONNX opset 13"
  expect_ok "export --overwrite" "$tool" export "$work/run/best.pt" "$work/model.onnx" --overwrite
else  # a build without libonnx-dev says how to get it
  contains "$work/out.txt" "apt-get install libonnx-dev"
fi
expect_error "export: unknown extension" "--format onnx" "$tool" export "$work/run/best.pt" "$work/model.bin"

# info
expect_ok "info preset" "$tool" info --preset densenet121 --se-reduction 0 --classes 1000
contains "$work/out.txt" "parameters: 7978856"
expect_ok "info weights" "$tool" info --weights "$work/run/best.pt"
contains "$work/out.txt" "denseblock3"

# A corrupt image in the data: skipped and listed by default, named under --bad-files error.
cp -r "$data" "$work/dirty"
echo "garbage" > "$work/dirty/train/Bag/zz_broken.png"
expect_ok "train with a bad file (skip)" "$tool" train "$work/dirty" "${common[@]}" --epochs 1 --run-dir "$work/run3"
contains "$work/out.txt" "zz_broken.png"
expect_error "train with a bad file (error)" "zz_broken.png" "$tool" train "$work/dirty" "${common[@]}" --epochs 1 --bad-files error --run-dir "$work/run4"

# PyTorch state dict files: warm start, evaluate and predict with a given architecture.
expect_ok "train --init-weights" "$tool" train "$data" --preset densenet121 --image-size 32 --batch-size 32 \
  --threads 2 --workers 2 --epochs 1 --init-weights "$torchvision_weights" --run-dir "$work/run5"
contains "$work/out.txt" "initial weights from"
contains "$work/out.txt" "116 missing from the file"
expect_ok "predict with a torchvision file" "$tool" predict --weights "$torchvision_weights" \
  --preset densenet121 --se-reduction 0 --image-size 32 --threads 2 "$img" --json
python3 -c "import json,sys; r=json.load(open('$work/out.txt')); assert len(r[0]['top'])==3" \
  || fail "predict with a torchvision file: JSON"
expect_error "evaluate: class count mismatch" "1000 classes but 10 class names" "$tool" evaluate \
  --weights "$torchvision_weights" --preset densenet121 --se-reduction 0 --image-size 32 "$data"
expect_error "state dict without --preset" "give its architecture with --preset" "$tool" predict \
  --weights "$torchvision_weights" "$img"
expect_error "init weights that fit nothing" "none of its tensors fit" "$tool" train "$data" \
  "${common[@]}" --init-weights "$torchvision_weights" --run-dir "$work/run6"

# Mistakes a newcomer makes, and what the tool says (each: one line, the tool's prefix, what to do).
"$tool" > "$work/out.txt" 2>&1 || fail "a bare sedensenet should print its usage and exit 0"
contains "$work/out.txt" "Usage:"
"$tool" train > "$work/out.txt" 2>&1
[ $? -eq 2 ] || fail "a bare sedensenet train should exit 2"
contains "$work/out.txt" "Usage:"
contains "$work/out.txt" "--epochs"
expect_error "flag typo" "sedensenet: error: unknown option --epoch for \`sedensenet train\`: did you mean --epochs?" \
  "$tool" train "$data" --epoch 1
expect_error "flag typo (evaluate)" "did you mean --weights?" "$tool" evaluate --weight "$work/run/best.pt" "$data"
expect_error "a device it cannot use, before the data" "--device cuda:99" "$tool" train "$work/nowhere" --device cuda:99
expect_error "evaluate --device" "--device cuda:99" "$tool" evaluate --weights "$work/run/best.pt" "$work/nowhere" --device cuda:99
expect_error "predict --device" "--device cuda:99" "$tool" predict --weights "$work/run/best.pt" "$img" --device cuda:99
expect_ok "predict --device cpu" "$tool" predict --weights "$work/run/best.pt" "$img" --device cpu --threads 2
expect_error "--weights a folder" "is a folder; give a weights file, such as $work/run/best.pt" \
  "$tool" predict --weights "$work/run" "$img"
expect_error "--resume with another model" "--growth-rate 8 differs from its 4" \
  "$tool" train --resume "$work/run" --growth-rate 8
expect_error "--init-weights that fit little" "--allow-partial" "$tool" train "$data" --preset densenet_bc_40_k12 \
  --image-size 16 --epochs 1 --threads 2 --init-weights "$work/run/best.pt" --run-dir "$work/run-partial"
contains "$work/out.txt" "fits only 1 of the model's"
expect_ok "--init-weights --allow-partial" "$tool" train "$data" --preset densenet_bc_40_k12 --image-size 16 \
  --epochs 1 --threads 2 --init-weights "$work/run/best.pt" --allow-partial --run-dir "$work/run-partial"
contains "$work/out.txt" "loaded 1 of the model's"

if [ $failures -ne 0 ]; then echo "$failures check(s) failed"; exit 1; fi
echo "all CLI checks passed"
