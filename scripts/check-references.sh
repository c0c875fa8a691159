#!/usr/bin/env bash
# Part of `make test`: the repository is self-contained. It fails on
#   * a mention of a file that lives outside the repository (the seed contract, the platform
#     notes, the style guide, a sibling directory): everything a user needs is in docs/;
#   * a Markdown link to a path that does not exist in the repository (or leaves it);
#   * a `docs/NAME.md` named in any file that does not exist.
# Usage: scripts/check-references.sh [ROOT]   (default: this repository)
#        scripts/check-references.sh --self-test   (shows that each rule catches its case)
set -euo pipefail

if [ "${1:-}" = "--self-test" ]; then
  me=$(realpath "$0")
  t=$(mktemp -d /tmp/kvrefs-XXXXXX)
  trap 'rm -rf "$t"' EXIT
  mkdir -p "$t/docs" && echo "# api" > "$t/docs/api.md"
  echo "See [the contract](docs/api.md) and docs/api.md." > "$t/README.md"
  "$me" "$t" >/dev/null || { echo "check-references: self-test: a clean tree was refused" >&2; exit 1; }
  for bad in "The seed is ../shared/API.md." "Read PLATFORM.md first." "[x](docs/missing.md)" \
             "[x](../outside.md)" "as docs/gone.md says" "// see STYLE.md"; do
    echo "$bad" > "$t/docs/bad.md"
    if "$me" "$t" >/dev/null 2>&1; then echo "check-references: self-test: not caught: $bad" >&2; exit 1; fi
  done
  echo "check-references: self-test ok (6 kinds of bad reference caught, a clean tree passed)"
  exit 0
fi

root=$(realpath "${1:-$(dirname "$0")/..}")
cd "$root"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files --cached --others --exclude-standard | while read -r f; do [ -f "$f" ] && echo "$f"; done)
else
  mapfile -t files < <(find . -type f -not -path './.build*' -not -path './.git/*' -not -path './run/*' | sed 's|^\./||')
fi
# Text files only (fuzz corpora and the like are data).
mapfile -t text < <(for f in "${files[@]}"; do grep -Iq . "$f" 2>/dev/null && echo "$f"; done; true)
failures=0
fail() { echo "check-references: $*" >&2; failures=$((failures + 1)); }

# Names of the files the project was seeded from, and paths that climb out of the checkout.
outside='(\.\./shared|\.\./\.library|(^|[^a-z/])API\.md|PLATFORM\.md|STYLE\.md)'
self=scripts/check-references.sh
while IFS= read -r hit; do
  fail "refers outside the repository: $hit"
done < <(printf '%s\n' "${text[@]}" | grep -v -x "$self" | xargs -r -d '\n' grep -n -E "$outside" -- 2>/dev/null || true)

# Markdown links: [text](target), relative targets only.
for f in "${text[@]}"; do
  case "$f" in *.md) ;; *) continue ;; esac
  dir=$(dirname "$f")
  while IFS= read -r target; do
    target=${target%%#*}
    [ -z "$target" ] && continue
    case "$target" in http://*|https://*|mailto:*) continue ;; esac
    resolved=$(realpath -m "$dir/$target")
    case "$resolved" in "$root"/*|"$root") ;; *) fail "$f links outside the repository: $target"; continue ;; esac
    [ -e "$resolved" ] || fail "$f links to a missing file: $target"
  done < <(grep -o -E '\]\([^) ]+\)' "$f" | sed -E 's/^\]\((.*)\)$/\1/' || true)
done

# docs/NAME.md mentioned anywhere (comments, --help, scripts) must exist.
while IFS=: read -r f name; do
  [ -e "$name" ] || fail "$f names $name, which does not exist"
done < <(printf '%s\n' "${text[@]}" | grep -v -x "$self" | xargs -r -d '\n' grep -o -H -E '\bdocs/[A-Za-z0-9_-]+\.md' -- 2>/dev/null | sort -u || true)

if [ "$failures" -gt 0 ]; then exit 1; fi
echo "check-references: ok (${#text[@]} files: nothing refers outside the repository, every link resolves)"
