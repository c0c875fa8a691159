#!/usr/bin/env bash
# Installs the Debian packages KvServer's build, tests and local stack need.
# As root it installs what is missing; otherwise it prints the exact apt-get line and fails.
set -euo pipefail

packages=(
  libfcgi-dev   # kv-fcgi is built on libfcgi
  nginx-light   # the front of the stack, in `make run` and the end-to-end tests
  redis-tools   # redis-cli: end-to-end tests drive kv-stored with it
  redis-server  # the Redis store the end-to-end suites also run on (and make a cluster of), and bench/'s baseline
  curl          # make run waits for the stack with it and shows how to use it
  wrk           # bench/http.sh drives the stack with it
  systemd       # systemd-analyze: `make test` verifies the installed units with it
  procps        # /bin/kill: the units' ExecReload= (SIGHUP re-reads the access file)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

line="apt-get update && apt-get install -y ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "KvServer needs these Debian packages: ${missing[*]}" >&2
  echo "Run as root:  $line" >&2
  exit 1
fi
echo "Installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
