"""HVM benchmarks (python -m qemu_xenpv.hvm.bench):

  hvm-smp   QEMU launch -> "Test result" of the hvm-smp guest (hvmloader,
            ACPI, INIT-SIPI-SIPI) for 1, 4 and 128 vCPUs
  hvm-pv    QEMU launch -> "Test result" of the hvm-pv guest with a disk:
            PV console, XenStore, grant table, blkfront (connect, 4 KiB
            read, write, flush, read back, close) through the HVM hypercall
            path, against hvm-smp with 1 vCPU (the same loader, no PV work)
  linux     QEMU launch -> the busybox prompt of Debian's i686 kernel with
            vcpus = 4, through qemu-xenpv's HVM path, against the same kernel,
            initramfs and command line booted by plain
            `qemu-system-i386 -kernel` with SeaBIOS, in the same run
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List

from .. import paths
from ..bench import _boot_to
from ..hypervisor import Hypervisor
from ..machine.qemu import qemu_binary

PROMPT = b"hvm-linux# "


def plain_qemu_linux(accel: str, vcpus: int = 4, timeout: float = 240.0) -> float:
    d = paths.guest_images_dir() / "build" / "hvm-linux"
    args = [qemu_binary(), "-nodefaults", "-nographic", "-no-user-config", "-no-reboot",
            "-accel", accel, "-cpu", "qemu32", "-smp", str(vcpus), "-m", "256",
            "-kernel", str(d / "vmlinuz"), "-initrd", str(d / "initrd.cpio.gz"),
            "-append", "console=ttyS0,115200 panic=-1", "-serial", "stdio"]
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    buf = b""
    try:
        while PROMPT not in buf:
            if time.monotonic() - t0 > timeout:
                raise RuntimeError("plain QEMU: no prompt")
            r, _, _ = select.select([p.stdout], [], [], 1.0)
            if r:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError("plain QEMU exited")
                buf += chunk
        return time.monotonic() - t0
    finally:
        p.kill()
        p.wait()


def measure(accel: str, runs: int) -> List[str]:
    rows = [f"{'HVM benchmark (' + accel + ')':<52} {'median':>10} {'baseline':>22} {'ratio':>7}",
            "-" * 96]
    hv = Hypervisor()
    try:
        smp = str(paths.guest_images_dir() / "hvm-smp.cfg")
        for n in (1, 4, 128):
            t = [_boot_to(hv, smp, b"Test result:", accel, extra={"vcpus": n})[0]
                 for _ in range(runs)]
            rows.append(f"{f'hvm-smp, {n} vCPU(s): launch to result':<52} "
                        f"{statistics.median(t) * 1000:>8.1f}ms")
        smp1 = statistics.median(_boot_to(hv, smp, b"Test result:", accel, extra={"vcpus": 1})[0]
                                 for _ in range(runs))
        with tempfile.TemporaryDirectory() as tmp:
            img = os.path.join(tmp, "disk.img")
            with open(img, "wb") as f:
                f.truncate(1 << 20)
            pv = str(paths.guest_images_dir() / "hvm-pv.cfg")
            t = [_boot_to(hv, pv, b"Test result:", accel,
                          extra={"disk": [f"file:{img},xvda,w"]})[0] for _ in range(runs)]
        ours = statistics.median(t)
        rows.append(f"{'hvm-pv + blkfront: launch to result':<52} {ours * 1000:>8.1f}ms "
                    f"{'hvm-smp ' + format(smp1 * 1000, '.1f') + 'ms':>22} {ours / smp1:>6.2f}x")
        linux_cfg = paths.guest_images_dir() / "hvm-linux.cfg"
        if (paths.guest_images_dir() / "build" / "hvm-linux" / "vmlinuz").exists():
            ours = statistics.median(_boot_to(hv, str(linux_cfg), PROMPT, accel, timeout=240)[0]
                                     for _ in range(max(1, runs // 2)))
            base = statistics.median(plain_qemu_linux(accel) for _ in range(max(1, runs // 2)))
            rows.append(f"{'Debian i686 Linux, 4 vCPUs: launch to shell':<52} {ours:>9.2f}s "
                        f"{'plain -kernel ' + format(base, '.2f') + 's':>22} {ours / base:>6.2f}x")
        else:
            rows.append("Debian i686 Linux: skipped (run guest-images/hvm-linux/fetch.py)")
    finally:
        hv.shutdown()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qemu_xenpv.hvm.bench")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--accel", default="tcg", choices=("tcg", "kvm"))
    args = ap.parse_args(argv)
    for row in measure(args.accel, args.runs):
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
