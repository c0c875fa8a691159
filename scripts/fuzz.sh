#!/usr/bin/env bash
# Fuzzes KvServer's parsers with libFuzzer (docs/security.md): the JSON reader, the TTL grammar,
# kv-stored's command parser (whole and resumed in pieces) and the clients' reply decoder, a
# WebSocket message as kv-ws reads it, the key in a request target, and the log reader.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET…]      (make fuzz FUZZ_SECONDS=…)
# Builds kv-fuzz with -sanitize=fuzzer,address into .build-fuzz (release: SwiftPM renames a
# debug executable's entry point, which would take the place of libFuzzer's main). Each
# target starts from its committed seeds (fuzz/corpus/<target>, read only) and keeps what it
# finds in .build-fuzz/corpus/<target>. A crash or a broken promise stops the run, exits 1, and
# leaves the input in .build-fuzz/crashes/: copy it to fuzz/regressions/<target>/ once fixed,
# and the unit tests replay it for good (`kv-fuzz TARGET FILE` replays one by hand).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(json ttl resp ws-message key-path log)

swift build -c release --product kv-fuzz --scratch-path .build-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING
binary="$(swift build -c release --product kv-fuzz --scratch-path .build-fuzz --show-bin-path)/kv-fuzz"

mkdir -p .build-fuzz/crashes
for target in "${targets[@]}"; do
  [ -d "fuzz/corpus/$target" ] || { echo "no such target: $target (fuzz/corpus/ lists them)" >&2; exit 2; }
  mkdir -p ".build-fuzz/corpus/$target"
  echo "== $target: ${seconds}s"
  # -rss_limit_mb: a parser that allocates without bound fails the run, like a crash.
  # -max_len: big enough for nesting, long keys and several records, small enough to go fast.
  status=0
  # SWIFT_BACKTRACE off: on a trap the Swift runtime's backtracer reads memory ASan then reports
  # instead of the trap; libFuzzer reports the signal and saves the input either way.
  KV_FUZZ_TARGET=$target ASAN_OPTIONS=detect_leaks=0 SWIFT_BACKTRACE=enable=no "$binary" \
    ".build-fuzz/corpus/$target" "fuzz/corpus/$target" \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix=".build-fuzz/crashes/$target-" -print_final_stats=1 > ".build-fuzz/$target.log" 2>&1 || status=$?
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)" ".build-fuzz/$target.log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 ".build-fuzz/$target.log" >&2
    echo "FAILED: $target (the input is in .build-fuzz/crashes/)" >&2
    exit 1
  fi
done
echo "fuzzing passed: ${targets[*]} (${seconds}s each)"
