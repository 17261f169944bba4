#!/usr/bin/env bash
# The store an earlier kiln release left behind, for tests/store/store_upgrade.rs: run by a kiln
# binary built from that release's commit, it imports busybox, builds an image with a COPY, a RUN
# and a cache mount (step cache records, tags, blobs), then serves one build through the daemon
# (build records), and packs the whole root.
#
#   git worktree add /tmp/old 0c3a63f && (cd /tmp/old && cargo build --bin kiln)
#   testdata/upgrade/make-store.sh /tmp/old/target/debug/kiln testdata/upgrade/store-0c3a63f.tar.gz
set -euo pipefail
kiln=$(realpath "${1:?usage: make-store.sh OLD_KILN DEST.tar.gz}")
dest=$(realpath -m "${2:?usage: make-store.sh OLD_KILN DEST.tar.gz}")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill "${daemon:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
root=$work/root
bash "$here/../busybox/make-image.sh" "$work/busybox" latest >/dev/null
"$kiln" --root "$root" import "$work/busybox:latest" --tag busybox:latest
mkdir -p "$work/build/ctx"
printf 'old\n' > "$work/build/ctx/f"
cat > "$work/build/ctx/Dockerfile" <<'DF'
FROM busybox
COPY f /f
RUN --mount=type=cache,target=/cache echo x >> /cache/n && cat /f > /g
DF
"$kiln" --root "$root" build --progress plain -t old:1 "$work/build/ctx"
"$kiln" --root "$root" daemon --socket "$work/kiln.sock" --context-root "$work/build" &
daemon=$!
for _ in $(seq 100); do [ -S "$work/kiln.sock" ] && break; sleep 0.1; done
id=$(curl -sf --unix-socket "$work/kiln.sock" -H 'Content-Type: application/json' \
  -d '{"context":"ctx","tags":["old:2"]}' http://kiln/v1/builds | sed 's/.*"id":"\([^"]*\)".*/\1/')
curl -sf --unix-socket "$work/kiln.sock" "http://kiln/v1/builds/$id/events" > /dev/null
kill "$daemon"; wait "$daemon" || true
rm -rf "$root/tmp" "$root/builds"
tar -C "$root" --sort=name -czf "$dest" .
echo "$dest: $(du -h "$dest" | cut -f1)"
