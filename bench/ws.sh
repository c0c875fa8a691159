#!/usr/bin/env bash
# kv-ws under load through nginx, in one run, with a baseline WebSocket echo/broadcast server
# (bench/ws_load.py serve-baseline, picows) behind the same nginx, for live updates nchan
# (Debian's libnginx-mod-nchan: pub/sub inside nginx, in C; WebSocket subscribers, HTTP POST
# publishing) in the same nginx, and in the request/response and fan-out rows the floor of
# kv-ws's place (bench/ws-floor.c: the least a server there can do, in C, built here):
#   request/response: CONNS connections doing round trips (a get each; RR_MIXES="get sets10
#   sets50": no sets, a set before every 9th get, or before every get), against the baseline;
#   fan-out: SUBS subscribers on one key, a writer at RATE sets/s for SECONDS;
#   many keys: SUBS subscribers on distinct keys; expiry lag: KEYS keys with TTLs over 1 s.
# Usage: bench/ws.sh  (after `make release`). Needs python3 with picows and uvloop (installed here).
# Env: CONNS=50 SECONDS_RR=5 SUBS=1000 RATE=1000 FAN_SECONDS=10 KEYS=100000 KEY_CONNS=100 PROCS=2
# RATES (the fan-out's sets/s: RATE, RATE/4 and RATE/10 unless given),
# (PROCS: subscriber processes of the fan-out and expiry scenarios), WS_ARGS (extra kv-ws options),
# ONLY="rr fanout expiry" (the default: all three groups of scenarios; name fewer to run fewer),
# EXPIRY_STORED="0 1000000" (other keys kv-stored holds during the expiry rows), EXPIRY_ROUNDS=1,
# EXPIRY_SET_RATE=10000 (how fast the expiry rows set their keys), BASELINE_VIA=tcp|unix (how
# nginx reaches the baseline server), NGINX_SCHED=batch (nginx's workers as SCHED_BATCH).
# The request/response and fan-out tables are each followed by the CPU each process took in
# each of their rows, and how often the row's server was preempted and slept (from /proc).
set -euo pipefail
PATH=$PATH:/usr/sbin   # Debian keeps nginx there, off an ordinary user's PATH
cd "$(dirname "$0")/.."
conns=${CONNS:-50}; seconds=${SECONDS_RR:-5}; subs=${SUBS:-1000}; rate=${RATE:-1000}
fan_seconds=${FAN_SECONDS:-10}; keys=${KEYS:-100000}; key_conns=${KEY_CONNS:-100}
python3 -c "import picows, uvloop" 2>/dev/null || python3 -m pip install -q picows uvloop
ulimit -n 65536 2>/dev/null || true
source bench/stack.sh

# BASELINE_VIA=tcp (the default: on a loopback port) or unix (on a Unix-domain socket, the
# way nginx reaches kv-ws).
case ${BASELINE_VIA:-tcp} in
  tcp) baseline_at=$((port + 2)); baseline_upstream=127.0.0.1:$baseline_at ;;
  unix) baseline_at=$dir/baseline.sock; baseline_upstream=unix:$baseline_at: ;;
  *) echo "BASELINE_VIA is tcp or unix" >&2; exit 1 ;;
esac
# A fresh baseline server for each scenario: after an overload it is still busy writing to
# clients that have gone, which would slow the next scenario's handshakes.
restart_baseline() {
  [ -n "${baseline_pid:-}" ] && kill "$baseline_pid" 2>/dev/null && wait "$baseline_pid" 2>/dev/null || true
  rm -f "$dir/baseline.sock"
  python3 bench/ws_load.py serve-baseline "$baseline_at" 2>/dev/null & baseline_pid=$!; pids+=($!)
  sleep 0.5
}
restart_baseline
nchan_so=/usr/lib/nginx/modules/ngx_nchan_module.so
[ -f "$nchan_so" ] || { echo "needs libnginx-mod-nchan (scripts/install-deps.sh bench)" >&2; exit 1; }
nginx_modules="load_module $nchan_so;"
# The baseline's and the floor's WebSocket proxying: the relay settings of the shipped site's /ws.
ws_proxy="proxy_http_version 1.1;
        proxy_set_header Upgrade \$http_upgrade;
        proxy_set_header Connection \"upgrade\";
        proxy_read_timeout 1h;
        proxy_buffering off;"
start_stack "    location = /ws {
        proxy_pass http://$baseline_upstream;
        $ws_proxy
    }
    location = /floor {
        proxy_pass http://unix:$dir/floor.sock:;
        $ws_proxy
    }
    location ~ ^/nchan/sub/(.+)\$ {
        nchan_subscriber websocket;
        nchan_channel_id \$1;
    }
    location ~ ^/nchan/pub/(.+)\$ {
        nchan_publisher http;
        nchan_channel_id \$1;
    }"
# The floor of kv-ws's place in the stack (bench/ws-floor.c): a server in C on a Unix-domain
# socket behind the same nginx, doing the least kv-ws's work needs: a get goes to kv-stored and
# back, a change is framed once and written to each subscriber (without waiting for the
# store's change feed). What a row leaves above it, no server in kv-ws's place can take away.
cc -O2 -o "$dir/ws-floor" bench/ws-floor.c -lcrypto
"$dir/ws-floor" "$dir/floor.sock" "$store" & floor_pid=$!; pids+=($!)
wait_socket "$dir/floor.sock"
# NGINX_SCHED=batch: nginx's workers as SCHED_BATCH (as root), which do not preempt the task
# running where they wake (docs/BENCHMARKS.md: what the proxy hop costs kv-ws).
if [ "${NGINX_SCHED:-}" = batch ]; then
  for worker in $(pgrep -P "$(cat "$dir/nginx/nginx.pid")"); do chrt --batch --all-tasks --pid 0 "$worker"; done
fi
kv="ws://127.0.0.1:$port/ws"; base="ws://127.0.0.1:$bench_port/ws"; nchan="ws://127.0.0.1:$bench_port/nchan"
floor="ws://127.0.0.1:$bench_port/floor"

echo "machine: $(nproc) cores; $(nginx -v 2>&1); kv-ws $build; baseline server via ${BASELINE_VIA:-tcp}; nginx workers: ${NGINX_SCHED:-normal} scheduling; client: python3 + picows + uvloop (rr: one process; fan-out and expiry: ${PROCS:-2} subscriber processes)"
echo
only=${ONLY:-rr fanout expiry}
want() { [[ " $only " == *" $1 "* ]]; }
# Where the time goes in a row: CPU seconds of nginx's workers (nchan runs inside them),
# kv-ws, kv-stored and the baseline server (the Python one, or the C floor), and of everything
# else (the client processes, mostly), from /proc, over the row; and how often the row's
# server (kv-ws, the baseline, the floor, or nginx's workers for nchan) was switched out while
# it could still run (preempted) and while it waited for input (slept). Kept in $cpu_file for
# a table after.
ticks() { local total=0 pid; for pid in "$@"; do total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0))); done; echo $total; }
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
switches() {  # switches KIND PID…: the threads' nonvoluntary or voluntary context switches
  local pid
  for pid in "${@:2}"; do cat /proc/"$pid"/task/*/status 2>/dev/null; done | awk -v kind="$1" '$1 == kind "_ctxt_switches:" { n += $2 } END { print n + 0 }'
}
store_pid=$(pgrep -f "kv-stored --socket $dir/" | head -1)
cpu_row() {  # cpu_row SERVER LOAD COMMAND…: runs the command (a row), records its CPU
  local server=$1 load=$2; shift 2
  local workers hz b=() a=() wall served
  workers=$(pgrep -P "$(cat "$dir/nginx/nginx.pid")" | tr '\n' ' ')
  case $server in kv-ws) served=$ws_pid ;; nchan) served=$workers ;; "C floor") served=$floor_pid ;; *) served=$baseline_pid ;; esac
  hz=$(getconf CLK_TCK)
  b=("$(ticks $workers)" "$(ticks "$ws_pid")" "$(ticks "$store_pid")" "$(ticks "$baseline_pid" "$floor_pid")" "$(busy)" "$(switches nonvoluntary $served)" "$(switches voluntary $served)"); wall=$(date +%s.%N)
  "$@"
  a=("$(ticks $workers)" "$(ticks "$ws_pid")" "$(ticks "$store_pid")" "$(ticks "$baseline_pid" "$floor_pid")" "$(busy)" "$(switches nonvoluntary $served)" "$(switches voluntary $served)"); wall=$(awk -v s="$wall" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')
  awk -v hz="$hz" -v server="$server" -v load="$load" -v wall="$wall" \
    -v n="$((a[0] - b[0]))" -v w="$((a[1] - b[1]))" -v st="$((a[2] - b[2]))" -v bl="$((a[3] - b[3]))" -v all="$((a[4] - b[4]))" \
    -v pre="$((a[5] - b[5]))" -v slept="$((a[6] - b[6]))" \
    'BEGIN { rest = all - n - w - st - bl; printf "| %s | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f | %.0f |\n", server, load, n / hz, w / hz, st / hz, bl / hz, rest / hz, all / hz, wall, pre / wall, slept / wall }' >> "$cpu_file"
}
if want rr; then
cpu_file=$dir/cpu-rr.txt
echo "| server | test | connections | throughput | p50 | p99 |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
# Alternating, three times each: the two servers share the machine's state (caches, CPU clocks).
for mix in ${RR_MIXES:-get sets10 sets50}; do
  for _ in 1 2 3; do
    echo -n "| baseline echo (picows) "; cpu_row "baseline echo (picows)" "$mix" python3 bench/ws_load.py rr "$base" "$conns" "$seconds" "$mix"
    echo -n "| kv-ws "; cpu_row kv-ws "$mix" python3 bench/ws_load.py rr "$kv" "$conns" "$seconds" "$mix"
    echo -n "| C floor "; cpu_row "C floor" "$mix" python3 bench/ws_load.py rr "$floor" "$conns" "$seconds" "$mix"
  done
done
echo
echo "| request/response row | mix | nginx workers s | kv-ws s | kv-stored s | baseline server s | clients and the rest s | all CPU s | wall s | server preempted /s | server slept /s |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
cat "$cpu_file"
fi
if want fanout; then
cpu_file=$dir/cpu-fanout.txt
echo
echo "| server | test | load | deliveries/s | p50 | p99 | max | lost | out of order |"
echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for r in ${RATES:-$rate $((rate / 4)) $((rate / 10))}; do
  restart_baseline
  load="$subs subscribers × $r sets/s"
  echo -n "| baseline broadcast (picows) "; cpu_row "baseline broadcast (picows)" "$load" python3 bench/ws_load.py fanout "$base" "$subs" "$r" "$fan_seconds"
  echo -n "| nchan "; cpu_row nchan "$load" python3 bench/ws_load.py nchan-fanout "$nchan" "$subs" "$r" "$fan_seconds"
  echo -n "| kv-ws "; cpu_row kv-ws "$load" python3 bench/ws_load.py fanout "$kv" "$subs" "$r" "$fan_seconds"
  echo -n "| C floor "; cpu_row "C floor" "$load" python3 bench/ws_load.py fanout "$floor" "$subs" "$r" "$fan_seconds"
done
restart_baseline
echo -n "| baseline broadcast (picows) "; python3 bench/ws_load.py manykeys "$base" "$subs" "$rate" "$fan_seconds"
echo -n "| nchan "; python3 bench/ws_load.py nchan-manykeys "$nchan" "$subs" "$rate" "$fan_seconds"
echo -n "| kv-ws "; python3 bench/ws_load.py manykeys "$kv" "$subs" "$rate" "$fan_seconds"
echo
echo "| fan-out row | load | nginx workers s | kv-ws s | kv-stored s | baseline server s | clients and the rest s | all CPU s | wall s | server preempted /s | server slept /s |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
cat "$cpu_file"
fi
if want expiry; then
# EXPIRY_STORED: how many other keys kv-stored holds meanwhile, in increasing order (loaded
# with redis-cli --pipe before the rows that need them); EXPIRY_ROUNDS rows for each.
echo
echo "| test | keys stored | load | notified | p50 | p99 | max | missing |"
echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
stored_now=0
for stored in ${EXPIRY_STORED:-0}; do
  if [ "$stored" -gt "$stored_now" ]; then
    [ -S "$dir/kv-stored.sock" ] || { echo "EXPIRY_STORED needs the stack's own kv-stored" >&2; exit 1; }
    awk -v from="$stored_now" -v n="$stored" 'BEGIN {
      v = "01234567890123456789012345678901"
      for (i = from; i < n; i++) { k = sprintf("key:%012d", i); printf "*3\r\n$3\r\nSET\r\n$16\r\n%s\r\n$32\r\n%s\r\n", k, v }
    }' | redis-cli -s "$dir/kv-stored.sock" --pipe >/dev/null
    stored_now=$stored
  fi
  for _ in $(seq 1 "${EXPIRY_ROUNDS:-1}"); do
    echo -n "| expiry lag | $(redis-cli -s "$dir/kv-stored.sock" dbsize 2>/dev/null || echo "?") "
    python3 bench/ws_load.py expiry "$kv" "$keys" "$key_conns"
  done
done
fi
