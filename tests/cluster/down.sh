#!/usr/bin/env bash
# Stops the local cluster started by up.sh and removes its state.   down.sh [DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$(cd "$here/../.." && pwd)/.cluster}
[[ -d $dir ]] || exit 0
# A real node first: its pods, mounts, bridge and iptables rules outlive a plain kill.
[[ -d $dir/node ]] && "$here/node.sh" down "$dir"
pids=()
for file in "$dir"/run/*.pid; do
  [[ -f $file ]] || continue
  pid=$(cat "$file")
  kill -0 "$pid" 2>/dev/null && kill "$pid" && pids+=("$pid")
done
for _ in $(seq 50); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  ((alive)) || break
  sleep 0.2
done
for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
rm -rf "$dir"
echo "cluster stopped"
