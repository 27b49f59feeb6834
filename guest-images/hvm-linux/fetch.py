#!/usr/bin/env python3
"""Fetch an unmodified operating system for the HVM path: Debian
bookworm's i686 Linux kernel (linux-image-686, an i386 package) and a tiny
initramfs around busybox-static:i386.  Nothing is installed on the host:
the packages are downloaded with `apt-get download` and unpacked with
`dpkg -x` into the output directory (default guest-images/build/hvm-linux).

    python3 guest-images/hvm-linux/fetch.py [OUTDIR]

Writes OUTDIR/vmlinuz, OUTDIR/initrd.cpio.gz and OUTDIR/VERSION.  Needs
the i386 architecture in dpkg (added, with `apt-get update`, when it is
missing and we are root).  Exit status 2 and one line on stderr when the
packages cannot be had.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "build", "hvm-linux")

INIT = b"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "hvm-linux: init running on $(nproc) CPU(s)"
export PS1='hvm-linux# '
exec setsid cttyhack sh
"""


def die(msg: str) -> None:
    print(f"fetch.py: {msg}", file=sys.stderr)
    sys.exit(2)


def run(*cmd, cwd=None) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        die(f"{' '.join(cmd)} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    return r.stdout


def ensure_i386() -> None:
    archs = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True,
                           text=True).stdout.split()
    if "i386" in archs and _candidate("busybox-static:i386"):
        return
    if os.geteuid() != 0:
        die("dpkg has no i386 architecture (run as root: dpkg --add-architecture i386 && "
            "apt-get update)")
    if "i386" not in archs:
        run("dpkg", "--add-architecture", "i386")
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True)


def _candidate(pkg: str) -> str:
    out = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.strip().startswith("Candidate:"):
            v = line.split(":", 1)[1].strip()
            return "" if v == "(none)" else v
    return ""


def kernel_package() -> str:
    """The linux-image-6.1.0-N-686 that linux-image-686 depends on."""
    out = subprocess.run(["apt-cache", "depends", "linux-image-686:i386"], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            name = line.split(":", 1)[1].strip().split(":")[0]
            if name.endswith("-686") or name.endswith("-686-unsigned"):
                return name + ":i386"
    die("apt-cache knows no linux-image-686:i386 (is the i386 architecture enabled?)")


def cpio_newc(entries) -> bytes:
    """entries: (name, mode, data, rdev_major, rdev_minor)"""
    out = io.BytesIO()
    ino = 1
    for name, mode, data, maj, mnr in entries + [("TRAILER!!!", 0, b"", 0, 0)]:
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, maj, mnr, len(nb), 0))
        out.write(hdr.encode() + nb)
        out.write(b"\0" * (-(110 + len(nb)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
        ino += 1
    return out.getvalue()


def main() -> None:
    out = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT)
    if all(os.path.exists(os.path.join(out, f)) for f in ("vmlinuz", "initrd.cpio.gz", "VERSION")):
        print(open(os.path.join(out, "VERSION")).read().strip())
        return
    for tool in ("apt-get", "apt-cache", "dpkg"):
        if not shutil.which(tool):
            die(f"{tool} not found: this needs a Debian host")
    ensure_i386()
    kpkg = kernel_package()
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hvm-linux-") as tmp:
        os.chmod(tmp, 0o755)                # apt's _apt user downloads into it
        run("apt-get", "download", "-q", kpkg, "busybox-static:i386", cwd=tmp)
        debs = glob.glob(os.path.join(tmp, "*.deb"))
        root = os.path.join(tmp, "root")
        for d in debs:
            run("dpkg", "-x", d, root)
        kernels = glob.glob(os.path.join(root, "boot", "vmlinuz-*"))
        if not kernels:
            die(f"{kpkg} has no /boot/vmlinuz-*")
        busybox = os.path.join(root, "bin", "busybox")
        if not os.path.exists(busybox):
            die("busybox-static:i386 has no /bin/busybox")
        shutil.copy(kernels[0], os.path.join(out, "vmlinuz"))
        entries = [("dev", 0o40755, b"", 0, 0), ("dev/console", 0o20600, b"", 5, 1),
                   ("bin", 0o40755, b"", 0, 0), ("proc", 0o40755, b"", 0, 0),
                   ("sys", 0o40755, b"", 0, 0), ("tmp", 0o41777, b"", 0, 0),
                   ("bin/busybox", 0o100755, open(busybox, "rb").read(), 0, 0),
                   ("bin/sh", 0o120777, b"busybox", 0, 0),
                   ("init", 0o100755, INIT, 0, 0)]
        with open(os.path.join(out, "initrd.cpio.gz"), "wb") as f:
            f.write(gzip.compress(cpio_newc(entries), 6))
        version = os.path.basename(kernels[0])[len("vmlinuz-"):]
        with open(os.path.join(out, "VERSION"), "w") as f:
            f.write(f"{version} ({kpkg})\n")
    print(f"{version} ({kpkg})")


if __name__ == "__main__":
    main()
