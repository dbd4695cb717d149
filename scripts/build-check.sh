#!/usr/bin/env bash
# Builds the committed REF with `make build ARCH=x86_64` inside a Debian 13 (trixie, glibc 2.41)
# chroot, as a developer on Ubuntu 24.04 or a GitHub `ubuntu-latest` runner would, and reports
# each binary's newest glibc. The host's glibc (2.36 here) is older than the 2.38 that breaks a
# build with the host's C compiler, so only a newer userland proves anything.
#   scripts/build-check.sh REF       (root; debootstrap installed by apt-get when missing)
# The chroot (target/build-check/debian13) and the cargo target folder are kept between runs.
# The Rust toolchain and the cargo registry cache are the host's, mounted read-only / shared.
set -euo pipefail
ref=${1:-HEAD}
repo=$(git rev-parse --show-toplevel)
cd "$repo"
commit=$(git rev-parse --short "$ref")
work=$repo/target/build-check
root=$work/debian13
src=$root/src
[[ $(id -u) == 0 ]] || { echo "error: make build-check needs root (debootstrap, chroot, mount)" >&2; exit 1; }

if [[ ! -x $root/usr/bin/gcc ]]; then
  command -v debootstrap >/dev/null || { apt-get update -q && apt-get install -y -q debootstrap; }
  echo "== debootstrap Debian 13 (trixie) into $root"
  debootstrap --variant=minbase --include=build-essential,python3,python3-venv,ca-certificates \
    trixie "$root" http://deb.debian.org/debian
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The host's trust store, so the chroot reaches the package registries the way the host does
# (e.g. through a TLS-inspecting proxy whose CA only the host has).
ca=/etc/ssl/certs/ca-certificates.crt
[[ -f $ca ]] && cp "$ca" "$root$ca"

mounts=()
bind() { # bind HOST_DIR CHROOT_DIR [ro]
  mkdir -p "$root$2"
  mount --bind "$1" "$root$2"
  mounts=("$root$2" "${mounts[@]}")
  [[ ${3:-} == ro ]] && mount -o remount,bind,ro "$root$2"
  return 0
}
cleanup() { for m in "${mounts[@]}"; do umount "$m" || umount -l "$m"; done; }
trap cleanup EXIT
bind /proc /proc
bind /dev /dev
bind "${RUSTUP_HOME:-$HOME/.rustup}" /opt/rustup ro
bind "${CARGO_HOME:-$HOME/.cargo}" /opt/cargo

echo "== sources of $ref ($commit) into $src"
# A run killed before its clean-up leaves the target folder mounted: never delete through it.
mountpoint -q "$src/target" && umount "$src/target"
rm -rf "$src"
mkdir -p "$src" "$work/target"
git archive "$ref" | tar -x -C "$src"
# The cargo target folder survives between runs (and between the REFs built): mounted in place.
bind "$work/target" /src/target

echo "== inside the chroot: $(chroot "$root" ldd --version | head -1)"
status=0
chroot "$root" /usr/bin/env -i HOME=/root PATH=/opt/cargo/bin:/usr/local/bin:/usr/bin:/bin \
  RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo LANG=C.UTF-8 \
  SSL_CERT_FILE=$ca PIP_CERT=$ca REQUESTS_CA_BUNDLE=$ca \
  /bin/bash -c 'cd /src && make build ARCH=x86_64' || status=$?

echo "== binaries of $commit built in Debian 13:"
for fn in ingest store forward post-process query; do
  bin=$work/target/x86_64-unknown-linux-gnu/release/$fn
  [[ -f $bin ]] && python3 scripts/lambda_artifacts.py inspect "$bin"
done
if ((status)); then
  echo "build-check: $commit was REFUSED in Debian 13 (make build exited $status)"
else
  echo "build-check: $commit built and packaged in Debian 13; every binary needs glibc <= 2.34"
fi
exit $status
