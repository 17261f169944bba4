#!/usr/bin/env bash
# Multi-platform builds, the README's "Multi-platform builds" table: the cross-compile pattern (a
# CPU-bound step in a `FROM --platform=$BUILDPLATFORM` stage) against the same step emulated (in the
# final stage, the arm64 one under QEMU), for --platform linux/amd64,linux/arm64, cold (--no-cache)
# and warm. Standalone (not run by cargo test or cargo bench); needs what scripts/test.sh installs
# (busybox-static, qemu-user-static, the arm64 architecture).
#
#   cargo build --release && bash benches/e2e/platforms.sh          # N=3 cold runs each
#   KILN=/path/to/kiln N=1 bash benches/e2e/platforms.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
kiln=${KILN:-$here/target/release/kiln}
n=${N:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bash "$here/testdata/busybox/make-index.sh" "$work/base" multi >/dev/null
"$kiln" --root "$work/root" import "$work/base:multi" --tag busybox:multi >/dev/null
# The emulator mount, whatever the host's binfmt_misc state.
printf '[worker.oci]\nbinfmt = false\n' > "$work/kiln.toml"
loop='i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo "app for $TARGETARCH" > /app'
mkdir -p "$work/cross" "$work/emu"
printf 'FROM --platform=$BUILDPLATFORM busybox:multi AS build\nARG TARGETARCH\nRUN %s\nFROM busybox:multi\nCOPY --from=build /app /app\n' "$loop" > "$work/cross/Dockerfile"
printf 'FROM busybox:multi\nARG TARGETARCH\nRUN %s\n' "$loop" > "$work/emu/Dockerfile"
build() { # DIR [FLAGS…] → seconds
  /usr/bin/time -f %e nice -n 10 "$kiln" --root "$work/root" --config "$work/kiln.toml" build \
    --platform linux/amd64,linux/arm64 "${@:2}" "$work/$1" 2>&1 >/dev/null | tail -1
}
for d in cross emu; do
  for i in $(seq "$n"); do echo "$d cold: $(build "$d" --no-cache) s"; done
  echo "$d warm: $(build "$d") s"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
