#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time from its seeds and saved regressions.
#   run_fuzzer.sh FUZZER TARGET FUZZ_DIR WORK_DIR SECONDS
# A crash (or sanitizer report, or contract violation) fails with the input's path and what to do.
# The seed is fixed (FUZZ_SEED, default 1) so that the test command is reproducible; set another to explore.
set -uo pipefail
fuzzer=$1 target=$2 fuzz_dir=$3 work=$4 seconds=$5
rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
inputs=("$fuzz_dir/corpus/$target")
[ -d "$fuzz_dir/regressions/$target" ] && inputs+=("$fuzz_dir/regressions/$target")
"$fuzzer" -seed="${FUZZ_SEED:-1}" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=6000 -max_len=65536 \
  -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" "${inputs[@]}" \
  > "$work/log.txt" 2>&1
code=$?
grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ *DONE)" "$work/log.txt"
if [ $code -ne 0 ]; then
  tail -n 60 "$work/log.txt"
  echo "fuzz $target: FAILED (exit $code). Inputs that broke it:"
  ls -1 "$work/artifacts"/* 2>/dev/null
  echo "Copy each into $fuzz_dir/regressions/$target/ (a regression test from then on), then fix."
  exit 1
fi
echo "fuzz $target: no crash in ${seconds} s"
