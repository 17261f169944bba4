#!/usr/bin/env bash
# kiln's own sidecar image, built by kiln itself from deploy/Dockerfile, reproducibly.
#
#   scripts/build-image.sh [KILN_BINARY] [OUTPUT]
#
#   KILN_BINARY  the kiln copied into the image (default target/release/kiln: cargo build --release)
#   OUTPUT       a kiln --output value (default type=oci,dest=target/kiln-image)
#   env TAG      the image's tag (default kiln:latest); push with OUTPUT=type=registry
#   env KILN     the kiln that builds it (default: KILN_BINARY itself)
#   env BASE     the Debian base (default debian:bookworm; pin it by digest for reproducibility)
#   env SOURCE_DATE_EPOCH  default: the last commit's time, so one commit gives one digest
#
# Extra arguments after OUTPUT go to `kiln build` (e.g. --root DIR, --no-cache).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/kiln}
out=${2:-type=oci,dest=target/kiln-image}
shift $(( $# > 2 ? 2 : $# ))
[ -x "$bin" ] || { echo "build-image.sh: $bin is not an executable (cargo build --release?)" >&2; exit 1; }
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp deploy/Dockerfile "$ctx/Dockerfile"
cp "$bin" "$ctx/kiln"
exec "${KILN:-$bin}" build --progress plain -t "${TAG:-kiln:latest}" -o "$out" \
  --source-date-epoch "$SOURCE_DATE_EPOCH" --build-arg "BASE=${BASE:-debian:bookworm}" "$@" "$ctx"
