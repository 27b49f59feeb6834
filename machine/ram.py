"""Guest RAM as a shared file: QEMU maps it as the machine's memory, we map
the same file, so every machine frame of the domain is directly readable
and writable from Python while the guest runs.

The file is a memfd: it has no name in any file system, so nothing can be
left behind in /dev/shm even after ``kill -9``.  QEMU opens it through
/proc/<our pid>/fd/<n>.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

from . import native

PAGE_SIZE = 4096
PAGE_SHIFT = 12

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


# Stores into memory a running vCPU may read at the same moment (ring
# indices, PTEs, anything shared) must be single aligned stores, as Xen's
# and the back ends' C code does them.  struct.pack_into is not: CPython's
# s_pack_internal first zero-fills the field and then writes the value a
# byte at a time, so a concurrent reader sees 0 or a torn value (Mini-OS's
# blkfront saw rsp_prod = 0 and consumed unanswered requests as responses).
# A slice assignment is one memcpy of exactly 4 (8) bytes, which is one
# 32-bit (64-bit) move for an aligned field.
def store32(buf, off: int, val: int) -> None:
    """``buf[off:off+4] = val`` (little endian) as one 4-byte store."""
    buf[off:off + 4] = (val & 0xFFFFFFFF).to_bytes(4, "little")


def store64(buf, off: int, val: int) -> None:
    """``buf[off:off+8] = val`` (little endian) as one 8-byte store."""
    buf[off:off + 8] = (val & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")


class GuestRAM:
    """One domain's machine memory (QEMU guest-physical = machine address)."""

    def __init__(self, size: int, name: str = "qemu-xenpv-ram"):
        if size <= 0 or size % (2 << 20):
            raise ValueError("RAM size must be a positive multiple of 2 MiB")
        self.size = size
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.mm = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._anchor = ctypes.c_char.from_buffer(self.mm)
        self.base = ctypes.addressof(self._anchor)
        self._lib = native.lib()

    @property
    def path_for_qemu(self) -> str:
        """A path QEMU can open to reach the same file (QEMU inherits the fd)."""
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def close(self) -> None:
        if self.mm is None:
            return
        del self._anchor
        self.mm.close()
        self.mm = None
        os.close(self.fd)
        self.fd = -1

    # ---- plain access ----
    def read(self, addr: int, length: int) -> bytes:
        self._check(addr, length)
        return self.mm[addr:addr + length]

    def write(self, addr: int, data: bytes) -> None:
        self._check(addr, len(data))
        self.mm[addr:addr + len(data)] = data

    def zero(self, addr: int, length: int) -> None:
        self._check(addr, length)
        ctypes.memset(self.base + addr, 0, length)

    def r8(self, addr: int) -> int:
        self._check(addr, 1)
        return self.mm[addr]

    def w8(self, addr: int, val: int) -> None:
        self._check(addr, 1)
        self.mm[addr] = val & 0xFF

    def r16(self, addr: int) -> int:
        self._check(addr, 2)
        return int.from_bytes(self.mm[addr:addr + 2], "little")

    def w16(self, addr: int, val: int) -> None:
        self._check(addr, 2)
        self.mm[addr:addr + 2] = (val & 0xFFFF).to_bytes(2, "little")

    def r32(self, addr: int) -> int:
        self._check(addr, 4)
        return _U32.unpack_from(self.mm, addr)[0]

    def w32(self, addr: int, val: int) -> None:
        self._check(addr, 4)
        store32(self.mm, addr, val)

    def r64(self, addr: int) -> int:
        self._check(addr, 8)
        return _U64.unpack_from(self.mm, addr)[0]

    def w64(self, addr: int, val: int) -> None:
        self._check(addr, 8)
        store64(self.mm, addr, val)

    def view(self, addr: int, length: int) -> memoryview:
        self._check(addr, length)
        return memoryview(self.mm)[addr:addr + length]

    # ---- atomics (the guest uses locked instructions on the same words) ----
    def test_and_set_bit(self, addr: int, nr: int) -> bool:
        self._check(addr + (nr >> 5) * 4, 4)
        return self._lib.test_and_set_bit(self.base + addr, nr)

    def test_and_clear_bit(self, addr: int, nr: int) -> bool:
        self._check(addr + (nr >> 5) * 4, 4)
        return self._lib.test_and_clear_bit(self.base + addr, nr)

    def test_bit(self, addr: int, nr: int) -> bool:
        return bool((self.r32(addr + (nr >> 5) * 4) >> (nr & 31)) & 1)

    def xchg32(self, addr: int, val: int) -> int:
        self._check(addr, 4)
        return self._lib.xchg32(self.base + addr, val)

    def cmpxchg32(self, addr: int, old: int, new: int) -> int:
        self._check(addr, 4)
        return self._lib.cmpxchg32(self.base + addr, old, new)

    def xchg8(self, addr: int, val: int) -> int:
        self._check(addr, 1)
        return self._lib.xchg8(self.base + addr, val)

    def fence(self) -> None:
        self._lib.fence()

    def _check(self, addr: int, length: int) -> None:
        if addr < 0 or length < 0 or addr + length > self.size:
            raise IndexError(f"machine address {addr:#x}+{length:#x} outside RAM ({self.size:#x})")
