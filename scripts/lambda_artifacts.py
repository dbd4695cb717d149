#!/usr/bin/env python3
"""Lambda artefacts: package release binaries, and check what a build would deploy.

Standard library only (no readelf, objdump or GNU stat), so it runs the same on Linux and macOS.

  lambda_artifacts.py package TRIPLE OUT FUNCTION...   OUT/<function>/bootstrap and OUT/<function>.zip
  lambda_artifacts.py check ARCH BOOTSTRAP...          every binary is ARCH and needs glibc <= 2.34
  lambda_artifacts.py inspect FILE...                  prints each file's machine and newest glibc

A binary is refused when its machine is not the Lambda architecture it is meant for, or when it
needs a glibc newer than provided.al2023's (2.34): Lambda would fail to start it, after the
deploy, with an error only its logs show.
"""

import os
import struct
import sys
import zipfile

# provided.al2023 ships glibc 2.34.
LAMBDA_GLIBC = (2, 34)

# ELF e_machine values of the two Lambda architectures.
MACHINES = {62: "x86_64", 183: "arm64"}
ARCH_OF_TRIPLE = {"x86_64": "x86_64", "aarch64": "arm64"}

PT_LOAD, PT_DYNAMIC = 1, 2
DT_NULL, DT_STRTAB, DT_VERNEED, DT_VERNEEDNUM = 0, 5, 0x6FFFFFFE, 0x6FFFFFFF


class NotLambdaBinary(Exception):
    """The file cannot run on Lambda (wrong format, machine or glibc)."""


class Elf:
    """The parts of a 64-bit little-endian ELF file that say where it can run."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = f.read()
        d = self.data
        if d[:4] != b"\x7fELF":
            raise NotLambdaBinary(f"{path} is not an ELF executable")
        if d[4] != 2 or d[5] != 1:
            raise NotLambdaBinary(f"{path} is not a 64-bit little-endian ELF file")
        (self.machine_id,) = struct.unpack_from("<H", d, 18)
        phoff, = struct.unpack_from("<Q", d, 32)
        phentsize, phnum = struct.unpack_from("<HH", d, 54)
        self.segments = [
            struct.unpack_from("<IIQQQQQQ", d, phoff + i * phentsize) for i in range(phnum)
        ]

    @property
    def machine(self):
        """`x86_64`, `arm64`, or a description of another machine."""
        return MACHINES.get(self.machine_id, f"machine {self.machine_id}")

    def _offset(self, vaddr):
        """File offset of a virtual address, through the loadable segments."""
        for p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ in self.segments:
            if p_type == PT_LOAD and p_vaddr <= vaddr < p_vaddr + p_filesz:
                return p_offset + (vaddr - p_vaddr)
        raise NotLambdaBinary(f"address {vaddr:#x} is outside every loadable segment")

    def _string(self, offset):
        end = self.data.index(b"\0", offset)
        return self.data[offset:end].decode("ascii", "replace")

    def needed_versions(self):
        """Symbol versions the dynamic loader must provide, e.g. {("libc.so.6", "GLIBC_2.34")}.

        Read as the loader reads them: the dynamic segment's DT_VERNEED table (section headers,
        which strip may drop, are not needed)."""
        dynamic = [s for s in self.segments if s[0] == PT_DYNAMIC]
        if not dynamic:
            return set()  # statically linked: needs no glibc at all
        _, _, offset, _, _, size, _, _ = dynamic[0]
        tags = {}
        for i in range(0, size, 16):
            tag, value = struct.unpack_from("<qQ", self.data, offset + i)
            if tag == DT_NULL:
                break
            tags.setdefault(tag, value)
        if DT_VERNEED not in tags:
            return set()
        strtab = self._offset(tags[DT_STRTAB])
        entry = self._offset(tags[DT_VERNEED])
        versions = set()
        for _ in range(tags.get(DT_VERNEEDNUM, 0)):
            _, count, file_name, aux, next_entry = struct.unpack_from("<HHIII", self.data, entry)
            library = self._string(strtab + file_name)
            at = entry + aux
            for _ in range(count):
                _, _, _, name, next_aux = struct.unpack_from("<IHHII", self.data, at)
                versions.add((library, self._string(strtab + name)))
                at += next_aux
            if next_entry == 0:
                break
            entry += next_entry
        return versions

    def newest_glibc(self):
        """The newest `GLIBC_x.y` version needed, as a tuple, or None."""
        found = []
        for _, version in self.needed_versions():
            if version.startswith("GLIBC_") and version[6:7].isdigit():
                found.append(tuple(int(p) for p in version[6:].split(".") if p.isdigit()))
        return max(found) if found else None


def dotted(version):
    return ".".join(map(str, version)) if version else "none"


def check(path, arch):
    """Raises NotLambdaBinary unless `path` is an `arch` binary Lambda's glibc can start."""
    elf = Elf(path)
    if elf.machine != arch:
        raise NotLambdaBinary(
            f"{path} is {elf.machine}, but it is deployed to {arch} functions: "
            f"Lambda could not start it. Build for {arch} (make build ARCH={arch}), or deploy "
            f"Architecture={elf.machine}."
        )
    glibc = elf.newest_glibc()
    if glibc and glibc > LAMBDA_GLIBC:
        raise NotLambdaBinary(
            f"{path} needs glibc {dotted(glibc)}; provided.al2023 has {dotted(LAMBDA_GLIBC)}. "
            "It was linked against the build host's C library: build with `make build`, "
            "which targets glibc 2.34 through cargo-zigbuild."
        )
    return elf


def package(triple, out, functions):
    arch = ARCH_OF_TRIPLE.get(triple.split("-")[0])
    if arch is None:
        raise NotLambdaBinary(f"unsupported target {triple}")
    os.makedirs(out, exist_ok=True)
    for fn in functions:
        binary = os.path.join("target", triple, "release", fn)
        if not os.access(binary, os.X_OK):
            raise NotLambdaBinary(f"{binary} was not built")
        elf = check(binary, arch)
        os.makedirs(os.path.join(out, fn), exist_ok=True)
        bootstrap = os.path.join(out, fn, "bootstrap")
        with open(binary, "rb") as src:
            data = src.read()
        with open(bootstrap, "wb") as dst:
            dst.write(data)
        os.chmod(bootstrap, 0o755)
        archive = os.path.join(out, f"{fn}.zip")
        # A fixed date: the same binary makes the same zip, byte for byte.
        info = zipfile.ZipInfo("bootstrap", date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o100755 << 16  # a regular, executable file
        info.compress_type = zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr(info, data)
        print(
            f"{fn:<14} {len(data):>9} bytes stripped, {os.path.getsize(archive):>9} bytes zipped "
            f"({elf.machine}, glibc >= {dotted(elf.newest_glibc())})"
        )


def main(argv):
    if len(argv) < 3 or argv[1] not in ("package", "check", "inspect"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        if argv[1] == "package":
            package(argv[2], argv[3], argv[4:])
        elif argv[1] == "check":
            arch = argv[2]
            if arch not in MACHINES.values():
                raise NotLambdaBinary(f"architecture must be arm64 or x86_64, not {arch!r}")
            if len(argv) < 4:
                raise NotLambdaBinary("no bootstrap to check: was the build run?")
            for path in argv[3:]:
                elf = check(path, arch)
                print(f"ok  {path}: {elf.machine}, glibc >= {dotted(elf.newest_glibc())}")
        else:
            for path in argv[2:]:
                elf = Elf(path)
                print(f"{path}: {elf.machine}, glibc >= {dotted(elf.newest_glibc())}")
    except (NotLambdaBinary, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
