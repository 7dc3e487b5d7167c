#!/usr/bin/env bash
# Builds a local stand-in for python:3.11-slim when no container registry is reachable:
# Debian bookworm (minbase) from the host's apt mirror + Python 3.11 + the host's extra CAs.
# Usage: .ci/build-base-image.sh [TAG]   (skips the build when TAG exists; FORCE=1 rebuilds)
set -euo pipefail

tag=${1:-${BASE_IMAGE_TAG:-mlmodel-local/python:3.11-slim-bookworm}}
suite=bookworm

if [[ -z ${FORCE:-} ]] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image present tag=$tag"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi

# The host's own mirror is the one known to be reachable (it may be a proxy or a snapshot).
host_mirror() {
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | awk '{print $2}' | grep -E '/debian/?$' | head -n 1 || true)
  if [[ -z $uri && -f /etc/apt/sources.list ]]; then
    uri=$(awk '$1 == "deb" && $2 !~ /^\[/ && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}
mirror=${DEBIAN_MIRROR:-$(host_mirror)}

rootfs=$(mktemp -d /var/tmp/mlmodel-base.XXXXXX)
trap '$SUDO rm -rf "$rootfs"' EXIT

echo "debootstrap suite=$suite mirror=$mirror rootfs=$rootfs"
# python3-venv brings ensurepip's bundled pip wheel: no system pip is needed (each image makes
# its own venv), which keeps the base close to python:3.11-slim.
$SUDO debootstrap --variant=minbase --components=main \
  --include=python3,python3-venv,ca-certificates \
  "$suite" "$rootfs" "$mirror" >/dev/null

# The extra CAs the host trusts (a TLS-inspecting egress proxy, say) are needed by pip in builds.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  $SUDO cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
fi
$SUDO chroot "$rootfs" update-ca-certificates >/dev/null

# Builds inside this base talk to PyPI only: no host file indexes, the system CA bundle.
$SUDO tee "$rootfs/etc/pip.conf" >/dev/null <<'EOF'
[global]
cert = /etc/ssl/certs/ca-certificates.crt
disable-pip-version-check = true
EOF

# apt stays usable (the compose PostgreSQL image installs from it) but ships no lists or caches.
$SUDO rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/usr/share/locale/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
$SUDO find "$rootfs/usr/lib/python3.11" -name __pycache__ -prune -exec rm -rf {} +
$SUDO ln -sf python3 "$rootfs/usr/bin/python"

$SUDO tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  --message "debootstrap $suite minbase + python3 + host CAs" \
  - "$tag" >/dev/null
echo "base image built tag=$tag size=$(docker image inspect -f '{{.Size}}' "$tag")"
