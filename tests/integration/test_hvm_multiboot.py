"""Multiboot on the HVM path end to end: hvmloader starts the
hvm-multiboot guest (as an ELF, and as a flat image loaded by its a.out
kludge address fields), which checks the Multiboot machine state, the
multiboot_info, the memory map and its module from the inside.  Each test
boots real QEMU."""

import os
import re
import struct

import pytest

from pathlib import Path
import importlib.util

from qemu_xenpv.hvm import layout
from qemu_xenpv.hvm.image import load_hvm_image

# tests/conftest.py's helpers, by path: `from conftest import` picks
# tests/unit/conftest.py when unit and integration tests run together
_spec = importlib.util.spec_from_file_location(
    "qemu_xenpv_tests_conftest", Path(__file__).resolve().parents[1] / "conftest.py")
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
GUESTS, qemu_pids = _conftest.GUESTS, _conftest.qemu_pids

CFG = GUESTS / "hvm-multiboot.cfg"
ELF = GUESTS / "build" / "hvm-multiboot.elf"
BIN = GUESTS / "build" / "hvm-multiboot.bin"
MEMORY = 32                                     # hvm-multiboot.cfg


def boot(xenpv, *overrides):
    for path in (ELF, BIN):
        if not path.exists():
            pytest.fail(f"{path} is not built: run 'make'")
    r = xenpv.run("create", "-c", CFG, f"name={xenpv.name('mb')}", *overrides, timeout=60)
    assert not qemu_pids(xenpv.tag), "QEMU still running after the guest powered off"
    return r, r.stdout


def assert_multiboot_state(out, kernel):
    entry = load_hvm_image(str(kernel)).entry
    assert f"hvmloader: starting multiboot kernel at {entry:x}, multiboot_info at 90000" in out
    assert re.search(r"hvm-multiboot: EAX 2badb002, EBX 90000, ", out), out
    assert "CS 0010 DS 0018 ES 0018 FS 0018 GS 0018 SS 0018: flat 32-bit" in out
    assert "hvm-multiboot: A20 on" in out
    # the memory map is the domain's e820, and mem_lower/mem_upper agree with it
    e820 = layout.build_e820(MEMORY << 20)
    got = [(int(a, 16), int(n, 16), int(t)) for a, n, t in
           re.findall(r"mmap base (\w+) length (\w+) type (\d+)", out)]
    assert got == [(e.addr, e.size, e.type) for e in e820]
    ram = {e.addr: e.size >> 10 for e in e820 if e.type == layout.E820_RAM}
    assert f"mem_lower {ram[0]} KiB, mem_upper {ram[0x100000]} KiB" in out
    assert "hvm-multiboot: boot loader 'qemu-xenpv hvmloader'" in out
    assert "RSDP at ea040 (ACPI search)" in out
    assert "check failed" not in out
    assert "Test result: SUCCESS" in out


def test_multiboot_elf(xenpv):
    r, out = boot(xenpv)
    assert r.returncode == 0, r.stderr + out
    assert_multiboot_state(out, ELF)
    assert "hvm-multiboot: cmdline 'hvm-multiboot mods=0'" in out
    assert "hvm-multiboot: 0 module(s), 0 expected" in out
    dmesg = xenpv.run("dmesg").stdout
    assert "boot multiboot" in dmesg and "multiboot (ELF, flags 0x3)" in dmesg
    assert "shutdown: poweroff" in dmesg


def test_multiboot_aout_kludge_with_a_module(xenpv, tmp_path):
    text = "hello-from-a-multiboot-module"
    mod = tmp_path / "greeting.txt"
    mod.write_text(text)
    cmdline = f"hvm-multiboot mods=1 modname=greeting.txt modtext={text}"
    r, out = boot(xenpv, f"kernel={BIN}", f"ramdisk={mod}", f"cmdline={cmdline}")
    assert r.returncode == 0, r.stderr + out
    assert_multiboot_state(out, BIN)
    assert f"hvm-multiboot: cmdline '{cmdline}'" in out
    m = re.search(r"module 0 at (\w+)-(\w+) \((\d+) bytes\) 'greeting.txt': '(.*)'", out)
    assert m, out
    start, end = int(m.group(1), 16), int(m.group(2), 16)
    assert start % 4096 == 0 and end - start == len(text) == int(m.group(3))
    assert m.group(4) == text
    assert "multiboot (a.out kludge, flags 0x10003)" in xenpv.run("dmesg").stdout


def test_the_guest_notices_a_missing_module(xenpv):
    """The checks have teeth: a module the command line expects but the
    configuration does not give is a FAILURE, and the guest still powers
    off."""
    r, out = boot(xenpv, "cmdline=mods=1")
    assert r.returncode == 0, r.stderr + out
    assert "check failed: the number of modules is not what mods= says" in out
    assert "Test result: FAILURE" in out


def test_bad_checksum_is_a_one_line_error(xenpv, tmp_path):
    img = bytearray(4096)
    struct.pack_into("<III", img, 0x40, 0x1BADB002, 0x00010003, 0)     # checksum should be -sum
    k = tmp_path / "bad-multiboot.bin"
    k.write_bytes(bytes(img))
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(f"type = 'hvm'\nkernel = '{k}'\nmemory = 32\n")
    before = set(os.listdir("/dev/shm"))
    r = xenpv.run("create", "-c", cfg, f"name={xenpv.name('bad')}")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qemu-xenpv: error:"), r.stderr
    assert "multiboot header at offset 0x40 has a bad checksum" in lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert not qemu_pids(xenpv.tag)
    assert set(os.listdir("/dev/shm")) - before == set()
    assert xenpv.name("bad") not in xenpv.run("list").stdout
