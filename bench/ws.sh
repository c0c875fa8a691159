#!/usr/bin/env bash
# kv-ws under load through nginx, in one run, with a baseline WebSocket echo/broadcast server
# (bench/ws_load.py serve-baseline, picows) behind the same nginx, and for live updates nchan
# (Debian's libnginx-mod-nchan: pub/sub inside nginx, in C; WebSocket subscribers, HTTP POST
# publishing) in the same nginx:
#   request/response: CONNS connections doing set+get round trips, against the baseline;
#   fan-out: SUBS subscribers on one key, a writer at RATE sets/s for SECONDS;
#   many keys: SUBS subscribers on distinct keys; expiry lag: KEYS keys with TTLs over 1 s.
# Usage: bench/ws.sh  (after `make release`). Needs python3 with picows and uvloop (installed here).
# Env: CONNS=50 SECONDS_RR=5 SUBS=1000 RATE=1000 FAN_SECONDS=10 KEYS=100000 KEY_CONNS=100 PROCS=2
# RATES (the fan-out's sets/s: RATE, RATE/4 and RATE/10 unless given),
# (PROCS: subscriber processes of the fan-out and expiry scenarios), WS_ARGS (extra kv-ws options),
# ONLY="rr fanout expiry" (the default: all three groups of scenarios; name fewer to run fewer).
set -euo pipefail
PATH=$PATH:/usr/sbin   # Debian keeps nginx there, off an ordinary user's PATH
cd "$(dirname "$0")/.."
conns=${CONNS:-50}; seconds=${SECONDS_RR:-5}; subs=${SUBS:-1000}; rate=${RATE:-1000}
fan_seconds=${FAN_SECONDS:-10}; keys=${KEYS:-100000}; key_conns=${KEY_CONNS:-100}
python3 -c "import picows, uvloop" 2>/dev/null || python3 -m pip install -q picows uvloop
ulimit -n 65536 2>/dev/null || true
source bench/stack.sh

baseline_port=$((port + 2))
# A fresh baseline server for each scenario: after an overload it is still busy writing to
# clients that have gone, which would slow the next scenario's handshakes.
restart_baseline() {
  [ -n "${baseline_pid:-}" ] && kill "$baseline_pid" 2>/dev/null && wait "$baseline_pid" 2>/dev/null || true
  python3 bench/ws_load.py serve-baseline "$baseline_port" 2>/dev/null & baseline_pid=$!; pids+=($!)
  sleep 0.5
}
restart_baseline
nchan_so=/usr/lib/nginx/modules/ngx_nchan_module.so
[ -f "$nchan_so" ] || { echo "needs libnginx-mod-nchan (scripts/install-deps.sh bench)" >&2; exit 1; }
nginx_modules="load_module $nchan_so;"
start_stack "    location = /ws {
        proxy_pass http://127.0.0.1:$baseline_port;
        proxy_http_version 1.1;
        proxy_set_header Upgrade \$http_upgrade;
        proxy_set_header Connection \"upgrade\";
        proxy_read_timeout 1h;
        proxy_buffering off;
    }
    location ~ ^/nchan/sub/(.+)\$ {
        nchan_subscriber websocket;
        nchan_channel_id \$1;
    }
    location ~ ^/nchan/pub/(.+)\$ {
        nchan_publisher http;
        nchan_channel_id \$1;
    }"
kv="ws://127.0.0.1:$port/ws"; base="ws://127.0.0.1:$bench_port/ws"; nchan="ws://127.0.0.1:$bench_port/nchan"

echo "machine: $(nproc) cores; $(nginx -v 2>&1); kv-ws $build; client: python3 + picows + uvloop (rr: one process; fan-out and expiry: ${PROCS:-2} subscriber processes)"
echo
only=${ONLY:-rr fanout expiry}
want() { [[ " $only " == *" $1 "* ]]; }
if want rr; then
echo "| server | test | connections | throughput | p50 | p99 |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
# Alternating, three times each: the two servers share the machine's state (caches, CPU clocks).
for _ in 1 2 3; do
  echo -n "| baseline echo (picows) "; python3 bench/ws_load.py rr "$base" "$conns" "$seconds"
  echo -n "| kv-ws "; python3 bench/ws_load.py rr "$kv" "$conns" "$seconds"
done
fi
if want fanout; then
echo
echo "| server | test | load | deliveries/s | p50 | p99 | max | lost | out of order |"
echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for r in ${RATES:-$rate $((rate / 4)) $((rate / 10))}; do
  restart_baseline
  echo -n "| baseline broadcast (picows) "; python3 bench/ws_load.py fanout "$base" "$subs" "$r" "$fan_seconds"
  echo -n "| nchan "; python3 bench/ws_load.py nchan-fanout "$nchan" "$subs" "$r" "$fan_seconds"
  echo -n "| kv-ws "; python3 bench/ws_load.py fanout "$kv" "$subs" "$r" "$fan_seconds"
done
restart_baseline
echo -n "| baseline broadcast (picows) "; python3 bench/ws_load.py manykeys "$base" "$subs" "$rate" "$fan_seconds"
echo -n "| nchan "; python3 bench/ws_load.py nchan-manykeys "$nchan" "$subs" "$rate" "$fan_seconds"
echo -n "| kv-ws "; python3 bench/ws_load.py manykeys "$kv" "$subs" "$rate" "$fan_seconds"
fi
if want expiry; then
echo
echo "| test | load | notified | p50 | p99 | max | missing |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
python3 bench/ws_load.py expiry "$kv" "$keys" "$key_conns"
fi
