#!/bin/sh
# Build the local test image gitkube-test/busybox:latest (and optionally another
# tag given as $1) from the host's static busybox: no registry is reachable, so
# the image is a directory with /bin/busybox and its applet links, imported with
# `docker import`. Idempotent: does nothing when the image exists.
set -eu

IMAGE="${1:-gitkube-test/busybox:latest}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE exists"
    exit 0
fi

if ! file_out=$("$BUSYBOX" --list 2>/dev/null); then
    echo "error: $BUSYBOX is not a busybox binary (install busybox-static)" >&2
    exit 1
fi
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    echo "error: $BUSYBOX is dynamically linked; a static busybox is needed (busybox-static)" >&2
    exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/www" "$root/root" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $file_out; do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
echo 'gitkube test image' > "$root/www/index.html"

tar -C "$root" -cf - . | docker import \
    --change 'ENV PATH=/bin' \
    --change 'CMD ["/bin/sh"]' \
    - "$IMAGE" >/dev/null
echo "built $IMAGE"
