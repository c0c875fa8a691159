#!/usr/bin/env bash
# Listing every key of 1,000,000 in pages of 1,000 while another client writes (issue 20):
# kv-stored's KVLIST (in key order) against redis-server's SCAN (unordered, COUNT 1000), each
# with the same data, the same Python client (bench/listing.py) and the same write probe: one
# connection SETting a key in a loop, each round trip timed. Prints the time to list everything
# and the writes' p50, p99 and worst latency meanwhile; ROUNDS rounds alternating, medians.
#
# Usage: bench/listing.sh   (after `make release`)
# Env:   KEYS (default 1000000), PAGE (default 1000), ROUNDS (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${KEYS:-1000000}
page=${PAGE:-1000}
rounds=${ROUNDS:-3}
source bench/redis-common.sh

"$bin" --socket "$dir/kv.sock" --persistence none --log-level warning & pids+=($!)
redis-server --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --save '' --appendonly no --logfile "$dir/redis.log" --dir "$dir" & pids+=($!)
for sock in kv redis; do until redis-cli -s "$dir/$sock.sock" ping >/dev/null 2>&1; do sleep 0.05; done; done
awk -v n="$keys" 'BEGIN {
  v = "01234567890123456789012345678901"
  for (i = 0; i < n; i++) { k = sprintf("key:%012d", i); printf "*3\r\n$3\r\nSET\r\n$16\r\n%s\r\n$32\r\n%s\r\n", k, v }
}' > "$dir/load.resp"
for sock in kv redis; do
  redis-cli -s "$dir/$sock.sock" --pipe < "$dir/load.resp" >/dev/null
  [ "$(redis-cli -s "$dir/$sock.sock" dbsize)" = "$keys" ] || { echo "$sock did not load $keys keys" >&2; exit 1; }
done

for round in $(seq 1 "$rounds"); do
  bench/listing.py "$dir/kv.sock" kvlist "$page" >> "$dir/kv.txt"
  bench/listing.py "$dir/redis.sock" scan "$page" >> "$dir/redis.txt"
done
column() { awk -v c="$2" '{ print $c }' "$dir/$1.txt" | median; }
echo "machine: $(nproc) cores; $(redis-server --version | cut -d' ' -f1-3); kv-stored $build; $keys keys of 16 bytes, 32-byte values; pages of $page; median of $rounds rounds"
echo
echo "| store | command | keys listed | pages | seconds to list all | writes meanwhile | write p50 ms | write p99 ms | worst write ms |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for store in kv redis; do
  name=$([ $store = kv ] && echo kv-stored || echo redis-server)
  command=$([ $store = kv ] && echo "KVLIST (in order)" || echo "SCAN (unordered)")
  echo "| $name | $command | $(column $store 1) | $(column $store 2) | $(column $store 3) | $(column $store 4) | $(column $store 5) | $(column $store 6) | $(column $store 7) |"
done
