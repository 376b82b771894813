#!/usr/bin/env bash
# Builds the images of deploy/ with buildah, on a Debian base made here by debootstrap, so no
# container registry is needed (only Debian's package mirror and PyPI). As root, on Debian:
#   bash scripts/build-images.sh [edge-slim|edge|cloud ...]     (default: edge-slim cloud)
# Images land in buildah's local storage as localhost/edgeplane-<name>:<version>; `buildah push`
# them to the registry the cluster pulls from. vfs storage and chroot isolation make it work
# inside containers and CI machines without overlayfs or user namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
images=("$@"); [ ${#images[@]} -gt 0 ] || images=(edge-slim cloud)
work=${EDGEPLANE_IMAGE_WORK:-/var/tmp/edgeplane-images}
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || { echo "build-images: $tool is missing: apt-get install -y buildah debootstrap" >&2; exit 2; }
done
base=localhost/edgeplane-base:bookworm
if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  echo "build-images: making the Debian bookworm base with debootstrap (python3, venv)"
  rm -rf "$work/rootfs" && mkdir -p "$work"
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log"
  tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
  container=$(buildah from scratch)
  buildah add "$container" "$work/rootfs.tar" / >/dev/null
  buildah config --cmd /bin/bash "$container"
  buildah commit --rm "$container" "$base" >/dev/null
  rm -rf "$work/rootfs" "$work/rootfs.tar"
fi
for name in "${images[@]}"; do
  file=deploy/$name.Containerfile
  [ -f "$file" ] || { echo "build-images: no $file (choose from: $(cd deploy && ls *.Containerfile | sed 's/.Containerfile//' | xargs))" >&2; exit 2; }
  echo "build-images: $name from $file"
  # pip in the build trusts the image's CA bundle; behind a TLS-intercepting proxy, the host's
  # bundle (SSL_CERT_FILE) stands in for it during the build only, never in the image
  trust=()
  [ -n "${SSL_CERT_FILE:-}" ] && [ -f "$SSL_CERT_FILE" ] && trust=(--volume "$SSL_CERT_FILE:/etc/ssl/certs/ca-certificates.crt:ro")
  buildah bud --layers=false "${trust[@]}" --build-arg BASE="$base" -f "$file" -t "localhost/edgeplane-$name:$version" .
done
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep edgeplane
