"""The ELF reader of lambda_artifacts.py against real binaries of this machine, and against copies
edited to be the other architecture or to need a newer glibc (what a host with glibc >= 2.38
produces), so that each refusal is seen to happen."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lambda_artifacts as la  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lambda_artifacts.py")


def a_dynamic_binary():
    """The Python interpreter: an ELF binary needing GLIBC_x.y versions, on every Linux host."""
    path = os.path.realpath(sys.executable)
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            raise unittest.SkipTest("not an ELF host")  # macOS: no ELF binary to read here
    return path


class ElfReader(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.binary = a_dynamic_binary()

    def copy(self, edit=None):
        path = os.path.join(self.dir, "bootstrap")
        with open(self.binary, "rb") as f:
            data = bytearray(f.read())
        if edit:
            edit(data)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o755)
        return path

    def test_reads_machine_and_glibc_versions_like_the_loader(self):
        elf = la.Elf(self.binary)
        self.assertIn(elf.machine, ("x86_64", "arm64"))
        libraries = {lib for lib, _ in elf.needed_versions()}
        self.assertIn("libc.so.6", libraries)
        self.assertGreaterEqual(elf.newest_glibc(), (2, 2))

    def test_a_binary_of_the_other_architecture_is_refused_by_name(self):
        other = {"x86_64": 183, "arm64": 62}[la.Elf(self.binary).machine]
        path = self.copy(lambda d: d.__setitem__(slice(18, 20), other.to_bytes(2, "little")))
        arch = la.MACHINES[other]
        with self.assertRaisesRegex(la.NotLambdaBinary, "deployed to"):
            la.check(path, "x86_64" if arch == "arm64" else "arm64")

    def test_a_binary_needing_glibc_newer_than_2_34_is_refused(self):
        def newer(d):
            # Renames every GLIBC_2.x version string to GLIBC_2.9x: same length, now too new.
            at = 0
            while (at := d.find(b"GLIBC_2.", at)) >= 0:
                d[at + 8 : at + 9] = b"9"
                at += 9

        path = self.copy(newer)
        self.assertGreater(la.Elf(path).newest_glibc(), la.LAMBDA_GLIBC)
        with self.assertRaisesRegex(la.NotLambdaBinary, "needs glibc 2.9"):
            la.check(path, la.Elf(path).machine)

    def test_check_command_fails_with_the_reason_on_a_mismatch(self):
        machine = la.Elf(self.binary).machine
        wrong = "arm64" if machine == "x86_64" else "x86_64"
        path = self.copy()
        ok = subprocess.run([sys.executable, SCRIPT, "check", machine, path], capture_output=True, text=True)
        bad = subprocess.run([sys.executable, SCRIPT, "check", wrong, path], capture_output=True, text=True)
        self.assertEqual(bad.returncode, 1)
        self.assertIn(f"is {machine}, but it is deployed to {wrong} functions", bad.stderr)
        # The interpreter itself may need a glibc newer than Lambda's: only the machine matters here.
        self.assertNotIn("deployed to", ok.stderr)

    def test_not_an_elf_file_is_refused(self):
        path = os.path.join(self.dir, "bootstrap")
        with open(path, "wb") as f:
            f.write(b"#!/bin/sh\n")
        with self.assertRaisesRegex(la.NotLambdaBinary, "not an ELF"):
            la.Elf(path)


if __name__ == "__main__":
    unittest.main()
