#!/usr/bin/env bash
# Build a tiny local image from Debian's busybox-static (there is no registry to pull from):
#   scripts/lib/busybox-image.sh TAG
set -euo pipefail
TAG="${1:?usage: busybox-image.sh TAG}"
docker image inspect "$TAG" >/dev/null 2>&1 && exit 0
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc,tmp,www,proc,sys,dev,run}
cp /bin/busybox "$root/bin/busybox"
for a in $("$root/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done
echo 'root:x:0:0:root:/:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
tar -C "$root" -c . | docker import -c 'CMD ["/bin/sh"]' - "$TAG" >/dev/null
