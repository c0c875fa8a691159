#!/usr/bin/env bash
# The whole stack (nginx, kv-fcgi, kv-ws) on each store, in one run: kv-stored (the default and
# the baseline), one redis-server (unix socket), and a 3-master Redis Cluster on loopback (TCP,
# no replicas). Each store gets the same HTTP GET hit and POST load (wrk) and the same WebSocket
# fan-out and expiry-lag measurement (bench/ws_load.py). All stores keep data in memory only (kv-stored --persistence none,
# redis --save "" --appendonly no), so the figures compare the paths, not the disks.
#
# Usage: bench/scaling.sh   (after `make release`)
# Env:   DURATION (wrk, default 5s), CONNECTIONS (default 50), THREADS (kv-fcgi, default 16),
#        SUBS (fan-out subscribers, default 1000), RATE (sets/s, default 1000), FAN_SECONDS (default 5),
#        EXPIRY_KEYS (keys with TTLs for the expiry lag, default 20000),
#        STORES (default "kv-stored redis cluster")
set -euo pipefail
PATH=$PATH:/usr/sbin   # Debian keeps nginx there, off an ordinary user's PATH
cd "$(dirname "$0")/.."
duration=${DURATION:-5s}; connections=${CONNECTIONS:-50}; threads=${THREADS:-16}
subs=${SUBS:-1000}; rate=${RATE:-1000}; fan_seconds=${FAN_SECONDS:-5}; expiry_keys=${EXPIRY_KEYS:-20000}
for tool in wrk nginx curl redis-server redis-cli; do command -v $tool >/dev/null || { echo "needs $tool (scripts/install-deps.sh bench)" >&2; exit 1; }; done
python3 -c "import picows, uvloop" 2>/dev/null || python3 -m pip install -q picows uvloop
ulimit -n 65536 2>/dev/null || true

# One store's rows: `STORE_KIND=… bench/scaling.sh one` (a process of its own, so each store's
# stack is started and stopped cleanly by bench/stack.sh).
if [ "${1:-}" = one ]; then
  source bench/stack.sh
  case $STORE_KIND in
    kv-stored) store="" ;;
    redis)
      redis-server --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 777 --save "" --appendonly no \
        --notify-keyspace-events Ex --logfile "$dir/redis.log" & pids+=($!)
      wait_socket "$dir/redis.sock"
      store="redis+unix://$dir/redis.sock" ;;
    cluster)
      base=$((20000 + RANDOM % 9000)); nodes=()
      for p in $base $((base + 1)) $((base + 2)); do
        mkdir -p "$dir/n$p"
        redis-server --port $p --bind 127.0.0.1 --dir "$dir/n$p" --cluster-enabled yes --cluster-config-file nodes.conf \
          --save "" --appendonly no --notify-keyspace-events Ex --logfile "$dir/n$p/log" & pids+=($!)
        nodes+=("127.0.0.1:$p")
      done
      for p in $base $((base + 1)) $((base + 2)); do for _ in $(seq 1 100); do redis-cli -p $p ping >/dev/null 2>&1 && break; sleep 0.05; done; done
      redis-cli --cluster create "${nodes[@]}" --cluster-yes >/dev/null
      for _ in $(seq 1 200); do redis-cli -p $base cluster info | grep -q cluster_state:ok && break; sleep 0.1; done
      store="redis-cluster://$(IFS=,; echo "${nodes[*]}")" ;;
  esac
  start_stack "" "$threads"
  printf '{"value":"%s"}' "$(head -c 32 /dev/zero | tr '\0' 'x')" > "$dir/v.json"
  curl -sf -o /dev/null -X POST --data-binary @"$dir/v.json" "http://127.0.0.1:$port/storage/hit"
  printf 'wrk.method = "POST"\nwrk.body = io.open("%s"):read("*a")\n' "$dir/v.json" > "$dir/post.lua"
  # POSTs spread over 1000 keys (and so over the cluster's slots).
  printf 'wrk.method = "POST"\nwrk.body = io.open("%s"):read("*a")\nlocal n = 0\nrequest = function() n = n + 1; return wrk.format(nil, "/storage/k" .. (n %% 1000)) end\n' "$dir/v.json" > "$dir/post-many.lua"
  row() {
    local name=$1 url=$2 script=${3:-} out
    out=$(wrk -t2 -c"$connections" -d"$duration" --latency ${script:+-s "$script"} "$url")
    echo "$STORE_KIND|$name|$(awk '/Requests\/sec/ { print $2 }' <<<"$out")|$(awk '$1 == "50%" { print $2 }' <<<"$out")|$(awk '$1 == "99%" { print $2 }' <<<"$out")|$(awk '/Non-2xx|Socket errors/ { $1 = $1; printf "%s; ", $0 }' <<<"$out")"
  }
  row "HTTP GET hit, 32 B" "http://127.0.0.1:$port/storage/hit"
  row "HTTP POST, 32 B, one key" "http://127.0.0.1:$port/storage/hit" "$dir/post.lua"
  row "HTTP POST, 32 B, 1000 keys" "http://127.0.0.1:$port/" "$dir/post-many.lua"
  # At RATE the deliveries exceed what kv-ws can send here (its ceiling); at RATE/4 they do not (latency).
  for r in "$rate" "$((rate / 4))"; do
    echo "$STORE_KIND|fanout|$(python3 bench/ws_load.py fanout "ws://127.0.0.1:$port/ws" "$subs" "$r" "$fan_seconds")"
  done
  echo "$STORE_KIND|expiry|| expiry lag $(python3 bench/ws_load.py expiry "ws://127.0.0.1:$port/ws" "$expiry_keys" 100)"
  exit 0
fi

echo "machine: $(nproc) cores; $(redis-server --version | cut -d' ' -f1-3); KvServer ${BIN_DIR:-$(git rev-parse --short HEAD)}; wrk -t2 -c$connections, $duration per row; kv-fcgi $threads threads"
rows=()
for kind in ${STORES:-kv-stored redis cluster}; do
  while IFS= read -r line; do rows+=("$line"); done < <(STORE_KIND=$kind bash "$0" one)
done
echo
echo "| store | test | req/s | p50 | p99 | vs kv-stored | errors |"
echo "| --- | --- | ---: | ---: | ---: | ---: | --- |"
for test in "HTTP GET hit, 32 B" "HTTP POST, 32 B, one key" "HTTP POST, 32 B, 1000 keys"; do
  baseline=""
  for line in "${rows[@]}"; do
    IFS='|' read -r kind name rps p50 p99 errors <<<"$line"
    [ "$name" = "$test" ] || continue
    if [ -z "$baseline" ]; then baseline=$rps; ratio=baseline; else ratio="$(awk -v a="$rps" -v b="$baseline" 'BEGIN { printf "%.2f", a / b }')×"; fi
    echo "| $kind | $name | $rps | $p50 | $p99 | $ratio | ${errors:-none} |"
  done
done
# ws_table NAME TITLE HEADER SEPARATOR: the rows of ws_load.py's scenario NAME, each store's in turn.
ws_table() {
  printf '\n%s\n\n%s\n%s\n' "$2" "$3" "$4"
  for line in "${rows[@]}"; do
    IFS='|' read -r kind name rest <<<"$line"
    if [ "$name" = "$1" ]; then echo "| $kind $rest"; fi  # (a false `&&` last would end the script under set -e)
  done
}
ws_table fanout "WebSocket fan-out: $subs subscribers of one key, a writer at $rate and at $((rate / 4)) sets/s for ${fan_seconds}s" \
  "| store | test | load | deliveries/s | p50 | p99 | max | lost | out of order |" \
  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
ws_table expiry "Expiry: how late the no-value of a key with a TTL reaches its subscriber (from the set's send + TTL)" \
  "| store | test | load | notified | p50 | p99 | max | missing |" \
  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"
