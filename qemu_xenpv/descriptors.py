"""Segment descriptors a 32-bit PV guest may install (set_gdt,
update_descriptor, LDT pages), checked and fixed up as Xen's
check_descriptor() does for 32-bit guests."""

from __future__ import annotations

from typing import Optional, Tuple

_SEGMENT_TYPE = 0xF00
_SEGMENT_S = 1 << 12
_SEGMENT_DPL = 3 << 13
_SEGMENT_P = 1 << 15
_SEGMENT_L = 1 << 21
_SEGMENT_ACCESSED = 1 << 8
GUEST_KERNEL_RPL = 1


def guest_gate_selector_okay(sel: int) -> bool:
    """A call gate may only target the flat ring-1 code segment or a
    guest-owned (non-reserved) selector."""
    if (sel & ~3) == (0xE019 & ~3):
        return True
    return (sel >> 3) < 7168 and (sel & ~3) != 0


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
