#!/bin/sh
# Fuzzes every parser of network or file input (fuzz/, DESIGN.md testing layer 5): builds all
# targets in one `cargo fuzz build` (the library compiles once), then runs each target for
# FUZZ_SECONDS seconds (default 60), or only the targets named as arguments.
#   make fuzz                       every target, 60 s each
#   FUZZ_SECONDS=600 make fuzz      longer
#   scripts/fuzz.sh sks_query       one target
# Each run starts from the seeds in fuzz/corpus/TARGET (kept in git) plus what earlier runs
# found in fuzz/target/corpus/TARGET (not in git); crashes go to fuzz/artifacts/TARGET.
# Exits non-zero if any target crashed, hung (FUZZ_TIMEOUT seconds on one input, default 10)
# or ran out of memory (FUZZ_RSS_MB, default 2048). A summary line per target gives the
# executions. LeakSanitizer is off unless FUZZ_LEAKS=1: OpenSSL's per-thread caches make it
# rescan the heap on most runs (autoid_v1 ran 28 times slower), and growth still trips the
# memory limit. FUZZ_DEV=1 builds without optimisation (3 minutes instead of 11 here, runs
# several times slower): what the smoke of `make check` uses.
set -eu
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
scripts/install-fuzz.sh
cd fuzz
targets=${*:-$(cargo +nightly fuzz list)}
dev=""
[ "${FUZZ_DEV:-0}" = 1 ] && dev=--dev
cargo +nightly fuzz build $dev
mkdir -p target/logs
failed=""
summary=""
for t in $targets; do
  mkdir -p "target/corpus/$t"
  log="target/logs/$t.log"
  echo "fuzz: $t for ${secs}s"
  if cargo +nightly fuzz run $dev "$t" "target/corpus/$t" "corpus/$t" -- \
      -max_total_time="$secs" -timeout="${FUZZ_TIMEOUT:-10}" \
      -rss_limit_mb="${FUZZ_RSS_MB:-2048}" -detect_leaks="${FUZZ_LEAKS:-0}" \
      -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    failed="$failed $t"
    tail -n 40 "$log" >&2
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  summary="$summary
fuzz: $t seconds=$secs execs=${execs:-?} result=$result"
done
echo "$summary"
if [ -n "$failed" ]; then
  echo "fuzz: failed:$failed (inputs in fuzz/artifacts/, logs in fuzz/target/logs/)" >&2
  exit 1
fi
