#!/usr/bin/env bash
# The local stack for `make run`: kv-stored, kv-fcgi, kv-ws and nginx (the production site file with
# local socket paths and port), release binaries, everything under RUN_DIR, logs in this
# terminal, and every process stopped on Ctrl-C or SIGTERM. With a third argument (`make run
# STORE=redis://HOST:PORT`, or redis-cluster://…), the front ends use that store and no kv-stored
# runs (docs/scaling.md). With a fourth (`make run ACCESS_FILE=path`), kv-fcgi and kv-ws enforce
# that access file (docs/access.md); `kill -HUP` them (pids printed) to reload it.
# A fifth argument names the binaries' directory (default: .build/release).
set -euo pipefail
run_dir=${1:?run directory}
port=${2:-8080}
store=${3:-}
access_args=()
[ -n "${4:-}" ] && access_args=(--access-file "$(realpath "$4")")
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${5:-$here/.build/release}
# Debian keeps nginx in /usr/sbin, which is not on an ordinary user's PATH.
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || { echo "nginx is not installed (scripts/install-deps.sh run)" >&2; exit 1; }
# -e: as any user, nginx logs under RUN_DIR from the start (never /var/log/nginx).
nginx_cmd=("$nginx" -p "$run_dir/nginx" -c "$run_dir/nginx.conf" -e "$run_dir/nginx/error.log")
mkdir -p "$run_dir"
chmod 755 "$run_dir"   # nginx's workers must reach the sockets in it
for s in kv-stored.sock kv-fcgi.sock kv-ws.sock; do
  [ -S "$run_dir/$s" ] && { echo "$run_dir/$s exists: is another 'make run' still running?" >&2; }
done

group_args=()
[ "$(id -u)" -eq 0 ] && group_args=(--socket-group nogroup)   # as in production: nginx reaches the sockets through their group

pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping..."
  [ -f "$run_dir/nginx/nginx.pid" ] && "${nginx_cmd[@]}" -s quit 2>/dev/null || true
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped."
}
trap stop INT TERM EXIT

wait_for_socket() {
  for _ in $(seq 1 200); do [ -S "$1" ] && return 0; sleep 0.05; done
  echo "timed out waiting for $1" >&2
  exit 1
}

if [ -z "$store" ]; then
  "$bin/kv-stored" --socket "$run_dir/kv-stored.sock" --data-dir "$run_dir/data" "${group_args[@]}" &
  pids+=($!)
  wait_for_socket "$run_dir/kv-stored.sock"
  store=$run_dir/kv-stored.sock
  store_note="  redis-cli -s $run_dir/kv-stored.sock info keyspace
Data is kept in $run_dir/data/kv-stored.aof across runs (\`make clean\` removes it)."
else
  store_note="The store is $store (docs/scaling.md)."
fi

"$bin/kv-fcgi" --socket "$run_dir/kv-fcgi.sock" --store "$store" "${group_args[@]}" "${access_args[@]}" &
pids+=($!)
wait_for_socket "$run_dir/kv-fcgi.sock"

"$bin/kv-ws" --socket "$run_dir/kv-ws.sock" --store "$store" "${group_args[@]}" "${access_args[@]}" &
pids+=($!)
wait_for_socket "$run_dir/kv-ws.sock"

"$here/scripts/nginx-local-conf.sh" "$run_dir" "$port" > "$run_dir/nginx.conf"
"${nginx_cmd[@]}" -t -q
"${nginx_cmd[@]}" -g 'daemon off;' &
pids+=($!)
tail -n 0 -F "$run_dir/nginx/error.log" 2>/dev/null &
pids+=($!)

for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && break
  sleep 0.05
done
cat <<MSG

KvServer is running on http://127.0.0.1:$port  (files in $run_dir)
  curl -i -X POST -d '{"value": {"hello": "world"}, "ttl": "1h"}' http://127.0.0.1:$port/storage/greeting
  curl -i http://127.0.0.1:$port/storage/greeting
  curl -i -X DELETE http://127.0.0.1:$port/storage/greeting
  WebSocket: ws://127.0.0.1:$port/ws  — {"type":"subscribe","payload":{"key":"greeting"}}
$store_note
Ctrl-C stops everything.

MSG
wait -n "${pids[@]}"
echo "a process of the stack exited; stopping the rest" >&2
