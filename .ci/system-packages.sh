#!/usr/bin/env bash
# Installs the Debian packages the test suite runs for real (idempotent, quick when present).
# PostgreSQL, Prometheus, the Docker engine, debootstrap for the local base image, Lua for the
# Argo CD health check, shellcheck for workflow run steps, wrk for benchmarks, Redis for the
# prediction cache.
set -euo pipefail

packages=(
  postgresql          # metadata store tests (server started by the test fixtures)
  prometheus          # observability tests; ships promtool
  docker.io           # image build/run tests (dockerd started by .ci/start-docker.sh)
  docker-compose      # `docker-compose up` of the local stack (bookworm has Compose v1 only)
  debootstrap         # builds the local base image (no registry reachable)
  lua5.1              # Argo CD health checks are Lua 5.1 (gopher-lua)
  shellcheck          # run steps of the GitHub workflows
  wrk                 # HTTP load generator for benchmarks
  nghttp2-client      # h2load: the gRPC load generator of benchmarks/grpc_vs_rest.py
  redis-server        # the prediction cache (tests/support/redis.py starts it; ships redis-cli)
  containernetworking-plugins  # the real node's pod network (tests/cluster/node.sh; runc comes with the Docker engine)
  iproute2
  procps
  curl
)

# A machine that already has a Docker engine (a GitHub runner ships docker-ce) keeps it:
# Debian's docker.io conflicts with docker-ce's containerd.
if command -v dockerd >/dev/null 2>&1; then
  packages=("${packages[@]/docker.io/}")
fi
# Likewise its Compose: an old Compose v1 next to a new engine breaks on container recreation.
if command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1; then
  packages=("${packages[@]/docker-compose/}")
fi

missing=()
for package in "${packages[@]}"; do
  [[ -n $package ]] || continue
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # The Debian services must not start on install: the tests start their own instances.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
fi
