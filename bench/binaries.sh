# Shared by bench/stack.sh and bench/redis-common.sh (sourced): $bin_dir, the release build a
# bench measures, and $build, what its tables name it. BIN_DIR names another build
# (bench/compare-builds.sh); otherwise the checkout's own is built first (about 15 s when
# nothing changed), so no figure is measured on binaries older than the sources and credited
# to code they do not contain.
if [ -n "${BIN_DIR:-}" ]; then
  bin_dir=$BIN_DIR build=$BIN_DIR
else
  make -s release >&2
  bin_dir=$(swift build -c release --show-bin-path) build=$(git rev-parse --short HEAD)
fi
