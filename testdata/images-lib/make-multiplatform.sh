#!/usr/bin/env bash
# Write a tiny OCI image layout for the golden image suite's FROM --platform cases:
#
#   make-multiplatform.sh DEST os/arch[/variant]...       an image index with one manifest each
#   make-multiplatform.sh --single DEST os/arch[/variant]  index.json points at the one manifest
#
# Each platform's image has one layer holding /platform.txt (its platform) and a config naming it.
set -euo pipefail
single=0
if [ "$1" = --single ]; then single=1; shift; fi
dest=$1; shift
mkdir -p "$dest/blobs/sha256"
put() { # file -> prints "digest size"
  local d; d=$(sha256sum "$1" | cut -d' ' -f1)
  cp "$1" "$dest/blobs/sha256/$d"; echo "$d $(stat -c %s "$1")"
}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
entries=""
for p in "$@"; do
  IFS=/ read -r os arch variant <<<"$p"
  mkdir -p "$work/$arch$variant/root"
  printf '%s\n' "$p" > "$work/$arch$variant/root/platform.txt"
  touch -d @0 "$work/$arch$variant/root/platform.txt"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work/$arch$variant/root" -cf "$work/$arch$variant/layer.tar" platform.txt
  diff_id=$(sha256sum "$work/$arch$variant/layer.tar" | cut -d' ' -f1)
  gzip -n "$work/$arch$variant/layer.tar"
  read -r ld ls < <(put "$work/$arch$variant/layer.tar.gz")
  vjson=""; [ -n "$variant" ] && vjson=",\"variant\":\"$variant\""
  printf '{"architecture":"%s","os":"%s"%s,"config":{"Env":["PATH=/usr/bin:/bin"],"Cmd":["/platform"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"make-multiplatform.sh"}]}' \
    "$arch" "$os" "$vjson" "$diff_id" > "$work/$arch$variant/config.json"
  read -r cd cs < <(put "$work/$arch$variant/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$cd" "$cs" "$ld" "$ls" > "$work/$arch$variant/manifest.json"
  read -r md ms < <(put "$work/$arch$variant/manifest.json")
  [ -n "$entries" ] && entries="$entries,"
  entries="$entries{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$md\",\"size\":$ms,\"platform\":{\"architecture\":\"$arch\",\"os\":\"$os\"$vjson}}"
done
printf '{"imageLayoutVersion":"1.0.0"}' > "$dest/oci-layout"
if [ $single = 1 ]; then
  top=${entries%%,\"platform\"*}},
  top=${top%,}
  printf '{"schemaVersion":2,"manifests":[%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' "${top%\}}" > "$dest/index.json"
else
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' "$entries" > "$work/index.json"
  read -r id is < <(put "$work/index.json")
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' "$id" "$is" > "$dest/index.json"
fi
