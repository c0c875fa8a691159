#!/usr/bin/env bash
# `make install` / `make rollback` / `make uninstall`: KvServer's binaries, systemd units,
# settings file, nginx site and docs, under DESTDIR (staging) and PREFIX, as a package would
# place them. It copies only: the binaries are `make release`'s, built beforehand as yourself.
#
# Usage: scripts/install.sh install BIN_DIR     (BIN_DIR: where the built kv-* binaries are)
#        scripts/install.sh rollback            (back to what the last install replaced)
#        scripts/install.sh uninstall
# Env (Makefile defaults): DESTDIR= PREFIX=/usr/local BINDIR=$PREFIX/bin SYSCONFDIR=/etc
#   UNITDIR=$PREFIX/lib/systemd/system SYSUSERSDIR=$PREFIX/lib/sysusers.d
#   DOCDIR=$PREFIX/share/doc/kvserver CONSOLEDIR=$PREFIX/share/kvserver/console NGINXDIR=$SYSCONFDIR/nginx
#
# The settings file and the nginx site are the admin's once installed, like Debian's conffiles:
# an upgrade replaces them only if they are still as shipped; a changed one is kept and the new
# version is put beside it as *.new. Never touched: /var/lib/kvserver (data).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${DESTDIR:=}" "${PREFIX:=/usr/local}"
: "${BINDIR:=$PREFIX/bin}" "${SYSCONFDIR:=/etc}"
: "${UNITDIR:=$PREFIX/lib/systemd/system}" "${SYSUSERSDIR:=$PREFIX/lib/sysusers.d}"
: "${DOCDIR:=$PREFIX/share/doc/kvserver}" "${NGINXDIR:=$SYSCONFDIR/nginx}"
: "${CONSOLEDIR:=$PREFIX/share/kvserver/console}"

programs=(kv-stored kv-fcgi kv-ws kvctl)
units=(kv-stored.service kv-fcgi.service kv-fcgi.socket kv-ws.service kvserver.target)
docs=(api.md access.md console.md console.png deploy.md operations.md persistence.md protocol.md limits.md http.md websocket.md scaling.md security.md)
site="$NGINXDIR/sites-available/kvserver"
settings="$SYSCONFDIR/kvserver/kvserver.env"
# What install keeps for itself: the shipped copy of each conffile (to tell the admin's changes
# from ours) and the binaries and units the last install replaced (for rollback).
state="$PREFIX/lib/kvserver"

# The units name installed paths; they are written in at install time.
render() {
  sed -e "s|@BINDIR@|$BINDIR|g" -e "s|@SYSCONFDIR@|$SYSCONFDIR|g" -e "s|@DOCDIR@|$DOCDIR|g" "$1"
}

live_system() { [ -z "$DESTDIR" ] && [ "$(id -u)" -eq 0 ] && [ -d /run/systemd/system ]; }

# install_conffile SOURCE TARGET MODE: see the header. The shipped copy is recorded under
# $state/shipped/, so the next install knows whether the admin changed TARGET.
install_conffile() {
  local source=$1 target=$DESTDIR$2 mode=$3
  local record="$DESTDIR$state/shipped/$(basename "$2")"
  if [ ! -e "$target" ] || cmp -s "$target" "$source" || { [ -e "$record" ] && cmp -s "$target" "$record"; }; then
    install -D -m "$mode" "$source" "$target"
    rm -f "$target.new"
  else
    install -D -m "$mode" "$source" "$target.new"
    echo "install: kept your $2 (you changed it); the new version is $2.new: compare, merge what you want, then remove it"
  fi
  install -D -m 0644 "$source" "$record"
}

install_all() {
  local from=$1
  for d in "${programs[@]}"; do
    [ -x "$from/$d" ] || { echo "install: $from/$d is missing: run \`make release\` first, as yourself (install only copies)" >&2; exit 1; }
  done
  # What this install replaces is kept for `make rollback` (only when it differs: installing the
  # same build twice must not lose the previous version).
  if [ -x "$DESTDIR$BINDIR/kv-stored" ] && ! cmp -s "$DESTDIR$BINDIR/kv-stored" "$from/kv-stored"; then
    rm -rf "$DESTDIR$state/previous"
    install -d -m 0755 "$DESTDIR$state/previous/bin" "$DESTDIR$state/previous/units"
    for d in "${programs[@]}"; do
      [ -e "$DESTDIR$BINDIR/$d" ] && cp -p "$DESTDIR$BINDIR/$d" "$DESTDIR$state/previous/bin/$d"
    done
    for u in "${units[@]}"; do
      [ -e "$DESTDIR$UNITDIR/$u" ] && cp -p "$DESTDIR$UNITDIR/$u" "$DESTDIR$state/previous/units/$u"
    done
    echo "install: the replaced version ($("$DESTDIR$BINDIR/kv-stored" --version 2>/dev/null || echo unknown)) is kept for \`make rollback\`"
  fi
  for d in "${programs[@]}"; do
    install -D -m 0755 "$from/$d" "$DESTDIR$BINDIR/$d"
  done
  install -d -m 0755 "$DESTDIR$UNITDIR"
  for u in "${units[@]}"; do
    render "systemd/$u" > "$DESTDIR$UNITDIR/$u"
    chmod 0644 "$DESTDIR$UNITDIR/$u"
  done
  install -D -m 0644 systemd/kvserver.sysusers "$DESTDIR$SYSUSERSDIR/kvserver.conf"
  install_conffile systemd/kvserver.env "$settings" 0640  # it may hold KV_STORE_PASSWORD; systemd reads it as root
  # Into sites-available only: enabling the site is the admin's decision (see docs/deploy.md).
  # The site names the console's folder: this install's.
  local rendered
  rendered=$(mktemp)
  sed "s|root /usr/local/share/kvserver/console;|root $CONSOLEDIR;|" nginx/kvserver.conf > "$rendered"
  install_conffile "$rendered" "$site" 0644
  rm -f "$rendered"
  for f in console/*; do install -D -m 0644 "$f" "$DESTDIR$CONSOLEDIR/$(basename "$f")"; done
  for f in "${docs[@]}"; do install -D -m 0644 "docs/$f" "$DESTDIR$DOCDIR/$f"; done
  install -D -m 0644 systemd/kvserver.env "$DESTDIR$DOCDIR/kvserver.env"
  render systemd/redis-tcp.conf > "$DESTDIR$DOCDIR/redis-tcp.conf"
  chmod 0644 "$DESTDIR$DOCDIR/redis-tcp.conf"
  install -D -m 0644 LICENSE "$DESTDIR$DOCDIR/LICENSE"
  install -D -m 0644 CHANGELOG.md "$DESTDIR$DOCDIR/CHANGELOG.md"

  if live_system; then
    systemd-sysusers "$SYSUSERSDIR/kvserver.conf"
    systemctl daemon-reload
    echo "installed KvServer $("$BINDIR/kv-stored" --version). Next: systemctl enable --now kvserver.target (or restart it after an upgrade); the nginx site: docs/deploy.md"
  else
    echo "installed under ${DESTDIR:-/} (no systemd changes made: staging or not root)"
  fi
}

# Swaps the installed binaries and units with the ones the last install replaced, so a second
# rollback undoes the first. Settings and the nginx site are the admin's and stay as they are.
rollback_all() {
  local previous="$DESTDIR$state/previous"
  [ -x "$previous/bin/kv-stored" ] || { echo "rollback: nothing to roll back to ($state/previous is empty: only an install that replaced another version keeps one)" >&2; exit 1; }
  local swap="$DESTDIR$state/swap"
  rm -rf "$swap" && install -d -m 0755 "$swap/bin" "$swap/units"
  for d in "${programs[@]}"; do [ -e "$DESTDIR$BINDIR/$d" ] && cp -p "$DESTDIR$BINDIR/$d" "$swap/bin/$d"; done
  for u in "${units[@]}"; do [ -e "$DESTDIR$UNITDIR/$u" ] && cp -p "$DESTDIR$UNITDIR/$u" "$swap/units/$u"; done
  for d in "${programs[@]}"; do [ -e "$previous/bin/$d" ] && install -m 0755 "$previous/bin/$d" "$DESTDIR$BINDIR/$d"; done
  for u in "${units[@]}"; do [ -e "$previous/units/$u" ] && install -m 0644 "$previous/units/$u" "$DESTDIR$UNITDIR/$u"; done
  rm -rf "$previous" && mv "$swap" "$previous"
  local now
  now=$("$DESTDIR$BINDIR/kv-stored" --version 2>/dev/null || echo unknown)
  if live_system; then systemctl daemon-reload; fi
  echo "rolled back to KvServer $now (\`make rollback\` again returns to the version just replaced). Next: systemctl restart kvserver.target"
}

uninstall_all() {
  if live_system; then
    systemctl disable --now kvserver.target kv-stored.service kv-fcgi.socket kv-fcgi.service kv-ws.service 2>/dev/null || true
  fi
  for d in "${programs[@]}"; do rm -f "$DESTDIR$BINDIR/$d"; done
  for u in "${units[@]}"; do rm -f "$DESTDIR$UNITDIR/$u"; done
  rm -f "$DESTDIR$SYSUSERSDIR/kvserver.conf"
  rm -f "$DESTDIR$site.new" "$DESTDIR$settings.new"
  if [ -e "$DESTDIR$NGINXDIR/sites-enabled/kvserver" ]; then
    echo "uninstall: keeping $site: it is enabled (remove $NGINXDIR/sites-enabled/kvserver first, or nginx would fail)"
  elif [ -e "$DESTDIR$site" ] && ! cmp -s "$DESTDIR$site" "$DESTDIR$state/shipped/kvserver"; then
    echo "uninstall: keeping $site (you changed it)"
  else
    rm -f "$DESTDIR$site"
  fi
  if [ -e "$DESTDIR$settings" ] && ! cmp -s "$DESTDIR$settings" "$DESTDIR$state/shipped/kvserver.env"; then
    echo "uninstall: keeping $settings (you changed it)"
  else
    rm -f "$DESTDIR$settings"
    rmdir "$DESTDIR$SYSCONFDIR/kvserver" 2>/dev/null || true
  fi
  rm -rf "$DESTDIR$DOCDIR" "$DESTDIR$state" "$DESTDIR$CONSOLEDIR"
  rmdir "$(dirname "$DESTDIR$CONSOLEDIR")" 2>/dev/null || true
  if live_system; then systemctl daemon-reload; fi
  echo "uninstalled; data in /var/lib/kvserver and the kvserver user are left in place"
}

case "${1:-}" in
  install) install_all "${2:?usage: scripts/install.sh install BIN_DIR}" ;;
  rollback) rollback_all ;;
  uninstall) uninstall_all ;;
  *) echo "usage: scripts/install.sh install BIN_DIR | rollback | uninstall" >&2; exit 2 ;;
esac
