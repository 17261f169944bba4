#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine with only the Rust toolchain:
#   installs the Debian packages the tests use as real peers, creates the rootless test user with
#   subordinate id ranges, then runs rustfmt --check, clippy -D warnings and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker-registry skopeo umoci oci-image-tool pigz zstd busybox-static uidmap fuse-overlayfs
          openssl apache2-utils xz-utils bzip2 gzip tar file procps iproute2 python3 python3-venv
          mmdebstrap qemu-user-static openssh-client jq podman)
missing=()
# The multi-platform tests assemble an arm64 busybox base from Debian's arm64 busybox-static
# (testdata/busybox/make-index.sh downloads it with apt-get download), so dpkg must know arm64.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  if [ "$(id -u)" -ne 0 ]; then echo "scripts/test.sh: need root to add the arm64 architecture" >&2; exit 1; fi
  echo "==> dpkg --add-architecture arm64"
  dpkg --add-architecture arm64
  apt-get update -qq
fi
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then echo "scripts/test.sh: need root to install ${missing[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# A real non-root user with subordinate uid/gid ranges, for the rootless tests.
if [ "$(id -u)" -eq 0 ]; then
  id kilntest >/dev/null 2>&1 || useradd -m -s /bin/sh kilntest
  grep -q '^kilntest:' /etc/subuid || usermod --add-subuids 200000-265535 kilntest
  grep -q '^kilntest:' /etc/subgid || usermod --add-subgids 200000-265535 kilntest
fi

# spdx-tools' pyspdxtools validates the SBOMs kiln writes; it is on PyPI only, so into a venv.
if [ "$(id -u)" -eq 0 ] && [ ! -x /opt/kiln-test-venv/bin/pyspdxtools ]; then
  echo "==> pip install spdx-tools into /opt/kiln-test-venv"
  python3 -m venv /opt/kiln-test-venv
  /opt/kiln-test-venv/bin/pip install -q spdx-tools
fi

rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --locked --no-fail-fast -- --test-threads=2
