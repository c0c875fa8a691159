#!/usr/bin/env bash
# A prefix subscription to 10,000 keys under write load (issue 20), in one run (bench/prefix.py):
#   redis-server: SET, watched with Redis's own way of watching keys by pattern (keyspace
#     events, notify-keyspace-events K$, PSUBSCRIBE __keyspace@0__:w/*), no values delivered;
#   kv-stored: SET, watched with PSUBSCRIBE w/* (each change with its value);
#   kv-ws: SET to kv-stored, watched by a WebSocket client through nginx with
#     {"type":"subscribe","payload":{"prefix":"w/"}} (exact: id, every change with its rev).
# Half of the writes fall under w/ (random keys of KEYS), half under x/ (not watched). Each load
# runs with no other prefix watched, then with IDLE more prefixes watched that no write falls
# under (what every write pays for the prefixes it is not under). Alternating, ROUNDS rounds;
# medians. Then SET throughput (redis-benchmark -P 16) with 0 and IDLE idle prefixes.
#
# Usage: bench/prefix.sh   (after `make release`). Needs python3 with uvloop and picows.
# Env:   RATES ("2000 8000": writes/s), SECONDS_RUN (5), KEYS (10000), IDLE (1000), ROUNDS (3),
#        ONLY ("delivery throughput", the default: both tables; name one to run one)
set -euo pipefail
PATH=$PATH:/usr/sbin
cd "$(dirname "$0")/.."
rates=${RATES:-2000 8000}; seconds=${SECONDS_RUN:-5}; keys=${KEYS:-10000}; idle=${IDLE:-1000}; rounds=${ROUNDS:-3}
python3 -c "import picows, uvloop" 2>/dev/null || python3 -m pip install -q picows uvloop
source bench/stack.sh
start_stack ""
redis-server --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --save '' --appendonly no --logfile "$dir/redis.log" --dir "$dir" \
  --notify-keyspace-events 'K$' & pids+=($!)
until redis-cli -s "$dir/redis.sock" ping >/dev/null 2>&1; do sleep 0.05; done
kv=$dir/kv-stored.sock; ws="ws://127.0.0.1:$port/ws"

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "machine: $(nproc) cores; $(redis-server --version | cut -d' ' -f1-3); $(nginx -v 2>&1); kvserver $build; $keys keys under the prefix, 32-byte values, $seconds s per run, median of $rounds rounds"
echo
only=${ONLY:-delivery throughput}
want() { [[ " $only " == *" $1 "* ]]; }
if want delivery; then
for rate in $rates; do
  for n in 0 "$idle"; do
    for round in $(seq 1 "$rounds"); do
      python3 bench/prefix.py redis "$dir/redis.sock" "$rate" "$seconds" "$keys" "$n" >> "$dir/redis-$rate-$n.txt"
      python3 bench/prefix.py kv "$kv" "$rate" "$seconds" "$keys" "$n" >> "$dir/kv-$rate-$n.txt"
      python3 bench/prefix.py ws "$kv" "$rate" "$seconds" "$keys" "$n" "$ws" >> "$dir/ws-$rate-$n.txt"
    done
  done
done
column() { tr -d '|' < "$1" | awk -v c="$2" '{ print $c }' | median; }
echo "| watcher | writes/s | other prefixes watched | deliveries/s | delivery p50 ms | p99 ms | max ms | lost | write p99 ms | worst write ms |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for rate in $rates; do
  for n in 0 "$idle"; do
    for who in redis kv ws; do
      f=$dir/$who-$rate-$n.txt
      name=$(case $who in redis) echo "redis-server keyspace events";; kv) echo "kv-stored PSUBSCRIBE";; ws) echo "kv-ws prefix subscription (nginx)";; esac)
      echo "| $name | $(column "$f" 1) | $n | $(column "$f" 2) | $(column "$f" 3) | $(column "$f" 4) | $(column "$f" 5) | $(column "$f" 6) | $(column "$f" 7) | $(column "$f" 8) |"
    done
  done
done
fi
want throughput || exit 0

# What watched prefixes cost a write: SET throughput with none, and with IDLE that no key matches.
idle_patterns() {  # $1: socket, $2: pattern prefix; holds IDLE patterns until killed
  python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
words = [b"PSUBSCRIBE"] + [b"%sz%d/*" % (sys.argv[2].encode(), i) for i in range(int(sys.argv[3]))]
s.sendall(b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
time.sleep(3600)' "$1" "$2" "$idle" > /dev/null & pids+=($!); holders+=($!)
}
echo
echo "| store | prefixes watched (none matching) | SET/s, redis-benchmark -P 16 -c 50 |"
echo "| --- | ---: | ---: |"
for n in 0 "$idle"; do
  holders=()
  if [ "$n" != 0 ]; then idle_patterns "$dir/redis.sock" "__keyspace@0__:"; idle_patterns "$kv" ""; sleep 1; fi
  for round in $(seq 1 "$rounds"); do
    redis-benchmark -s "$dir/redis.sock" -t set -n 400000 -P 16 -c 50 -r 100000 --csv | awk -F'"' '/^"SET"/ { print $4 }' >> "$dir/bench-redis-$n.txt"
    redis-benchmark -s "$kv" -t set -n 400000 -P 16 -c 50 -r 100000 --csv | awk -F'"' '/^"SET"/ { print $4 }' >> "$dir/bench-kv-$n.txt"
  done
  echo "| redis-server (keyspace events on) | $n | $(median < "$dir/bench-redis-$n.txt") |"
  echo "| kv-stored | $n | $(median < "$dir/bench-kv-$n.txt") |"
  for h in "${holders[@]}"; do kill "$h" 2>/dev/null || true; done
  holders=()
done
