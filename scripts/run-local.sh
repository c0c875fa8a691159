#!/usr/bin/env bash
# The local stack for `make run`: release binaries, sockets and logs under RUN_DIR,
# logs in this terminal, and every process stopped on Ctrl-C or SIGTERM.
set -euo pipefail
run_dir=${1:?run directory}
port=${2:-8080}
bin=$(swift build -c release --show-bin-path)
mkdir -p "$run_dir"

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped."
}
trap stop INT TERM EXIT

"$bin/kv-stored" --socket "$run_dir/kv-stored.sock" &
pids+=($!)

for _ in $(seq 1 100); do [ -S "$run_dir/kv-stored.sock" ] && break; sleep 0.05; done
cat <<MSG

kv-stored is listening on $run_dir/kv-stored.sock
  redis-cli -s $run_dir/kv-stored.sock set greeting '"hello"'
  redis-cli -s $run_dir/kv-stored.sock get greeting
(HTTP on 127.0.0.1:$port arrives with kv-fcgi and nginx; see README.)
Ctrl-C stops it.
MSG
wait
