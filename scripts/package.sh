#!/usr/bin/env bash
# Packages release binaries as Lambda artefacts: OUT/<function>/bootstrap and OUT/<function>.zip.
# Refuses binaries of the wrong architecture or needing a newer glibc than provided.al2023 (2.34).
#   scripts/package.sh TRIPLE OUT FUNCTION...
set -euo pipefail
triple=${1:?triple}; out=${2:?out dir}; shift 2
case $triple in
  x86_64-*) machine="X86-64" ;;
  aarch64-*) machine="AArch64" ;;
  *) echo "unsupported target $triple" >&2; exit 1 ;;
esac
mkdir -p "$out"
for fn in "$@"; do
  bin=target/$triple/release/$fn
  [[ -x $bin ]] || { echo "error: $bin was not built" >&2; exit 1; }
  readelf -h "$bin" | grep -q "Machine:.*$machine" || { echo "error: $bin is not $machine" >&2; exit 1; }
  newest=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
  if [[ -n $newest ]] && [[ $(printf '%s\n2.34\n' "$newest" | sort -V | tail -1) != 2.34 ]]; then
    echo "error: $bin needs glibc $newest; provided.al2023 has 2.34" >&2; exit 1
  fi
  mkdir -p "$out/$fn"
  cp "$bin" "$out/$fn/bootstrap"
  python3 - "$out/$fn/bootstrap" "$out/$fn.zip" <<'PY'
import sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
info = zipfile.ZipInfo("bootstrap", date_time=(2020, 1, 1, 0, 0, 0))
info.external_attr = 0o100755 << 16  # executable
info.compress_type = zipfile.ZIP_DEFLATED
with open(src, "rb") as f, zipfile.ZipFile(dst, "w") as z:
    z.writestr(info, f.read())
PY
  printf '%-14s %9s bytes stripped, %9s bytes zipped (glibc >= %s)\n' "$fn" \
    "$(stat -c %s "$out/$fn/bootstrap")" "$(stat -c %s "$out/$fn.zip")" "${newest:-none}"
done
