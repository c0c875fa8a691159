#!/usr/bin/env bash
# `make install` / `make uninstall`: KvServer's binaries, systemd units, settings file, nginx site
# and docs, under DESTDIR (staging) and PREFIX, as a package would place them.
#
# Usage: scripts/install.sh install BIN_DIR     (BIN_DIR: where the built kv-* binaries are)
#        scripts/install.sh uninstall
# Env (Makefile defaults): DESTDIR= PREFIX=/usr/local BINDIR=$PREFIX/bin SYSCONFDIR=/etc
#   UNITDIR=$PREFIX/lib/systemd/system SYSUSERSDIR=$PREFIX/lib/sysusers.d
#   DOCDIR=$PREFIX/share/doc/kvserver NGINXDIR=$SYSCONFDIR/nginx
#
# Never touched: /var/lib/kvserver (data) and an existing /etc/kvserver/kvserver.env (settings).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${DESTDIR:=}" "${PREFIX:=/usr/local}"
: "${BINDIR:=$PREFIX/bin}" "${SYSCONFDIR:=/etc}"
: "${UNITDIR:=$PREFIX/lib/systemd/system}" "${SYSUSERSDIR:=$PREFIX/lib/sysusers.d}"
: "${DOCDIR:=$PREFIX/share/doc/kvserver}" "${NGINXDIR:=$SYSCONFDIR/nginx}"

programs=(kv-stored kv-fcgi kv-ws kvctl)
units=(kv-stored.service kv-fcgi.service kv-fcgi.socket kv-ws.service kvserver.target)
docs=(api.md access.md deploy.md operations.md persistence.md protocol.md limits.md http.md websocket.md scaling.md security.md)
site="$NGINXDIR/sites-available/kvserver"
settings="$SYSCONFDIR/kvserver/kvserver.env"

# The units name installed paths; they are written in at install time.
render_unit() {
  sed -e "s|@BINDIR@|$BINDIR|g" -e "s|@SYSCONFDIR@|$SYSCONFDIR|g" -e "s|@DOCDIR@|$DOCDIR|g" "systemd/$1"
}

live_system() { [ -z "$DESTDIR" ] && [ "$(id -u)" -eq 0 ] && [ -d /run/systemd/system ]; }

install_all() {
  local from=$1
  for d in "${programs[@]}"; do
    [ -x "$from/$d" ] || { echo "install: $from/$d is missing; run \`make release\` first" >&2; exit 1; }
    install -D -m 0755 "$from/$d" "$DESTDIR$BINDIR/$d"
  done
  for u in "${units[@]}"; do
    install -d -m 0755 "$DESTDIR$UNITDIR"
    render_unit "$u" > "$DESTDIR$UNITDIR/$u"
    chmod 0644 "$DESTDIR$UNITDIR/$u"
  done
  install -D -m 0644 systemd/kvserver.sysusers "$DESTDIR$SYSUSERSDIR/kvserver.conf"
  if [ -e "$DESTDIR$settings" ]; then
    echo "install: keeping your $settings (the shipped defaults are in $DOCDIR/kvserver.env)"
  else
    install -D -m 0640 systemd/kvserver.env "$DESTDIR$settings"  # it may hold KV_STORE_PASSWORD; systemd reads it as root
  fi
  # Into sites-available only: enabling the site is the admin's decision (see docs/deploy.md).
  install -D -m 0644 nginx/kvserver.conf "$DESTDIR$site"
  for f in "${docs[@]}"; do install -D -m 0644 "docs/$f" "$DESTDIR$DOCDIR/$f"; done
  install -D -m 0644 systemd/kvserver.env "$DESTDIR$DOCDIR/kvserver.env"
  install -D -m 0644 LICENSE "$DESTDIR$DOCDIR/LICENSE"
  install -D -m 0644 CHANGELOG.md "$DESTDIR$DOCDIR/CHANGELOG.md"

  if live_system; then
    systemd-sysusers "$SYSUSERSDIR/kvserver.conf"
    systemctl daemon-reload
    echo "installed. Next: systemctl enable --now kvserver.target; then the nginx site (docs/deploy.md)"
  else
    echo "installed under ${DESTDIR:-/} (no systemd changes made: staging or not root)"
  fi
}

uninstall_all() {
  if live_system; then
    systemctl disable --now kvserver.target kv-stored.service kv-fcgi.socket kv-fcgi.service kv-ws.service 2>/dev/null || true
  fi
  for d in "${programs[@]}"; do rm -f "$DESTDIR$BINDIR/$d"; done
  for u in "${units[@]}"; do rm -f "$DESTDIR$UNITDIR/$u"; done
  rm -f "$DESTDIR$SYSUSERSDIR/kvserver.conf"
  if [ -e "$DESTDIR$NGINXDIR/sites-enabled/kvserver" ]; then
    echo "uninstall: keeping $site: it is enabled (remove $NGINXDIR/sites-enabled/kvserver first, or nginx would fail)"
  else
    rm -f "$DESTDIR$site"
  fi
  if [ -e "$DESTDIR$settings" ] && ! cmp -s systemd/kvserver.env "$DESTDIR$settings"; then
    echo "uninstall: keeping $settings (you changed it)"
  else
    rm -f "$DESTDIR$settings"
    rmdir "$DESTDIR$SYSCONFDIR/kvserver" 2>/dev/null || true
  fi
  rm -rf "$DESTDIR$DOCDIR"
  if live_system; then systemctl daemon-reload; fi
  echo "uninstalled; data in /var/lib/kvserver and the kvserver user are left in place"
}

case "${1:-}" in
  install) install_all "${2:?usage: scripts/install.sh install BIN_DIR}" ;;
  uninstall) uninstall_all ;;
  *) echo "usage: scripts/install.sh install BIN_DIR | uninstall" >&2; exit 2 ;;
esac
