#!/usr/bin/env bash
# Builds the libFuzzer targets with the stable toolchain and runs one or all of them.
#
#   tests/fuzz/run.sh TARGET|all SECONDS
#
# The build is instrumented (sanitizer coverage, debug assertions, overflow checks), so it has
# a target dir of its own and runs under `nice` beside the workspace's normal builds. Each target
# runs against tests/fuzz/corpus/TARGET/ and adds what it finds there; a crash is written to
# tests/fuzz/artifacts/TARGET/ and stops that target. A new corpus entry can be minimised back
# into the committed one with `-merge=1` (see `merge` below).
set -euo pipefail
cd "$(dirname "$0")"

targets=(fast_line serde_line csv debezium wal2json cockroach couchdb spill snapshot config)
which=${1:?usage: run.sh TARGET|all SECONDS}
seconds=${2:?usage: run.sh TARGET|all SECONDS}
if [[ $which == all ]]; then run=("${targets[@]}"); else run=("$which"); fi

export CARGO_TARGET_DIR="$PWD/target"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"

# An explicit --target keeps RUSTFLAGS off build scripts and proc macros, which would otherwise
# be instrumented too and fail to link without libFuzzer's runtime.
triple=$(rustc -vV | sed -n 's/^host: //p')
bins=()
for t in "${run[@]}"; do
    bins+=(--bin "$t")
    case $t in spill | snapshot | config) bins+=(--features pipelines) ;; esac
done
nice -n 10 cargo build --release --target "$triple" "${bins[@]}"

status=0
for t in "${run[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t for ${seconds}s"
    nice -n 10 "target/$triple/release/$t" "corpus/$t" \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 || status=1
done
exit $status
