#!/usr/bin/env bash
# Runs the three daemons the way `MemoryDenyWriteExecute=yes` in the units would: with the
# kernel refusing any memory that is both writable and executable (prctl PR_SET_MDWE, Linux
# 6.3+, which systemd uses too), and checks that they start, answer and stop cleanly.
# Usage: scripts/check-mdwe.sh [BIN_DIR]     (default: the release build; needs python3, redis-cli)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-$(swift build -c release --show-bin-path)}
dir=$(mktemp -d /tmp/kvmdwe-XXXXXX)
trap 'pkill -f "$dir/" 2>/dev/null || true; rm -rf "$dir"' EXIT
mdwe() {  # mdwe COMMAND ARGS… — exec COMMAND with PR_SET_MDWE(PR_MDWE_REFUSE_EXEC_GAIN) set
  exec python3 -c 'import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0: sys.exit("prctl(PR_SET_MDWE) failed: " + os.strerror(ctypes.get_errno()))
os.execv(sys.argv[1], sys.argv[1:])' "$@"
}
mdwe "$bin/kv-stored" --socket "$dir/s" --data-dir "$dir/data" > "$dir/kv-stored.log" 2>&1 & stored=$!
until [ -S "$dir/s" ]; do sleep 0.05; done
mdwe "$bin/kv-fcgi" --socket "$dir/f" --store "$dir/s" --threads 2 > "$dir/kv-fcgi.log" 2>&1 & fcgi=$!
mdwe "$bin/kv-ws" --socket "$dir/w" --store "$dir/s" > "$dir/kv-ws.log" 2>&1 & ws=$!
until [ -S "$dir/f" ] && [ -S "$dir/w" ]; do sleep 0.05; done
[ "$(redis-cli -s "$dir/s" set k '"v"' px 60000)" = OK ] && [ "$(redis-cli -s "$dir/s" get k)" = '"v"' ]
redis-cli -s "$dir/s" bgrewriteaof > /dev/null
until redis-cli -s "$dir/s" info persistence | grep -q '^aof_rewrites:1'; do sleep 0.05; done
kill "$stored" "$fcgi" "$ws"
for pid in "$stored" "$fcgi" "$ws"; do wait "$pid"; done   # each must exit 0
echo "check-mdwe: kv-stored, kv-fcgi and kv-ws ran, answered and stopped cleanly with W^X memory enforced"
