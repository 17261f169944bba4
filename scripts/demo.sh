#!/usr/bin/env bash
# kiln's main job, offline, on the embedded engine (no daemon): assemble a busybox base image from
# Debian's busybox-static, import it into a kiln store, build testdata/demo (multi-stage, RUN, COPY --from,
# --chown, --chmod, heredoc, metadata) and write the result as an OCI layout and a docker-archive.
#
#   bash scripts/demo.sh [OUT_DIR]      (default: out/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/demo}

if ! command -v busybox >/dev/null 2>&1 || ! file -L "$(command -v busybox)" 2>/dev/null | grep -q static; then
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static file >/dev/null
  else
    echo "scripts/demo.sh: install busybox-static first (apt-get install busybox-static)" >&2; exit 1
  fi
fi

step() { printf '\n==> %s\n' "$*"; }

step "compiling kiln (cargo build --release; the first run downloads crates from crates.io and takes several minutes on 2 cores)"
cargo build --release --locked
kiln=${CARGO_TARGET_DIR:-target}/release/kiln
rm -rf "$out"; mkdir -p "$out"
step "assembling a busybox base image from Debian's busybox-static: $out/busybox-oci"
testdata/busybox/make-image.sh "$out/busybox-oci" latest >/dev/null
step "importing it into a fresh kiln store: $out/state"
"$kiln" --root "$out/state" import "$out/busybox-oci:latest" --tag busybox:latest
step "building testdata/demo (multi-stage, RUN in a rootless sandbox, COPY --from, heredoc)"
"$kiln" --root "$out/state" build --progress plain -t demo:1.0 \
  --output "type=oci,dest=$out/demo-oci" --output "type=docker,dest=$out/demo.tar" testdata/demo
step "the store: images and a full integrity check"
"$kiln" --root "$out/state" images
"$kiln" --root "$out/state" fsck
step "done"
echo "OCI layout:     $out/demo-oci   (skopeo inspect oci:$out/demo-oci:1.0)"
echo "docker-archive: $out/demo.tar   (docker load -i $out/demo.tar)"
