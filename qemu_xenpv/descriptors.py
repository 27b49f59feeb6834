"""Segment descriptors a 32-bit PV guest may install (set_gdt,
update_descriptor, LDT pages), checked and fixed up as Xen's
check_descriptor() does for 32-bit guests."""

from __future__ import annotations

from typing import Optional, Tuple

from .abi import FIRST_RESERVED_GDT_ENTRY, FLAT_RING1_CS, HYPERVISOR_VIRT_START_PAE

_SEGMENT_TYPE = 0xF00
_SEGMENT_S = 1 << 12
_SEGMENT_DPL = 3 << 13
_SEGMENT_P = 1 << 15
_SEGMENT_L = 1 << 21
_SEGMENT_G = 1 << 23
_SEGMENT_ACCESSED = 1 << 8
GUEST_KERNEL_RPL = 1


def guest_gate_selector_okay(sel: int) -> bool:
    """desc.h guest_gate_selector_okay() for a 32-bit guest: a guest GDT
    selector (below the reserved entries), exactly FLAT_COMPAT_KERNEL_CS
    (0xe019: the RPL is part of the comparison, so 0xe018/0xe01a/0xe01b --
    Xen-private descriptors seen through another RPL -- are refused), or any
    LDT selector."""
    sel &= 0xFFFF
    return (sel >> 3) < FIRST_RESERVED_GDT_ENTRY or sel == FLAT_RING1_CS or bool(sel & 4)


def check_descriptor(a: int, b: int, mode=None) -> Optional[Tuple[int, int]]:
    """Return the (possibly fixed-up) descriptor words, or None if refused."""
    if not b & _SEGMENT_P:
        return a, b
    dpl = (b >> 13) & 3
    if dpl < GUEST_KERNEL_RPL:
        dpl = GUEST_KERNEL_RPL
    b = (b & ~_SEGMENT_DPL) | (dpl << 13)
    if b & _SEGMENT_S:
        if b & _SEGMENT_L:
            return None
        # Flat segments reaching into the hole (older PAE Linux limits them
        # to 0xf6800000) are extended to 4 GiB, as 32on64 Xen does.
        base = (b & 0xFF000000) | ((b & 0xFF) << 16) | (a >> 16)
        limit = ((b & 0xF0000) | (a & 0xFFFF)) + 1
        if b & _SEGMENT_G:
            limit <<= 12
        hole = mode.hole_start if mode is not None else HYPERVISOR_VIRT_START_PAE
        if base == 0 and limit > hole:
            a |= 0x0000FFFF
            b |= 0x000F0000
        # Preset the accessed bit: the guest's GDT/LDT frames are mapped
        # read-only in the hole, so the CPU must never need to write it.
        b |= _SEGMENT_ACCESSED
        return a, b
    if (b & _SEGMENT_TYPE) == 0:
        return a, b                     # 2nd half of a call gate: harmless
    if (b & _SEGMENT_TYPE) != 0xC00:
        return None                     # only call gates among system types
    cs = a >> 16
    if not guest_gate_selector_okay(cs):
        return None
    # DPL 0 so every use faults and can be emulated; original DPL kept in RPL
    b &= ~_SEGMENT_DPL
    cs = (cs & ~3) | dpl
    a = (a & 0xFFFF) | (cs << 16)
    if b & 0xE0:
        return None
    return a, b
