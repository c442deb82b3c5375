#!/bin/sh
# Runs every fuzz target of boxbench's VMM for SECONDS each (default 20) with cargo-fuzz (libFuzzer),
# and prints each target's executions and time. Needs cargo-fuzz (`cargo install cargo-fuzz`); on a
# stable toolchain the nightly-only flags cargo-fuzz passes (-Zsanitizer, sancov) are enabled with
# RUSTC_BOOTSTRAP=1. Exits non-zero if a target finds a crash (its input is left under artifacts/).
#
# usage: crates/boxbench-microvm/fuzz/run.sh [SECONDS]
set -eu
seconds="${1:-20}"
case "$seconds" in
    '' | *[!0-9]*) echo "run.sh: SECONDS must be a whole number, not '$seconds'" >&2; exit 2 ;;
esac
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
targets="serial i8042 rtc boot_timer reset exit_dispatcher virtio_blk"
cargo fuzz build --release --sanitizer address
summary=""
status=0
for target in $targets; do
    mkdir -p "corpus/$target"
    log="$CARGO_TARGET_DIR/fuzz-$target.log"
    if cargo fuzz run --release --sanitizer address "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        verdict=ok
    else
        verdict=FAILED
        status=1
        tail -n 30 "$log" >&2
    fi
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    time="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)"
    summary="$summary$(printf '%-16s %-6s executions %-12s seconds %s' "$target" "$verdict" "${runs:-?}" "${time:-?}")
"
done
printf '%s' "$summary"
exit "$status"
