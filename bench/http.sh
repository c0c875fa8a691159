#!/usr/bin/env bash
# HTTP throughput through one nginx, in one run: nginx alone (`return 200`), a minimal C libfcgi
# responder behind the same nginx (the ceiling of this architecture), and kv-fcgi → kv-stored
# for GET hit/miss, POST, POST with TTL, 1 KiB and 64 KiB values, at -c 50 and -c 200.
#
# Usage: bench/http.sh   (after `make release`)
# Then the measurement behind nginx/kvserver.conf's choice of one FastCGI connection per request:
# the same GET with `fastcgi_keep_conn on` + upstream `keepalive 16` and 64 kv-fcgi threads.
# Env:   DURATION (default 5s), CONNECTIONS (default "50 200"), THREADS (kv-fcgi and C responder, default 16)
set -euo pipefail
PATH=$PATH:/usr/sbin   # Debian keeps nginx there, off an ordinary user's PATH
cd "$(dirname "$0")/.."
duration=${DURATION:-5s}
connections=${CONNECTIONS:-"50 200"}
threads=${THREADS:-16}
for tool in wrk nginx gcc curl; do command -v $tool >/dev/null || { echo "needs $tool (scripts/install-deps.sh bench)" >&2; exit 1; }; done
source bench/stack.sh

gcc -O2 -pthread -o "$dir/c-responder" bench/c-responder.c -lfcgi
"$dir/c-responder" "$dir/c.sock" "$threads" & pids+=($!)
wait_socket "$dir/c.sock"
# Bench-only endpoints, in a second server of the same nginx: the production site is untouched.
start_stack "    location = /nginx { default_type application/json; return 200 '{\"value\":1}'; }
    location = /c {
        fastcgi_pass unix:$dir/c.sock;
        fastcgi_param REQUEST_METHOD \$request_method;
        fastcgi_param REQUEST_URI    \$request_uri;
        fastcgi_param CONTENT_LENGTH \$content_length;
        fastcgi_param REQUEST_ID     \$request_id;
    }" "$threads"

value() { head -c "$1" /dev/zero | tr '\0' 'x'; }
for size in 32 1024 65536; do
  printf '{"value":"%s"}' "$(value $size)" > "$dir/v$size.json"
  curl -sf -o /dev/null -X POST --data-binary @"$dir/v$size.json" "http://127.0.0.1:$port/storage/hit$size"
  printf 'wrk.method = "POST"\nwrk.body = io.open("%s"):read("*a")\n' "$dir/v$size.json" > "$dir/post$size.lua"
done
printf 'wrk.method = "POST"\nwrk.body = %s\n' "'{\"value\":\"$(value 32)\",\"ttl\":\"1h\"}'" > "$dir/post-ttl.lua"

# run NAME URL [LUA] -> "| NAME | c | req/s | p50 | p99 |" and sets $rps
row() {
  local name=$1 url=$2 script=${3:-} c=$4 out
  out=$(wrk -t2 -c"$c" -d"$duration" --latency ${script:+-s "$script"} "$url")
  rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
  local p50 p99 errors
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out"); p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ { $1 = $1; printf "%s; ", $0 }' <<<"$out")
  local ratio="baseline"
  if [ -z "$ceiling" ]; then ceiling=$rps; else ratio="$(awk -v a="$rps" -v b="$ceiling" 'BEGIN { printf "%.2f", a / b }')×"; fi
  echo "| $name | $c | $rps | $p50 | $p99 | $ratio | ${errors:-none} |"
}

echo "machine: $(nproc) cores; $(nginx -v 2>&1); kv-fcgi and C responder: $threads threads; wrk -t2, $duration per row; kv-stored $build"
for c in $connections; do
  echo
  echo "| endpoint | connections | req/s | p50 | p99 | vs C responder | errors |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | --- |"
  ceiling=""   # the first row (the C responder) is the baseline of the rows after it
  row "C libfcgi responder (ceiling)" "http://127.0.0.1:$bench_port/c" "" "$c"
  row "nginx return 200" "http://127.0.0.1:$bench_port/nginx" "" "$c"
  row "kv-fcgi GET hit, 32 B" "http://127.0.0.1:$port/storage/hit32" "" "$c"
  row "kv-fcgi GET miss" "http://127.0.0.1:$port/storage/missing" "" "$c"
  row "kv-fcgi POST, 32 B" "http://127.0.0.1:$port/storage/p32" "$dir/post32.lua" "$c"
  row "kv-fcgi POST with TTL, 32 B" "http://127.0.0.1:$port/storage/pttl" "$dir/post-ttl.lua" "$c"
  row "kv-fcgi GET hit, 1 KiB" "http://127.0.0.1:$port/storage/hit1024" "" "$c"
  row "kv-fcgi POST, 1 KiB" "http://127.0.0.1:$port/storage/p1024" "$dir/post1024.lua" "$c"
  row "kv-fcgi GET hit, 64 KiB" "http://127.0.0.1:$port/storage/hit65536" "" "$c"
  row "kv-fcgi POST, 64 KiB" "http://127.0.0.1:$port/storage/p65536" "$dir/post65536.lua" "$c"
done

# Keep-alive against per-request connections (the site's choice), GET hit 32 B.
echo
echo "| FastCGI connections | kv-fcgi threads | connections | req/s | p50 | p99 | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | --- |"
compare() {
  local mode=$1 threads=$2 c out errors
  for c in $connections; do
    out=$(wrk -t2 -c"$c" -d"$duration" --latency "http://127.0.0.1:$port/storage/hit32")
    errors=$(awk '/Non-2xx|Socket errors/ { $1 = $1; printf "%s; ", $0 }' <<<"$out")
    echo "| $mode | $threads | $c | $(awk '/Requests\/sec/ { print $2 }' <<<"$out") | $(awk '$1 == "50%" { print $2 }' <<<"$out") | $(awk '$1 == "99%" { print $2 }' <<<"$out") | ${errors:-none} |"
  done
}
compare "one per request (shipped)" "$threads"
kill "$fcgi_pid"; wait "$fcgi_pid" 2>/dev/null || true
"$bin/kv-fcgi" --socket "$dir/kv-fcgi.sock" --store "$dir/kv-stored.sock" --threads 64 --log-level warning "${group_args[@]}" & pids+=($!)
wait_socket "$dir/kv-fcgi.sock"
sed -i -e "s|    server unix:$dir/kv-fcgi.sock;|    server unix:$dir/kv-fcgi.sock;\n    keepalive 16;|" \
  -e "s|        fastcgi_pass kv_fcgi;|        fastcgi_pass kv_fcgi;\n        fastcgi_keep_conn on;|" "$dir/nginx/kvserver.conf"
nginx -p "$dir/nginx" -c "$dir/nginx.conf" -s reload
sleep 1
compare "kept alive (keepalive 16)" 64
