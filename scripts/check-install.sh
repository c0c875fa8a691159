#!/usr/bin/env bash
# Part of `make test`: `make install` of the release build into a temp DESTDIR, then the
# installed tree checked as an admin's machine would see it:
#   * the binaries run with the Swift toolchain hidden (--static-swift-stdlib), each answering
#     --version with CHANGELOG.md's newest version;
#   * `systemd-analyze verify` accepts every unit, with no warning at all, alone and with the
#     Redis-over-TCP drop-in (docs/scaling.md) in place;
#   * every file a unit names (ExecStart binaries, EnvironmentFile, Documentation) was installed;
#   * `nginx -t` accepts the installed site file with its own paths, and the console it serves
#     is installed where the site says;
#   * an upgrade keeps the settings and the site the admin changed (new ones as *.new) and
#     replaces unchanged ones; `make rollback` returns to the replaced version, and back;
#   * `make uninstall` removes what install put there, and keeps changed settings.
# Usage: scripts/check-install.sh BIN_DIR   (`make release`'s binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:?usage: scripts/check-install.sh BIN_DIR}
root=$(mktemp -d /tmp/kvinstall-XXXXXX)
trap 'rm -rf "$root"' EXIT
failures=0
fail() { echo "check-install: FAIL: $*" >&2; failures=$((failures + 1)); }
install_into() { make -s install DESTDIR="$root" PREFIX=/usr/local BIN_DIR="$1"; }
version=$(sed -nE 's/^## \[?([0-9][^] ]*).*/\1/p' CHANGELOG.md | head -1)

# An older version already installed, so this install is an upgrade: stand-ins that only answer
# --version, as the binaries of an earlier release would.
old=$root/old-build
mkdir -p "$old"
for p in kv-stored kv-fcgi kv-ws kvctl; do printf '#!/bin/sh\necho 0.0.1-check\n' > "$old/$p"; chmod +x "$old/$p"; done
install_into "$old" >/dev/null
out=$(install_into "$bin")
[[ "$out" == *"0.0.1-check"*"kept for \`make rollback\`"* ]] || fail "the upgrade did not say it kept the replaced version: $out"

# The runtime is in the binaries: the toolchain's libraries are hidden by mounting an empty
# directory over the toolchain (a private mount namespace, as root); elsewhere the dynamic
# linker is asked what it would load.
toolchain=$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")   # e.g. /opt/swift/usr
installed=$root/usr/local/bin
for p in kv-stored kv-fcgi kv-ws kvctl; do
  if ldd "$installed/$p" | grep -E "libswift|libFoundation|$toolchain"; then fail "$p loads the Swift runtime from the toolchain"; fi
done
if [ "$(id -u)" -eq 0 ] && unshare -m true 2>/dev/null; then
  hidden=$(unshare -m bash -c "mount -t tmpfs none '$toolchain' && for p in kv-stored kv-fcgi kv-ws kvctl; do '$installed/'\$p --version; done; ls '$toolchain' | wc -l" 2>&1) \
    || fail "the binaries did not run with the toolchain hidden: $hidden"
  expected=$(printf '%s\n' "$version" "$version" "$version" "$version" 0)
  [ "$hidden" = "$expected" ] || fail "with $toolchain hidden, expected: $expected; got: $hidden"
  how="run with $toolchain hidden"
else
  for p in kv-stored kv-fcgi kv-ws kvctl; do
    [ "$("$installed/$p" --version)" = "$version" ] || fail "$p --version is not $version"
  done
  how="ldd shows no Swift runtime (not root: the toolchain was not hidden)"
fi

units="$root/usr/local/lib/systemd/system"
for u in kv-stored.service kv-fcgi.service kv-fcgi.socket kv-ws.service kvserver.target; do
  [ -f "$units/$u" ] || fail "$u was not installed"
done

# systemd's own units (sysinit.target, sockets.target …) come from the host, and so does the
# kill(1) of the units' ExecReload= (procps).
mkdir -p "$root/usr/lib/systemd" "$root/bin"
ln -s /lib/systemd/system "$root/usr/lib/systemd/system"
cp /bin/kill "$root/bin/kill"
verify() {
  local out
  if ! out=$(systemd-analyze verify --root="$root" "$units"/* 2>&1) || [ -n "$out" ]; then fail "systemd-analyze verify ($1): $out"; fi
}
verify "the shipped units"
# The drop-in as docs/scaling.md installs it, with its placeholder addresses; verify reads the
# drop-in directories under --root (a broken drop-in is refused: the check below proves it).
for d in kv-fcgi kv-ws; do install -D -m 0644 "$root/usr/local/share/doc/kvserver/redis-tcp.conf" "$root/etc/systemd/system/$d.service.d/redis-tcp.conf"; done
verify "with the Redis-over-TCP drop-in"
echo "IPAddressAllow=not-an-address" >> "$root/etc/systemd/system/kv-ws.service.d/redis-tcp.conf"
if out=$(systemd-analyze verify --root="$root" "$units"/* 2>&1) && [ -z "$out" ]; then
  fail "systemd-analyze verify did not read the drop-in directory (a broken drop-in passed)"
fi
rm -rf "$root/etc/systemd"

for u in "$units"/*; do
  while read -r path; do
    [ -e "$root$path" ] || fail "$(basename "$u") names $path, which make install did not create"
  done < <(sed -nE -e 's/^Exec(Start|Reload)=([^ ]+).*/\2/p' -e 's/^EnvironmentFile=-?(.+)/\1/p' \
                   -e 's|^Documentation=file://(.+)|\1|p' "$u")
done

if ! out=$(scripts/nginx-check-site.sh "$root/etc/nginx/sites-available/kvserver" 2>&1); then
  fail "nginx -t on the installed site: $out"
fi
console=$(sed -nE 's/^ *root (.+)\/console;/\1\/console/p' "$root/etc/nginx/sites-available/kvserver")
for f in console/*; do
  cmp -s "$f" "$root$console/$(basename "$f")" || fail "the site serves the console from $console, where make install did not put $f"
done

# Rollback swaps in the replaced version, and a second one swaps back.
make -s rollback DESTDIR="$root" PREFIX=/usr/local >/dev/null
[ "$("$installed/kv-stored" --version)" = "0.0.1-check" ] || fail "make rollback did not put the previous kv-stored back"
make -s rollback DESTDIR="$root" PREFIX=/usr/local >/dev/null
[ "$("$installed/kv-stored" --version)" = "$version" ] || fail "a second make rollback did not return to $version"

# Upgrades and the admin's files: an unchanged file is replaced, a changed one kept.
site=$root/etc/nginx/sites-available/kvserver
settings=$root/etc/kvserver/kvserver.env
echo "    # the admin's line" >> "$site"
printf 'stale shipped copy\n' > "$root/usr/local/lib/kvserver/shipped/kvserver.env"
cp "$root/usr/local/lib/kvserver/shipped/kvserver.env" "$settings"   # as an older release shipped it
out=$(install_into "$bin")
grep -q "the admin's line" "$site" || fail "an upgrade overwrote the nginx site the admin changed"
cmp -s "$site.new" nginx/kvserver.conf || fail "the new site was not put beside the changed one as kvserver.new"
[[ "$out" == *"kept your /etc/nginx/sites-available/kvserver"*"kvserver.new"* ]] || fail "install did not say it kept the changed site: $out"
cmp -s "$settings" systemd/kvserver.env || fail "an upgrade left an unchanged kvserver.env at the old defaults"
[ -e "$settings.new" ] && fail "an unchanged kvserver.env got a .new beside it"

echo "# changed" >> "$settings"
make -s uninstall DESTDIR="$root" PREFIX=/usr/local >/dev/null
left=$(cd "$root" && find . -type f -not -path './nginx-check/*' -not -path './bin/*' -not -path './old-build/*' | sort)
expected_left=$(printf '%s\n' ./etc/kvserver/kvserver.env ./etc/nginx/sites-available/kvserver)
[ "$left" = "$expected_left" ] || fail "after uninstall, expected only the two changed files, found: $left"

[ "$failures" -eq 0 ] && echo "check-install: ok ($how; units verified with and without the TCP drop-in; paths present; nginx -t passed; upgrade kept changed files; rollback and back; uninstall clean)"
exit "$((failures > 0))"
