#!/usr/bin/env bash
# `nginx -t` on a site file (a file of server blocks, as nginx/kvserver.conf), inside the
# smallest main configuration that includes it, so the site is checked without the host's own
# nginx.conf, pid file or logs. Prints nginx's complaint and fails when it does not pass.
# Used by scripts/check-install.sh (the installed site), scripts/check-docs.py (the site with
# each documented snippet in place) and the end-to-end tests (the site as shipped).
# Usage: scripts/nginx-check-site.sh SITE_FILE
set -euo pipefail
site=${1:?usage: scripts/nginx-check-site.sh SITE_FILE}
work=$(mktemp -d /tmp/kvnginx-t-XXXXXX)
trap 'rm -rf "$work"' EXIT
cat > "$work/nginx.conf" <<CONF
pid $work/nginx.pid;
error_log $work/error.log;
events {}
http { include $site; }
CONF
# Debian keeps nginx in /usr/sbin, off an ordinary user's PATH.
if ! out=$(/usr/sbin/nginx -t -q -p "$work" -e "$work/error.log" -c "$work/nginx.conf" 2>&1); then
  echo "nginx -t fails on $site: $out" >&2
  exit 1
fi
echo "nginx -t: $site is accepted"
