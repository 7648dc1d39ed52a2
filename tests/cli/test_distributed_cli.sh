#!/usr/bin/env bash
# `sedensenet train --nproc 2` end to end on a small real image folder: two workers on loopback
# (Gloo), the run folder, resume, Ctrl-C through the launcher, a killed worker, and bad set-ups.
#   test_distributed_cli.sh SEDENSENET DATA_DIR WORK_DIR
set -uo pipefail
tool=$1
data=$2
work=$3
rm -rf "$work"
mkdir -p "$work"
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
contains() { grep -q -- "$2" "$1" || { fail "$1 lacks '$2'"; cat "$1"; }; }
# LibTorch's own warnings carry a C++ stack trace; what a user reads is one line per problem.
no_trace() { ! grep -q "Exception raised from\|frame #0" "$1" || { fail "$1 shows a raw stack trace"; cat "$1"; }; }
rows() { echo $(( $(wc -l < "$1") - 1 )); }

common=(--preset densenet_bc_10_k4 --image-size 16 --batch-size 16 --threads 1 --workers 1)

# Two workers, one epoch: rank 0 reports and writes the run folder.
"$tool" train "$data" "${common[@]}" --nproc 2 --epochs 1 --run-dir "$work/run" > "$work/out.txt" 2>&1
code=$?
[ $code -eq 0 ] || { fail "train --nproc 2 (exit $code)"; cat "$work/out.txt"; }
contains "$work/out.txt" "launching 2 worker process(es)"
contains "$work/out.txt" "distributed: gloo, rank 0 of 2"
contains "$work/out.txt" "on 2 processes"
contains "$work/out.txt" "best epoch"
for f in config.json history.csv best.pt last.pt metrics.json confusion_matrix.csv; do
  [ -s "$work/run/$f" ] || fail "run folder lacks $f"
done
contains "$work/run/config.json" '"world_size": 2'
[ "$(rows "$work/run/history.csv")" -eq 1 ] || fail "history.csv should have 1 row"
# The global epoch: every training image once (300), not one rank's share.
grep -q ',300$\|,300,' "$work/run/history.csv" || { fail "history.csv does not count 300 images"; cat "$work/run/history.csv"; }
# Evaluation counted every test image once (100).
contains "$work/run/metrics.json" '"test_images": 100'

# Resume on two workers.
"$tool" train --resume "$work/run" --nproc 2 --epochs 2 > "$work/out.txt" 2>&1
code=$?
[ $code -eq 0 ] || { fail "resume --nproc 2 (exit $code)"; cat "$work/out.txt"; }
contains "$work/out.txt" "resuming"
[ "$(rows "$work/run/history.csv")" -eq 2 ] || fail "resumed history.csv should have 2 rows"

# Ctrl-C to the launcher: forwarded once to each worker; they stop together and save last.pt.
"$tool" train "$data" "${common[@]}" --nproc 2 --epochs 200 --run-dir "$work/int" > "$work/int.txt" 2>&1 &
launcher=$!
for _ in $(seq 1 600); do [ -s "$work/int/last.pt" ] && break; sleep 0.1; done
kill -INT $launcher
wait $launcher
code=$?
[ $code -eq 130 ] || { fail "interrupted launcher should exit 130, got $code"; cat "$work/int.txt"; }
contains "$work/int.txt" "interrupted:"
no_trace "$work/int.txt"
done_epochs=$(rows "$work/int/history.csv")
"$tool" train --resume "$work/int" --nproc 2 --epochs $((done_epochs + 1)) > "$work/out.txt" 2>&1
code=$?
[ $code -eq 0 ] || { fail "resume after interrupt (exit $code)"; cat "$work/out.txt"; }
[ "$(rows "$work/int/history.csv")" -eq $((done_epochs + 1)) ] || fail "resumed interrupted run has the wrong epoch count"

# A worker killed: the other stops within the timeout, naming it; the launcher forwards 137.
"$tool" train "$data" "${common[@]}" --nproc 2 --epochs 200 --dist-timeout 20 --run-dir "$work/kill" > "$work/kill.txt" 2>&1 &
launcher=$!
for _ in $(seq 1 600); do [ -s "$work/kill/last.pt" ] && break; sleep 0.1; done
rank1=$(pgrep -P $launcher | sort -n | tail -1)
started=$(date +%s)
kill -9 "$rank1"
wait $launcher
code=$?
elapsed=$(( $(date +%s) - started ))
[ $code -eq 137 ] || { fail "launcher should forward rank 1's SIGKILL (137), got $code"; cat "$work/kill.txt"; }
contains "$work/kill.txt" "rank 1 (pid $rank1) was killed by signal 9"
contains "$work/kill.txt" "error (rank 0): rank 0: distributed training failed: rank 1 has stopped"
[ $elapsed -le 40 ] || fail "the surviving rank took ${elapsed}s to stop (timeout 20s)"
[ -s "$work/kill/last.pt" ] || fail "last.pt lost"
no_trace "$work/kill.txt"

# Bad set-ups: one-line errors naming the variable or option.
WORLD_SIZE=2 "$tool" train "$data" "${common[@]}" --nproc 2 > "$work/out.txt" 2>&1 && fail "--nproc under WORLD_SIZE accepted"
contains "$work/out.txt" "WORLD_SIZE is already set"
WORLD_SIZE=2 RANK=0 "$tool" train "$data" "${common[@]}" > "$work/out.txt" 2>&1 && fail "missing MASTER_ADDR accepted"
contains "$work/out.txt" "MASTER_ADDR is not set"
WORLD_SIZE=2 RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=9 "$tool" train "$data" "${common[@]}" --dist-timeout 3 \
  --run-dir "$work/lonely" > "$work/out.txt" 2>&1 && fail "a rank without rank 0 trained"
contains "$work/out.txt" "could not reach the rendezvous store at 127.0.0.1:9"
if grep -q "frame #" "$work/out.txt"; then fail "printed a stack trace"; fi

if [ $failures -eq 0 ]; then
  echo "all distributed CLI checks passed"
else
  echo "$failures distributed CLI check(s) failed"
  exit 1
fi
