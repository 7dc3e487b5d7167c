#!/usr/bin/env bash
# Builds a local stand-in for golang:1.26-bookworm (the runtime image's gRPC front stage) when no
# container registry is reachable: the local base image (.ci/build-base-image.sh) plus the host's
# Go toolchain. Modules still come from the Go module proxy during the image build.
# Usage: .ci/build-go-image.sh [TAG]   (skips the build when TAG exists; FORCE=1 rebuilds)
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-mlmodel-local/golang:1.26-bookworm}
base=${BASE_IMAGE_TAG:-mlmodel-local/python:3.11-slim-bookworm}

if [[ -z ${FORCE:-} ]] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "go image present tag=$tag"
  exit 0
fi
bash .ci/build-base-image.sh "$base"
goroot=$(go env GOROOT)
# The Dockerfile comes on stdin; the build context is the toolchain itself.
DOCKER_BUILDKIT=0 docker build -q -t "$tag" --build-arg BASE="$base" -f - "$goroot" >/dev/null <<'DOCKERFILE'
ARG BASE
FROM ${BASE}
COPY . /usr/local/go
ENV PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    GOTOOLCHAIN=local \
    GOPATH=/go
DOCKERFILE
echo "go image built tag=$tag from=$goroot version=$(go env GOVERSION)"
