"""Debug registers: the set_debugreg and get_debugreg hypercalls (Xen's
pv/misc-hypercalls.c do_set_debugreg/do_get_debugreg), and the one
implementation of Xen's checks that the emulation of `mov %drN` uses too
(x86_emulate.c x86emul_write_dr/x86emul_read_dr call the same
set_debugreg()).

The vCPU keeps Xen's state: dr[0..3], dr[6] (arch.dr6), dr[7] (arch.dr7,
what the hardware gets) and dr7_emul (pv.dr7_emul: the enable bits of I/O
breakpoints, which only the emulated port I/O honours).  A successful set
hands dr0-3/dr7 to the shim (vcpu.load_debugregs); the caller adds
K.ACT_DR so the shim loads them into the CPU before returning."""

from __future__ import annotations

from typing import Optional

from ..abi import EINVAL, ENODEV, EPERM
from ..shim import K
from . import hypercall

CR4_DE = 1 << 3
DR_STATUS_RESERVED_ZERO = 0x00001000        # ~0xffffefff: DR6 bit 12 reads as 0
DR_STATUS_RESERVED_ONE = 0xFFFF0FF0         # DR6 bits 4-11, 16-31 read as 1
DR_CONTROL_RESERVED_ZERO = 0x0000D800       # ~0xffff27ff: DR7 bits 11, 12, 14, 15
DR_CONTROL_RESERVED_ONE = 0x00000400        # DR7 bit 10
DR_GENERAL_DETECT = 0x00002000
DR7_ACTIVE_MASK = 0xFF                      # L0-3 and G0-3
DR_CONTROL_SHIFT, DR_CONTROL_SIZE = 16, 4
DR_IO = 2                                   # RW = 10b: I/O breakpoint (needs CR4.DE)
DR_LEN = {0x0: 1, 0x4: 2, 0xC: 4, 0x8: 8}   # LEN field (already shifted by 2) -> bytes


def breakpoint_addr_ok(vcpu, value: int) -> bool:
    """DR0-3 may not point into the hypervisor hole.

    This is 32-bit Xen's access_ok(value, sizeof(long)): value + 4 must not
    pass HYPERVISOR_VIRT_START.  (64-bit Xen 4.17 lets a compat guest put a
    breakpoint on its M2P alias, where nothing of Xen's lives; here the hole
    holds the shim's entry code, IDT, GDT/LDT windows and the entry stacks the
    CPU writes in ring 0, at the same linear addresses in every address space,
    so a breakpoint there would fire inside the shim.)"""
    return value + 4 <= vcpu.dom.mode.hole_start


def set_debugreg(vcpu, reg: int, value: int) -> int:
    """Xen's set_debugreg(): 0, or -ENODEV (#UD for mov), -EINVAL (a
    reserved bit) or -EPERM (a valid bit the guest may not use): both #GP(0)
    for mov.  On success the new dr0-3/dr7 are handed to the shim; the
    caller must add K.ACT_DR to its actions."""
    v = vcpu
    value &= 0xFFFFFFFF                     # a 32-bit guest's unsigned long
    if reg <= 3:
        if not breakpoint_addr_ok(v, value):
            return -EPERM
        v.dr[reg] = value
    elif reg in (4, 6):
        if reg == 4 and v.cr4 & CR4_DE:
            return -ENODEV
        v.dr[6] = (value & ~DR_STATUS_RESERVED_ZERO) | DR_STATUS_RESERVED_ONE
    elif reg in (5, 7):
        if reg == 5 and v.cr4 & CR4_DE:
            return -ENODEV
        value = (value & ~DR_CONTROL_RESERVED_ZERO) | DR_CONTROL_RESERVED_ONE
        if value & DR_GENERAL_DETECT:
            return -EPERM
        io_enable = 0
        if value & DR7_ACTIVE_MASK:
            for i in range(DR_CONTROL_SHIFT, 32, DR_CONTROL_SIZE):
                if (value >> i) & 3 == DR_IO:
                    if not v.cr4 & CR4_DE:
                        return -EPERM
                    io_enable |= value & (3 << ((i - 16) >> 1))
            value &= ~io_enable
        v.dr7_emul = io_enable
        v.dr[7] = value
    else:
        return -ENODEV
    v.load_debugregs()
    return 0


def get_debugreg(vcpu, reg: int) -> Optional[int]:
    """x86emul_read_dr(): the value, or None for -ENODEV (#UD for mov)."""
    v = vcpu
    if reg <= 3:
        return v.dr[reg]
    if reg in (4, 6):
        if reg == 4 and v.cr4 & CR4_DE:
            return None
        return v.dr[6]
    if reg in (5, 7):
        if reg == 5 and v.cr4 & CR4_DE:
            return None
        return v.dr[7] | getattr(v, "dr7_emul", 0)
    return None


def io_breakpoint_match(vcpu, port: int, size: int) -> int:
    """check_guest_io_breakpoint(): DR6 B0-B3 of the enabled I/O breakpoints
    (CR4.DE) that an access of `size` bytes at `port` hits."""
    v = vcpu
    emul = getattr(v, "dr7_emul", 0)
    if not emul or not v.cr4 & CR4_DE:
        return 0
    match = 0
    for i in range(4):
        if not emul & (3 << (2 * i)):
            continue
        start = v.dr[i]
        width = DR_LEN[(v.dr[7] >> (DR_CONTROL_SHIFT + i * DR_CONTROL_SIZE)) & 0xC]
        if start < port + size and start + width > port:
            match |= 1 << i
    return match


@hypercall("set_debugreg", 2)
def do_set_debugreg(call, reg, value):
    rc = set_debugreg(call.vcpu, reg, value)
    if rc == 0:
        call.action |= K.ACT_DR
    return rc


@hypercall("get_debugreg", 1)
def do_get_debugreg(call, reg):
    val = get_debugreg(call.vcpu, reg)
    return -ENODEV if val is None else val
