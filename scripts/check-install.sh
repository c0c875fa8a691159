#!/usr/bin/env bash
# Part of `make test`: `make install` into a temp DESTDIR, then check the installed tree as an
# admin's machine would see it:
#   * `systemd-analyze verify` accepts every unit, with no warning at all;
#   * every file a unit names (ExecStart binaries, EnvironmentFile, Documentation) was installed;
#   * `nginx -t` accepts the installed site file with its own paths;
#   * `make uninstall` removes what install put there, and keeps changed settings.
# Usage: scripts/check-install.sh [BIN_DIR]   (default: the debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-$(swift build --show-bin-path)}
root=$(mktemp -d /tmp/kvinstall-XXXXXX)
trap 'rm -rf "$root"' EXIT
failures=0
fail() { echo "check-install: FAIL: $*" >&2; failures=$((failures + 1)); }

make -s install DESTDIR="$root" PREFIX=/usr/local BIN_DIR="$bin" >/dev/null
units="$root/usr/local/lib/systemd/system"
for u in kv-stored.service kv-fcgi.service kv-fcgi.socket kv-ws.service kvserver.target; do
  [ -f "$units/$u" ] || fail "$u was not installed"
done

# systemd's own units (sysinit.target, sockets.target …) come from the host, and so does the
# kill(1) of the units' ExecReload= (procps).
mkdir -p "$root/usr/lib/systemd" "$root/bin"
ln -s /lib/systemd/system "$root/usr/lib/systemd/system"
cp /bin/kill "$root/bin/kill"
if ! out=$(systemd-analyze verify --root="$root" "$units"/* 2>&1) || [ -n "$out" ]; then
  fail "systemd-analyze verify: $out"
fi

for u in "$units"/*; do
  while read -r path; do
    [ -e "$root$path" ] || fail "$(basename "$u") names $path, which make install did not create"
  done < <(sed -nE -e 's/^Exec(Start|Reload)=([^ ]+).*/\2/p' -e 's/^EnvironmentFile=-?(.+)/\1/p' \
                   -e 's|^Documentation=file://(.+)|\1|p' "$u")
done

mkdir -p "$root/nginx-check"
cat > "$root/nginx-check/nginx.conf" <<CONF
pid $root/nginx-check/nginx.pid;
error_log $root/nginx-check/error.log;
events {}
http { include $root/etc/nginx/sites-available/kvserver; }
CONF
if ! out=$(nginx -t -p "$root/nginx-check" -c "$root/nginx-check/nginx.conf" 2>&1); then
  fail "nginx -t on the installed site: $out"
fi

echo "# changed" >> "$root/etc/kvserver/kvserver.env"
make -s uninstall DESTDIR="$root" PREFIX=/usr/local >/dev/null
left=$(cd "$root" && find . -type f -not -path './nginx-check/*' -not -path './bin/*' | sort)
[ "$left" = "./etc/kvserver/kvserver.env" ] || fail "after uninstall, expected only the changed settings file, found: $left"

[ "$failures" -eq 0 ] && echo "check-install: ok (units verified, paths present, nginx -t passed, uninstall clean)"
exit "$((failures > 0))"
