# Shared by the bench/ scripts (sourced): start release daemons and nginx with the shipped site
# (local paths) in a temp folder, plus a bench-only `server` block, and stop everything on exit.
# After `start_stack`: $dir, $port (the site), $bench_port (the bench-only server), $bin.
source bench/binaries.sh
bin=$bin_dir
dir=$(mktemp -d /tmp/kvbench-XXXXXX)
chmod 755 "$dir"
port=$((20000 + RANDOM % 20000)); bench_port=$((port + 1))
pids=()
group_args=(); [ "$(id -u)" -eq 0 ] && group_args=(--socket-group nogroup)

stop_stack() {
  [ -f "$dir/nginx/nginx.pid" ] && nginx -p "$dir/nginx" -c "$dir/nginx.conf" -s stop 2>/dev/null || true
  # Newest first: the front ends stop before the store they use (no reconnection noise).
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
  # libfcgi's C responder takes SIGTERM as "finish the request in hand" and stays blocked in
  # accept: whatever is still running after 3 s is killed.
  for _ in $(seq 1 30); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.1; done
  kill -9 "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap stop_stack EXIT

wait_socket() { for _ in $(seq 1 400); do [ -S "$1" ] && return; sleep 0.05; done; echo "no $1" >&2; exit 1; }

# start_stack "BENCH SERVER DIRECTIVES" [kv-fcgi threads] ["HTTP-LEVEL DIRECTIVES" (upstreams)]
# With $store set (a --store address: Redis, a cluster), the front ends use it and no kv-stored runs.
start_stack() {
  local bench_directives=$1 threads=${2:-16} http_directives=${3:-}
  if [ -z "${store:-}" ]; then
    "$bin/kv-stored" --socket "$dir/kv-stored.sock" --persistence none --log-level warning "${group_args[@]}" & pids+=($!)
    wait_socket "$dir/kv-stored.sock"
    store=$dir/kv-stored.sock
  fi
  "$bin/kv-fcgi" --socket "$dir/kv-fcgi.sock" --store "$store" --threads "$threads" --log-level warning "${group_args[@]}" & pids+=($!)
  fcgi_pid=$!
  "$bin/kv-ws" --socket "$dir/kv-ws.sock" --store "$store" --log-level warning "${group_args[@]}" ${WS_ARGS:-} & pids+=($!)
  ws_pid=$!
  wait_socket "$dir/kv-fcgi.sock"; wait_socket "$dir/kv-ws.sock"
  scripts/nginx-local-conf.sh "$dir" "$port" > "$dir/nginx.conf"
  # $nginx_modules: load_module lines a bench needs (bench/ws.sh: nchan), before everything else.
  if [ -n "${nginx_modules:-}" ]; then printf '%s\n' "$nginx_modules" | cat - "$dir/nginx.conf" > "$dir/nginx.conf.new" && mv "$dir/nginx.conf.new" "$dir/nginx.conf"; fi
  sed -i "s|access_log $dir/nginx/access.log;|access_log off;|" "$dir/nginx.conf"
  cat >> "$dir/nginx/kvserver.conf" <<CONF
$http_directives
server {
    listen 127.0.0.1:$bench_port;
    access_log off;
$bench_directives
}
CONF
  nginx -p "$dir/nginx" -c "$dir/nginx.conf"
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/storage/ready" && break; sleep 0.05; done
}
