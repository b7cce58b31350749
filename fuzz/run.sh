#!/usr/bin/env bash
# Runs the fuzz targets, each for a bounded time: fuzz/run.sh [SECONDS] [TARGET...]
# (default: 60 s for every target). New inputs go to fuzz/work/<target> (not committed); the
# committed seed corpus fuzz/corpus/<target> is only read. Crashes land in
# fuzz/artifacts/<target>/. cargo fuzz needs nightly-only rustc flags (-Zsanitizer=address);
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. See docs/FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    mkdir -p "work/$t"
    echo "== $t: ${secs} s"
    cargo fuzz run "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1
done
