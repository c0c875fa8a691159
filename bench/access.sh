#!/usr/bin/env bash
# What access control costs on the HTTP path (docs/access.md, docs/BENCHMARKS.md): GET of a
# 32-byte value through nginx → kv-fcgi → kv-stored, with no access file (open), and with a
# file of 1,000 tokens and 10,000 rules, presenting a static token and a JWT (HS256).
# Rounds alternate between the three (kv-fcgi restarted each time, nginx and kv-stored kept),
# and each row is the median of the rounds.
#
# Usage: bench/access.sh   (after `make release`)
# Env:   DURATION (default 5s), ROUNDS (default 5), CONNECTIONS (default 50), THREADS (kv-fcgi, default 16)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-5s}
rounds=${ROUNDS:-5}
connections=${CONNECTIONS:-50}
threads=${THREADS:-16}
for tool in wrk nginx curl python3; do command -v $tool >/dev/null || { echo "needs $tool (make deps)" >&2; exit 1; }; done
source bench/stack.sh
start_stack "" "$threads"

# 1,000 tokens of 10 read prefixes each; the benchmark's token is the last one listed.
secret="an HS256 secret of at least 32 bytes, for the benchmark"
printf '%s' "$secret" > "$dir/secret"
token=$(python3 - "$dir/access.json" "$secret" <<'PY'
import hashlib, json, secrets, sys
path, secret = sys.argv[1], sys.argv[2]
tokens, last = [], None
for i in range(1000):
    last = "kv_" + secrets.token_urlsafe(32)
    prefixes = [f"tenant/{i}/{j}/" for j in range(9)] + (["bench/"] if i == 999 else [f"tenant/{i}/shared/"])
    tokens.append({"id": f"client-{i}", "sha256": hashlib.sha256(last.encode()).hexdigest(), "rules": {"read": prefixes}})
json.dump({"tokens": tokens, "jwt": {"keys": [{"kid": "app", "alg": "HS256", "secret": secret}]}}, open(path, "w"), indent=1)
print(last)
PY
)
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

# measure NAME [HEADER] → appends "rps p50 p99 errors" to $dir/NAME
measure() {
  local name=$1 header=${2:-} out
  local status
  status=$(curl -s -o /dev/null -w '%{http_code}' ${header:+-H "$header"} "http://127.0.0.1:$port/storage/bench/hit")
  [ "$status" = 200 ] || { echo "$name: GET answered $status, not 200" >&2; exit 1; }
  out=$(wrk -t2 -c"$connections" -d"$duration" --latency ${header:+-H "$header"} "http://127.0.0.1:$port/storage/bench/hit")
  echo "$(awk '/Requests\/sec/ { print $2 }' <<<"$out") $(awk '$1 == "50%" { print $2 }' <<<"$out") $(awk '$1 == "99%" { print $2 }' <<<"$out") $(awk '/Non-2xx|Socket errors/ { n++ } END { print n + 0 }' <<<"$out")" >> "$dir/$name"
}

for round in $(seq 1 "$rounds"); do
  restart_fcgi
  measure open
  restart_fcgi --access-file "$dir/access.json"
  measure token "Authorization: Bearer $token"
  measure jwt "Authorization: Bearer $jwt"
  echo "round $round done" >&2
done

median() { sort -n -k1,1 "$dir/$1" | awk -v n="$rounds" 'NR == int((n + 1) / 2)'; }
base=$(median open | awk '{ print $1 }')
echo "machine: $(nproc) cores; $(nginx -v 2>&1); kv-fcgi $threads threads, kv-stored; wrk -t2 -c$connections, $duration per round, median of $rounds alternating rounds; $(git rev-parse --short HEAD)"
echo
echo "| GET hit, 32 B | req/s (median) | p50 | p99 | vs open | rounds with errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for name in open token jwt; do
  read -r rps p50 p99 _ <<<"$(median $name)"
  errors=$(awk '$4 > 0 { n++ } END { print n + 0 }' "$dir/$name")
  case $name in
    open) label="no access file (open)";;
    token) label="1,000 tokens / 10,000 rules, static token";;
    jwt) label="same file, HS256 JWT (verified once, then cached)";;
  esac
  echo "| $label | $rps | $p50 | $p99 | $(awk -v a="$rps" -v b="$base" 'BEGIN { printf "%.3f", a / b }')× | $errors |"
done
