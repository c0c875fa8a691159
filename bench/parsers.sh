#!/usr/bin/env bash
# CPU time per megabyte of every parser a client or a disk feeds, on the shapes that make
# parsers slow, at 1, 4 and 16 MiB, beside a benign input of the same size (the baseline) in
# the same run: linear parsers keep a flat cost per MB as the size grows (docs/BENCHMARKS.md).
# Usage: bench/parsers.sh [BYTES]      (one size instead of the three)
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --static-swift-stdlib --product kv-parse-bench >&2
"$(swift build -c release --show-bin-path)/kv-parse-bench" "$@"
