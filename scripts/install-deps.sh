#!/usr/bin/env bash
# The Debian packages KvServer needs, by purpose; each purpose includes the ones before it:
#   build  compile the binaries (`make release`, `make build`)
#   run    the local stack (`make run`)
#   test   every test (`make test`)
#   bench  the benchmarks and their baselines (`make bench`)
# A production host needs none of them but nginx: `make install` copies binaries that carry the
# Swift runtime (docs/deploy.md).
# Usage: scripts/install-deps.sh [build|run|test|bench] [--list]
# As root it installs what is missing; otherwise it prints the one `sudo apt-get` line to run and
# fails, so nothing is built against missing headers. --list prints the packages and exits.
set -euo pipefail

purpose=${1:-test}
build=(
  libfcgi-dev   # kv-fcgi is built on libfcgi
)
run=(
  nginx-light   # the front of the stack
  curl          # make run waits for the stack with it; the README's tour uses it
)
test=(
  redis-tools         # redis-cli: end-to-end tests drive kv-stored with it
  redis-server        # the Redis store the end-to-end suites also run on (and make a cluster of)
  systemd             # systemd-analyze: `make test` verifies the installed units with it
  procps              # /bin/kill: the units' ExecReload= (SIGHUP re-reads the access file)
  python3-websockets  # the WebSocket client of the README's tour, which a test replays
  nodejs              # runs docs/websocket.md's JavaScript recipe against the stack
  openssl             # a throwaway certificate for the TLS snippet of docs/deploy.md under nginx -t
  chromium            # the console's test drives it headless (scripts/check-console.py)
  chromium-driver     # …through WebDriver
  python3-selenium    # …from Debian's python3
)
bench=(
  wrk           # bench/http.sh and bench/access.sh drive the stack with it
  gcc           # bench/http.sh builds the C libfcgi responder it compares with
  libssl-dev    # bench/ws.sh builds bench/ws-floor.c, whose WebSocket handshake uses SHA-1
  webdis        # bench/http.sh's peer: HTTP → redis-server, in C, behind the same nginx
  libnginx-mod-nchan  # bench/ws.sh's peer for live updates: pub/sub inside nginx, in C
)
case "$purpose" in
  build) packages=("${build[@]}") ;;
  run) packages=("${build[@]}" "${run[@]}") ;;
  test) packages=("${build[@]}" "${run[@]}" "${test[@]}") ;;
  bench) packages=("${build[@]}" "${run[@]}" "${test[@]}" "${bench[@]}") ;;
  *) echo "usage: scripts/install-deps.sh [build|run|test|bench] [--list]" >&2; exit 2 ;;
esac
if [ "${2:-}" = "--list" ]; then echo "${packages[*]}"; exit 0; fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node's own WebSocket (Node ≥ 20.10, --experimental-websocket) or Debian's node-ws for an older one.
if [[ " ${packages[*]} " == *" nodejs "* ]] && ! node --experimental-websocket -e 'if (typeof WebSocket !== "function") process.exit(1)' 2>/dev/null; then
  dpkg-query -W -f='${Status}' node-ws 2>/dev/null | grep -q "install ok installed" || missing+=(node-ws)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "KvServer needs these Debian packages to $purpose: ${missing[*]}" >&2
  echo "Install them with:  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "Installing (to $purpose): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
