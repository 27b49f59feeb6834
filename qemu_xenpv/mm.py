"""Memory management exactly as Xen validates it, for one domain's machine.

Every machine frame has an owner, a type (none, L1, L2, L3, segment
descriptor, writable) with a type count, and a general reference count
(xen/arch/x86/mm.c).  A frame can only change type when nothing holds its
current type, so no frame is ever both a page table and writably mapped.
Page-table pages are validated entry by entry when they first take their
type; every entry of a validated table holds a reference on what it maps.

Each domain is its own QEMU machine here, so the frame table is per domain;
frames owned by the hypervisor (the shim, the M2P, the hole's tables) are
owned by DOMID_XEN and can never be mapped or typed by the guest.
"""

from __future__ import annotations

import logging
from array import array
from typing import Callable, Dict, Iterable, Optional

from . import abi
from .machine.ram import store32, store64
from .abi import (PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D, PTE_PSE, PTE_G, EINVAL, EPERM,
                  EBUSY, EFAULT)

log = logging.getLogger("qemu_xenpv.mm")

PGT_none, PGT_l1, PGT_l2, PGT_l3, PGT_l4, PGT_seg_desc, PGT_writable = 0, 1, 2, 3, 4, 5, 7
PGT_NAMES = {0: "none", 1: "l1", 2: "l2", 3: "l3", 4: "l4", 5: "seg_desc", 7: "writable"}
F_PINNED, F_PAE_XEN_L2 = 1, 2

OWNER_NONE = 0xFFFF

# Flags the guest may set (mm.c: base_disallow_mask and friends).  High flag
# bits (52-63) are disallowed: our vCPU has no NX.
_HIGH = 0xFFF0000000000000
_ADDR_PAE = 0x000FFFFFFFFFF000
L1_ALLOWED = PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D | PTE_G | abi.PTE_AVAIL
L2_ALLOWED = PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D | abi.PTE_AVAIL
L3_ALLOWED_COMPAT = PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D | abi.PTE_AVAIL
L3_SHADOW_MASK = PTE_P                      # what a native PDPTE may carry
_L1_BAD_PAE = ~(L1_ALLOWED | _ADDR_PAE) & 0xFFFFFFFFFFFFFFFF
_L1_BAD_NONPAE = ~(L1_ALLOWED | 0xFFFFF000) & 0xFFFFFFFF   # PWT, PCD, PAT/PSE
_AD = PTE_A | PTE_D
# Frames below 1 MiB are I/O to Xen (arch_init_memory: owned by dom_io):
# mapping one is iomem_access_permitted()'s -EPERM, not -EBUSY.
_FIRST_NON_IO_MFN = 0x100
_U32 = __import__("struct").Struct("<I")
_U64 = __import__("struct").Struct("<Q")

ERESTART = 85                               # internal, never reaches a guest


class PagingMode:
    """PAE (3 levels, 8-byte entries) or non-PAE (2 levels, 4-byte)."""

    def __init__(self, pae: bool):
        self.pae = pae
        self.entry_size = 8 if pae else 4
        self.entries = 512 if pae else 1024
        self.levels = 3 if pae else 2
        self.top = PGT_l3 if pae else PGT_l2
        self.hole_start = abi.HYPERVISOR_VIRT_START_PAE if pae else abi.HYPERVISOR_VIRT_START_NONPAE
        self.m2p_start = abi.MACH2PHYS_VIRT_START_PAE if pae else abi.MACH2PHYS_VIRT_START_NONPAE
        self.m2p_end = abi.MACH2PHYS_VIRT_END_PAE if pae else abi.MACH2PHYS_VIRT_END_NONPAE
        # first L2 slot that belongs to the hypervisor
        self.first_xen_l2_slot = (self.hole_start >> 21) & 511 if pae else self.hole_start >> 22

    def addr(self, e: int) -> int:
        return (e & _ADDR_PAE) if self.pae else (e & 0xFFFFF000)

    def l1_index(self, va: int) -> int:
        return (va >> 12) & (511 if self.pae else 1023)

    def l2_index(self, va: int) -> int:
        return (va >> 21) & 511 if self.pae else va >> 22


class FrameTable:
    """Per-frame owner, type, counts and flags of one machine."""

    def __init__(self, nr_frames: int):
        self.nr = nr_frames
        self.owner = array("H", [OWNER_NONE]) * nr_frames
        self.type = bytearray(nr_frames)
        self.type_count = array("I", [0]) * nr_frames
        self.count = array("I", [0]) * nr_frames
        self.flags = bytearray(nr_frames)

    def assign(self, mfn: int, owner: int) -> None:
        self.owner[mfn] = owner

    def valid(self, mfn: int) -> bool:
        return 0 <= mfn < self.nr


class MMU:
    """One domain's view: its frames, its page tables, its M2P/P2M."""

    def __init__(self, ram, frames: FrameTable, domid: int, mode: PagingMode,
                 hole_l2: Dict[int, int], m2p_pa: int):
        self.ram = ram
        self.ft = frames
        self.domid = domid
        self.mode = mode
        self.hole_l2 = hole_l2          # slot -> entry, installed in Xen L2s
        self.m2p_pa = m2p_pa            # machine address of the M2P table
        self.p2m: array = array("I")    # pfn -> mfn (the domain's own view)
        self.on_entry_written: Optional[Callable[[int, int], None]] = None
        self.max_pages = 0

    # ---- M2P / P2M ---------------------------------------------------------
    def set_m2p(self, mfn: int, pfn: int) -> None:
        self.ram.w32(self.m2p_pa + mfn * 4, pfn)

    def m2p(self, mfn: int) -> int:
        return self.ram.r32(self.m2p_pa + mfn * 4)

    def owns(self, mfn: int) -> bool:
        return self.ft.valid(mfn) and self.ft.owner[mfn] == self.domid

    # ---- references ------------------------------------------------------
    def get_page(self, mfn: int) -> bool:
        if not self.owns(mfn):
            return False
        self.ft.count[mfn] += 1
        return True

    def put_page(self, mfn: int) -> None:
        if self.ft.count[mfn] == 0:
            raise AssertionError(f"put_page underflow on mfn {mfn:#x}")
        self.ft.count[mfn] -= 1

    def get_page_type(self, mfn: int, ptype: int, xen_l2: bool = False) -> int:
        ft = self.ft
        flag = F_PAE_XEN_L2 if xen_l2 else 0
        if ft.type_count[mfn]:
            if ft.type[mfn] != ptype or (ft.flags[mfn] & F_PAE_XEN_L2) != flag:
                log.debug("mfn %#x: type %s in use, %s refused", mfn,
                          PGT_NAMES[ft.type[mfn]], PGT_NAMES[ptype])
                return -EINVAL
            ft.type_count[mfn] += 1
            return 0
        # Take the type (count 1) before validating, as Xen does: an entry of
        # this very table that maps it with another type must then fail.
        ft.type[mfn] = ptype
        ft.flags[mfn] = (ft.flags[mfn] & ~F_PAE_XEN_L2) | flag
        ft.type_count[mfn] = 1
        rc = self._validate(mfn, ptype)
        if rc:
            ft.type_count[mfn] = 0
            ft.type[mfn] = PGT_none
            ft.flags[mfn] &= ~F_PAE_XEN_L2
            return rc
        return 0

    def put_page_type(self, mfn: int) -> None:
        ft = self.ft
        if ft.type_count[mfn] == 0:
            raise AssertionError(f"put_page_type underflow on mfn {mfn:#x}")
        ft.type_count[mfn] -= 1
        if ft.type_count[mfn] == 0:
            t = ft.type[mfn]
            if t in (PGT_l1, PGT_l2, PGT_l3, PGT_seg_desc):
                self._devalidate(mfn, t)
            ft.type[mfn] = PGT_none
            ft.flags[mfn] &= ~F_PAE_XEN_L2

    def get_page_and_type(self, mfn: int, ptype: int, xen_l2: bool = False) -> int:
        """get_page_and_type_from_mfn(): a frame that is not the domain's is
        -EINVAL whoever owns it (pinning, base pointers, L2/L3 entries, GDT
        frames); a type conflict is -EINVAL too."""
        if not self.get_page(mfn):
            return -EINVAL
        rc = self.get_page_type(mfn, ptype, xen_l2)
        if rc:
            self.put_page(mfn)
        return rc

    def put_page_and_type(self, mfn: int) -> None:
        self.put_page_type(mfn)
        self.put_page(mfn)

    # ---- entries ---------------------------------------------------------
    def _read_entry(self, table_mfn: int, idx: int) -> int:
        a = (table_mfn << 12) + idx * self.mode.entry_size
        return self.ram.r64(a) if self.mode.pae else self.ram.r32(a)

    def _write_entry(self, addr: int, val: int) -> None:
        if self.mode.pae:
            self.ram.w64(addr, val)
        else:
            self.ram.w32(addr, val)

    def get_page_from_l1e(self, e: int) -> int:
        """mm.c get_page_from_l1e() for a domU without I/O privileges:
        refused flags -EINVAL; not RAM (or the first MiB, Xen's dom_io
        frames) -EPERM (iomem_access_permitted); a frame of another owner,
        or one that cannot take the writable type (a page table, a live
        GDT/LDT page) -EBUSY ("could_not_pin")."""
        if not e & PTE_P:
            return 0
        if e & (_L1_BAD_PAE if self.mode.pae else _L1_BAD_NONPAE):
            return -EINVAL
        mfn = self.mode.addr(e) >> 12
        ft = self.ft
        if not self.owns(mfn):
            return -EPERM if not ft.valid(mfn) or mfn < _FIRST_NON_IO_MFN else -EBUSY
        if e & PTE_RW:
            if self.get_page_type(mfn, PGT_writable):
                return -EBUSY
        ft.count[mfn] += 1
        return 0

    def l1e_io_refusal(self, e: int) -> int:
        """get_page_from_l1e() with pg_owner dom_io (foreigndom DOMID_IO):
        the error a present, validly flagged entry gets.  Not RAM: -EPERM
        (the I/O path, iomem_access_permitted); any RAM frame, ours too:
        -EBUSY (its owner is not dom_io and xsm_priv_mapping refuses)."""
        mfn = self.mode.addr(e) >> 12
        if self.owns(mfn):
            return -EBUSY
        return -EPERM if not self.ft.valid(mfn) or mfn < _FIRST_NON_IO_MFN else -EBUSY

    def put_page_from_l1e(self, e: int) -> None:
        if not e & PTE_P:
            return
        mfn = self.mode.addr(e) >> 12
        if e & PTE_RW:
            self.put_page_and_type(mfn)
        else:
            self.put_page(mfn)

    def get_page_from_l2e(self, e: int) -> int:
        if not e & PTE_P:
            return 0
        if e & PTE_PSE or (e & ~(L2_ALLOWED | (_ADDR_PAE if self.mode.pae else 0xFFFFF000))):
            return -EINVAL
        return self.get_page_and_type(self.mode.addr(e) >> 12, PGT_l1)

    def put_page_from_l2e(self, e: int) -> None:
        if e & PTE_P:
            self.put_page_and_type(self.mode.addr(e) >> 12)

    def get_page_from_l3e(self, e: int, slot: int) -> int:
        if not e & PTE_P:
            return 0
        if e & ~(L3_ALLOWED_COMPAT | _ADDR_PAE):
            return -EINVAL
        return self.get_page_and_type(self.mode.addr(e) >> 12, PGT_l2, xen_l2=(slot == 3))

    def put_page_from_l3e(self, e: int) -> None:
        if e & PTE_P:
            self.put_page_and_type(self.mode.addr(e) >> 12)

    def is_guest_l2_slot(self, mfn: int, slot: int) -> bool:
        if self.mode.pae:
            return not (self.ft.flags[mfn] & F_PAE_XEN_L2) or slot < self.mode.first_xen_l2_slot
        return slot < self.mode.first_xen_l2_slot

    def install_xen_slots(self, l2_mfn: int) -> None:
        """Write the hypervisor hole's L2 entries into a top-level L2."""
        base = l2_mfn << 12
        for slot in range(self.mode.first_xen_l2_slot, self.mode.entries):
            self._write_entry(base + slot * self.mode.entry_size, self.hole_l2.get(slot, 0))

    # ---- validation ------------------------------------------------------
    def _validate(self, mfn: int, ptype: int) -> int:
        if ptype == PGT_l1:
            return self._validate_table(mfn, self.mode.entries, self.get_page_from_l1e,
                                        self.put_page_from_l1e)
        if ptype == PGT_l2:
            n = self.mode.entries
            if not self.mode.pae or self.ft.flags[mfn] & F_PAE_XEN_L2:
                n = self.mode.first_xen_l2_slot
            rc = self._validate_table(mfn, n, self.get_page_from_l2e, self.put_page_from_l2e)
            if rc == 0 and n != self.mode.entries:
                self.install_xen_slots(mfn)
            return rc
        if ptype == PGT_l3:
            if not self.mode.pae:
                return -EINVAL
            if not self._read_entry(mfn, 3) & PTE_P:
                return -EINVAL          # a 32-bit guest's L3[3] holds Xen's mappings
            done = []
            for i in range(4):
                e = self._read_entry(mfn, i)
                rc = self.get_page_from_l3e(e, i)
                if rc:
                    for j, ej in done:
                        self.put_page_from_l3e(ej)
                    return rc
                done.append((i, e))
            return 0
        if ptype == PGT_seg_desc:
            return self._validate_descriptors(mfn)
        return 0

    def _validate_table(self, mfn: int, n: int, get, put) -> int:
        entries = self._read_table(mfn, n)
        for i, e in enumerate(entries):
            rc = get(e)
            if rc:
                for e2 in entries[:i]:
                    put(e2)
                log.debug("validating mfn %#x: entry %d (%#x) refused: %d", mfn, i, e, rc)
                return rc
        return 0

    def _read_table(self, mfn: int, n: int):
        raw = self.ram.read(mfn << 12, n * self.mode.entry_size)
        return array("Q" if self.mode.pae else "I", raw)

    def _devalidate(self, mfn: int, ptype: int) -> None:
        if ptype == PGT_l1:
            for e in self._read_table(mfn, self.mode.entries):
                self.put_page_from_l1e(e)
        elif ptype == PGT_l2:
            n = self.mode.entries
            if not self.mode.pae or self.ft.flags[mfn] & F_PAE_XEN_L2:
                n = self.mode.first_xen_l2_slot
            for e in self._read_table(mfn, n):
                self.put_page_from_l2e(e)
        elif ptype == PGT_l3:
            for e in self._read_table(mfn, 4):
                self.put_page_from_l3e(e)

    def _validate_descriptors(self, mfn: int) -> int:
        from .descriptors import check_descriptor
        base = mfn << 12
        for i in range(512):
            lo, hi = self.ram.r32(base + i * 8), self.ram.r32(base + i * 8 + 4)
            fixed = check_descriptor(lo, hi, self.mode)
            if fixed is None:
                return -EINVAL
            if fixed != (lo, hi):
                self.ram.w32(base + i * 8 + 4, fixed[1])
        return 0

    # ---- updates ---------------------------------------------------------
    def mod_entry(self, pte_addr: int, new: int, preserve_ad: bool = False) -> int:
        """MMU_NORMAL_PT_UPDATE: write one entry of a page-table page.
        A frame that is not the domain's is -EINVAL (get_page_from_gfn()
        fails in do_mmu_update), whoever owns it."""
        mfn = pte_addr >> 12
        if not self.owns(mfn):
            return -EINVAL
        if self.mode.pae and pte_addr & 7 or not self.mode.pae and pte_addr & 3:
            return -EINVAL
        t = self.ft.type[mfn] if self.ft.type_count[mfn] else PGT_none
        slot = (pte_addr & 0xFFF) // self.mode.entry_size
        if t == PGT_l1:
            return self._mod_l1(pte_addr, new, preserve_ad)
        if t == PGT_l2:
            if not self.is_guest_l2_slot(mfn, slot):
                return -EPERM
            rc = self._mod(pte_addr, new, preserve_ad, self.get_page_from_l2e,
                           self.put_page_from_l2e)
            if rc == 0 and self.on_entry_written:
                self.on_entry_written(mfn, slot)
            return rc
        if t == PGT_l3 and self.mode.pae:
            if slot >= 3:
                return -EINVAL          # the final slot holds Xen's mappings
            rc = self._mod(pte_addr, new, preserve_ad,
                           lambda e: self.get_page_from_l3e(e, slot), self.put_page_from_l3e)
            if rc == 0 and self.on_entry_written:
                self.on_entry_written(mfn, slot)
            return rc
        if t in (PGT_seg_desc,):
            return -EINVAL
        # a plain (writable-typed or untyped) page: the update is a normal write
        if self.get_page_type(mfn, PGT_writable):
            return -EINVAL
        self._write_entry(pte_addr, new)
        self.put_page_type(mfn)
        return 0

    def mod_entry_io(self, pte_addr: int, new: int, preserve_ad: bool = False) -> int:
        """mod_entry() for foreigndom DOMID_IO (pg_owner dom_io): an L1 entry
        that needs a new reference is refused (l1e_io_refusal), a flag-only
        change takes mod_l1_entry's fast path; L2/L3 entries are -EINVAL
        (pg_owner != pt_owner); a plain page is written as usual."""
        mfn = pte_addr >> 12
        if self.owns(mfn) and self.ft.type_count[mfn]:
            t = self.ft.type[mfn]
            if t in (PGT_l2, PGT_l3):
                return -EINVAL
            if t == PGT_l1 and new & PTE_P:
                pae = self.mode.pae
                if new & (_L1_BAD_PAE if pae else _L1_BAD_NONPAE):
                    return -EINVAL
                old = self.ram.r64(pte_addr) if pae else self.ram.r32(pte_addr)
                if not (old & PTE_P and ((old ^ new) & (_ADDR_PAE | PTE_RW)) == 0):
                    return self.l1e_io_refusal(new)
        return self.mod_entry(pte_addr, new, preserve_ad)

    def _mod_l1(self, addr: int, new: int, preserve_ad: bool) -> int:
        """mod_l1_entry: the hot path of mmu_update, update_va_mapping and
        writable page tables, written out flat (same rules as _mod)."""
        mm = self.ram.mm
        pae = self.mode.pae
        old = _U64.unpack_from(mm, addr)[0] if pae else _U32.unpack_from(mm, addr)[0]
        if preserve_ad:
            new |= old & _AD            # update_intpte(): OR the old A/D bits in
        if new & PTE_P:
            if new & (_L1_BAD_PAE if pae else _L1_BAD_NONPAE):
                return -EINVAL
            if old & PTE_P and ((old ^ new) & (_ADDR_PAE | PTE_RW)) == 0:
                # same frame, same writability: only the flags change
                if pae:
                    store64(mm, addr, new)
                else:
                    store32(mm, addr, new)
                return 0
            rc = self.get_page_from_l1e(new)
            if rc:
                return rc
        if pae:
            store64(mm, addr, new)      # one store, as Xen's atomic PTE writes
        else:
            store32(mm, addr, new)
        if old & PTE_P:
            self.put_page_from_l1e(old)
        return 0

    def _mod(self, addr: int, new: int, preserve_ad: bool, get, put) -> int:
        old = self.ram.r64(addr) if self.mode.pae else self.ram.r32(addr)
        if preserve_ad:
            new |= old & _AD            # update_intpte(): OR the old A/D bits in
        same_frame = (old & PTE_P) and (new & PTE_P) and \
            self.mode.addr(old) == self.mode.addr(new) and (old & PTE_RW) == (new & PTE_RW)
        if same_frame:
            # only the flags change: still check them, keep the references
            rc = get(new)
            if rc:
                return rc
            put(new)
            self._write_entry(addr, new)
            return 0
        rc = get(new)
        if rc:
            return rc
        self._write_entry(addr, new)
        put(old)
        return 0

    # ---- guest linear addresses -------------------------------------------
    def l1e_addr(self, top_mfn: int, va: int) -> Optional[int]:
        """Machine address of the L1 entry mapping va under top_mfn, or None."""
        if self.mode.pae:
            e3 = self._read_entry(top_mfn, va >> 30)
            if not e3 & PTE_P:
                return None
            e2 = self.ram.r64(self.mode.addr(e3) + ((va >> 21) & 511) * 8)
            if not e2 & PTE_P or e2 & PTE_PSE:
                return None
            return self.mode.addr(e2) + ((va >> 12) & 511) * 8
        e2 = self._read_entry(top_mfn, va >> 22)
        if not e2 & PTE_P or e2 & PTE_PSE:
            return None
        return (e2 & 0xFFFFF000) + ((va >> 12) & 1023) * 4

    def translate(self, top_mfn: int, va: int, write: bool) -> Optional[int]:
        """Guest linear -> machine address as a supervisor access (CR0.WP
        set), setting accessed/dirty bits like the CPU; None on a fault."""
        if va >= self.mode.hole_start and write:
            return None
        if self.mode.pae:
            e3 = self._read_entry(top_mfn, va >> 30)
            if not e3 & PTE_P:
                return None
            a2 = self.mode.addr(e3) + ((va >> 21) & 511) * 8
            e2 = self.ram.r64(a2)
        else:
            a2 = (top_mfn << 12) + (va >> 22) * 4
            e2 = self.ram.r32(a2)
        if not e2 & PTE_P or e2 & PTE_PSE or (write and not e2 & PTE_RW):
            return None
        a1 = self.mode.addr(e2) + self.mode.l1_index(va) * self.mode.entry_size
        if a1 >= self.ram.size:
            return None
        e1 = self.ram.r64(a1) if self.mode.pae else self.ram.r32(a1)
        if not e1 & PTE_P or (write and not e1 & PTE_RW):
            return None
        pa = self.mode.addr(e1) + (va & 0xFFF)
        if pa >= self.ram.size:
            return None
        if not e2 & PTE_A:
            self.ram.test_and_set_bit(a2, 5)
        if not e1 & PTE_A or (write and not e1 & PTE_D):
            self.ram.test_and_set_bit(a1, 5)
            if write:
                self.ram.test_and_set_bit(a1, 6)
        return pa

    # ---- pinning and base pointers --------------------------------------
    def pin(self, mfn: int, ptype: int) -> int:
        if not self.owns(mfn):
            return -EINVAL
        if self.ft.flags[mfn] & F_PINNED:
            return -EINVAL
        rc = self.get_page_and_type(mfn, ptype)
        if rc:
            return rc
        self.ft.flags[mfn] |= F_PINNED
        return 0

    def unpin(self, mfn: int) -> int:
        if not self.owns(mfn) or not self.ft.flags[mfn] & F_PINNED:
            return -EINVAL
        self.ft.flags[mfn] &= ~F_PINNED
        self.put_page_and_type(mfn)
        return 0
