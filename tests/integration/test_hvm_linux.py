"""An unmodified operating system on the HVM path: Debian bookworm's i686
kernel (linux-image-686:i386) and a busybox initramfs, booted by
`qemu-xenpv create` through hvmloader with vcpus = 4.  Linux must bring up
all four CPUs from our MADT and show our MADT in /sys/firmware/acpi."""

import re
import subprocess
import sys
import time

import pexpect
import pytest

from pathlib import Path
import importlib.util

# tests/conftest.py's helpers, by path: `from conftest import` picks
# tests/unit/conftest.py when unit and integration tests run together
_spec = importlib.util.spec_from_file_location(
    "qemu_xenpv_tests_conftest", Path(__file__).resolve().parents[1] / "conftest.py")
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
GUESTS, qemu_pids = _conftest.GUESTS, _conftest.qemu_pids

FETCH = GUESTS / "hvm-linux" / "fetch.py"
CFG = GUESTS / "hvm-linux.cfg"


@pytest.fixture(scope="module")
def debian_kernel():
    try:
        r = subprocess.run([sys.executable, str(FETCH)], capture_output=True, text=True,
                           timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip("fetching Debian's i686 kernel took more than 10 minutes")
    if r.returncode != 0:
        pytest.skip("Debian's i686 kernel cannot be had: " + (r.stderr.strip() or r.stdout.strip()))
    return r.stdout.strip()


def madt_from_hex(text):
    raw = bytes(int(x, 16) for x in text.split())
    return raw


def test_debian_linux_boots_on_our_madt(xenpv, debian_kernel):
    name = xenpv.name("linux")
    t0 = time.monotonic()
    c = xenpv.spawn("create", "-c", CFG, f"name={name}", "vcpus=4", timeout=240)
    c.expect(r"hvmloader: starting Linux \(boot protocol 2\.\d+\)")
    c.expect(r"ACPI: APIC 0x00000000000EA[0-9A-F]{3} 000090 \(v01 XENPV  QEMUHVM ")
    c.expect(r"smp: Brought up 1 node, 4 CPUs")
    c.expect(r"hvm-linux: init running on 4 CPU\(s\)")
    c.expect_exact("hvm-linux# ")
    boot_s = time.monotonic() - t0
    c.sendline("nproc")
    c.expect(r"\r\n(\d+)\r\n")
    assert c.match.group(1) == b"4"
    c.expect_exact("hvm-linux# ")
    c.sendline("echo MADT; od -An -tx1 -v /sys/firmware/acpi/tables/APIC; echo END")
    c.expect(r"MADT\r\n(.*?)END\r\n")
    raw = madt_from_hex(c.match.group(1).decode())
    assert raw[:4] == b"APIC" and int.from_bytes(raw[4:8], "little") == len(raw) == 112 + 8 * 4
    assert raw[10:16] == b"XENPV " and raw[16:24] == b"QEMUHVM "
    assert sum(raw) % 256 == 0, "the MADT Linux sees does not checksum"
    lapics, p = [], 44
    while p < len(raw):
        if raw[p] == 0:
            lapics.append((raw[p + 2], raw[p + 3], raw[p + 4] & 1))
        p += raw[p + 1]
    assert lapics == [(i, i, 1) for i in range(4)]
    c.expect_exact("hvm-linux# ")
    c.sendline("poweroff -f")
    c.expect(pexpect.EOF, timeout=60)
    c.close()
    assert c.exitstatus == 0
    assert not qemu_pids(xenpv.tag)
    print(f"Debian {debian_kernel}: boot to shell {boot_s:.1f} s")
