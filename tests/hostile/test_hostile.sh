#!/usr/bin/env bash
# Untrusted files through every entry point of the command-line tool (issue: untrusted files).
#
#   test_hostile.sh SEDENSENET DATA WORK
#
# SEDENSENET: the tool; DATA: a small image folder with train/ and test/ (the CTest fixture);
# WORK: an empty scratch folder. tests/hostile/make_hostile.py writes the hostile files. Each must
# end with exit status 1 and a one-line error that names the file or option, within a CPU-time
# limit, without creating any file: the TorchScript payload's marker, a run folder, anything.
# Run by CTest in the regular build and under ASan/UBSan.
set -uo pipefail
tool=$(realpath "$1") data=$(realpath "$2") work=$(realpath -m "$3")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rm -rf "$work"
mkdir -p "$work"
hostile=$work/files
marker=$work/MARKER-code-ran
"${SEDENSENET_PYTHON:-/usr/bin/python3}" "$here/make_hostile.py" "$hostile" "$marker" || { echo "could not make the files"; exit 1; }
image=$(find "$data/test" -name '*.png' | sort | head -n 1)
failures=0
checks=0

fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# Runs the tool in $work/run (an empty folder) under a CPU-time limit; sets out, code.
run() {
  rm -rf "$work/run"
  mkdir -p "$work/run"
  out=$(cd "$work/run" && ulimit -t 60 && "$tool" "$@" 2>&1)
  code=$?
}

# expect_refusal WHAT NAME ARGS...: exit 1, the last line "sedensenet: error: ..." naming NAME,
# nothing created.
expect_refusal() {
  local what=$1 name=$2
  shift 2
  checks=$((checks + 1))
  run "$@"
  local last
  last=$(printf '%s\n' "$out" | tail -n 1)
  if [[ $code -ne 1 ]]; then
    fail "$what: exit $code (expected 1): $(printf '%s' "$out" | tail -n 3)"
  elif [[ $last != "sedensenet: error: "* || $last != *"$name"* ]]; then
    fail "$what: the last line is not one error naming $name: $last"
  elif [[ -n $(ls -A "$work/run") ]]; then
    fail "$what: created $(ls -A "$work/run" | head -n 3)"
  fi
  [[ -e $marker ]] && fail "$what: the payload ran (created $marker)"
}

for file in "$hostile"/*.pt; do
  name=$(basename "$file")
  expect_refusal "info --weights $name" "$name" info --weights "$file"
  expect_refusal "evaluate --weights $name" "$name" evaluate --weights "$file" "$data" --threads 1 --workers 1
  expect_refusal "predict --weights $name" "$name" predict --weights "$file" "$image" --threads 1
  expect_refusal "train --init-weights $name" "$name" train "$data" --init-weights "$file" \
    --preset densenet_bc_10_k4 --image-size 16 --epochs 1 --threads 1 --workers 1 --run-dir "$work/run/r"
  expect_refusal "convert-checkpoint $name (untrusted)" "$name" convert-checkpoint "$file" "$work/run/new.pt"
done

# Configs and flags.
for config in deep_config deep_object_config absurd_preset_config huge_epochs_config; do
  expect_refusal "train --config $config.json" "" train "$data" --config "$hostile/$config.json" \
    --image-size 16 --threads 1 --workers 1 --run-dir "$work/run/r"
done
expect_refusal "deep config names the file" "deep_config.json" train "$data" --config "$hostile/deep_config.json" --run-dir "$work/run/r"
expect_refusal "absurd preset names the limit" "dense layers" train "$data" --config "$hostile/absurd_preset_config.json" --run-dir "$work/run/r"
expect_refusal "--preset densenet_bc_1000006" "dense layers" train "$data" --preset densenet_bc_1000006 --epochs 1 --run-dir "$work/run/r"
expect_refusal "info --preset densenet_bc_1000006" "dense layers" info --preset densenet_bc_1000006

# Numeric flags: overflow is an error naming the value, not a saturated number (CLI11 prints its
# usage hint after the message, so only the status and the message are checked).
for flag in "--epochs 99999999999999999999" "--batch-size 99999999999999999999" \
            "--batch-size 1000000000000" "--seed 999999999999999999999999" "--workers 99999999999999999999"; do
  checks=$((checks + 1))
  run train "$data" $flag --run-dir "$work/run/r"
  if [[ $code -eq 0 || $out != *"out of range"* && $out != *"not in range"* ]]; then
    fail "train $flag: exit $code, $(printf '%s' "$out" | head -n 2)"
  fi
  [[ -e $work/run/r ]] && fail "train $flag created the run folder"
done

# Thread counts far beyond the machine: capped with a warning, and the command works.
checks=$((checks + 1))
weights_run=$work/weights
(cd "$work" && "$tool" train "$data" --preset densenet_bc_10_k4 --image-size 16 --epochs 1 \
  --threads 1 --workers 1 --run-dir "$weights_run" > "$work/train.log" 2>&1) || fail "the reference run failed: $(tail -n 3 "$work/train.log")"
run predict --weights "$weights_run/best.pt" "$image" --threads 1000000
[[ $code -eq 0 && $out == *"warning: threads 1000000 is more than 4x"* ]] || fail "predict --threads 1000000: exit $code: $out"
# A progressive JPEG with 5000 scans: refused at scan 501, naming the file and the limit.
checks=$((checks + 1))
run predict --weights "$weights_run/best.pt" "$hostile/many_scans.jpg" --threads 1
[[ $code -eq 1 && $out == *"many_scans.jpg"* && $out == *"more than 500 scans"* ]] || fail "predict many_scans.jpg: exit $code: $(printf '%s' "$out" | tail -n 3)"
checks=$((checks + 1))
printf '{"workers": 1000000, "epochs": 1, "preset": "densenet_bc_10_k4", "image_size": 16, "threads": 1}\n' > "$work/workers.json"
run train "$data" --config "$work/workers.json" --run-dir "$work/run/r"
[[ $code -eq 0 && $out == *"warning: loader workers 1000000 is more than 4x"* ]] || fail "config workers 1000000: exit $code: $(printf '%s' "$out" | tail -n 3)"

# A data folder with branching symlink loops: each real folder is read once, at once.
checks=$((checks + 1))
start=$(date +%s)
run train "$hostile/loops" --preset densenet_bc_10_k4 --image-size 8 --epochs 1 --threads 1 \
  --workers 1 --train-fraction 0.5 --run-dir "$work/run/loops"
elapsed=$(( $(date +%s) - start ))
[[ $code -eq 0 && $elapsed -lt 60 ]] || fail "symlink loops: exit $code after ${elapsed}s: $(printf '%s' "$out" | tail -n 3)"

[[ -e $marker ]] && fail "the TorchScript payload ran at some point"
echo "hostile inputs: $checks checks, $failures failed"
if [[ $failures -eq 0 ]]; then
  echo "all hostile-input checks passed"
  exit 0
fi
exit 1
