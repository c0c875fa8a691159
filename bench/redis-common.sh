# Shared by bench/store-vs-redis.sh and bench/persistence.sh (sourced): the release kv-stored,
# a temp folder removed on exit with every process in `pids`, and `median`.
# Set DIR_PARENT before sourcing to put the temp folder elsewhere than /tmp.
bin=${BIN_DIR:-$(swift build -c release --show-bin-path)}/kv-stored  # BIN_DIR: another build (bench/compare-builds.sh)
# What the tables name as the build measured: the checkout, or the binaries given.
build=${BIN_DIR:-$(git rev-parse --short HEAD)}
[ -x "$bin" ] || { echo "build first: make release" >&2; exit 1; }
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
