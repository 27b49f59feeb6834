"""Stores into guest-shared memory are single stores, as in Xen and its C
back ends: a vCPU (another process, QEMU) that reads a ring index or a PTE
while we update it sees the old value or the new one, never anything else.

struct.pack_into is not such a store: CPython zero-fills the field and then
writes it a byte at a time.  Mini-OS's blkfront (its CONFIG_TEST disk
loop) read rsp_prod = 0 in that window, took unanswered requests for
responses and crashed on the request header as a pointer (page fault at
0x0300014c = READ, 1 segment, handle 768).  Each test here has a second
process spin on the word while we write it; with pack_into the reader sees
an impossible value within milliseconds."""

from __future__ import annotations

import mmap
import os
import struct
import subprocess
import sys
import time

import pytest

from qemu_xenpv.devices.xenbus import BackRing, Pages
from qemu_xenpv.machine.ram import store32, store64
from qemu_xenpv.xenstore import RingConnection, XenStore, XsType

# A reader in another process: maps the memfd, reports "ready", then checks
# every value it reads at OFF until told to stop (stdin closed) or SECONDS
# pass.  MODE "set": only the two values A and B are allowed; "mono": the
# value never decreases.  Prints the number of bad reads and of reads.
READER = r"""
import mmap, os, select, struct, sys, time
fd, off, size, mode, a, b, seconds = sys.argv[1:8]
fd, off, size, a, b = int(fd), int(off), int(size), int(a, 0), int(b, 0)
mm = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED, mmap.PROT_READ)
up = struct.Struct("<Q" if size == 8 else "<I").unpack_from
bad = n = 0
last = up(mm, off)[0]
print("ready", flush=True)
end = time.monotonic() + float(seconds)
while time.monotonic() < end:
    if select.select([sys.stdin], [], [], 0)[0]:
        break
    for _ in range(5000):
        v = up(mm, off)[0]
        if mode == "set":
            if v != a and v != b:
                bad += 1
        elif v < last:
            bad += 1
        last = v
    n += 5000
print(bad, n, flush=True)
"""


def _race(fd: int, off: int, size: int, mode: str, write_step, a: int = 0, b: int = 0,
          seconds: float = 0.4):
    """Run the reader on (fd, off) while calling write_step() in a loop."""
    p = subprocess.Popen([sys.executable, "-c", READER, str(fd), str(off), str(size), mode,
                          hex(a), hex(b), str(seconds)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=[fd], text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(500):
                write_step()
        p.stdin.close()
        bad, n = map(int, p.stdout.readline().split())
    finally:
        p.kill()
        p.wait()
    assert n > 0
    return bad


def test_store_helpers_write_little_endian():
    buf = bytearray(16)
    store32(buf, 4, 0x1_0403_0201)                  # truncated to 32 bits
    store64(buf, 8, 0x0807060504030201)
    assert bytes(buf) == bytes([0] * 4 + [1, 2, 3, 4] + [1, 2, 3, 4, 5, 6, 7, 8])
    mv = memoryview(bytearray(8))
    store32(mv, 0, 0xDEADBEEF)
    assert struct.unpack_from("<I", mv, 0)[0] == 0xDEADBEEF


@pytest.mark.parametrize("size", [4, 8])
def test_guest_ram_stores_are_never_seen_half_done(make_ram, size):
    """GuestRAM.w32 / w64 (the console's out_cons and in_prod, ...)."""
    ram = make_ram(2 << 20)
    a, b = (0x01020304, 0x0A0B0C0D) if size == 4 else (0x0102030405060708, 0x0A0B0C0D0E0F1011)
    w = ram.w32 if size == 4 else ram.w64
    w(0x2000, a)
    state = [a]

    def step():
        state[0] = b if state[0] == a else a
        w(0x2000, state[0])

    assert _race(ram.fd, 0x2000, size, "set", step, a, b) == 0


def test_back_ring_rsp_prod_never_goes_back(make_ram):
    """BackRing publishes rsp_prod (and req_event) with one store: a
    frontend polling rsp_prod never sees it go back (to 0)."""
    ram = make_ram(2 << 20)
    view = ram.view(0x1000, 4096)
    ring = BackRing(Pages([view]), 108, 12)
    ram.w32(0x100C, 0xFFFFFFFF)                     # rsp_event: no notifications wanted

    def step():
        ring.put_response(b"r" * 12)
        ring.push_responses()

    try:
        assert _race(ram.fd, 0x1008, 4, "mono", step) == 0
        assert ram.r32(0x1008) == ring.rsp_prod_pvt > 1000
    finally:
        del ring
        view.release()


def test_xenstore_ring_rsp_prod_never_goes_back():
    """The XenStore ring's rsp_prod and req_cons, written while the guest's
    xenbus reads them."""
    fd = os.memfd_create("xs-ring", os.MFD_CLOEXEC)
    os.ftruncate(fd, 4096)
    mm = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    store = XenStore()
    store.mkdir("/local/domain/1")
    store.set_perms("/local/domain/1", ["n1"])
    page = memoryview(mm)
    ring = RingConnection(store, store.connect(1), page, lambda: None)
    req_prod, rsp_cons, rsp_prod = 2052, 2056, 2060
    msg = struct.pack("<IIII", XsType.READ, 7, 0, 5) + b"name\0"
    state = {"req": 0}

    def step():
        # the fake guest: one request in, and it consumes the answer at once
        i = state["req"]
        for k, byte in enumerate(msg):
            page[(i + k) % 1024] = byte
        state["req"] = i + len(msg)
        struct.pack_into("<I", page, req_prod, state["req"])
        ring.process()
        struct.pack_into("<I", page, rsp_cons, struct.unpack_from("<I", page, rsp_prod)[0])

    try:
        assert _race(fd, rsp_prod, 4, "mono", step) == 0
        assert struct.unpack_from("<I", page, rsp_prod)[0] > 1000
    finally:
        os.close(fd)
