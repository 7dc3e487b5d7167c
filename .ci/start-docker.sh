#!/usr/bin/env bash
# Starts the Docker engine in the background unless one already answers (idempotent).
# Used by the container tests and CI machines without systemd; on a desktop, use the system's engine.
#
# Tried on the Debian bookworm CI VM (docker.io 20.10, root, cgroup v1, iptables present):
# overlay2 works on ext4, and the default bridge network with iptables gives `docker run -p`
# port publishing. Where overlay2 is refused (overlay-on-overlay, old kernels) the script falls
# back to vfs (slow, large, but works anywhere); where iptables is missing, to
# `--iptables=false`, in which case containers must use `--network host`.
set -euo pipefail

log_file=${DOCKERD_LOG:-/var/log/mlmodel-dockerd.log}
ready_timeout=${DOCKERD_READY_TIMEOUT:-60}

if docker info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "dockerd is not installed: run .ci/system-packages.sh first" >&2
  exit 1
fi

if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi

# containerd is started by dockerd itself when no system containerd socket exists.
storage_driver=${DOCKERD_STORAGE_DRIVER:-}
if [[ -z $storage_driver ]]; then
  if grep -qw overlay /proc/filesystems; then storage_driver=overlay2; else storage_driver=vfs; fi
fi

network_args=()
if ! command -v iptables >/dev/null 2>&1 || ! $SUDO iptables -L -n >/dev/null 2>&1; then
  echo "iptables unusable: starting dockerd without it (publish no ports; use --network host)" >&2
  network_args=(--iptables=false --ip6tables=false)
fi

start_dockerd() {
  echo "starting dockerd storage_driver=$1 log=$log_file"
  # setsid: the engine outlives the shell (and the pytest process) that started it.
  $SUDO setsid dockerd --storage-driver="$1" "${network_args[@]}" >>"$log_file" 2>&1 </dev/null &
}

wait_ready() {
  local deadline=$((SECONDS + ready_timeout))
  while ((SECONDS < deadline)); do
    if docker info >/dev/null 2>&1; then return 0; fi
    # dockerd exits at once when the storage driver is refused: stop waiting then.
    if ! pgrep -x dockerd >/dev/null; then return 1; fi
    sleep 0.5
  done
  return 1
}

start_dockerd "$storage_driver"
if ! wait_ready; then
  if [[ $storage_driver != vfs ]] && ! pgrep -x dockerd >/dev/null; then
    echo "dockerd refused storage_driver=$storage_driver: retrying with vfs" >&2
    storage_driver=vfs
    start_dockerd vfs
    wait_ready || { tail -n 40 "$log_file" >&2; exit 1; }
  else
    echo "dockerd not ready after ${ready_timeout}s" >&2
    tail -n 40 "$log_file" >&2
    exit 1
  fi
fi
echo "dockerd ready storage_driver=$(docker info --format '{{.Driver}}')"
