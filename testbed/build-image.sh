#!/usr/bin/env bash
# Build the test-bed host image localhost/condorlab-trixie:<tag> from
# debootstrap (no container registry is needed). The tag is a hash of this
# recipe and of the roles' package lists, so the image is rebuilt only when
# either changes.
#
# Usage: testbed/build-image.sh            build if missing, print the image name
#        testbed/build-image.sh --name     only print the image name
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
suite=trixie
mirror=${CONDORLAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
repo=localhost/condorlab-${suite}

die() { echo "build-image: $*" >&2; exit 1; }

# The roles' Debian packages, downloaded into the image (not installed).
packages=$("${CONDORLAB_PYTHON:-python3}" "$here/role-packages.py") \
  || die "cannot read the roles' package lists (needs PyYAML: run it from make, which uses .venv)"
tag=$({ cat "$here/Containerfile" "$here/build-image.sh"; echo "$packages"; } | sha256sum | cut -c1-12)
image="$repo:$tag"
if [[ ${1:-} == --name ]]; then echo "$image"; exit 0; fi

[[ $(id -u) -eq 0 ]] || die "must run as root (rootful podman and debootstrap); try: sudo $0"
command -v podman >/dev/null || die "podman not found; install it with: apt-get install -y podman runc"
command -v debootstrap >/dev/null || die "debootstrap not found; install it with: apt-get install -y debootstrap"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}

if podman image exists "$image"; then
  echo "$image"
  exit 0
fi

work=$(mktemp -d /var/tmp/condorlab-rootfs.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "build-image: debootstrap $suite from $mirror" >&2
debootstrap --variant=minbase "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
base="$repo-base:$tag"
tar -C "$work/rootfs" -c . | podman import - "$base" >/dev/null
echo "build-image: building $image" >&2
podman build --quiet --build-arg "BASE=$base" --build-arg "PACKAGES=$packages" -t "$image" -f "$here/Containerfile" "$here" >&2
podman rmi "$base" >/dev/null
# Drop images of older recipes.
podman images --format '{{.Repository}}:{{.Tag}}' \
  | awk -v r="$repo" -v keep="$image" 'index($0, r":") == 1 && $0 != keep' \
  | xargs -r podman rmi >/dev/null 2>&1 || true
echo "$image"
