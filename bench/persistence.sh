#!/usr/bin/env bash
# kv-stored's append-only log against redis-server's (appendonly yes), in one run, with the same
# client (redis-benchmark) over unix sockets, both logging to the same disk:
#   * SET throughput for each fsync policy (always, everysec, no), -c 50, -P 1 and -P 16;
#   * startup: the time from launch to the first answered PING with KEYS keys in the log, and
#     the resident memory then;
#   * compaction of that log while a client writes: the client's p99 and worst SET latency with
#     and without a compaction (BGREWRITEAOF) running, for both servers, at two loads.
#
# Usage: bench/persistence.sh       (after `make release`)
# Env:   REQUESTS_P1 (default 100000), REQUESTS_P16 (default 1000000), KEYS (default 1000000),
#        ROUNDS (default 3): each throughput is the median of ROUNDS runs, alternating; the
#        compaction latencies are measured ROUNDS times, alternating.
#        ONLY=compaction: only the startup and compaction sections.
#        DATA (default: a temp dir under /tmp) — where both logs are written.
set -euo pipefail
cd "$(dirname "$0")/.."
requests_p1=${REQUESTS_P1:-100000}
requests_p16=${REQUESTS_P16:-1000000}
keys=${KEYS:-1000000}
rounds=${ROUNDS:-3}
DIR_PARENT=${DATA:-/tmp}
source bench/redis-common.sh

now_ms() { date +%s%3N; }
# PONG, not an error: redis-server answers -LOADING while it reads its log.
wait_ping() { until [ "$(redis-cli -s "$1" ping 2>/dev/null)" = PONG ]; do sleep 0.005; done; }
# start_kv POLICY → kv_pid; the log stays in $dir/kv across restarts.
start_kv() {
  "$bin" --socket "$dir/kv.sock" --data-dir "$dir/kv" --appendfsync "$1" --compact-factor 0 --log-level warning & pids+=($!); kv_pid=$!
  wait_ping "$dir/kv.sock"
}
start_redis() {
  mkdir -p "$dir/redis"
  redis-server --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --save '' --appendonly yes \
    --appendfsync "$1" --aof-use-rdb-preamble no --auto-aof-rewrite-percentage 0 \
    --logfile "$dir/redis.log" --dir "$dir/redis" & pids+=($!); redis_pid=$!
  wait_ping "$dir/redis.sock"
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
rps() {
  redis-benchmark -s "$1" -t set -c 50 -P "$2" -d 32 -n "$3" -r 100000 --csv | awk -F'"' '$2 == "SET" { print $4 }'
}

# ONLY=compaction skips the throughput table (the startup and compaction sections need the
# 1M-key logs, so they always run together).
only=${ONLY:-}
echo "machine: $(nproc) cores, $(uname -r), logs on $(df --output=source,fstype "$dir" | tail -1 | tr -s ' '); $(redis-server --version | cut -d' ' -f1-3); kv-stored $build; median of $rounds runs"
if [ "$only" != compaction ]; then
echo
echo "| appendfsync | pipeline | kv-stored SET/s | redis-server SET/s | ratio |"
echo "| --- | --- | ---: | ---: | ---: |"
for policy in always everysec no; do
  start_kv "$policy"; start_redis "$policy"
  for pipeline in 1 16; do
    n=$requests_p1; [ "$pipeline" = 16 ] && n=$requests_p16
    kv_runs=(); rd_runs=()
    for _ in $(seq 1 "$rounds"); do
      kv_runs+=("$(rps "$dir/kv.sock" "$pipeline" "$n")")
      rd_runs+=("$(rps "$dir/redis.sock" "$pipeline" "$n")")
    done
    kv=$(printf '%s\n' "${kv_runs[@]}" | median)
    rd=$(printf '%s\n' "${rd_runs[@]}" | median)
    echo "| $policy | $pipeline | $kv | $rd | $(awk -v a="$kv" -v b="$rd" 'BEGIN { printf "%.2f", a / b }')× |"
  done
  stop "$kv_pid"; stop "$redis_pid"; pids=()
  rm -rf "$dir/kv" "$dir/redis"
done
fi

# Startup with $keys keys (32-byte values) in each log, written by redis-cli --pipe.
awk -v n="$keys" 'BEGIN {
  v = "01234567890123456789012345678901"
  for (i = 0; i < n; i++) { k = sprintf("key:%012d", i); printf "*3\r\n$3\r\nSET\r\n$16\r\n%s\r\n$32\r\n%s\r\n", k, v }
}' > "$dir/load.resp"
start_kv everysec; start_redis everysec
redis-cli -s "$dir/kv.sock" --pipe < "$dir/load.resp" >/dev/null
redis-cli -s "$dir/redis.sock" --pipe < "$dir/load.resp" >/dev/null
stop "$kv_pid"; stop "$redis_pid"; pids=()
kv_log=$(du -m "$dir/kv/kv-stored.aof" | cut -f1); redis_log=$(du -sm "$dir/redis" | cut -f1)
t0=$(now_ms); start_kv everysec; kv_ms=$(( $(now_ms) - t0 ))
t0=$(now_ms); start_redis everysec; redis_ms=$(( $(now_ms) - t0 ))
[ "$(redis-cli -s "$dir/kv.sock" dbsize)" = "$keys" ] || { echo "kv-stored did not load $keys keys" >&2; exit 1; }
[ "$(redis-cli -s "$dir/redis.sock" dbsize)" = "$keys" ] || { echo "redis-server did not load $keys keys" >&2; exit 1; }
echo
echo "| startup with $keys keys in the log | kv-stored | redis-server | ratio |"
echo "| --- | ---: | ---: | ---: |"
echo "| launch to first PING answered | $kv_ms ms | $redis_ms ms | $(awk -v a="$kv_ms" -v b="$redis_ms" 'BEGIN { printf "%.2f", a / b }')× |"
echo "| log size | $kv_log MiB | $redis_log MiB | |"
rss_mib() { awk '$1 == "VmRSS:" { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
kv_rss=$(rss_mib "$kv_pid"); redis_rss=$(rss_mib "$redis_pid")
echo "| resident memory once loaded | $kv_rss MiB | $redis_rss MiB | $(awk -v a="$kv_rss" -v b="$redis_rss" 'BEGIN { printf "%.2f", a / b }')× |"

# Compaction while a client writes: redis-benchmark's latency summary for SETs (-P 1, 100k
# random keys), once without and once with a BGREWRITEAOF issued half a second in, against the
# stores loaded above; ROUNDS rounds, alternating servers. Two loads (LATENCY_LOADS, pairs of
# clients:requests): -c 50 keeps both cores busy (the client takes one), so every thread's
# scheduling shows in the worst latency; -c 4 leaves room, so what remains is the stores' own.
# The machine's floor: the same load on a redis-server that keeps nothing (no log, no
# snapshots), so no store work at all can explain its worst latency. kv-stored's own hold-ups
# of writes by each compaction come from its INFO (the longest piece of the walk, the switch).
latency_loads=${LATENCY_LOADS:-"50:400000 4:150000"}
# latency SOCKET COMPACT CLIENTS REQUESTS → "p99 max" of the run (ms); COMPACT=1 starts a compaction 0.5 s in
latency() {
  if [ "$2" = 1 ]; then (sleep 0.5; redis-cli -s "$1" bgrewriteaof >/dev/null) & fi
  redis-benchmark -s "$1" -t set -c "$3" -P 1 -d 32 -n "$4" -r 100000 --csv \
    | awk -F'","' 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i } $1 == "\"SET" { print $col["p99_latency_ms"], $col["max_latency_ms\""] }' | tr -d '"'
  if [ "$2" = 1 ]; then wait "$!"; fi
}
wait_compacted() { until redis-cli -s "$1" info persistence | grep -q '^aof_rewrite_in_progress:0'; do sleep 0.1; done; }
kv_info() { redis-cli -s "$dir/kv.sock" info persistence | awk -F: -v f="$1" '$1 == f { print $2 + 0 }'; }
redis-server --port 0 --unixsocket "$dir/floor.sock" --unixsocketperm 700 --save '' --appendonly no \
  --logfile "$dir/floor.log" --dir "$dir" & pids+=($!)
wait_ping "$dir/floor.sock"
echo
echo "| SET latency, -P 1 | round | kv-stored p99 / max | redis-server p99 / max | floor: redis-server keeping nothing, p99 / max |"
echo "| --- | ---: | ---: | ---: | ---: |"
for load in $latency_loads; do
  clients=${load%%:*}; requests=${load##*:}
  for round in $(seq 1 "$rounds"); do
    kv_plain=$(latency "$dir/kv.sock" 0 "$clients" "$requests"); redis_plain=$(latency "$dir/redis.sock" 0 "$clients" "$requests")
    floor=$(latency "$dir/floor.sock" 0 "$clients" "$requests")
    kv_compacting=$(latency "$dir/kv.sock" 1 "$clients" "$requests"); wait_compacted "$dir/kv.sock"
    redis_compacting=$(latency "$dir/redis.sock" 1 "$clients" "$requests"); wait_compacted "$dir/redis.sock"
    kv_rewrite_ms=$(kv_info aof_last_rewrite_time_ms)
    redis_rewrite_s=$(redis-cli -s "$dir/redis.sock" info persistence | awk -F: '/^aof_last_rewrite_time_sec/ { print $2 + 0 }')
    echo "| -c $clients, $requests requests, no compaction | $round | ${kv_plain// / ms \/ } ms | ${redis_plain// / ms \/ } ms | ${floor// / ms \/ } ms |"
    echo "| -c $clients, $requests requests, compacting $keys keys | $round | ${kv_compacting// / ms \/ } ms | ${redis_compacting// / ms \/ } ms | |"
    echo "| -c $clients, the compaction took | $round | $kv_rewrite_ms ms | $redis_rewrite_s s (whole seconds) | |"
    echo "| -c $clients, kv-stored held writes up for at most | $round | piece $(kv_info aof_last_rewrite_longest_piece_us) µs, switch $(kv_info aof_last_rewrite_switch_us) µs | | |"
  done
done
