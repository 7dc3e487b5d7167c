# shellcheck shell=bash
# Sourced by tests/tools/build.sh and tests/cluster/build.sh: builds a binary from a committed
# wrapper Go module into a cache directory, so only the first build on a machine pays.
if ! command -v go >/dev/null; then
  echo "${0##*/}: the Go toolchain (1.26 or newer) is needed to build the test binaries" >&2
  exit 1
fi
export CGO_ENABLED=0 GOFLAGS=-mod=readonly

go_build() { # name module-dir package ldflags output-dir
  local name=$1 dir=$2 pkg=$3 flags=$4 out=$5
  [[ -x $out/$name ]] && return 0
  echo "building $name (first time on this machine; cached in $out)" >&2
  local started=$SECONDS
  mkdir -p "$out"
  (cd "$dir" && go build -trimpath -ldflags "-s -w $flags" -o "$out/$name.tmp" "$pkg") >&2
  mv "$out/$name.tmp" "$out/$name"
  echo "built $name in $((SECONDS - started)) s" >&2
}
