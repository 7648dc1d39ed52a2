#!/usr/bin/env bash
# Faults during training with the sedensenet tool, each followed by recovery. For every fault
# the run folder must keep a loadable last.pt (and best.pt once an epoch is done), and the run,
# resumed, must end with exactly the weights and history of an uninterrupted run.
#
#   faults.sh SEDENSENET DATA_DIR WORK_DIR
#
# Faults: SIGKILL halfway through writing last.pt / best.pt / history.csv (fault injection,
# SEDENSENET_FAULT_KILL_MID_WRITE); SIGKILL at arbitrary moments; SIGINT and SIGTERM; a full disk
# (RLIMIT_FSIZE through `ulimit -f`); a corrupted and a truncated checkpoint. Prints one line per
# fault, the rows of docs/reliability.md.
set -uo pipefail
tool=$1
data=$2
work=$3
rm -rf "$work"
mkdir -p "$work"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
row() { printf '%-58s %s\n' "$1" "$2"; }

# A fast configuration (0.4 s per epoch) for the injected faults, and a slower one (a few seconds
# per epoch) so that signals and random kills land inside epochs.
fast=(--preset densenet_bc_10_k4 --image-size 28 --batch-size 8 --threads 1 --workers 1 --seed 3
      --epochs 4 --drop-rate 0.1 --mixup 0.2)
slow=(--preset densenet_bc_22_k12 --image-size 28 --batch-size 8 --threads 1 --workers 1 --seed 3
      --epochs 2 --drop-rate 0.1 --mixup 0.2)
sample=$(find "$data/test" -name '*.png' | sort | head -n 8)

# The weights' fingerprint: predictions of last.pt on 8 images (identical weights, identical text).
fingerprint() { "$tool" predict --weights "$1/last.pt" --json --top-k 3 --threads 1 $sample 2>&1; }
# history.csv without the timing columns.
history() { cut -d, -f1-8,11 "$1/history.csv"; }
# Every checkpoint present in the folder loads (checksums verified).
check_loadable() {
  local dir=$1 what=$2 f
  for f in last.pt best.pt; do
    if [ -e "$dir/$f" ] && ! "$tool" info --weights "$dir/$f" > "$work/info.txt" 2>&1; then
      fail "$what: $dir/$f is not loadable"; cat "$work/info.txt"
    fi
  done
  if ls -a "$dir" 2>/dev/null | grep -q '\.tmp-'; then
    echo "  (temporary files left by the kill: $(ls -a "$dir" | grep '\.tmp-' | tr '\n' ' '))"
  fi
}
# Resumes (or restarts, if no epoch was saved) until the run completes, then compares it with
# the uninterrupted run of the same configuration (fast or slow).
finish() {
  local dir=$1 what=$2 config=${3:-fast}
  local -n options=$config
  if [ -e "$dir/last.pt" ]; then
    "$tool" train --resume "$dir" > "$work/finish.txt" 2>&1
  else
    # No last.pt: killed before the first one was complete. The folder may hold best.pt, which
    # the tool keeps unless told: restarting the run replaces it explicitly.
    "$tool" train "$data" "${options[@]}" --run-dir "$dir" --overwrite > "$work/finish.txt" 2>&1
  fi
  local code=$?
  if [ $code -ne 0 ]; then fail "$what: finishing the run exited $code"; tail -5 "$work/finish.txt"; return 1; fi
  if ls -a "$dir" | grep -q '\.tmp-'; then fail "$what: temporary files remain after the resumed run"; fi
  if [ "$(history "$dir")" != "$(history "$work/reference-$config")" ]; then
    fail "$what: history differs from the uninterrupted run"; diff <(history "$dir") <(history "$work/reference-$config")
    return 1
  fi
  if [ "$(fingerprint "$dir")" != "$(fingerprint "$work/reference-$config")" ]; then
    fail "$what: final weights differ from the uninterrupted run"; return 1
  fi
  return 0
}

# The uninterrupted runs every recovery is compared with.
for config in fast slow; do
  declare -n options=$config
  "$tool" train "$data" "${options[@]}" --run-dir "$work/reference-$config" > "$work/reference.txt" 2>&1 ||
    { cat "$work/reference.txt"; echo "FAIL: the $config reference run failed"; exit 1; }
  unset -n options
done
[ "$(wc -l < "$work/reference-fast/history.csv")" -eq 5 ] || fail "reference history should have 4 epochs"

echo "fault                                                      outcome"

# 1. SIGKILL in the middle of writing a file (fault injection: exactly halfway through).
for target in last.pt:1 last.pt:3 best.pt:2 history.csv:2 config.json:1; do
  dir="$work/kill-${target/:/-}"
  SEDENSENET_FAULT_KILL_MID_WRITE=$target "$tool" train "$data" "${fast[@]}" --run-dir "$dir" \
    > "$work/out.txt" 2>&1
  code=$?
  [ $code -eq 137 ] || { fail "kill while writing $target: expected exit 137, got $code"; tail -3 "$work/out.txt"; }
  name=${target%%:*}
  check_loadable "$dir" "kill while writing $target"
  if finish "$dir" "kill while writing $target"; then
    row "SIGKILL halfway through writing ${name} (write #${target##*:})" "loadable checkpoints; resumed run identical"
  fi
done

# 2. SIGKILL at arbitrary moments (start-up, training, evaluation, checkpointing), one run killed
#    again and again, then finished.
dir="$work/kill-random"
kills=0
for delay in 1.1 2.3 0.8 1.9 1.4 2.8 1.6 3.5; do
  if [ -e "$dir/last.pt" ]; then
    "$tool" train --resume "$dir" > "$work/out.txt" 2>&1 &
  else
    "$tool" train "$data" "${slow[@]}" --run-dir "$dir" > "$work/out.txt" 2>&1 &
  fi
  pid=$!
  sleep "$delay"
  if kill -KILL $pid 2>/dev/null; then kills=$((kills + 1)); fi
  wait $pid 2>/dev/null
  check_loadable "$dir" "SIGKILL after ${delay}s"
done
if finish "$dir" "random SIGKILLs" slow; then
  row "SIGKILL at arbitrary moments ($kills kills of one run)" "loadable checkpoints; resumed run identical"
fi

# 3. SIGINT / SIGTERM in the middle of an epoch: finish the batch, save, say how to resume.
for signal in INT TERM; do
  dir="$work/signal-$signal"
  "$tool" train "$data" "${slow[@]}" --run-dir "$dir" > "$work/signal.txt" 2>&1 &
  pid=$!
  # Wait until the first epoch is saved, then interrupt early in the second.
  for _ in $(seq 1 1200); do
    [ -e "$dir/history.csv" ] && [ "$(wc -l < "$dir/history.csv")" -ge 2 ] && break
    sleep 0.1
  done
  sleep 0.5
  kill -$signal $pid
  wait $pid
  code=$?
  expected=$([ $signal = INT ] && echo 130 || echo 143)
  [ $code -eq "$expected" ] || fail "SIG$signal: exit $code, expected $expected"
  grep -q "sedensenet train --resume $dir" "$work/signal.txt" || { fail "SIG$signal: no resume hint"; tail -5 "$work/signal.txt"; }
  grep -q "batches of epoch" "$work/signal.txt" || fail "SIG$signal: last.pt should hold a position inside an epoch"
  check_loadable "$dir" "SIG$signal"
  if finish "$dir" "SIG$signal" slow; then
    row "SIG$signal during an epoch" "exit $code, last.pt at the batch; resumed run identical"
  fi
done

# 4. A full disk: the file-size limit stops the checkpoint write; the previous one stays.
dir="$work/full-disk"
# One epoch saved (the process is killed while saving the second).
SEDENSENET_FAULT_KILL_MID_WRITE=last.pt:2 "$tool" train "$data" "${fast[@]}" --run-dir "$dir" > "$work/out.txt" 2>&1
before=$(sha256sum < "$dir/last.pt")
size_kb=$(( $(stat -c %s "$dir/last.pt") / 2048 ))  # half a checkpoint
(ulimit -f "$size_kb"; exec "$tool" train --resume "$dir") > "$work/full.txt" 2>&1
code=$?
[ $code -ne 0 ] || fail "full disk: exit 0"
grep -q "File too large" "$work/full.txt" || { fail "full disk: no clear error"; tail -3 "$work/full.txt"; }
grep -q -E "(last|best)\.pt" "$work/full.txt" || fail "full disk: the error does not name the file"
grep -q "frame #" "$work/full.txt" && fail "full disk: stack trace"
[ "$(sha256sum < "$dir/last.pt")" = "$before" ] || fail "full disk: last.pt changed"
ls -a "$dir" | grep -q '\.tmp-' && fail "full disk: a temporary file was left"
check_loadable "$dir" "full disk"
"$tool" train --resume "$dir" > "$work/out.txt" 2>&1 || fail "full disk: resume after freeing space"
if [ "$(fingerprint "$dir")" = "$(fingerprint "$work/reference-fast")" ]; then
  row "full disk (ulimit -f) while writing a checkpoint" "exit $code: $(grep -o 'File too large' "$work/full.txt" | head -1); last.pt unchanged"
else
  fail "full disk: the resumed run differs from the uninterrupted one"
fi

# 5. A damaged checkpoint is refused naming the file; the other one still works.
dir="$work/reference-fast"
cp "$dir/last.pt" "$work/last.good"
python_flip='import sys; p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 0x20; open(p, "wb").write(b)'
"${SEDENSENET_PYTHON:-/usr/bin/python3}" -c "$python_flip" "$dir/last.pt"
"$tool" train --resume "$dir" --epochs 5 > "$work/out.txt" 2>&1
code=$?
{ [ $code -ne 0 ] && grep -q "last.pt" "$work/out.txt" && ! grep -q "frame #" "$work/out.txt"; } ||
  { fail "corrupted last.pt: not refused clearly (exit $code)"; cat "$work/out.txt"; }
row "one flipped bit in last.pt" "refused: $(grep -o -E '(corrupted|truncated)[^;(]*' "$work/out.txt" | head -1)"
head -c 5000 "$work/last.good" > "$dir/last.pt"
"$tool" evaluate --weights "$dir/last.pt" "$data" --threads 1 > "$work/out.txt" 2>&1
code=$?
{ [ $code -ne 0 ] && grep -q "last.pt" "$work/out.txt" && grep -q "truncated" "$work/out.txt"; } ||
  { fail "truncated last.pt: not refused clearly (exit $code)"; cat "$work/out.txt"; }
row "last.pt cut to 5000 bytes" "refused: truncated, names the file"
"$tool" evaluate --weights "$dir/best.pt" "$data" --threads 1 > "$work/out.txt" 2>&1 || fail "best.pt should still load"

if [ $failures -eq 0 ]; then
  echo "all fault checks passed"
else
  echo "$failures fault check(s) failed"
  exit 1
fi
