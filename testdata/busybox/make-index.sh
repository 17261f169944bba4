#!/usr/bin/env bash
# A two-platform busybox base: Debian's busybox-static for amd64 and for arm64, each assembled by
# make-image.sh, joined in one OCI image layout under an image index (the shape of a multi-platform
# image on Docker Hub), for kiln's multi-platform tests.
#
#   testdata/busybox/make-index.sh DEST_DIR [TAG]     (TAG defaults to "latest")
#
# The arm64 package comes from Debian's archive only (`apt-get download busybox-static:arm64`), so
# the arm64 architecture must be known to dpkg (scripts/test.sh: dpkg --add-architecture arm64).
set -euo pipefail
dest=${1:?usage: make-index.sh DEST_DIR [TAG]}
tag=${2:-latest}
here=$(cd "$(dirname "$0")" && pwd)
[ "$(dpkg --print-architecture)" = amd64 ] \
  || { echo "make-index.sh: needs an amd64 host (it pairs the host's busybox with arm64's)" >&2; exit 1; }
dpkg --print-foreign-architectures | grep -qx arm64 \
  || { echo "make-index.sh: dpkg does not know arm64: dpkg --add-architecture arm64 && apt-get update (scripts/test.sh does)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q busybox-static:arm64 >/dev/null 2>&1) \
  || { echo "make-index.sh: apt-get download busybox-static:arm64 failed (apt-get update?)" >&2; exit 1; }
dpkg-deb -x "$work"/busybox-static_*_arm64.deb "$work/arm64-pkg"

"$here/make-image.sh" "$work/amd64" "$tag" > "$work/amd64.digest"
BUSYBOX="$work/arm64-pkg/bin/busybox" ARCH=arm64 "$here/make-image.sh" "$work/arm64" "$tag" > "$work/arm64.digest"

mkdir -p "$dest/blobs/sha256"
cp "$work"/amd64/blobs/sha256/* "$work"/arm64/blobs/sha256/* "$dest/blobs/sha256/"
entry() { # ARCH → the index entry of that platform's manifest
  local d; d=$(cut -d: -f2 < "$work/$1.digest")
  printf '{"digest":"sha256:%s","mediaType":"application/vnd.oci.image.manifest.v1+json","platform":{"architecture":"%s","os":"linux"},"size":%s}' \
    "$d" "$1" "$(stat -c %s "$work/$1/blobs/sha256/$d")"
}
printf '{"manifests":[%s,%s],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}' \
  "$(entry amd64)" "$(entry arm64)" > "$work/index.blob"
index_digest=$(sha256sum "$work/index.blob" | cut -d' ' -f1)
cp "$work/index.blob" "$dest/blobs/sha256/$index_digest"
printf '{"imageLayoutVersion":"1.0.0"}' > "$dest/oci-layout"
printf '{"manifests":[{"annotations":{"org.opencontainers.image.ref.name":"%s"},"digest":"sha256:%s","mediaType":"application/vnd.oci.image.index.v1+json","size":%s}],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}' \
  "$tag" "$index_digest" "$(stat -c %s "$work/index.blob")" > "$dest/index.json"
echo "sha256:$index_digest"
