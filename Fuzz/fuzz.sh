#!/usr/bin/env bash
# Builds and runs the libFuzzer targets of Fuzz/Targets (see Fuzz/README.md).
#
#   Fuzz/fuzz.sh build [TARGET...]         compile the targets (all by default) into .build-fuzz/bin/
#   Fuzz/fuzz.sh run SECONDS [TARGET...]   build, then fuzz each target SECONDS, one at a time
#
# Each target is its harness compiled with the sources of the modules it tests, all
# instrumented (-sanitize=fuzzer,address). A run reads the committed seeds in
# Fuzz/corpus/TARGET/ and writes what it discovers to .build-fuzz/corpus/TARGET/ (git-ignored),
# so later runs go on from there. A crash lands in .build-fuzz/crashes/TARGET/ and fails
# the run; replay one with `.build-fuzz/bin/TARGET FILE`.
# FUZZ_JOBS (default 1) runs that many fuzzing processes per target; FUZZ_FLAGS adds libFuzzer flags.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Absolute: a run with -jobs works from inside it (see run).
OUT=$(realpath -m "${FUZZ_BUILD_DIR:-.build-fuzz}")
SWIFTC=${SWIFTC:-swiftc}
JOBS=${FUZZ_JOBS:-1}
# libFuzzer reports a crash itself; Swift's own backtracer would only slow that down.
export SWIFT_BACKTRACE=enable=no
ALL_TARGETS=(http-head frame-decoder utf8 json base64 query jwt deflate upstream-events)
# -O keeps Swift's overflow and bounds checks (only -Ounchecked drops them).
# WireProtocol imports COpenSSL (SHA-1) and CZlib (permessage-deflate), so every target links both.
SWIFT_FLAGS=(-O -g -sanitize=fuzzer,address -use-ld=lld -I COpenSSL -I CZlib -I "$OUT/modules")

# The modules each target needs, in dependency order.
modules_of() {
    case $1 in
        json) echo WireProtocol TradingStream ;;
        jwt) echo WireProtocol TradingStream AccessToken ;;
        upstream-events) echo WireProtocol TradingStream ;;
        *) echo WireProtocol ;;
    esac
}

# Sources compiled into a target's harness itself: the pure part of a module whose other
# files need libev (Sources/Upstream/Mapping/ is bytes in, outcomes out).
sources_of() {
    case $1 in
        upstream-events) find Sources/Upstream/Mapping -name '*.swift' | sort ;;
    esac
}

# build_module NAME [DEPENDENCY...]: Sources/NAME as an instrumented object plus its
# .swiftmodule, when its sources, this script or a dependency's object are newer.
build_module() {
    local name=$1 object=$OUT/modules/$1.o
    shift
    local sources deps=() d
    for d in "$@"; do deps+=("$OUT/modules/$d.o"); done
    mapfile -t sources < <(find "Sources/$name" -name '*.swift' | sort)
    if [ -e "$object" ] && [ -z "$(find "Sources/$name" Fuzz/fuzz.sh "${deps[@]}" -newer "$object" -print -quit)" ]; then return 0; fi
    echo "fuzz: compiling $name"
    "$SWIFTC" "${SWIFT_FLAGS[@]}" -parse-as-library -wmo -module-name "$name" \
        -emit-module -emit-module-path "$OUT/modules/$name.swiftmodule" -c -o "$object" "${sources[@]}"
    touch "$object"   # swiftc leaves an unchanged output untouched, which would look stale next time
}

# build [TARGET...]: the modules, then each target (all by default) whose inputs changed.
build() {
    local targets=("$@")
    ((${#targets[@]})) || targets=("${ALL_TARGETS[@]}")
    mkdir -p "$OUT/modules" "$OUT/bin"
    build_module WireProtocol
    build_module TradingStream WireProtocol
    build_module AccessToken WireProtocol TradingStream
    local t m objects
    for t in "${targets[@]}"; do
        objects=()
        for m in $(modules_of "$t"); do objects+=("$OUT/modules/$m.o"); done
        local bin=$OUT/bin/$t harness=Fuzz/Targets/$t.swift extra
        mapfile -t extra < <(sources_of "$t")
        if [ -e "$bin" ] && [ -z "$(find "$harness" Fuzz/Support "${objects[@]}" "${extra[@]}" -newer "$bin" -print -quit)" ]; then continue; fi
        echo "fuzz: linking $t"
        "$SWIFTC" "${SWIFT_FLAGS[@]}" -parse-as-library -module-name "Fuzz_${t//-/_}" \
            "$harness" "${extra[@]}" Fuzz/Support/*.swift "${objects[@]}" -lcrypto -lz -o "$bin"
    done
}

# run SECONDS [TARGET...]: fuzz each target for SECONDS; non-zero if any crashed.
run() {
    local seconds=$1
    shift
    local targets=("$@")
    ((${#targets[@]})) || targets=("${ALL_TARGETS[@]}")
    build "${targets[@]}"
    local failed=() t
    for t in "${targets[@]}"; do
        local work=$OUT/corpus/$t crashes=$OUT/crashes/$t log=$OUT/logs/$t.log
        mkdir -p "$work" "$crashes" "$OUT/logs"
        local flags=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
                     -artifact_prefix="$crashes/")
        [ -f "Fuzz/dict/$t.dict" ] && flags+=(-dict="$PWD/Fuzz/dict/$t.dict")
        # With -jobs, libFuzzer writes each job's fuzz-N.log into its working directory:
        # run it from the logs folder, with every path absolute.
        ((JOBS > 1)) && flags+=(-jobs="$JOBS" -workers="$JOBS")
        local jobdir=$OUT/logs/$t-jobs
        mkdir -p "$jobdir"
        echo "fuzz: $t for ${seconds}s (log: $log)"
        # shellcheck disable=SC2086  # FUZZ_FLAGS is a list of flags
        if (cd "$jobdir" && "$OUT/bin/$t" "${flags[@]}" ${FUZZ_FLAGS:-} "$work" "$OLDPWD/Fuzz/corpus/$t") >"$log" 2>&1; then
            summarize "$t" "$log"
        else
            summarize "$t" "$log"
            echo "fuzz: $t FAILED; the input is in $crashes/, the report in $log:" >&2
            grep -E -A12 'ERROR: |Fatal error|property violated' "$log" | head -40 >&2 || tail -40 "$log" >&2
            failed+=("$t")
        fi
    done
    if ((${#failed[@]})); then
        echo "fuzz: crashed: ${failed[*]}" >&2
        return 1
    fi
}

# One line per target: executions, coverage and features reached, corpus size.
summarize() {
    local t=$1 log=$2
    local execs cov ft corpus
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    corpus=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1 | cut -d' ' -f2)
    printf 'fuzz: %-14s execs %-10s cov %-6s ft %-7s corpus %s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corpus:-?}"
}

case ${1:-} in
    build) shift; build "$@" ;;
    run) [ $# -ge 2 ] || { echo "usage: $0 run SECONDS [TARGET...]" >&2; exit 2; }; shift; run "$@" ;;
    *) echo "usage: $0 build | run SECONDS [TARGET...]" >&2; exit 2 ;;
esac
