#!/usr/bin/env bash
# Fails with a clear message unless Rust can build Lambda binaries for TRIPLE here.
#   scripts/check-toolchain.sh TRIPLE
set -euo pipefail
triple=${1:?target triple}
host=$(rustc -vV | sed -n 's/^host: //p')
sysroot=$(rustc --print sysroot)
if [[ ! -d "$sysroot/lib/rustlib/$triple/lib" ]]; then
  cat >&2 <<MSG
error: the Rust standard library for $triple is not installed, so Lambda binaries for this
architecture cannot be built here (refusing rather than shipping a binary that cannot run).
  - on a machine with internet access: rustup target add $triple
MSG
  if [[ $triple == aarch64-* ]]; then
    cat >&2 <<MSG
    and a linker for it, e.g. on Debian/Ubuntu: apt-get install gcc-aarch64-linux-gnu
    (or build on an arm64 machine, e.g. a Graviton instance or an Apple-silicon Linux VM);
  - or build x86_64 instead: make build ARCH=x86_64 (deploy with Architecture=x86_64).
MSG
  fi
  exit 1
fi
if [[ $triple != "$host" ]]; then
  var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_LINKER"
  linker=${!var:-${triple%%-*}-linux-gnu-gcc}
  if ! command -v "$linker" >/dev/null; then
    echo "error: no linker for $triple: install $linker (Debian: gcc-${triple%%-*}-linux-gnu) or set $var" >&2
    exit 1
  fi
fi
