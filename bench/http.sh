#!/usr/bin/env bash
# HTTP throughput through one nginx, in one run: nginx alone (`return 200`), a minimal C libfcgi
# responder behind the same nginx (the ceiling of this architecture: kept-alive connections with
# 64 threads, the baseline of every row, and per-request connections), webdis → redis-server
# behind the same nginx (a peer of the same shape: a proxy, an HTTP front end in C, a storage
# process on a unix socket), and kv-fcgi → kv-stored for GET hit/miss (also through an access
# file of 1,000 tokens and 10,000 rules), POST, POST with TTL, 1 KiB and 64 KiB values, at
# -c 50 and -c 200; each kv-fcgi row with its ratio to the C responder and to webdis.
#
# Usage: bench/http.sh   (after `make release`)
# Then 1,000 connections at once (GET and POST, kv-fcgi and webdis: max latency and errors), the
# CPU per request of each process (webdis and kv-fcgi stacks), and the measurements behind
# kv-fcgi's defaults: GET with 1, 4 and --threads workers taking requests at once, and with one
# FastCGI connection per request instead of kept-alive ones.
# Env:   DURATION (default 5s), CONNECTIONS (default "50 200"), THREADS (kv-fcgi and the
#        per-request C responder, default 16), MANY (default 1000), ACTIVE (default "cores 1 4 THREADS")
set -euo pipefail
PATH=$PATH:/usr/sbin   # Debian keeps nginx there, off an ordinary user's PATH
cd "$(dirname "$0")/.."
duration=${DURATION:-5s}
connections=${CONNECTIONS:-"50 200"}
threads=${THREADS:-16}
for tool in wrk nginx gcc curl webdis redis-server python3; do command -v $tool >/dev/null || { echo "needs $tool (scripts/install-deps.sh bench)" >&2; exit 1; }; done
source bench/stack.sh

gcc -O2 -pthread -o "$dir/c-responder" bench/c-responder.c -lfcgi
"$dir/c-responder" "$dir/c.sock" "$threads" & pids+=($!)
"$dir/c-responder" "$dir/c-kept.sock" 64 & pids+=($!)
wait_socket "$dir/c.sock"; wait_socket "$dir/c-kept.sock"
# webdis and its redis-server (unix socket, no persistence), webdis on a free loopback port.
redis-server --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --save "" --appendonly no --logfile "$dir/redis.log" & pids+=($!)
redis_pid=$!
wait_socket "$dir/redis.sock"
webdis_port=$((bench_port + 1))
cat > "$dir/webdis.json" <<JSON
{"redis_host": "$dir/redis.sock", "redis_port": 0, "http_host": "127.0.0.1", "http_port": $webdis_port,
 "threads": 2, "pool_size": 8, "daemonize": false, "database": 0, "verbosity": 0, "logfile": "$dir/webdis.log"}
JSON
webdis "$dir/webdis.json" > "$dir/webdis.out" 2>&1 & pids+=($!)   # its libevent warns on stderr of closed keep-alive connections
webdis_pid=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$webdis_port/PING" && break; sleep 0.05; done
# Access control's rows: a second kv-fcgi with an access file of 1,000 tokens and 10,000 rules,
# behind the bench server's /storage/ (the same params as the site's).
secret="an HS256 secret of at least 32 bytes, for the benchmark"
printf '%s' "$secret" > "$dir/secret"
token=$(bench/access-file.py "$dir/access.json" "$secret")
# Bench-only endpoints, in a second server of the same nginx: the production site is untouched.
# Both peers get their best connection handling: upstream connections kept alive.
start_stack "    location = /nginx { default_type application/json; return 200 '{\"value\":1}'; }
    location = /c {
        fastcgi_pass unix:$dir/c.sock;
        fastcgi_param REQUEST_METHOD \$request_method;
        fastcgi_param REQUEST_URI    \$request_uri;
        fastcgi_param CONTENT_LENGTH \$content_length;
        fastcgi_param REQUEST_ID     \$request_id;
    }
    location = /c-kept {
        fastcgi_pass c_kept;
        fastcgi_keep_conn on;
        fastcgi_param REQUEST_METHOD \$request_method;
        fastcgi_param REQUEST_URI    \$request_uri;
        fastcgi_param CONTENT_LENGTH \$content_length;
    }
    location /storage/ {
        set \$kv_endpoint storage;
        fastcgi_pass kv_fcgi_access;
        fastcgi_keep_conn on;
        fastcgi_pass_request_headers off;
        fastcgi_param REQUEST_METHOD \$request_method;
        fastcgi_param REQUEST_URI    \$request_uri;
        fastcgi_param KV_ENDPOINT    \$kv_endpoint;
        fastcgi_param CONTENT_LENGTH \$content_length;
        fastcgi_param REQUEST_ID     \$request_id;
        fastcgi_param HTTP_AUTHORIZATION \$http_authorization if_not_empty;
    }
    location /webdis/ {
        proxy_pass http://webdis/;
        proxy_http_version 1.1;
        proxy_set_header Connection \"\";
    }" "$threads" "upstream c_kept { server unix:$dir/c-kept.sock; keepalive 32; }
upstream webdis { server 127.0.0.1:$webdis_port; keepalive 32; }
upstream kv_fcgi_access { server unix:$dir/kv-fcgi-access.sock; keepalive 64; }"
"$bin/kv-fcgi" --socket "$dir/kv-fcgi-access.sock" --store "$store" --threads "$threads" --access-file "$dir/access.json" --log-level warning \
  "${group_args[@]}" & pids+=($!)
wait_socket "$dir/kv-fcgi-access.sock"
jwt=$("$bin/kvctl" jwt sign --secret-file "$dir/secret" --kid app --sub bench --read bench/ --ttl 86400)

value() { head -c "$1" /dev/zero | tr '\0' 'x'; }
for size in 32 1024 65536; do
  printf '{"value":"%s"}' "$(value $size)" > "$dir/v$size.json"
  curl -sf -o /dev/null -X POST --data-binary @"$dir/v$size.json" "http://127.0.0.1:$port/storage/hit$size"
  printf 'wrk.method = "POST"\nwrk.body = io.open("%s"):read("*a")\n' "$dir/v$size.json" > "$dir/post$size.lua"
done
curl -sf -o /dev/null -X POST --data-binary @"$dir/v32.json" "http://127.0.0.1:$port/storage/bench/hit"
printf 'wrk.method = "POST"\nwrk.body = %s\n' "'{\"value\":\"$(value 32)\",\"ttl\":\"1h\"}'" > "$dir/post-ttl.lua"
# webdis: the same JSON values under the same names; a write is the command in a POST body.
for size in 32 65536; do
  curl -sf -o /dev/null --data-binary "SET/hit$size/$(cat "$dir/v$size.json")" "http://127.0.0.1:$webdis_port/"
  printf 'wrk.method = "POST"\nwrk.body = "SET/p%s/" .. io.open("%s"):read("*a")\n' "$size" "$dir/v$size.json" > "$dir/webdis-post$size.lua"
done

# row NAME URL LUA C [HEADER] -> "| NAME | c | req/s | p50 | p99 | vs C | vs webdis | errors |", sets $rps.
# The first row of a table (the C responder) is the baseline of the rows after it; a kv-fcgi
# row is also compared with the webdis row of the same operation ($webdis_rps, set just before).
row() {
  local name=$1 url=$2 script=${3:-} c=$4 header=${5:-} out
  out=$(wrk -t2 -c"$c" -d"$duration" --latency ${script:+-s "$script"} ${header:+-H "$header"} "$url")
  rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
  local p50 p99 errors
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out"); p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ { $1 = $1; printf "%s; ", $0 }' <<<"$out")
  local ratio="baseline" vs_webdis=""
  if [ -z "$ceiling" ]; then ceiling=$rps; else ratio="$(awk -v a="$rps" -v b="$ceiling" 'BEGIN { printf "%.2f", a / b }')×"; fi
  case $name in
    webdis*) webdis_rps=$rps ;;
    kv-fcgi*) [ -n "${webdis_rps:-}" ] && vs_webdis="$(awk -v a="$rps" -v b="$webdis_rps" 'BEGIN { printf "%.2f", a / b }')×" ;;
  esac
  echo "| $name | $c | $rps | $p50 | $p99 | $ratio | $vs_webdis | ${errors:-none} |"
}

echo "machine: $(nproc) cores; $(nginx -v 2>&1); kv-fcgi and C responder: $threads threads; wrk -t2, $duration per row; kv-stored $build"
for c in $connections; do
  echo
  echo "| endpoint | connections | req/s | p50 | p99 | vs C responder | vs webdis | errors |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
  ceiling=""   # the first row (the C responder) is the baseline of the rows after it
  webdis_rps=""
  row "C libfcgi responder, kept alive, 64 threads (ceiling)" "http://127.0.0.1:$bench_port/c-kept" "" "$c"
  row "C libfcgi responder, per-request connections" "http://127.0.0.1:$bench_port/c" "" "$c"
  row "nginx return 200" "http://127.0.0.1:$bench_port/nginx" "" "$c"
  row "webdis GET, 32 B" "http://127.0.0.1:$bench_port/webdis/GET/hit32" "" "$c"
  row "kv-fcgi GET hit, 32 B" "http://127.0.0.1:$port/storage/hit32" "" "$c"
  row "kv-fcgi GET miss" "http://127.0.0.1:$port/storage/missing" "" "$c"
  row "kv-fcgi GET hit, 32 B, 1,000 tokens / 10,000 rules, static token" "http://127.0.0.1:$bench_port/storage/bench/hit" "" "$c" "Authorization: Bearer $token"
  row "kv-fcgi GET hit, 32 B, same file, HS256 JWT" "http://127.0.0.1:$bench_port/storage/bench/hit" "" "$c" "Authorization: Bearer $jwt"
  row "webdis POST (SET), 32 B" "http://127.0.0.1:$bench_port/webdis/" "$dir/webdis-post32.lua" "$c"
  row "kv-fcgi POST, 32 B" "http://127.0.0.1:$port/storage/p32" "$dir/post32.lua" "$c"
  row "kv-fcgi POST with TTL, 32 B" "http://127.0.0.1:$port/storage/pttl" "$dir/post-ttl.lua" "$c"
  webdis_rps=""
  row "kv-fcgi GET hit, 1 KiB" "http://127.0.0.1:$port/storage/hit1024" "" "$c"
  row "kv-fcgi POST, 1 KiB" "http://127.0.0.1:$port/storage/p1024" "$dir/post1024.lua" "$c"
  row "webdis GET, 64 KiB" "http://127.0.0.1:$bench_port/webdis/GET/hit65536" "" "$c"
  row "kv-fcgi GET hit, 64 KiB" "http://127.0.0.1:$port/storage/hit65536" "" "$c"
  row "webdis POST (SET), 64 KiB" "http://127.0.0.1:$bench_port/webdis/" "$dir/webdis-post65536.lua" "$c"
  row "kv-fcgi POST, 64 KiB" "http://127.0.0.1:$port/storage/p65536" "$dir/post65536.lua" "$c"
done

# Many connections at once: every request must complete, none wait for a thread.
many=${MANY:-1000}
echo
echo "| endpoint | connections | req/s | p99 | max | errors |"
echo "| --- | ---: | ---: | ---: | ---: | --- |"
many_row() {
  local name=$1 url=$2 script=${3:-} out
  out=$(wrk -t2 -c"$many" -d"$duration" --latency --timeout 10s ${script:+-s "$script"} "$url")
  echo "| $name | $many | $(awk '/Requests\/sec/ { print $2 }' <<<"$out") | $(awk '$1 == "99%" { print $2 }' <<<"$out") | $(awk '$1 == "Latency" { print $4 }' <<<"$out") | $(awk '/Non-2xx|Socket errors/ { $1 = $1; printf "%s; ", $0 }' <<<"$out")none |"
}
many_row "webdis GET, 32 B" "http://127.0.0.1:$bench_port/webdis/GET/hit32"
many_row "kv-fcgi GET hit, 32 B" "http://127.0.0.1:$port/storage/hit32"
many_row "webdis POST (SET), 32 B" "http://127.0.0.1:$bench_port/webdis/" "$dir/webdis-post32.lua"
many_row "kv-fcgi POST, 32 B" "http://127.0.0.1:$port/storage/p32" "$dir/post32.lua"

# Where the time goes: CPU per request of each process behind nginx, GET 32 B at the first
# connection count (wrk's own CPU not counted).
ticks() { local total=0 pid; for pid in "$@"; do total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done; echo $total; }
per_request() {  # per_request NAME URL PID... → a row of µs of CPU per request for nginx and each PID
  local name=$1 url=$2; shift 2
  local nginx_workers before=() after=() out requests hz i
  nginx_workers=$(pgrep -P "$(cat "$dir/nginx/nginx.pid")" | tr '\n' ' ')
  hz=$(getconf CLK_TCK)
  before=("$(ticks $nginx_workers)"); for pid in "$@"; do before+=("$(ticks "$pid")"); done
  out=$(wrk -t2 -c"${connections%% *}" -d"$duration" "$url")
  after=("$(ticks $nginx_workers)"); for pid in "$@"; do after+=("$(ticks "$pid")"); done
  requests=$(awk '/requests in/ { print $1 }' <<<"$out")
  local cells="" total=0 us
  for i in "${!before[@]}"; do
    us=$(awk -v t=$((after[i] - before[i])) -v hz="$hz" -v n="$requests" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    cells="$cells | $us"; total=$(awk -v a="$total" -v b="$us" 'BEGIN { print a + b }')
  done
  echo "| $name | $(awk '/Requests\/sec/ { print $2 }' <<<"$out")$cells | $total |"
}
echo
echo "| GET 32 B, -c ${connections%% *} | req/s | nginx µs CPU per request | front end | store | total |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
per_request "webdis → redis-server" "http://127.0.0.1:$bench_port/webdis/GET/hit32" "$webdis_pid" "$redis_pid"
per_request "kv-fcgi → kv-stored" "http://127.0.0.1:$port/storage/hit32" "$fcgi_pid" "$(pgrep -f "kv-stored --socket $dir/" | head -1)"

# How kv-fcgi's choices weigh, GET hit 32 B: how many threads take requests at once (kept-alive
# connections, the site's choice), then one FastCGI connection per request.
echo
echo "| FastCGI connections | kv-fcgi threads | taking requests at once | connections | req/s | p50 | p99 | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
compare() {
  local mode=$1 active=$2 c out errors
  for c in $connections; do
    out=$(wrk -t2 -c"$c" -d"$duration" --latency "http://127.0.0.1:$port/storage/hit32")
    errors=$(awk '/Non-2xx|Socket errors/ { $1 = $1; printf "%s; ", $0 }' <<<"$out")
    echo "| $mode | $threads | $active | $c | $(awk '/Requests\/sec/ { print $2 }' <<<"$out") | $(awk '$1 == "50%" { print $2 }' <<<"$out") | $(awk '$1 == "99%" { print $2 }' <<<"$out") | ${errors:-none} |"
  done
}
restart_fcgi() {  # restart_fcgi ACTIVE
  kill "$fcgi_pid"; wait "$fcgi_pid" 2>/dev/null || true
  "$bin/kv-fcgi" --socket "$dir/kv-fcgi.sock" --store "$store" --threads "$threads" --active-threads "$1" --log-level warning "${group_args[@]}" &
  fcgi_pid=$!; pids+=($fcgi_pid)
  wait_socket "$dir/kv-fcgi.sock"
}
default_active=$(nproc)
for active in ${ACTIVE:-$default_active 1 4 $threads}; do
  restart_fcgi "$active"
  compare "kept alive$([ "$active" = "$default_active" ] && echo " (shipped)")" "$active"
done
restart_fcgi "$default_active"
sed -i -e "/^    keepalive [0-9]*;/d" -e "/^    fastcgi_keep_conn on;/d" "$dir/nginx/kvserver.conf"
grep -q "^    fastcgi_keep_conn" "$dir/nginx/kvserver.conf" && { echo "the site still keeps connections" >&2; exit 1; }
nginx -p "$dir/nginx" -c "$dir/nginx.conf" -s reload 2>/dev/null
sleep 1
compare "one per request" "$default_active"
