"""The MMU (qemu_xenpv/mm.py) on a small RAM with a hand-made frame table:
ownership, reference and type counts, validation of page-table pages as
Xen's mm.c does it, entry updates, pinning and guest address translation."""

from __future__ import annotations

import pytest

from qemu_xenpv import abi
from qemu_xenpv.abi import (PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D, PTE_PSE, PTE_PCD, PTE_PWT,
                            PTE_G, EINVAL, EPERM)
from qemu_xenpv.mm import (FrameTable, MMU, PagingMode, OWNER_NONE, F_PINNED, F_PAE_XEN_L2,
                           PGT_none, PGT_l1, PGT_l2, PGT_l3, PGT_writable)

DOMID = 7
NR = 1024                       # 4 MiB of RAM
XEN_FRAMES = range(0, 16)       # the M2P lives in frame 0
DOM_FRAMES = range(16, 1000)
NONE_FRAMES = range(1000, NR)
HOLE_MFN = 9                    # an (unvalidated) hypervisor L1 for the hole
RWP = PTE_P | PTE_RW


class Machine:
    def __init__(self, ram, pae: bool):
        self.ram = ram
        self.pae = pae
        self.ft = FrameTable(NR)
        for m in XEN_FRAMES:
            self.ft.owner[m] = abi.DOMID_XEN
        for m in DOM_FRAMES:
            self.ft.owner[m] = DOMID
        self.mode = PagingMode(pae)
        first = self.mode.first_xen_l2_slot
        self.hole = {first: (HOLE_MFN << 12) | PTE_P | PTE_RW | PTE_A | PTE_D,
                     self.mode.entries - 1: (HOLE_MFN + 1 << 12) | PTE_P | PTE_A}
        self.mmu = MMU(ram, self.ft, DOMID, self.mode, self.hole, 0)
        self.esz = 8 if pae else 4

    # raw table writes (before validation, as a guest would prepare a page)
    def put(self, table: int, idx: int, val: int) -> None:
        addr = (table << 12) + idx * self.esz
        if self.pae:
            self.ram.w64(addr, val)
        else:
            self.ram.w32(addr, val)

    def get(self, table: int, idx: int) -> int:
        addr = (table << 12) + idx * self.esz
        return self.ram.r64(addr) if self.pae else self.ram.r32(addr)

    def addr(self, table: int, idx: int) -> int:
        return (table << 12) + idx * self.esz

    def counts(self, mfn: int):
        return self.ft.type[mfn], self.ft.type_count[mfn], self.ft.count[mfn]

    def all_clear(self, frames) -> bool:
        return all(self.ft.count[m] == 0 and self.ft.type_count[m] == 0 for m in frames)


@pytest.fixture(params=[True, False], ids=["pae", "nonpae"])
def m(request, make_ram):
    return Machine(make_ram(NR * 4096), request.param)


@pytest.fixture
def pae(make_ram):
    return Machine(make_ram(NR * 4096), True)


@pytest.fixture
def nonpae(make_ram):
    return Machine(make_ram(NR * 4096), False)


# ---- ownership and references ---------------------------------------------------
def test_ownership(m):
    mmu = m.mmu
    assert mmu.owns(16) and mmu.owns(999)
    assert not mmu.owns(0) and not mmu.owns(HOLE_MFN)      # DOMID_XEN
    assert not mmu.owns(1000)                                # nobody's
    assert not mmu.owns(NR) and not mmu.owns(-1)             # not RAM
    assert m.ft.owner[1000] == OWNER_NONE


def test_get_put_page(m):
    mmu = m.mmu
    assert mmu.get_page(100) and mmu.get_page(100)
    assert m.ft.count[100] == 2
    mmu.put_page(100)
    mmu.put_page(100)
    assert m.ft.count[100] == 0
    with pytest.raises(AssertionError):
        mmu.put_page(100)
    assert not mmu.get_page(5) and m.ft.count[5] == 0        # Xen's frame
    assert not mmu.get_page(1001) and m.ft.count[1001] == 0  # nobody's
    assert not mmu.get_page(NR + 5)


def test_get_page_and_type(m):
    mmu = m.mmu
    assert mmu.get_page_and_type(100, PGT_writable) == 0
    assert m.counts(100) == (PGT_writable, 1, 1)
    assert mmu.get_page_and_type(100, PGT_writable) == 0
    assert m.counts(100) == (PGT_writable, 2, 2)
    # a frame in use as writable cannot become a page table
    assert mmu.get_page_and_type(100, PGT_l1) == -EINVAL
    assert m.counts(100) == (PGT_writable, 2, 2)
    mmu.put_page_and_type(100)
    mmu.put_page_and_type(100)
    assert m.counts(100) == (PGT_none, 0, 0)
    assert mmu.get_page_and_type(5, PGT_writable) < 0
    assert mmu.get_page_and_type(NR + 1, PGT_writable) < 0


# ---- L1 validation ------------------------------------------------------------
def test_writable_mapping_blocks_pinning_as_l1(m):
    mmu = m.mmu
    l1, target = 100, 101
    m.put(l1, 0, (target << 12) | RWP)
    assert mmu.pin(l1, PGT_l1) == 0
    assert m.counts(target) == (PGT_writable, 1, 1)
    assert m.counts(l1)[:2] == (PGT_l1, 1)
    assert m.ft.flags[l1] & F_PINNED
    # the target is now writably mapped: it cannot be an L1
    assert mmu.pin(target, PGT_l1) == -EINVAL
    assert m.counts(target) == (PGT_writable, 1, 1)
    assert not m.ft.flags[target] & F_PINNED


def test_read_only_mapping_of_page_table_allowed(m):
    mmu = m.mmu
    a, b = 100, 101
    assert mmu.pin(a, PGT_l1) == 0
    m.put(b, 3, (a << 12) | PTE_P)
    assert mmu.pin(b, PGT_l1) == 0
    assert m.counts(a) == (PGT_l1, 1, 2)       # the pin and b's read-only reference


def test_l1_writable_mapping_of_another_page_table_refused(m):
    mmu = m.mmu
    a, b = 100, 101
    assert mmu.pin(a, PGT_l1) == 0
    m.put(b, 3, (a << 12) | RWP)
    assert mmu.pin(b, PGT_l1) < 0
    assert m.counts(b) == (PGT_none, 0, 0)
    assert m.counts(a) == (PGT_l1, 1, 1)
    assert not m.ft.flags[b] & F_PINNED


def test_l1_writable_self_mapping_refused(m):
    """Xen takes the type before validating: an L1 mapping itself writable
    must not validate (else the guest could write its own page table)."""
    mmu = m.mmu
    l1 = 100
    m.put(l1, 5, (l1 << 12) | RWP)
    rc = mmu.pin(l1, PGT_l1)
    assert rc < 0
    assert m.counts(l1) == (PGT_none, 0, 0)


def test_l1_writable_mapping_of_its_own_l2_refused(m):
    mmu = m.mmu
    l2, l1 = 100, 101
    m.put(l2, 0, (l1 << 12) | RWP)
    m.put(l1, 0, (l2 << 12) | RWP)
    if m.pae:
        # validate the L2 directly (no L3 needed for the check)
        rc = mmu.get_page_and_type(l2, PGT_l2)
    else:
        rc = mmu.pin(l2, PGT_l2)
    assert rc < 0
    assert m.all_clear([l1, l2])


@pytest.mark.parametrize("flag", [PTE_PCD, PTE_PWT, PTE_PSE])
def test_l1_disallowed_flags(m, flag):
    l1 = 100
    m.put(l1, 0, (200 << 12) | PTE_P | flag)
    assert m.mmu.pin(l1, PGT_l1) == -EINVAL
    assert m.all_clear([l1, 200])


def test_l1_allowed_flags(m):
    l1 = 100
    m.put(l1, 0, (200 << 12) | PTE_P | PTE_US | PTE_A | PTE_D | PTE_G | 0xE00)
    m.put(l1, 1, 0xFFFFF000 & ~PTE_P)            # not present: anything goes
    assert m.mmu.pin(l1, PGT_l1) == 0
    assert m.counts(200) == (PGT_none, 0, 1)


def test_pae_l1_high_bits_refused(pae):
    l1 = 100
    pae.put(l1, 0, (200 << 12) | PTE_P | (1 << 63))      # NX: this vCPU has none
    assert pae.mmu.pin(l1, PGT_l1) == -EINVAL


@pytest.mark.parametrize("mfn", [0, HOLE_MFN, 1000, 1020])
def test_l1_mapping_frame_not_owned(m, mfn):
    l1 = 100
    m.put(l1, 0, (200 << 12) | RWP)
    m.put(l1, 1, (mfn << 12) | PTE_P)
    assert m.mmu.pin(l1, PGT_l1) < 0
    # the first entry's reference was rolled back
    assert m.all_clear([l1, 200])


def test_l1_mapping_beyond_ram(pae):
    l1 = 100
    pae.put(l1, 0, (0x12345 << 12) | PTE_P)
    assert pae.mmu.pin(l1, PGT_l1) < 0
    assert pae.all_clear([l1])


# ---- L2 validation ----------------------------------------------------------------
def test_l2_pse_refused(m):
    l2 = 100
    m.put(l2, 0, (0x200 << 12) | PTE_P | PTE_PSE)
    rc = m.mmu.get_page_and_type(l2, PGT_l2)
    assert rc == -EINVAL
    assert m.all_clear([l2])


def test_l2_pcd_refused(m):
    l2, l1 = 100, 101
    m.put(l2, 0, (l1 << 12) | PTE_P | PTE_PCD)
    assert m.mmu.get_page_and_type(l2, PGT_l2) == -EINVAL
    assert m.all_clear([l2, l1])


def test_l2_entry_makes_l1(m):
    l2, l1, page = 100, 101, 102
    m.put(l2, 1, (l1 << 12) | RWP | PTE_US)
    m.put(l1, 0, (page << 12) | RWP)
    assert m.mmu.get_page_and_type(l2, PGT_l2) == 0
    assert m.counts(l1) == (PGT_l1, 1, 1)
    assert m.counts(page) == (PGT_writable, 1, 1)
    # a frame in use as an L1 cannot be mapped writable
    other = 103
    m.put(other, 0, (l1 << 12) | RWP)
    assert m.mmu.pin(other, PGT_l1) < 0


def test_l2_entry_to_writable_page_refused(m):
    l1, page, l2 = 100, 101, 102
    m.put(l1, 0, (page << 12) | RWP)
    assert m.mmu.pin(l1, PGT_l1) == 0
    m.put(l2, 0, (page << 12) | RWP)         # page is writable-typed: not an L1
    assert m.mmu.get_page_and_type(l2, PGT_l2) == -EINVAL
    assert m.counts(page) == (PGT_writable, 1, 1)


# ---- pin / unpin -----------------------------------------------------------------
def _pae_tree(mc: Machine):
    """L3 100 -> L2s 101 (slot 0) and 102 (slot 3, Xen's); L2 101[0] -> L1 103
    -> pages 110 (rw), 111 (ro); L1 103 also maps itself read-only."""
    mc.put(100, 0, (101 << 12) | PTE_P)
    mc.put(100, 3, (102 << 12) | PTE_P)
    mc.put(101, 0, (103 << 12) | RWP)
    mc.put(103, 0, (110 << 12) | RWP)
    mc.put(103, 1, (111 << 12) | PTE_P)
    mc.put(103, 2, (103 << 12) | PTE_P)
    return [100, 101, 102, 103, 110, 111]


def test_pin_unpin_pae_tree(pae):
    frames = _pae_tree(pae)
    mmu = pae.mmu
    assert mmu.pin(100, PGT_l3) == 0
    assert pae.counts(100) == (PGT_l3, 1, 1) and pae.ft.flags[100] & F_PINNED
    assert pae.counts(101) == (PGT_l2, 1, 1)
    assert pae.counts(102) == (PGT_l2, 1, 1)
    assert pae.ft.flags[102] & F_PAE_XEN_L2 and not pae.ft.flags[101] & F_PAE_XEN_L2
    assert pae.counts(103) == (PGT_l1, 1, 2)
    assert pae.counts(110) == (PGT_writable, 1, 1)
    assert pae.counts(111) == (PGT_none, 0, 1)
    # the hypervisor slots were installed in the Xen L2
    for slot in range(pae.mode.first_xen_l2_slot, 512):
        assert pae.get(102, slot) == pae.hole.get(slot, 0)
    assert pae.get(101, pae.mode.first_xen_l2_slot) == 0
    # double pin, unpin of an unpinned frame
    assert mmu.pin(100, PGT_l3) == -EINVAL
    assert mmu.unpin(101) == -EINVAL
    assert mmu.unpin(100) == 0
    assert pae.all_clear(frames)
    assert all(pae.ft.type[f] == PGT_none for f in frames)
    assert not pae.ft.flags[100] & F_PINNED and not pae.ft.flags[102] & F_PAE_XEN_L2
    assert mmu.unpin(100) == -EINVAL


def test_pae_xen_l2_cannot_be_shared(pae):
    """An L2 under L3[3] (holding Xen's slots) cannot also be an ordinary L2,
    and vice versa (Xen's PGT_pae_xen_l2)."""
    _pae_tree(pae)                                # L3 100: [0] -> 101, [3] -> 102 (Xen's)
    assert pae.mmu.pin(100, PGT_l3) == 0
    pae.put(200, 0, (102 << 12) | PTE_P)          # Xen's L2 as an ordinary one
    pae.put(200, 3, (104 << 12) | PTE_P)
    assert pae.mmu.pin(200, PGT_l3) == -EINVAL
    pae.put(201, 3, (101 << 12) | PTE_P)          # an ordinary L2 under slot 3
    assert pae.mmu.pin(201, PGT_l3) == -EINVAL
    assert pae.all_clear([200, 201, 104])
    assert pae.counts(101) == (PGT_l2, 1, 1) and pae.counts(102) == (PGT_l2, 1, 1)


def test_pae_l3_needs_slot_3(pae):
    pae.put(100, 0, (101 << 12) | PTE_P)
    assert pae.mmu.pin(100, PGT_l3) == -EINVAL
    assert pae.all_clear([100, 101])


def test_pae_l3_refused_flags(pae):
    pae.put(100, 3, (102 << 12) | PTE_P | PTE_PSE)
    assert pae.mmu.pin(100, PGT_l3) == -EINVAL
    assert pae.all_clear([100, 102])


def test_pae_l3_failure_rolls_back(pae):
    pae.put(100, 0, (101 << 12) | PTE_P)
    pae.put(100, 1, (5 << 12) | PTE_P)            # Xen's frame
    pae.put(100, 3, (102 << 12) | PTE_P)
    assert pae.mmu.pin(100, PGT_l3) < 0
    assert pae.all_clear([100, 101, 102])


def test_l3_not_in_nonpae(nonpae):
    assert nonpae.mmu.pin(100, PGT_l3) == -EINVAL


def test_pin_not_owned(m):
    assert m.mmu.pin(5, PGT_l1) < 0
    assert m.mmu.pin(1000, PGT_l1) < 0
    assert m.mmu.unpin(5) == -EINVAL


def test_pin_unpin_nonpae_l2(nonpae):
    mc = nonpae
    mc.put(100, 0, (101 << 12) | RWP)
    mc.put(101, 0, (110 << 12) | RWP)
    mc.put(101, 1, (100 << 12) | PTE_P)           # the L2 mapped read-only
    assert mc.mmu.pin(100, PGT_l2) == 0
    assert mc.counts(100) == (PGT_l2, 1, 2)
    assert mc.counts(101) == (PGT_l1, 1, 1)
    first = mc.mode.first_xen_l2_slot
    assert first == 0xFC000000 >> 22
    for slot in range(first, 1024):
        assert mc.get(100, slot) == mc.hole.get(slot, 0)
    assert mc.mmu.unpin(100) == 0
    assert mc.all_clear([100, 101, 110])


def test_unpin_releases_entry_references(m):
    l1 = 100
    for i, page in enumerate(range(200, 210)):
        m.put(l1, i, (page << 12) | (RWP if i % 2 else PTE_P))
    assert m.mmu.pin(l1, PGT_l1) == 0
    assert all(m.ft.count[p] == 1 for p in range(200, 210))
    assert m.mmu.unpin(l1) == 0
    assert m.all_clear([l1, *range(200, 210)])
    # and the frames may now take any type
    assert m.mmu.pin(201, PGT_l1) == 0


# ---- mod_entry -----------------------------------------------------------------
def test_mod_entry_l1(m):
    mmu = m.mmu
    l1 = 100
    m.put(l1, 0, (200 << 12) | RWP)
    assert mmu.pin(l1, PGT_l1) == 0
    # remap entry 0 from 200 to 201
    assert mmu.mod_entry(m.addr(l1, 0), (201 << 12) | RWP) == 0
    assert m.get(l1, 0) == (201 << 12) | RWP
    assert m.counts(200) == (PGT_none, 0, 0)
    assert m.counts(201) == (PGT_writable, 1, 1)
    # same frame, RW -> RO keeps the frame referenced, drops the writable type
    assert mmu.mod_entry(m.addr(l1, 0), (201 << 12) | PTE_P) == 0
    assert m.counts(201) == (PGT_none, 0, 1)
    # same frame and rights, only flags change
    assert mmu.mod_entry(m.addr(l1, 0), (201 << 12) | PTE_P | PTE_A) == 0
    assert m.counts(201) == (PGT_none, 0, 1)
    # clear it
    assert mmu.mod_entry(m.addr(l1, 0), 0) == 0
    assert m.counts(201) == (PGT_none, 0, 0)


@pytest.mark.parametrize("bad", [
    (5 << 12) | PTE_P,                      # Xen's frame
    (1000 << 12) | PTE_P,                   # nobody's
    (200 << 12) | PTE_P | PTE_PCD,          # disallowed flag
    (100 << 12) | RWP,                      # the L1 itself, writable
])
def test_mod_entry_failure_leaves_entry(m, bad):
    mmu = m.mmu
    l1 = 100
    m.put(l1, 4, (300 << 12) | RWP)
    assert mmu.pin(l1, PGT_l1) == 0
    before = [m.counts(f) for f in (100, 200, 300)]
    assert mmu.mod_entry(m.addr(l1, 4), bad) < 0
    assert m.get(l1, 4) == (300 << 12) | RWP
    assert [m.counts(f) for f in (100, 200, 300)] == before


def test_mod_entry_misaligned_or_not_owned(m):
    l1 = 100
    assert m.mmu.pin(l1, PGT_l1) == 0
    assert m.mmu.mod_entry(m.addr(l1, 1) + 2, 0) == -EINVAL
    assert m.mmu.mod_entry(m.addr(5, 0), 0) < 0            # Xen's page
    assert m.mmu.mod_entry(m.addr(1000, 0), 0) < 0
    assert m.ram.read(5 << 12, 8) == bytes(8)


def test_mod_entry_plain_page_is_a_write(m):
    page = 150
    assert m.mmu.mod_entry(m.addr(page, 2), 0x12345067) == 0
    assert m.get(page, 2) == 0x12345067
    assert m.counts(page) == (PGT_none, 0, 0)


def test_mod_entry_pinned_l1_page_not_plain(m):
    """A write into a page-table page is validated, never a plain write."""
    l1 = 100
    assert m.mmu.pin(l1, PGT_l1) == 0
    assert m.mmu.mod_entry(m.addr(l1, 0), (5 << 12) | PTE_P) < 0
    assert m.get(l1, 0) == 0


def test_mod_entry_pae_xen_l2_slots(pae):
    _pae_tree(pae)
    mmu = pae.mmu
    assert mmu.pin(100, PGT_l3) == 0
    first = pae.mode.first_xen_l2_slot
    for slot in (first, first + 1, 511):
        before = pae.get(102, slot)
        assert mmu.mod_entry(pae.addr(102, slot), 0) == -EPERM
        assert pae.get(102, slot) == before
    # guest slots of the same L2 are the guest's
    pae.put(104, 0, 0)
    assert mmu.mod_entry(pae.addr(102, 0), (104 << 12) | RWP) == 0
    assert pae.counts(104) == (PGT_l1, 1, 1)
    # and every slot of an ordinary L2 (not under L3[3]) is the guest's
    assert mmu.mod_entry(pae.addr(101, first), (105 << 12) | RWP) == 0
    assert pae.counts(105) == (PGT_l1, 1, 1)


def test_mod_entry_nonpae_xen_slots(nonpae):
    mc = nonpae
    assert mc.mmu.pin(100, PGT_l2) == 0
    first = mc.mode.first_xen_l2_slot
    before = mc.get(100, first)
    assert mc.mmu.mod_entry(mc.addr(100, first), 0) == -EPERM
    assert mc.get(100, first) == before
    assert mc.mmu.mod_entry(mc.addr(100, first - 1), (101 << 12) | RWP) == 0
    assert mc.counts(101) == (PGT_l1, 1, 1)


def test_mod_entry_l3(pae):
    _pae_tree(pae)
    mmu = pae.mmu
    changed = []
    mmu.on_entry_written = lambda mfn, idx: changed.append((mfn, idx))
    assert mmu.pin(100, PGT_l3) == 0
    before = pae.get(100, 3)
    assert mmu.mod_entry(pae.addr(100, 3), 0) == -EINVAL
    assert mmu.mod_entry(pae.addr(100, 3), (106 << 12) | PTE_P) == -EINVAL
    assert pae.get(100, 3) == before and changed == []
    # slots 0-2 may change, and the owner hears of it
    assert mmu.mod_entry(pae.addr(100, 1), (107 << 12) | PTE_P) == 0
    assert pae.counts(107) == (PGT_l2, 1, 1)
    assert changed == [(100, 1)]
    assert mmu.mod_entry(pae.addr(100, 1), (108 << 12) | PTE_P | PTE_PSE) == -EINVAL
    assert pae.get(100, 1) == (107 << 12) | PTE_P


def test_mod_entry_preserve_ad(m):
    l1 = 100
    m.put(l1, 0, (200 << 12) | RWP | PTE_A | PTE_D)
    assert m.mmu.pin(l1, PGT_l1) == 0
    assert m.mmu.mod_entry(m.addr(l1, 0), (200 << 12) | RWP | PTE_US, preserve_ad=True) == 0
    assert m.get(l1, 0) == (200 << 12) | RWP | PTE_US | PTE_A | PTE_D


# ---- translate -----------------------------------------------------------------
def _map(mc: Machine, va: int, page: int, rw: bool):
    """Build a minimal tree mapping va -> page; returns the top-level mfn."""
    top, l2, l1 = 100, 101, 102
    if mc.pae:
        mc.put(top, va >> 30, (l2 << 12) | PTE_P)
        if va >> 30 != 3:
            mc.put(top, 3, (103 << 12) | PTE_P)
        mc.put(l2, (va >> 21) & 511, (l1 << 12) | RWP)
        mc.put(l1, (va >> 12) & 511, (page << 12) | PTE_P | (PTE_RW if rw else 0))
        assert mc.mmu.pin(top, PGT_l3) == 0
    else:
        mc.put(top, va >> 22, (l1 << 12) | RWP)
        mc.put(l1, (va >> 12) & 1023, (page << 12) | PTE_P | (PTE_RW if rw else 0))
        assert mc.mmu.pin(top, PGT_l2) == 0
    return top, l1


def test_translate(m):
    va = 0x00403123
    top, l1 = _map(m, va, 300, rw=True)
    idx = (va >> 12) & (511 if m.pae else 1023)
    assert m.mmu.translate(top, va, write=False) == (300 << 12) | 0x123
    assert m.get(l1, idx) & PTE_A and not m.get(l1, idx) & PTE_D
    assert m.mmu.translate(top, va, write=True) == (300 << 12) | 0x123
    assert m.get(l1, idx) & PTE_D
    # the L2 entry got its accessed bit
    l2e = m.get(101 if m.pae else top, ((va >> 21) & 511) if m.pae else va >> 22)
    assert l2e & PTE_A
    # unmapped neighbours fault
    assert m.mmu.translate(top, va + 0x1000, write=False) is None
    assert m.mmu.translate(top, 0x40000000 * (2 if m.pae else 1), write=False) is None


def test_translate_read_only(m):
    va = 0x00801000
    top, l1 = _map(m, va, 301, rw=False)
    assert m.mmu.translate(top, va, write=True) is None
    idx = (va >> 12) & (511 if m.pae else 1023)
    assert not m.get(l1, idx) & PTE_D
    assert m.mmu.translate(top, va, write=False) == 301 << 12


def test_translate_refuses_hole_writes(m):
    top, _ = _map(m, 0x1000, 302, rw=True)
    assert m.mmu.translate(top, m.mode.hole_start, write=True) is None
    assert m.mmu.translate(top, 0xFFFFF000, write=True) is None


def test_translate_pse_and_bad_frames(pae):
    top, l2, l1 = 100, 101, 102
    pae.put(top, 0, (l2 << 12) | PTE_P)
    pae.put(top, 3, (103 << 12) | PTE_P)
    assert pae.mmu.pin(top, PGT_l3) == 0
    # a large page (never validated as such) is a fault for translate
    pae.ram.w64((l2 << 12) + 0, (0x200 << 12) | RWP | PTE_PSE)
    assert pae.mmu.translate(top, 0x1000, write=False) is None
    # an L2 entry pointing past the end of RAM faults instead of raising
    pae.ram.w64((l2 << 12) + 8, (0x7FFFF << 12) | RWP)
    assert pae.mmu.translate(top, 0x200000, write=False) is None


def test_l1e_addr(m):
    va = 0x00403000
    top, l1 = _map(m, va, 300, rw=True)
    idx = (va >> 12) & (511 if m.pae else 1023)
    assert m.mmu.l1e_addr(top, va) == m.addr(l1, idx)
    assert m.mmu.l1e_addr(top, 0x08000000) is None


# ---- M2P ---------------------------------------------------------------------------
def test_m2p(m):
    m.mmu.set_m2p(200, 0x1234)
    assert m.mmu.m2p(200) == 0x1234
    assert m.ram.r32(200 * 4) == 0x1234


def test_paging_mode():
    p, n = PagingMode(True), PagingMode(False)
    assert (p.entry_size, p.entries, p.levels, p.top) == (8, 512, 3, PGT_l3)
    assert (n.entry_size, n.entries, n.levels, n.top) == (4, 1024, 2, PGT_l2)
    assert p.hole_start == 0xF5800000 and n.hole_start == 0xFC000000
    assert p.first_xen_l2_slot == (0xF5800000 >> 21) & 511 == 428
    assert n.first_xen_l2_slot == 0xFC000000 >> 22 == 1008
    assert p.addr((0xABCDE << 12) | (1 << 63) | 0x67) == 0xABCDE << 12
    assert n.addr(0xABCDE067) == 0xABCDE000
    assert p.l1_index(0x00403000) == 3 and n.l1_index(0x00403000) == 3
    assert p.l2_index(0xC0400000) == 2 and n.l2_index(0xC0400000) == 0x301


# ---- Xen's error codes (mm.c get_page_from_l1e, mod_l1_entry, do_mmu_update) ----
def test_l1e_writable_mapping_of_a_typed_page_is_ebusy(m):
    """get_page_from_l1e(): a frame that cannot take the writable type (a page
    table, a live descriptor page) is "could_not_pin": -EBUSY, not -EINVAL."""
    mmu = m.mmu
    l1, table = 100, 101
    assert mmu.pin(table, PGT_l1) == 0
    assert mmu.pin(l1, PGT_l1) == 0
    before = [m.counts(f) for f in (l1, table)]
    assert mmu.mod_entry(m.addr(l1, 0), (table << 12) | RWP) == -EBUSY
    assert mmu.mod_entry(m.addr(l1, 0), (table << 12) | PTE_P) == 0   # read-only is fine
    assert mmu.mod_entry(m.addr(l1, 0), 0) == 0
    assert [m.counts(f) for f in (l1, table)] == before
    # a descriptor page, too
    m.ft.type[102], m.ft.type_count[102], m.ft.count[102] = PGT_seg_desc, 1, 1
    assert mmu.mod_entry(m.addr(l1, 1), (102 << 12) | RWP) == -EBUSY
    assert m.counts(102) == (PGT_seg_desc, 1, 1)


def test_pin_l1_mapping_itself_writable_is_ebusy(m):
    m.put(100, 5, (100 << 12) | RWP)
    assert m.mmu.pin(100, PGT_l1) == -EBUSY
    assert m.counts(100) == (PGT_none, 0, 0)


def test_l1e_frame_not_owned_codes(m):
    """Not RAM, or the first MiB (Xen's dom_io frames): -EPERM; RAM of
    another owner (Xen, nobody: a free frame): -EBUSY."""
    mmu = m.mmu
    l1 = 100
    assert mmu.pin(l1, PGT_l1) == 0
    m.ft.owner[990] = abi.DOMID_XEN
    m.ft.owner[0xFF] = OWNER_NONE                        # (the test's RAM starts lower)
    for mfn, rc in ((5, -EPERM), (0xFF, -EPERM), (NR, -EPERM), (0xFFFFF, -EPERM),
                    (990, -EBUSY), (1000, -EBUSY)):
        for flags in (PTE_P, RWP):
            assert mmu.mod_entry(m.addr(l1, 0), (mfn << 12) | flags) == rc, (mfn, flags)
    assert m.get(l1, 0) == 0 and m.ft.count[990] == 0 and m.ft.type_count[990] == 0


def test_get_page_and_type_not_owned_is_einval(m):
    """get_page_and_type_from_mfn(): -EINVAL whoever owns the frame (pin,
    NEW_BASEPTR, set_gdt, L2/L3 entries)."""
    mmu = m.mmu
    m.ft.owner[990] = abi.DOMID_XEN
    for mfn in (5, 990, 1000, NR + 1):
        assert mmu.get_page_and_type(mfn, PGT_l1) == -EINVAL
        assert mmu.get_page_and_type(mfn, PGT_seg_desc) == -EINVAL
    m.put(100, 0, (990 << 12) | RWP)                     # an L2 entry to a Xen frame
    assert mmu.get_page_and_type(100, PGT_l2) == -EINVAL


def test_mod_entry_frame_not_owned_is_einval(m):
    m.ft.owner[990] = abi.DOMID_XEN
    for mfn in (5, 990, 1000, NR, 0xFFFFF):
        assert m.mmu.mod_entry(mfn << 12, 0) == -EINVAL
    assert m.ram.read(990 << 12, 8) == bytes(8)


@pytest.mark.parametrize("flag", [PTE_PCD, PTE_PWT, PTE_PSE], ids=["pcd", "pwt", "pat"])
def test_flag_only_update_refuses_flags(m, flag):
    """Same frame, same writability: still -EINVAL for a refused flag (the
    non-PAE mask used to let every flag through)."""
    l1 = 100
    m.put(l1, 0, (200 << 12) | PTE_P | PTE_A)
    assert m.mmu.pin(l1, PGT_l1) == 0
    assert m.mmu.mod_entry(m.addr(l1, 0), (200 << 12) | PTE_P | PTE_A | flag) == -EINVAL
    assert m.get(l1, 0) == (200 << 12) | PTE_P | PTE_A
    assert m.mmu.mod_entry(m.addr(l1, 0), (200 << 12) | PTE_P | PTE_A | PTE_D | PTE_G) == 0


def test_preserve_ad_ors_old_bits(m):
    """update_intpte(): PRESERVE_AD ORs the old A/D into the new value; the
    new value's own A/D bits are kept."""
    l1 = 100
    m.put(l1, 0, (200 << 12) | RWP)                       # no A/D
    m.put(l1, 1, (201 << 12) | RWP | PTE_A | PTE_D)
    l2 = 101
    assert m.mmu.pin(l1, PGT_l1) == 0
    assert m.mmu.mod_entry(m.addr(l1, 0), (202 << 12) | RWP | PTE_A | PTE_D, True) == 0
    assert m.get(l1, 0) == (202 << 12) | RWP | PTE_A | PTE_D
    assert m.mmu.mod_entry(m.addr(l1, 1), (201 << 12) | PTE_P | PTE_D, True) == 0
    assert m.get(l1, 1) == (201 << 12) | PTE_P | PTE_A | PTE_D
    # L2 entries too (mod_l2_entry passes preserve_ad on)
    if m.pae:
        assert m.mmu.get_page_and_type(l2, PGT_l2) == 0
    else:
        assert m.mmu.pin(l2, PGT_l2) == 0
    assert m.mmu.mod_entry(m.addr(l2, 0), (l1 << 12) | RWP | PTE_A, False) == 0
    assert m.mmu.mod_entry(m.addr(l2, 0), (l1 << 12) | RWP | PTE_D, True) == 0
    assert m.get(l2, 0) == (l1 << 12) | RWP | PTE_A | PTE_D


def test_mod_entry_io(m):
    """foreigndom DOMID_IO: present L1 entries that need a reference are
    refused (RAM -EBUSY, not RAM -EPERM), a flag-only change passes, L2
    entries are -EINVAL, plain pages are written."""
    mmu = m.mmu
    l1 = 100
    m.put(l1, 0, (200 << 12) | PTE_P)
    assert mmu.pin(l1, PGT_l1) == 0
    assert mmu.mod_entry_io(m.addr(l1, 1), (201 << 12) | PTE_P) == -EBUSY
    assert mmu.mod_entry_io(m.addr(l1, 1), (NR << 12) | PTE_P) == -EPERM
    assert mmu.mod_entry_io(m.addr(l1, 1), (201 << 12) | PTE_P | PTE_PCD) == -EINVAL
    assert mmu.mod_entry_io(m.addr(l1, 0), (200 << 12) | PTE_P | PTE_A) == 0
    assert mmu.mod_entry_io(m.addr(l1, 0), (200 << 12) | RWP) == -EBUSY
    assert mmu.mod_entry_io(m.addr(l1, 0), 0) == 0
    assert m.counts(200) == (PGT_none, 0, 0)
    m.put(101, 0, 0)
    assert (mmu.get_page_and_type(101, PGT_l2) if m.pae else mmu.pin(101, PGT_l2)) == 0
    assert mmu.mod_entry_io(m.addr(101, 0), 0) == -EINVAL
    assert mmu.mod_entry_io(m.addr(150, 3), 0x1234) == 0 and m.get(150, 3) == 0x1234


# ---- the hypercalls, on a flat guest address space (VA = machine address) ------
from types import SimpleNamespace  # noqa: E402

from qemu_xenpv.abi import EBUSY, EFAULT, ENOSYS, EOPNOTSUPP, ESRCH  # noqa: E402
from qemu_xenpv.hypercall import Call, TABLE, _load_families, dispatch  # noqa: E402
from qemu_xenpv.mm import PGT_seg_desc  # noqa: E402
from qemu_xenpv.shim import K  # noqa: E402

FREE = list(range(900, 1000))       # the balloon room


class HcDom:
    """What the MMU/memory hypercalls touch of a domain: the Machine's MMU,
    guest memory at VA = machine address (our frames only, below the hole),
    domain 0 and domain 9 exist."""

    def __init__(self, mc: Machine):
        self.mc = mc
        self.ram, self.mmu, self.mode, self.pae = mc.ram, mc.mmu, mc.mode, mc.pae
        self.domid = DOMID
        self.name = "hc"
        self.tracer = None
        self.hv = SimpleNamespace(domain_by_id=lambda d: object() if d in (0, 9) else None)
        self.vcpus = [SimpleNamespace(dom=self, vid=0, guest_table=None)]
        self.flushed_others = 0
        for f in FREE:
            mc.ft.owner[f] = OWNER_NONE
        self.free_mfns = list(FREE)
        self.nr_pages = 900 - 16
        self.max_pages = self.nr_pages + 10

    def special_mfns(self):
        return set()

    def flush_other_vcpus(self, me):
        self.flushed_others += 1

    def log_once(self, key, msg):
        pass

    def _ok(self, va, n):
        return 0 <= va and va + n <= self.mode.hole_start and \
            all(self.mmu.owns(f) for f in range(va >> 12, (va + max(n, 1) - 1 >> 12) + 1))

    def copy_from_guest(self, vcpu, va, n):
        return self.ram.read(va, n) if self._ok(va, n) else None

    def copy_to_guest(self, vcpu, va, data):
        if not self._ok(va, len(data)):
            return False
        self.ram.write(va, data)
        return True


@pytest.fixture
def hc(m):
    if not TABLE:
        _load_families()
    return HcDom(m)


def hcall(dom, name, *args):
    call = Call(dom.vcpus[0], None, tuple(args) + (0,) * (6 - len(args)) + (abi.HYPERCALL_NR[name],))
    return dispatch(call), call


BUF = 300 << 12                     # a guest buffer page (ours, writable)
DONE = (301 << 12) + 0x100          # a done counter


def put_reqs(dom, va, reqs):
    for i, (ptr, val) in enumerate(reqs):
        dom.ram.w64(va + 16 * i, ptr)
        dom.ram.w64(va + 16 * i + 8, val)


def test_hc_mmu_update_commands(hc):
    """NO_TRANSLATE is a normal update for PV; a PAE ptr with bit 2 set is
    command 4 (-ENOSYS); MACHPHYS of a frame not ours is -EINVAL; a frame
    not ours is -EINVAL."""
    mc = hc.mc
    assert mc.mmu.pin(100, PGT_l1) == 0
    put_reqs(hc, BUF, [(mc.addr(100, 0) | abi.MMU_PT_UPDATE_NO_TRANSLATE, (200 << 12) | RWP)])
    assert hcall(hc, "mmu_update", BUF, 1, DONE, abi.DOMID_SELF)[0] == 0
    assert mc.get(100, 0) == (200 << 12) | RWP and hc.ram.r32(DONE) == 1
    if mc.pae:
        put_reqs(hc, BUF, [(mc.addr(100, 0) | 4, 0)])
        assert hcall(hc, "mmu_update", BUF, 1, DONE, abi.DOMID_SELF)[0] == -ENOSYS
        assert mc.get(100, 0) == (200 << 12) | RWP and hc.ram.r32(DONE) == 0
    put_reqs(hc, BUF, [((990 << 12) | abi.MMU_MACHPHYS_UPDATE, 1), ((5 << 12), 0)])
    mc.ft.owner[990] = abi.DOMID_XEN
    assert hcall(hc, "mmu_update", BUF, 1, 0, abi.DOMID_SELF)[0] == -EINVAL
    assert hcall(hc, "mmu_update", BUF + 16, 1, 0, abi.DOMID_SELF)[0] == -EINVAL
    put_reqs(hc, BUF, [((1 << 40), 0)])                  # far beyond RAM
    assert hcall(hc, "mmu_update", BUF, 1, 0, abi.DOMID_SELF)[0] == -EINVAL
    put_reqs(hc, BUF, [((150 << 12) | abi.MMU_MACHPHYS_UPDATE, 0x1234)])
    assert hcall(hc, "mmu_update", BUF, 1, 0, abi.DOMID_SELF)[0] == 0
    assert mc.mmu.m2p(150) == 0x1234


def test_hc_mmu_update_preserve_ad(hc):
    mc = hc.mc
    mc.put(100, 0, (200 << 12) | RWP | PTE_A | PTE_D)
    assert mc.mmu.pin(100, PGT_l1) == 0
    put_reqs(hc, BUF, [(mc.addr(100, 0) | abi.MMU_PT_UPDATE_PRESERVE_AD, (201 << 12) | RWP)])
    assert hcall(hc, "mmu_update", BUF, 1, 0, abi.DOMID_SELF)[0] == 0
    assert mc.get(100, 0) == (201 << 12) | RWP | PTE_A | PTE_D


@pytest.mark.parametrize("dom,rc", [(DOMID, -ESRCH), (0x7000, -ESRCH), (0, -EPERM),
                                    (9, -EPERM), (abi.DOMID_XEN, -EPERM),
                                    (abi.DOMID_COW, -ESRCH)])
def test_hc_foreign_domains(hc, dom, rc):
    """get_pg_owner(): naming oneself is -ESRCH (only DOMID_SELF names the
    caller), an unknown domain -ESRCH; an existing one is XSM's -EPERM."""
    mc = hc.mc
    assert mc.mmu.pin(100, PGT_l1) == 0
    put_reqs(hc, BUF, [(mc.addr(100, 0), (200 << 12) | RWP)])
    hc.ram.w32(DONE, 0xDEAD)
    assert hcall(hc, "mmu_update", BUF, 1, DONE, dom)[0] == rc
    assert mc.get(100, 0) == 0
    hc.ram.w32(BUF + 0x800, 6)                           # MMUEXT_TLB_FLUSH_LOCAL
    assert hcall(hc, "mmuext_op", BUF + 0x800, 1, 0, dom)[0] == rc
    # update_va_mapping_otherdomain: pte lo/hi in PAE, one word otherwise
    args = (0x1000, 0, 0, 0, dom) if mc.pae else (0x1000, 0, 0, dom)
    assert hcall(hc, "update_va_mapping_otherdomain", *args)[0] == rc
    # the count 0 cases: mmu_update still names the domain, mmuext_op (compat) does not
    assert hcall(hc, "mmu_update", BUF, 0, 0, dom)[0] == (rc if rc == -ESRCH else 0)
    assert hcall(hc, "mmuext_op", BUF, 0, 0, dom)[0] == 0


def test_hc_mmu_update_done_counts(hc):
    """mmu_update stops at the first failure; *pdone counts what was done,
    also for -ESRCH from get_pg_owner and for a request that faults."""
    mc = hc.mc
    assert mc.mmu.pin(100, PGT_l1) == 0
    put_reqs(hc, BUF, [(mc.addr(100, 0), (200 << 12) | RWP), (mc.addr(100, 1), (5 << 12) | 1),
                       (mc.addr(100, 2), (201 << 12) | RWP)])
    rc, _ = hcall(hc, "mmu_update", BUF, 3, DONE, abi.DOMID_SELF)
    assert rc == -EPERM and hc.ram.r32(DONE) == 1 and mc.get(100, 2) == 0
    hc.ram.w32(DONE, 0xDEAD)
    assert hcall(hc, "mmu_update", BUF, 1, DONE, DOMID)[0] == -ESRCH
    assert hc.ram.r32(DONE) == 0
    # the array runs into a frame that is not ours: what precedes it is done
    last = (899 << 12) + 4096 - 16                       # the last 16 bytes of our RAM
    put_reqs(hc, last, [(mc.addr(100, 3), (202 << 12) | PTE_P)])
    assert hcall(hc, "mmu_update", last, 2, DONE, abi.DOMID_SELF)[0] == -EFAULT
    assert hc.ram.r32(DONE) == 1 and mc.get(100, 3) == (202 << 12) | PTE_P
    # a continuation adds to *pdone
    hc.ram.w32(DONE, 5)
    put_reqs(hc, BUF, [(mc.addr(100, 4), 0)])
    assert hcall(hc, "mmu_update", BUF, 1 | (1 << 31), DONE, abi.DOMID_SELF)[0] == 0
    assert hc.ram.r32(DONE) == 6


def test_hc_huge_counts(hc):
    """guest_handle_okay(): an array reaching into the hole (or overflowing)
    is -EFAULT before anything runs."""
    mc = hc.mc
    last = 899 << 12                                     # our last page; 900 is not ours
    put_reqs(hc, last, [((150 << 12) | abi.MMU_MACHPHYS_UPDATE, 0x4321)] * 256)
    mc.mmu.set_m2p(150, 7)
    for count in (0x7FFFFFFF, (hc.mode.hole_start - last) // 16 + 1):
        hc.ram.w32(DONE, 0xDEAD)
        assert hcall(hc, "mmu_update", last, count, DONE, abi.DOMID_SELF)[0] == -EFAULT
        assert mc.mmu.m2p(150) == 7 and hc.ram.r32(DONE) == 0xDEAD
    # within the address space: it runs until the copy faults
    assert hcall(hc, "mmu_update", last, (hc.mode.hole_start - last) // 16, DONE,
                 abi.DOMID_SELF)[0] == -EFAULT
    assert mc.mmu.m2p(150) == 0x4321 and hc.ram.r32(DONE) == 256
    for i in range(0, 4096, 12):
        hc.ram.w32(BUF + i, 6)                           # TLB_FLUSH_LOCAL
    assert hcall(hc, "mmuext_op", BUF, 0x7FFFFFFF, DONE, abi.DOMID_SELF)[0] == -EFAULT
    for i in range(0, 4096, 32):
        hc.ram.w32(BUF + i, abi.HYPERCALL_NR["xen_version"])
        hc.ram.w32(BUF + i + 4, 0x5A5A5A5A)
    assert hcall(hc, "multicall", BUF, 0x7FFFFFFF)[0] == -EFAULT
    assert hc.ram.r32(BUF + 4) == 0x5A5A5A5A
    assert hcall(hc, "multicall", hc.mode.hole_start, 0)[0] == 0


def test_hc_mmuext_ops(hc):
    mc = hc.mc

    def op(cmd, a1=0, a2=0):
        hc.ram.w32(BUF, cmd)
        hc.ram.w32(BUF + 4, a1)
        hc.ram.w32(BUF + 8, a2)
        return hcall(hc, "mmuext_op", BUF, 1, 0, abi.DOMID_SELF)

    assert op(3, 100)[0] == 0                            # PIN_L4: ignored for 32-bit
    assert op(2, 100)[0] == (-EINVAL if mc.pae else 0)   # PIN_L3: no such level non-PAE
    assert mc.counts(100) == (PGT_none, 0, 0)
    assert op(19)[0] == -EOPNOTSUPP and op(20)[0] == -EOPNOTSUPP
    assert op(14)[0] == -ENOSYS and op(15)[0] == -EINVAL
    assert op(12)[0] == -abi.EACCES
    hc.ram.w32(DONE, 1)                                  # vCPU 0's bit
    for cmd in (8, 9):                                   # TLB_FLUSH_MULTI, INVLPG_MULTI
        rc, call = op(cmd, 0x1000, DONE)
        assert rc == 0 and call.action & K.ACT_CR3
        assert op(cmd, 0x1000, hc.mode.hole_start)[0] == -EINVAL
        assert op(cmd, 0x1000, 5 << 12)[0] == -EINVAL    # not readable
    hc.ram.w32(DONE, 2)                                  # only another vCPU: no local flush
    rc, call = op(8, 0, DONE)
    assert rc == 0 and not call.action & K.ACT_CR3


def test_hc_update_va_mapping_multi_mask(hc):
    """UVMF_MULTI with an unreadable vCPU mask: -EFAULT, the PTE is updated."""
    mc = hc.mc
    va = 0x00403000
    top, l1 = _map(mc, va, 300, rw=True)
    hc.vcpus[0].guest_table = top
    idx = mc.mode.l1_index(va)

    def uvm(pte, flags):
        args = (va, pte, 0, flags) if mc.pae else (va, pte, flags)
        return hcall(hc, "update_va_mapping", *args)

    assert uvm((301 << 12) | RWP, hc.mode.hole_start | abi.UVMF_INVLPG)[0] == -EFAULT
    assert mc.get(l1, idx) == (301 << 12) | RWP
    hc.ram.w32(DONE, 1)
    assert uvm((302 << 12) | RWP, DONE | abi.UVMF_TLB_FLUSH)[0] == 0
    assert uvm(((l1 << 12) | RWP), abi.UVMF_INVLPG)[0] == -EBUSY       # its own L1, writable
    assert uvm(((top << 12) | RWP), abi.UVMF_INVLPG)[0] == -EBUSY      # the top-level table
    assert mc.get(l1, idx) == (302 << 12) | RWP


def test_hc_memory_op(hc):
    mc = hc.mc
    # memory_map with room for 0 entries: 0, nr_entries 0 (nothing written)
    hc.ram.w32(BUF, 0)
    hc.ram.w32(BUF + 4, BUF + 0x100)
    hc.ram.w64(BUF + 0x100, 0x5A5A)
    assert hcall(hc, "memory_op", 9, BUF)[0] == 0
    assert hc.ram.r32(BUF) == 0 and hc.ram.r64(BUF + 0x100) == 0x5A5A
    hc.ram.w32(BUF, 4)
    assert hcall(hc, "memory_op", 9, BUF)[0] == 0 and hc.ram.r32(BUF) == 1
    assert hc.ram.r64(BUF + 0x108) == hc.max_pages << 12
    # current_reservation of others: domain 0 and domain 9 -EPERM, unknown -ESRCH
    for domid, rc in ((abi.DOMID_SELF, hc.nr_pages), (DOMID, hc.nr_pages), (0, -EPERM),
                      (9, -EPERM), (0x7000, -ESRCH), (abi.DOMID_XEN, -ESRCH)):
        hc.ram.w32(BUF, domid)
        assert hcall(hc, "memory_op", 3, BUF)[0] == rc, domid
    assert hcall(hc, "memory_op", 3 | (1 << 6), BUF)[0] == -EINVAL
    # reservations answer a count, never an error
    r = abi.xen_memory_reservation
    hc.ram.write(BUF, r.pack({"extent_start": BUF + 0x100, "nr_extents": 0x7FFFFFFF,
                              "extent_order": 0, "mem_flags": 0, "domid": abi.DOMID_SELF}))
    assert hcall(hc, "memory_op", 0, BUF)[0] == 0
    hc.ram.write(BUF, r.pack({"extent_start": BUF + 0x100, "nr_extents": 1,
                              "extent_order": 0, "mem_flags": 0, "domid": 0}))
    assert hcall(hc, "memory_op", 0, BUF)[0] == 0
    assert hcall(hc, "memory_op", 0, 5 << 12)[0] == 0   # unreadable argument


def test_hc_exchange_sets_m2p(hc):
    """XENMEM_exchange: the new frame's M2P entry is the gpfn the guest put
    in out.extent_start, which then holds the new MFN."""
    mc = hc.mc
    r = abi.xen_memory_reservation
    old, gpfn = 400, 0x123
    mc.mmu.set_m2p(old, gpfn)
    hc.ram.w32(BUF + 0x100, old)
    hc.ram.w32(BUF + 0x200, gpfn)
    hc.ram.write(BUF, r.pack({"extent_start": BUF + 0x100, "nr_extents": 1, "extent_order": 0,
                              "mem_flags": 0, "domid": abi.DOMID_SELF}) +
                 r.pack({"extent_start": BUF + 0x200, "nr_extents": 1, "extent_order": 0,
                         "mem_flags": 0, "domid": abi.DOMID_SELF}) + bytes(4))
    pages = hc.nr_pages
    assert hcall(hc, "memory_op", 11, BUF)[0] == 0
    new = hc.ram.r32(BUF + 0x200)
    assert new != old and mc.mmu.owns(new) and not mc.mmu.owns(old)
    assert mc.mmu.m2p(new) == gpfn and hc.ram.r32(BUF + 40) == 1 and hc.nr_pages == pages
    # a frame that is still referenced cannot be stolen: -EINVAL, nothing exchanged
    assert mc.mmu.get_page(new)
    hc.ram.w32(BUF + 0x100, new)
    hc.ram.w32(BUF + 40, 0)
    assert hcall(hc, "memory_op", 11, BUF)[0] == -EINVAL
    assert hc.ram.r32(BUF + 40) == 0 and mc.mmu.owns(new)
    mc.mmu.put_page(new)
    # mismatched domids: -EINVAL; too big an order: -EPERM
    hc.ram.w16(BUF + 36, 0)
    assert hcall(hc, "memory_op", 11, BUF)[0] == -EINVAL
    hc.ram.w16(BUF + 36, abi.DOMID_SELF)
    hc.ram.w32(BUF + 8, 10)
    hc.ram.w32(BUF + 20 + 8, 10)
    assert hcall(hc, "memory_op", 11, BUF)[0] == -EPERM


def test_hc_exchange_without_spare_frames(hc):
    """This machine's spare frames may be none: the freed input frames are
    then allocated from (a frame is all the ABI promises); the M2P still
    gets the gpfn."""
    mc = hc.mc
    r = abi.xen_memory_reservation
    for f in hc.free_mfns:
        mc.ft.owner[f] = abi.DOMID_XEN
    hc.free_mfns = []
    hc.ram.w32(BUF + 0x100, 400)
    hc.ram.w32(BUF + 0x200, 0x77)
    hc.ram.write(BUF, r.pack({"extent_start": BUF + 0x100, "nr_extents": 1, "extent_order": 0,
                              "mem_flags": 0, "domid": abi.DOMID_SELF}) +
                 r.pack({"extent_start": BUF + 0x200, "nr_extents": 1, "extent_order": 0,
                         "mem_flags": 0, "domid": abi.DOMID_SELF}) + bytes(4))
    assert hcall(hc, "memory_op", 11, BUF)[0] == 0
    assert hc.ram.r32(BUF + 0x200) == 400 and mc.mmu.m2p(400) == 0x77 and mc.mmu.owns(400)
    # order 1 out of two order-0 frames that are not contiguous: -ENOMEM, nothing lost
    hc.ram.w32(BUF + 0x100, 400)
    hc.ram.w32(BUF + 0x104, 403)
    hc.ram.w32(BUF + 4, 2)
    hc.ram.w32(BUF + 20 + 8, 1)
    hc.ram.w32(BUF + 40, 0)
    mc.mmu.set_m2p(403, 0x99)
    assert hcall(hc, "memory_op", 11, BUF)[0] == -abi.ENOMEM
    assert mc.mmu.owns(400) and mc.mmu.owns(403) and mc.mmu.m2p(403) == 0x99
    assert hc.free_mfns == [] and hc.ram.r32(BUF + 40) == 0
