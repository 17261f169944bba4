#!/usr/bin/env bash
# A real Debian base image for kiln's package-build tests: mmdebstrap's minbase of bookworm from
# Debian's archive, written as a one-layer OCI image layout (no Docker, no kiln involved).
#
#   testdata/packages/make-debian-image.sh DEST_DIR [TAG] [MIRROR]
#
# No device nodes (--skip=output/dev), as registry images have none: /dev is the runtime's.
# Reproducible for a given archive state: SOURCE_DATE_EPOCH=0, numeric owners, gzip -n.
set -euo pipefail
dest=${1:?usage: make-debian-image.sh DEST_DIR [TAG] [MIRROR]}
tag=${2:-bookworm}
mirror=${3:-http://deb.debian.org/debian}
command -v mmdebstrap >/dev/null || { echo "make-debian-image.sh: mmdebstrap is not installed (apt-get install mmdebstrap)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
SOURCE_DATE_EPOCH=0 mmdebstrap --quiet --variant=minbase --format=tar --skip=output/dev \
  --aptopt='Acquire::Retries "3"' bookworm "$work/layer.tar" "$mirror"
layer=$work/layer.tar
diff_id=$(sha256sum "$layer" | cut -d' ' -f1)
gzip -n -1 -c "$layer" > "$work/layer.tar.gz"
layer_digest=$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
layer_size=$(stat -c %s "$work/layer.tar.gz")

case "$(uname -m)" in
  x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;;
esac
mkdir -p "$dest/blobs/sha256"
mv "$work/layer.tar.gz" "$dest/blobs/sha256/$layer_digest"
printf '{"architecture":"%s","config":{"Cmd":["bash"],"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},"created":"1970-01-01T00:00:00Z","history":[{"created":"1970-01-01T00:00:00Z","created_by":"mmdebstrap --variant=minbase bookworm"}],"os":"linux","rootfs":{"diff_ids":["sha256:%s"],"type":"layers"}}' \
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
