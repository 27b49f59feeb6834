"""Hypothesis fuzzing of the MMU validators (qemu_xenpv/mm.py) with random
page-table contents, in both paging modes.  Invariants (Xen's mm.c rules):

* a validated table never maps a frame the domain does not own;
* no page-table page is ever mapped writable by a validated L1 (and no
  writably-mapped page is ever a page table);
* no validated entry carries a flag Xen refuses (L1: PAT/PSE, PCD, PWT for
  a domU without I/O; L2/L3: PSE);
* a failed validation (pin or entry update) leaves every count unchanged;
* unpinning everything brings every type and reference count back to zero.
"""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")   # listed in pyproject's [test] extra
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from qemu_xenpv import abi  # noqa: E402
from qemu_xenpv.abi import PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D, PTE_PSE, PTE_PCD, PTE_G  # noqa: E402
from qemu_xenpv.mm import (FrameTable, MMU, PagingMode, F_PAE_XEN_L2, PGT_l1, PGT_l2,  # noqa: E402
                           PGT_l3, PGT_writable)

DOMID = 7
NR = 512                          # 2 MiB of machine
XEN = range(0, 16)                # hypervisor frames (the M2P at 0)
OURS = range(16, 200)
TABLES = list(range(20, 28))      # frames the fuzzer fills and pins
DATA = list(range(28, 40))        # plain data frames
NOBODY = [200, 250]
FLAG_BITS = [PTE_RW, PTE_US, PTE_A, PTE_D, PTE_PSE, PTE_PCD, PTE_G, 0x200]

MFNS = st.sampled_from(TABLES + DATA + [1, 9, 15] + NOBODY + [0xFFFFF])
FLAGS = st.lists(st.sampled_from(FLAG_BITS), max_size=4).map(lambda b: sum(set(b)))
ENTRY = st.one_of(st.just(0),
                  st.tuples(MFNS, FLAGS).map(lambda t: (t[0] << 12) | PTE_P | t[1]))
TABLE = st.dictionaries(st.integers(0, 15), ENTRY, max_size=8)
KINDS = st.sampled_from([PGT_l1, PGT_l2, PGT_l3])


@pytest.fixture(scope="module")
def ram():
    from qemu_xenpv.machine.ram import GuestRAM
    r = GuestRAM(NR * 4096, "qemu-xenpv-mmfuzz")
    yield r
    r.close()


def machine(ram, pae: bool) -> MMU:
    ram.zero(0, NR * 4096)
    ft = FrameTable(NR)
    for m in XEN:
        ft.owner[m] = abi.DOMID_XEN
    for m in OURS:
        ft.owner[m] = DOMID
    mode = PagingMode(pae)
    hole = {mode.first_xen_l2_slot: (9 << 12) | PTE_P | PTE_RW | PTE_A | PTE_D}
    return MMU(ram, ft, DOMID, mode, hole, 0)


def write_table(mmu: MMU, mfn: int, entries: dict) -> None:
    size = mmu.mode.entry_size
    for idx, val in entries.items():
        idx %= mmu.mode.entries
        if size == 8:
            mmu.ram.w64((mfn << 12) + idx * 8, val)
        else:
            mmu.ram.w32((mfn << 12) + idx * 4, val & 0xFFFFFFFF)


def snapshot(mmu: MMU):
    ft = mmu.ft
    return bytes(ft.type), ft.type_count.tobytes(), ft.count.tobytes(), bytes(ft.flags)


def guest_slots(mmu: MMU, mfn: int, kind: int) -> int:
    if kind == PGT_l3:
        return 4
    if kind == PGT_l2 and (not mmu.mode.pae or mmu.ft.flags[mfn] & F_PAE_XEN_L2):
        return mmu.mode.first_xen_l2_slot
    return mmu.mode.entries


def check_invariants(mmu: MMU) -> None:
    ft = mmu.ft
    for mfn in range(64):                       # every frame the fuzzer can touch
        if not ft.type_count[mfn] or ft.type[mfn] not in (PGT_l1, PGT_l2, PGT_l3):
            continue
        kind = ft.type[mfn]
        assert ft.owner[mfn] == DOMID, f"a page table {mfn:#x} is not the domain's"
        for i, e in enumerate(mmu._read_table(mfn, guest_slots(mmu, mfn, kind))):
            if not e & PTE_P:
                continue
            target = mmu.mode.addr(e) >> 12
            assert mmu.owns(target), \
                f"validated {kind=} table {mfn:#x} entry {i} maps {target:#x}, not ours"
            assert ft.count[target] > 0, f"entry {i} of {mfn:#x} holds no reference"
            if kind == PGT_l1:
                # l1_disallow_mask of a domU without I/O: no PAT/PSE, PCD, PWT
                assert not e & (PTE_PSE | PTE_PCD | 0x8), \
                    f"validated L1 {mfn:#x} entry {i} = {e:#x} carries a refused flag"
            if kind != PGT_l1:
                assert not e & PTE_PSE, f"{kind=} table {mfn:#x} entry {i} has PSE"
            if kind == PGT_l1 and e & PTE_RW:
                assert ft.type[target] == PGT_writable and ft.type_count[target] > 0, \
                    f"L1 {mfn:#x} maps {target:#x} (type {ft.type[target]}) writable"
            if kind == PGT_l2:
                assert ft.type[target] == PGT_l1, f"L2 {mfn:#x} entry {i} is no L1"
            if kind == PGT_l3:
                assert ft.type[target] == PGT_l2, f"L3 {mfn:#x} entry {i} is no L2"


def all_zero(mmu: MMU) -> bool:
    ft = mmu.ft
    return not any(ft.type_count[m] or ft.count[m] for m in range(NR))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(pae=st.booleans(),
       tables=st.lists(st.tuples(KINDS, TABLE), min_size=1, max_size=len(TABLES)),
       order=st.randoms(use_true_random=False))
def test_pin_random_tables(ram, pae, tables, order):
    mmu = machine(ram, pae)
    pinned = []
    # the guest fills its tables first (a validated table is read-only to it)
    for n, (kind, entries) in enumerate(tables):
        write_table(mmu, TABLES[n], entries)
    for n, (kind, entries) in enumerate(tables):
        mfn = TABLES[n]
        if kind == PGT_l3 and not pae:
            kind = PGT_l2
        before = snapshot(mmu)
        rc = mmu.pin(mfn, kind)
        if rc:
            assert rc < 0
            assert snapshot(mmu) == before, f"failed pin ({rc}) of {mfn:#x} changed counts"
        else:
            pinned.append(mfn)
        check_invariants(mmu)
    order.shuffle(pinned)
    for mfn in pinned:
        assert mmu.unpin(mfn) == 0
        check_invariants(mmu)
    assert all_zero(mmu), "counts left after unpinning everything"


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(pae=st.booleans(), entries=TABLE,
       updates=st.lists(st.tuples(st.integers(0, 15), ENTRY, st.booleans()), max_size=16))
def test_update_entries_of_a_pinned_l1(ram, pae, entries, updates):
    """mod_entry (mmu_update / update_va_mapping) on a pinned L1 and L2."""
    mmu = machine(ram, pae)
    l1, l2 = TABLES[0], TABLES[1]
    write_table(mmu, l1, {k: v for k, v in entries.items()
                          if not (v & PTE_P and mmu.mode.addr(v) >> 12 == l1)})
    if mmu.pin(l1, PGT_l1):
        return                                  # refused as a whole: nothing to update
    # a top-level-ish L2 that maps the L1, so both levels are live
    write_table(mmu, l2, {0: (l1 << 12) | PTE_P | PTE_RW | PTE_US | PTE_A})
    l2_ok = mmu.pin(l2, PGT_l2) == 0
    check_invariants(mmu)
    for idx, val, on_l2 in updates:
        table = l2 if on_l2 and l2_ok else l1
        idx %= mmu.mode.entries
        addr = (table << 12) + idx * mmu.mode.entry_size
        before = snapshot(mmu)
        old = ram.r64(addr) if pae else ram.r32(addr)
        rc = mmu.mod_entry(addr, val if pae else val & 0xFFFFFFFF)
        if rc:
            assert snapshot(mmu) == before, f"refused update ({rc}) changed counts"
            assert (ram.r64(addr) if pae else ram.r32(addr)) == old, "refused update wrote"
        check_invariants(mmu)
    if l2_ok:
        assert mmu.unpin(l2) == 0
    assert mmu.unpin(l1) == 0
    assert all_zero(mmu), "counts left after unpinning everything"


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(ENTRY, min_size=4, max_size=4))
def test_pae_l3_rules(ram, entries):
    """PAE L3 of a 32-bit guest: slot 3 must hold an L2 that takes Xen's
    slots; what validates never maps what is not ours; failures change nothing."""
    mmu = machine(ram, True)
    l3 = TABLES[0]
    for i, e in enumerate(entries):
        ram.w64((l3 << 12) + i * 8, e)
    before = snapshot(mmu)
    rc = mmu.pin(l3, PGT_l3)
    if rc:
        assert snapshot(mmu) == before
        return
    assert entries[3] & PTE_P, "an L3 without slot 3 validated"
    l2 = entries[3] >> 12 & 0xFFFFF
    assert mmu.ft.flags[l2] & F_PAE_XEN_L2
    assert ram.r64((l2 << 12) + mmu.mode.first_xen_l2_slot * 8) == mmu.hole_l2[
        mmu.mode.first_xen_l2_slot], "Xen's slots not installed"
    check_invariants(mmu)
    assert mmu.mod_entry((l3 << 12) + 3 * 8, 0) < 0, "L3[3] was modifiable"
    assert mmu.unpin(l3) == 0
    assert all_zero(mmu)


@pytest.mark.parametrize("pae", [True, False], ids=["pae", "nonpae"])
@pytest.mark.parametrize("flag", [PTE_PSE, PTE_PCD, 0x8], ids=["pat", "pcd", "pwt"])
def test_flag_only_update_is_validated(ram, pae, flag):
    """Found by abitest-nopae, pinned down: changing only the flags of a
    present entry (same frame, same writability) must still refuse the
    flags Xen refuses, in both paging modes."""
    mmu = machine(ram, pae)
    l1, data = TABLES[0], DATA[0]
    write_table(mmu, l1, {0: (data << 12) | PTE_P | PTE_A})
    assert mmu.pin(l1, PGT_l1) == 0
    before = snapshot(mmu)
    assert mmu.mod_entry(l1 << 12, (data << 12) | PTE_P | PTE_A | flag) == -abi.EINVAL
    assert snapshot(mmu) == before
    check_invariants(mmu)
    assert mmu.unpin(l1) == 0 and all_zero(mmu)
