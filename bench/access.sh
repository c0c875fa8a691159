#!/usr/bin/env bash
# What access control costs on the HTTP path (docs/access.md, docs/BENCHMARKS.md): GET of a
# 32-byte value through nginx → kv-fcgi → kv-stored, with no access file (open), and with a
# file of 1,000 tokens and 10,000 rules, presenting a static token and a JWT (HS256).
# Rounds alternate between the three (kv-fcgi restarted each time, nginx and kv-stored kept),
# and each row is the median of the rounds. Besides req/s (noisy: every process shares the
# 2 cores), kv-fcgi's own CPU time per request, from /proc, isolates what the check costs.
#
# Usage: bench/access.sh   (after `make release`)
# Env:   DURATION (default 3s), ROUNDS (default 15), CONNECTIONS (default 50), THREADS (kv-fcgi, default 16)
#
# The machine's own speed drifts by ±25% within minutes (a shared VM), more than the effect
# measured, so each round's runs are compared with each other (paired ratios, then their
# median), and the check alone is also timed in one process (kv-access-bench).
set -euo pipefail
PATH=$PATH:/usr/sbin   # Debian keeps nginx there, off an ordinary user's PATH
cd "$(dirname "$0")/.."
duration=${DURATION:-3s}
rounds=${ROUNDS:-15}
connections=${CONNECTIONS:-50}
threads=${THREADS:-16}
for tool in wrk nginx curl python3; do command -v $tool >/dev/null || { echo "needs $tool (scripts/install-deps.sh bench)" >&2; exit 1; }; done
source bench/stack.sh
start_stack "" "$threads"

# 1,000 tokens of 10 read prefixes each; the benchmark's token is the last one listed.
secret="an HS256 secret of at least 32 bytes, for the benchmark"
printf '%s' "$secret" > "$dir/secret"
token=$(bench/access-file.py "$dir/access.json" "$secret")
jwt=$("$bin/kvctl" jwt sign --secret-file "$dir/secret" --kid app --sub bench --read bench/ --ttl 86400)
"$bin/kvctl" access check "$dir/access.json" >&2
curl -sf -o /dev/null -X POST -d '{"value":"0123456789abcdef0123456789abcdef"}' "http://127.0.0.1:$port/storage/bench/hit"

# restart_fcgi [ARGS…]: kv-fcgi again on the same socket, with ARGS.
restart_fcgi() {
  kill "$fcgi_pid"; wait "$fcgi_pid" 2>/dev/null || true
  "$bin/kv-fcgi" --socket "$dir/kv-fcgi.sock" --store "$store" --threads "$threads" --log-level warning "${group_args[@]}" "$@" &
  fcgi_pid=$!; pids+=($fcgi_pid)
  for _ in $(seq 1 200); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")" = 200 ] && return; sleep 0.05; done
  echo "kv-fcgi did not come back" >&2; exit 1
}

# kv-fcgi's CPU time so far (user + system), in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$fcgi_pid/stat"; }

# measure NAME [HEADER] → appends "rps p50 p99 errors kv-fcgi-µs-of-CPU-per-request" to $dir/NAME
measure() {
  local name=$1 header=${2:-} out
  local status before after rps
  status=$(curl -s -o /dev/null -w '%{http_code}' ${header:+-H "$header"} "http://127.0.0.1:$port/storage/bench/hit")
  [ "$status" = 200 ] || { echo "$name: GET answered $status, not 200" >&2; exit 1; }
  before=$(cpu_ticks)
  out=$(wrk -t2 -c"$connections" -d"$duration" --latency ${header:+-H "$header"} "http://127.0.0.1:$port/storage/bench/hit")
  after=$(cpu_ticks)
  rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
  local requests; requests=$(awk '/requests in/ { print $1 }' <<<"$out")
  echo "$rps $(awk '$1 == "50%" { print $2 }' <<<"$out") $(awk '$1 == "99%" { print $2 }' <<<"$out") $(awk '/Non-2xx|Socket errors/ { n++ } END { print n + 0 }' <<<"$out") $(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')" >> "$dir/$name"
}

# Each round swaps which goes first, so neither always runs on a freshly started kv-fcgi or
# always after the other.
with_file() {
  restart_fcgi --access-file "$dir/access.json"
  measure token "Authorization: Bearer $token"
  measure jwt "Authorization: Bearer $jwt"
}
without_file() {
  restart_fcgi
  measure open
  measure header "Authorization: Bearer $token"
}
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then without_file; with_file; else with_file; without_file; fi
  echo "round $round done" >&2
done

# The check alone, in one process, with no other load: ns per request for each token.
checks=$("$bin/kv-access-bench" "$dir/access.json" bench/hit "$token" "$jwt")

median() { sort -n -k1,1 "$dir/$1" | awk -v n="$rounds" 'NR == int((n + 1) / 2)'; }
# The median of column $2 alone (kv-fcgi's CPU per request).
median_of() { awk -v c="$2" '{ print $c }' "$dir/$1" | sort -n | awk -v n="$rounds" 'NR == int((n + 1) / 2)'; }
# The median over rounds of NAME's column $2 divided by the open run's of the same round.
paired() { paste -d' ' "$dir/$1" "$dir/open" | awk -v c="$2" '{ print $c / $(c + 5) }' | sort -n | awk -v n="$rounds" 'NR == int((n + 1) / 2) { printf "%.3f", $1 }'; }
spread() { paste -d' ' "$dir/$1" "$dir/open" | awk '{ print $1 / $6 }' | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f–%.2f", lo, hi }'; }
echo "machine: $(nproc) cores; $(nginx -v 2>&1); kv-fcgi $threads threads, kv-stored; wrk -t2 -c$connections, $duration per run, $rounds rounds (order swapped every round); $build"
echo
echo "| GET hit, 32 B | req/s (median) | p50 | p99 | kv-fcgi CPU per request (median) | req/s vs open, same round (median of rounds) | range over rounds | CPU per request vs open, same round | rounds with errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for name in open header token jwt; do
  read -r rps p50 p99 _ <<<"$(median $name)"
  cpu=$(median_of $name 5)
  errors=$(awk '$4 > 0 { n++ } END { print n + 0 }' "$dir/$name")
  case $name in
    open) label="no access file (open)"; ratio="1.000×"; range="–"; cpu_ratio="1.000×";;
    header) label="no access file, the token's Authorization header sent (carried, not checked)"; ratio="$(paired header 1)×"; range=$(spread header); cpu_ratio="$(paired header 5)×";;
    token) label="1,000 tokens / 10,000 rules, static token"; ratio="$(paired token 1)×"; range=$(spread token); cpu_ratio="$(paired token 5)×";;
    jwt) label="same file, HS256 JWT (verified once, then cached)"; ratio="$(paired jwt 1)×"; range=$(spread jwt); cpu_ratio="$(paired jwt 5)×";;
  esac
  echo "| $label | $rps | $p50 | $p99 | ${cpu} µs | $ratio | $range | $cpu_ratio | $errors |"
done
base_cpu=$(median_of open 5)

echo
echo "| the access check alone (kv-access-bench, 200,000 checks, one thread) | ns per check | share of kv-fcgi's CPU per request (open, median above) |"
echo "| --- | ---: | ---: |"
while read -r kind ns _; do
  case $kind in token) label="static token, 1,000 tokens / 10,000 rules";; jwt) label="HS256 JWT, cached after its first verification";; *) label=$kind;; esac
  echo "| $label | $ns | $(awk -v a="$ns" -v b="$base_cpu" 'BEGIN { printf "%.2f%%", a / 1000 / b * 100 }') |"
done <<<"$checks"
