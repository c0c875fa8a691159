#!/usr/bin/env bash
# kv-stored against redis-server, in one run, with the same client (redis-benchmark) over
# unix sockets: SET/GET throughput at -c 50 with -P 1 and -P 16, 32-byte and 1 KiB values,
# then resident memory after loading 1M keys with 32-byte values into each.
#
# Usage: bench/store-vs-redis.sh            (after `make release`; `make bench` does both)
# Env:   REQUESTS_P1 (default 300000), REQUESTS_P16 (default 3000000), KEYS (default 1000000),
#        ROUNDS (default 3): each figure is the median of ROUNDS runs, kv-stored and redis-server
#        alternating, because single short runs on a 2-core machine vary by ±15%.
#        ONLY=memory: only the 1M-key tables (memory, and the time to load the keys in order,
#        then 1M more in no order).
#        ONLY=throughput: only the ops/s table; PIPELINES (default "1 16") picks its rows.
set -euo pipefail
cd "$(dirname "$0")/.."
requests_p1=${REQUESTS_P1:-300000}
requests_p16=${REQUESTS_P16:-3000000}
keys=${KEYS:-1000000}
rounds=${ROUNDS:-3}
source bench/redis-common.sh

start_kv() {
  "$bin" --socket "$dir/kv.sock" --persistence none --log-level warning &
  pids+=($!)
  kv_pid=$!
  until redis-cli -s "$dir/kv.sock" ping >/dev/null 2>&1; do sleep 0.05; done
}
start_redis() {
  redis-server --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --save '' --appendonly no \
    --logfile "$dir/redis.log" --dir "$dir" &
  pids+=($!)
  redis_pid=$!
  until redis-cli -s "$dir/redis.sock" ping >/dev/null 2>&1; do sleep 0.05; done
}
rss_mib() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# rps SOCKET TEST PIPELINE SIZE REQUESTS -> requests per second of that test
rps() {
  redis-benchmark -s "$1" -t "$2" -c 50 -P "$3" -d "$4" -n "$5" -r 100000 --csv \
    | awk -F'"' -v t="$(echo "$2" | tr a-z A-Z)" '$2 == t { print $4 }'
}

echo "machine: $(nproc) cores, $(uname -r); $(redis-server --version | cut -d' ' -f1-3); kv-stored $build (default --threads $(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))); median of $rounds runs"
start_kv
start_redis
if [ "${ONLY:-}" != memory ]; then  # ONLY=memory: only the 1M-key table
echo
echo "| test | pipeline | value | kv-stored ops/s | redis-server ops/s | ratio |"
echo "| --- | --- | --- | ---: | ---: | ---: |"
for pipeline in ${PIPELINES:-1 16}; do
  n=$requests_p1; [ "$pipeline" = 16 ] && n=$requests_p16
  for size in 32 1024; do
    for t in set get; do
      kv_runs=(); rd_runs=()
      for _ in $(seq 1 "$rounds"); do
        kv_runs+=("$(rps "$dir/kv.sock" "$t" "$pipeline" "$size" "$n")")
        rd_runs+=("$(rps "$dir/redis.sock" "$t" "$pipeline" "$size" "$n")")
      done
      kv=$(printf '%s\n' "${kv_runs[@]}" | median)
      rd=$(printf '%s\n' "${rd_runs[@]}" | median)
      ratio=$(awk -v a="$kv" -v b="$rd" 'BEGIN { printf "%.2f", a / b }')
      echo "| $(echo $t | tr a-z A-Z) | $pipeline | $size B | $kv | $rd | ${ratio}× |"
    done
  done
done
fi

[ "${ONLY:-}" = throughput ] && exit 0
# Memory: fresh processes, 1M keys key:000000000000… with 32-byte values, loaded with redis-cli --pipe.
kill "$kv_pid" "$redis_pid"; wait "$kv_pid" "$redis_pid" 2>/dev/null || true
pids=()
start_kv
start_redis
base_kv=$(rss_mib "$kv_pid"); base_redis=$(rss_mib "$redis_pid")
awk -v n="$keys" 'BEGIN {
  v = "01234567890123456789012345678901"
  for (i = 0; i < n; i++) { k = sprintf("key:%012d", i); printf "*3\r\n$3\r\nSET\r\n$16\r\n%s\r\n$32\r\n%s\r\n", k, v }
}' > "$dir/load.resp"
# How long each takes to load them: every key is new, so this is the cost of adding keys.
t0=$(date +%s%3N); redis-cli -s "$dir/kv.sock" --pipe < "$dir/load.resp" >/dev/null; kv_load_ms=$(( $(date +%s%3N) - t0 ))
t0=$(date +%s%3N); redis-cli -s "$dir/redis.sock" --pipe < "$dir/load.resp" >/dev/null; redis_load_ms=$(( $(date +%s%3N) - t0 ))
[ "$(redis-cli -s "$dir/kv.sock" dbsize)" = "$keys" ] || { echo "kv-stored did not load $keys keys" >&2; exit 1; }
[ "$(redis-cli -s "$dir/redis.sock" dbsize)" = "$keys" ] || { echo "redis-server did not load $keys keys" >&2; exit 1; }
kv_rss=$(rss_mib "$kv_pid"); redis_rss=$(rss_mib "$redis_pid")
# Then as many new keys again, in no order (each key's number scrambled by a multiplication
# that is one-to-one modulo 2^32): each lands inside the order of keys instead of at its end.
awk -v n="$keys" 'BEGIN {
  v = "01234567890123456789012345678901"
  for (i = 0; i < n; i++) { k = sprintf("rnd:%012.0f", (i * 2654435761) % 4294967296); printf "*3\r\n$3\r\nSET\r\n$16\r\n%s\r\n$32\r\n%s\r\n", k, v }
}' > "$dir/scattered.resp"
t0=$(date +%s%3N); redis-cli -s "$dir/kv.sock" --pipe < "$dir/scattered.resp" >/dev/null; kv_scattered_ms=$(( $(date +%s%3N) - t0 ))
t0=$(date +%s%3N); redis-cli -s "$dir/redis.sock" --pipe < "$dir/scattered.resp" >/dev/null; redis_scattered_ms=$(( $(date +%s%3N) - t0 ))
[ "$(redis-cli -s "$dir/kv.sock" dbsize)" = "$((2 * keys))" ] || { echo "kv-stored did not load $keys more keys" >&2; exit 1; }
echo
echo "| resident memory | kv-stored MiB | redis-server MiB | ratio |"
echo "| --- | ---: | ---: | ---: |"
echo "| empty | $base_kv | $base_redis | $(awk -v a="$base_kv" -v b="$base_redis" 'BEGIN { printf "%.2f", a / b }')× |"
echo "| $keys keys, 32 B values | $kv_rss | $redis_rss | $(awk -v a="$kv_rss" -v b="$redis_rss" 'BEGIN { printf "%.2f", a / b }')× |"
echo
echo "| loading $keys new keys (redis-cli --pipe), milliseconds | kv-stored | redis-server | ratio |"
echo "| --- | ---: | ---: | ---: |"
echo "| in order, into an empty store | $kv_load_ms | $redis_load_ms | $(awk -v a="$kv_load_ms" -v b="$redis_load_ms" 'BEGIN { printf "%.2f", a / b }')× |"
echo "| in no order, into the $keys keys | $kv_scattered_ms | $redis_scattered_ms | $(awk -v a="$kv_scattered_ms" -v b="$redis_scattered_ms" 'BEGIN { printf "%.2f", a / b }')× |"
