#!/usr/bin/env bash
# Assemble Debian's busybox-static into a one-layer OCI image layout, with nothing but coreutils-level
# tools (tar, gzip, sha256sum), so that kiln's tests get a real base image whose bytes kiln did not write.
#
#   testdata/busybox/make-image.sh DEST_DIR [TAG]     (TAG defaults to "latest")
#
# BUSYBOX=PATH ARCH=arm64 use another architecture's busybox-static (make-index.sh does); its applet
# list is read from the host's busybox (the same Debian version), which can run here.
#
# The layout is reproducible: fixed mtimes, sorted entries, numeric owners, gzip -n.
set -euo pipefail
dest=${1:?usage: make-image.sh DEST_DIR [TAG]}
tag=${2:-latest}
bb=$(command -v busybox || true)
[ -x /bin/busybox ] && bb=/bin/busybox
[ -n "$bb" ] || { echo "make-image.sh: busybox-static is not installed (apt-get install busybox-static)" >&2; exit 1; }
lister=$bb
bb=${BUSYBOX:-$bb}
file -L "$bb" 2>/dev/null | grep -q "statically linked" || ldd "$bb" 2>&1 | grep -q "not a dynamic" \
  || { echo "make-image.sh: $bb is not statically linked (install busybox-static)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,var/tmp,home,dev,proc,sys}
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 700 "$root/root"
cp "$bb" "$root/bin/busybox"
chmod 755 "$root/bin/busybox"
# One symlink per applet, where busybox itself would install it.
"$lister" --list-full | while read -r applet; do
  [ "$applet" = bin/busybox ] && continue
  mkdir -p "$root/$(dirname "$applet")"
  ln -sf /bin/busybox "$root/$applet"
done
cat > "$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$root/etc/group" <<'G'
root:x:0:
daemon:x:1:
bin:x:2:
wheel:x:10:root
users:x:100:
nogroup:x:65534:
G
printf 'root:*::0:::::\n' > "$root/etc/shadow"; chmod 640 "$root/etc/shadow"
find "$root" -exec touch -h -d @0 {} +

layer=$work/layer.tar
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | sed 's|^\./||' \
  | tar --no-recursion --numeric-owner --owner=0 --group=0 --mtime=@0 --format=pax \
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -cf "$layer" -T -)
diff_id=$(sha256sum "$layer" | cut -d' ' -f1)
gzip -n -6 -c "$layer" > "$work/layer.tar.gz"
layer_digest=$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
layer_size=$(stat -c %s "$work/layer.tar.gz")

case "$(uname -m)" in
  x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; armv7l) arch=arm ;; *) arch=$(uname -m) ;;
esac
arch=${ARCH:-$arch}
mkdir -p "$dest/blobs/sha256"
cp "$work/layer.tar.gz" "$dest/blobs/sha256/$layer_digest"
printf '{"architecture":"%s","config":{"Cmd":["sh"],"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},"created":"1970-01-01T00:00:00Z","history":[{"created":"1970-01-01T00:00:00Z","created_by":"testdata/busybox/make-image.sh"}],"os":"linux","rootfs":{"diff_ids":["sha256:%s"],"type":"layers"}}' \
  "$arch" "$diff_id" > "$work/config.json"
config_digest=$(sha256sum "$work/config.json" | cut -d' ' -f1)
config_size=$(stat -c %s "$work/config.json")
cp "$work/config.json" "$dest/blobs/sha256/$config_digest"
printf '{"config":{"digest":"sha256:%s","mediaType":"application/vnd.oci.image.config.v1+json","size":%s},"layers":[{"digest":"sha256:%s","mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":%s}],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}' \
  "$config_digest" "$config_size" "$layer_digest" "$layer_size" > "$work/manifest.json"
manifest_digest=$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
manifest_size=$(stat -c %s "$work/manifest.json")
cp "$work/manifest.json" "$dest/blobs/sha256/$manifest_digest"
printf '{"imageLayoutVersion":"1.0.0"}' > "$dest/oci-layout"
printf '{"manifests":[{"annotations":{"org.opencontainers.image.ref.name":"%s"},"digest":"sha256:%s","mediaType":"application/vnd.oci.image.manifest.v1+json","platform":{"architecture":"%s","os":"linux"},"size":%s}],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}' \
  "$tag" "$manifest_digest" "$arch" "$manifest_size" > "$dest/index.json"
echo "sha256:$manifest_digest"
