#!/usr/bin/env bash
# Builds the test tools from their wrapper Go modules under modules/ (committed go.mod and go.sum,
# never a binary) into a cache keyed by the tool's version; prints each binary's path on stdout.
#   build.sh        k6 (runs examples/loadtest/k6.js; tests/benchmarks/test_k6.py, make k6)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=gobuild.sh
source "$here/gobuild.sh"

cache=${MLMODEL_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlmodel-operator/tools}
wanted=("$@")
((${#wanted[@]})) || wanted=(k6)

for name in "${wanted[@]}"; do
  case $name in
    k6) pkg=go.k6.io/k6 ;;
    *) echo "build.sh: unknown tool $name" >&2; exit 2 ;;
  esac
  mod="$here/modules/$name"
  version=$(awk -v pkg="$pkg" '$1 == pkg { print $2 }' "$mod/go.mod")
  [[ -n $version ]] || { echo "build.sh: $pkg is not required by $mod/go.mod" >&2; exit 1; }
  out="$cache/$name-$version/bin"
  go_build "$name" "$mod" "$pkg" "" "$out"
  echo "$out/$name"
done
