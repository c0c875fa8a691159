# Shared by bench/store-vs-redis.sh and bench/persistence.sh (sourced): the release kv-stored,
# a temp folder removed on exit with every process in `pids`, and `median`.
# Set DIR_PARENT before sourcing to put the temp folder elsewhere than /tmp.
source bench/binaries.sh
bin=$bin_dir/kv-stored
[ -x "$bin" ] || { echo "no kv-stored in $bin_dir" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "needs redis-server and redis-tools (scripts/install-deps.sh bench)" >&2; exit 1; }

dir=$(mktemp -d "${DIR_PARENT:-/tmp}/kvbench-XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
