#!/usr/bin/env bash
# A change measured against what it replaced, in one run: a bench script (bench/http.sh,
# bench/ws.sh, bench/store-vs-redis.sh, bench/persistence.sh …) run against two builds in
# alternating rounds (before, after, before, after …), every round's output kept.
#
# Usage:
#   bench/compare-builds.sh --build COMMIT DIR     release build of COMMIT in a worktree at DIR; prints its bin dir
#   bench/compare-builds.sh BEFORE_BIN AFTER_BIN SCRIPT [ROUNDS]
# The scripts' own settings pass through the environment (e.g. ONLY=rr bench/ws.sh's).
# Outputs: $OUT (default /tmp/compare-builds)/<round>-<before|after>.txt, and their names on stdout.
set -euo pipefail

if [ "${1:-}" = "--build" ]; then
  commit=$2 worktree=$3
  [ -d "$worktree" ] || git worktree add --detach "$worktree" "$commit" >&2
  (cd "$worktree" && swift build -c release --static-swift-stdlib >&2 && swift build -c release --show-bin-path)
  exit 0
fi

before=$1 after=$2 script=$3 rounds=${4:-3}
out=${OUT:-/tmp/compare-builds}
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  for side in before after; do
    bin=$before; [ "$side" = after ] && bin=$after
    file="$out/$round-$side.txt"
    echo "== round $round, $side ($bin)" >&2
    BIN_DIR=$bin bash "$script" > "$file" 2>&1
    echo "$file"
  done
done
