#!/usr/bin/env bash
# Writes a complete nginx.conf for a local stack (make run, end-to-end tests) around the
# production site file: only the socket folder, the listen port and the console's folder are
# substituted.
# Usage: scripts/nginx-local-conf.sh RUN_DIR PORT > RUN_DIR/nginx.conf
set -euo pipefail
run_dir=${1:?run directory}
port=${2:?port}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$run_dir/nginx/tmp"
# The console's files: CONSOLE_DIR, or this checkout's console/.
console=${CONSOLE_DIR:-$here/console}
sed -e "s|/run/kvserver/|$run_dir/|g" -e "s|listen 127.0.0.1:8080;|listen 127.0.0.1:$port;|" \
  -e "s|root /usr/local/share/kvserver/console;|root $console;|" \
  "$here/nginx/kvserver.conf" > "$run_dir/nginx/kvserver.conf"

# As root, nginx's workers run as nobody:nogroup, and the daemons' sockets are given to
# nogroup: the same group-based access as production (www-data there).
user_line=""
[ "$(id -u)" -eq 0 ] && user_line="user nobody nogroup;"
cat <<CONF
$user_line
worker_processes 2;
# Two descriptors per proxied request (client and upstream): room for thousands at once.
worker_rlimit_nofile 8192;
pid $run_dir/nginx/nginx.pid;
error_log $run_dir/nginx/error.log notice;
events { worker_connections 4096; }
http {
    access_log $run_dir/nginx/access.log;
    client_body_temp_path $run_dir/nginx/tmp/body;
    fastcgi_temp_path $run_dir/nginx/tmp/fastcgi;
    proxy_temp_path $run_dir/nginx/tmp/proxy;
    uwsgi_temp_path $run_dir/nginx/tmp/uwsgi;
    scgi_temp_path $run_dir/nginx/tmp/scgi;
    include $run_dir/nginx/kvserver.conf;
}
CONF
