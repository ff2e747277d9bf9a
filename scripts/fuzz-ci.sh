#!/usr/bin/env bash
# Bounded fuzzing for CI: builds every fuzz target of fuzz/ in one
# `cargo fuzz build`, then runs each for HANEUL_FUZZ_SECONDS (default 20;
# 0 skips this step) from its committed seeds (fuzz/seeds/<target>) and the
# inputs that once crashed it (fuzz/regressions/<target>), into a corpus
# thrown away afterwards, so that every run starts alike. Fails if any target
# crashes, leaks, times out on one input or goes over its memory limit; the
# input is then in fuzz/artifacts/<target>/ (replay it with
# `cargo fuzz run <target> <file>`, or keep it under fuzz/regressions/).
#
# Needs only a stable Rust toolchain: cargo-fuzz is installed if missing, and
# without a nightly toolchain the stable compiler is asked for the unstable
# flags cargo-fuzz passes (-Zsanitizer=address among them) through
# RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${HANEUL_FUZZ_SECONDS:-20}
if ! [[ $seconds =~ ^[0-9]+$ ]]; then
    echo "HANEUL_FUZZ_SECONDS must be a whole number of seconds, not '$seconds'" >&2
    exit 2
fi
if (( seconds == 0 )); then
    echo "fuzzing skipped (HANEUL_FUZZ_SECONDS=0)"
    exit 0
fi

# The version this script was tested with; --locked for a reproducible build.
cargo_fuzz_version=0.13.2
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi
# libfuzzer-sys compiles libFuzzer itself, which is C++.
if ! command -v c++ >/dev/null; then
    sudo_cmd=""
    if [[ $(id -u) -ne 0 ]]; then sudo_cmd="sudo"; fi
    echo "installing: g++"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq g++ >/dev/null
fi

# HANEUL_FUZZ_TOOLCHAIN names a rustup toolchain to use instead of the
# default choice: nightly if installed, else whatever `cargo` is.
toolchain=()
if [[ -n ${HANEUL_FUZZ_TOOLCHAIN:-} ]]; then
    toolchain=(+"$HANEUL_FUZZ_TOOLCHAIN")
elif command -v rustup >/dev/null && rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
fi
if ! rustc "${toolchain[@]}" --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi
echo "fuzzing with $(rustc "${toolchain[@]}" --version)${RUSTC_BOOTSTRAP:+ (RUSTC_BOOTSTRAP=1)}," \
    "$seconds s per target"

started=$SECONDS
# All targets at once, so that the dependencies are compiled a single time.
cargo "${toolchain[@]}" fuzz build
echo "fuzz targets built in $((SECONDS - started)) s"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# One target for the bounded time; a failure leaves "$logs/<target>.failed".
run_target() {
    local target=$1
    # libFuzzer writes what it finds into the first folder only.
    local corpora=("$logs/corpus/$target")
    mkdir -p "$logs/corpus/$target"
    for folder in seeds regressions; do
        if [[ -d $folder/$target ]]; then corpora+=("$folder/$target"); fi
    done
    # -timeout: an input that takes this long is a hang, not a slow machine.
    # -seed: a fixed seed (HANEUL_FUZZ_SEED, default 1; 0 for a random one)
    # makes a commit's run repeatable: the same inputs in the same order, so
    # a red CI comes from the change, not from luck.
    if cargo "${toolchain[@]}" fuzz run "$target" "${corpora[@]}" -- \
        -max_total_time="$seconds" -seed="${HANEUL_FUZZ_SEED:-1}" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
        >"$logs/$target.log" 2>&1; then
        local runs
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$target.log")
        echo "fuzz $target: ok, ${runs:-?} inputs"
    else
        touch "$logs/$target.failed"
        echo "fuzz $target: FAILED"
        tail -n 80 "$logs/$target.log"
    fi
}

# Two targets at a time on the CI's two cores (HANEUL_FUZZ_JOBS to change it).
parallel=${HANEUL_FUZZ_JOBS:-2}
targets=$(cargo "${toolchain[@]}" fuzz list)
for target in $targets; do
    while (( $(jobs -rp | wc -l) >= parallel )); do
        wait -n || true
    done
    run_target "$target" &
done
wait

failed=""
for target in $targets; do
    if [[ -e $logs/$target.failed ]]; then failed+="$target "; fi
done
echo "fuzzing took $((SECONDS - started)) s"
if [[ -n $failed ]]; then
    echo "fuzz targets that failed: $failed(inputs under fuzz/artifacts/)" >&2
    exit 1
fi
