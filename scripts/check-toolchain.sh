#!/usr/bin/env bash
# Fails with a clear message unless Rust can build Lambda binaries for TRIPLE here.
# zig (from .venv/) is the C compiler and linker for every target, so the only other need is
# the target's Rust standard library.
#   scripts/check-toolchain.sh TRIPLE
set -euo pipefail
triple=${1:?target triple}
sysroot=$(rustc --print sysroot)
if [[ ! -d "$sysroot/lib/rustlib/$triple/lib" ]]; then
  cat >&2 <<MSG
error: the Rust standard library for $triple is not installed, so Lambda binaries for this
architecture cannot be built here (refusing rather than shipping a binary that cannot run).
  - install it (needs internet access): rustup target add $triple
    (zig, installed into .venv/ by make, is the C compiler and linker: nothing else is needed)
MSG
  if [[ $triple == aarch64-* ]]; then
    cat >&2 <<MSG
  - or build x86_64 instead: make deploy ARCH=x86_64 (the stack's functions are then x86_64).
MSG
  fi
  exit 1
fi
