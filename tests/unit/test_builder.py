"""The PV domain builder without QEMU: Xen's start-of-day layout, start_info,
the p2m/M2P, the bootstrap page tables, the special pages, and the
hypercall page (../shared/xen-abi-i686.md §2-4, guest-requirements.md §1)."""

from __future__ import annotations

import dataclasses

import pytest

from qemu_xenpv import abi
from qemu_xenpv.abi import PTE_P, PTE_RW, PTE_PSE
from qemu_xenpv.builder import BuildSpec, build_pv, hypercall_page_bytes
from qemu_xenpv.errors import ConfigError, ImageError
from qemu_xenpv.image import load_kernel
from qemu_xenpv.machine.ram import GuestRAM
from qemu_xenpv.mm import F_PAE_XEN_L2, F_PINNED, PGT_l1, PGT_l2, PGT_l3, PGT_writable
from qemu_xenpv.shim import ShimImage

PAGE = 4096
MB = 1 << 20
DOMID = 1
ORDER = ["kernel", "phys2mach", "start info", "xenstore", "console", "page tables",
         "boot stack"]


# ---- the hypercall page ----------------------------------------------------
def test_hypercall_page_slots():
    page = hypercall_page_bytes()
    assert len(page) == 4096
    for i in range(128):
        slot = page[i * 32:(i + 1) * 32]
        if i == 23:
            stub = bytes([0x50, 0xB8, 23, 0, 0, 0, 0xCD, 0x82])    # push %eax; mov; int
        else:
            stub = bytes([0xB8]) + i.to_bytes(4, "little") + bytes([0xCD, 0x82, 0xC3])
        assert slot[:8] == stub, f"slot {i}"
        assert slot[8:] == b"\xcc" * 24, f"slot {i} filler"


def test_hypercall_page_iret_has_no_ret():
    slot = hypercall_page_bytes()[23 * 32:24 * 32]
    assert 0xC3 not in slot
    assert slot[0] == 0x50
    # byte 0 of the page must not be a bare `ret` (XTF checks this)
    assert hypercall_page_bytes()[0] != 0xC3


# ---- building ----------------------------------------------------------------
@pytest.fixture(scope="module")
def kernel(demo_elf):
    return load_kernel(str(demo_elf))


@pytest.fixture(scope="module")
def shim_image(shim_elf):
    return ShimImage(shim_elf)


def _build(kernel, shim_image, **kw):
    spec = BuildSpec(kernel=kernel, memory_mb=kw.pop("memory_mb", 32), **kw)
    return build_pv(spec, shim_image, DOMID, lambda size: GuestRAM(size))


class Built:
    """A built domain plus guest-virtual accessors."""

    def __init__(self, ram, built, kernel, cmdline):
        self.ram, self.b, self.kernel, self.cmdline = ram, built, kernel, cmdline
        self.seg = {s.name: s for s in built.segments}
        self.vbase = kernel.virt_base
        self.pae = kernel.is_pae

    def pa(self, va: int) -> int:
        return (self.b.p2m[(va - self.vbase) >> 12] << 12) | (va & 0xFFF)

    def read_va(self, va: int, n: int) -> bytes:
        out = b""
        while n:
            chunk = min(n, PAGE - (va & 0xFFF))
            out += self.ram.read(self.pa(va), chunk)
            va += chunk
            n -= chunk
        return out

    def start_info(self) -> dict:
        return abi.start_info.unpack(self.read_va(self.b.start_info_va, abi.start_info.size))

    def l1e(self, va: int):
        """(entry, l2 entry) mapping va through the bootstrap tables."""
        top = self.b.l3_mfn << 12
        if self.pae:
            e3 = self.ram.r64(top + (va >> 30) * 8)
            assert e3 & PTE_P, hex(va)
            e2 = self.ram.r64((e3 & 0xFFFFFFFFF000) + ((va >> 21) & 511) * 8)
            if not e2 & PTE_P:
                return 0, e2
            return self.ram.r64((e2 & 0xFFFFFFFFF000) + ((va >> 12) & 511) * 8), e2
        e2 = self.ram.r32(top + (va >> 22) * 4)
        if not e2 & PTE_P:
            return 0, e2
        return self.ram.r32((e2 & 0xFFFFF000) + ((va >> 12) & 1023) * 4), e2


@pytest.fixture(scope="module", params=[False, True], ids=["identity", "scrambled"])
def dom(request, kernel, shim_image):
    ram, built = _build(kernel, shim_image, scramble_p2m=request.param,
                        cmdline="console=hvc0 hello")
    try:
        yield Built(ram, built, kernel, "console=hvc0 hello")
    finally:
        ram.close()


def test_layout_order_and_alignment(dom):
    segs = dom.b.segments
    assert [s.name for s in segs] == ORDER
    for s in segs:
        assert s.vstart % PAGE == 0 and s.pages > 0, s
    for a, b in zip(segs, segs[1:]):
        assert b.vstart == a.vend, f"{b.name} does not follow {a.name}"
    k = dom.seg["kernel"]
    assert k.vstart <= dom.kernel.kstart and dom.kernel.kend <= k.vend
    assert k.vstart == dom.kernel.kstart & ~(PAGE - 1)
    assert dom.seg["phys2mach"].pages == (dom.b.nr_pages * 4 + PAGE - 1) // PAGE
    for name in ("start info", "xenstore", "console", "boot stack"):
        assert dom.seg[name].pages == 1
    assert dom.b.start_info_va == dom.seg["start info"].vstart
    assert dom.b.pt_base_va == dom.seg["page tables"].vstart
    assert dom.b.stack_top == dom.seg["boot stack"].vend
    assert dom.b.entry == dom.kernel.entry


def test_mapping_ends_on_4mib_with_padding(dom):
    end = dom.b.virt_pgtab_end
    stack_end = dom.seg["boot stack"].vend
    assert end % (4 * MB) == 0
    assert end - stack_end >= 512 * 1024
    # the first 4 MiB boundary that leaves the padding (libxc's round_up)
    assert end - 4 * MB <= stack_end + 512 * 1024
    assert end == 0x400000          # the demo is small: one 4 MiB region, as XTF's


def test_nr_pt_frames(dom):
    si = dom.start_info()
    vb, end = dom.vbase, dom.b.virt_pgtab_end
    n_l1 = ((end - 1) >> 21) - (vb >> 21) + 1
    # PAE: L3 + 4 L2 ("extra l2 for l3#3") + the L1s
    assert si["nr_pt_frames"] == 1 + 4 + n_l1 == 7
    assert dom.seg["page tables"].pages == si["nr_pt_frames"]


def test_start_info(dom):
    si = dom.start_info()
    b = dom.b
    assert si["magic"].rstrip(b"\0") == b"xen-3.0-x86_32p"
    assert si["magic"][15:] == bytes(17)
    assert si["nr_pages"] == b.nr_pages == 32 * 256
    assert si["shared_info"] == b.shared_info_mfn << 12
    assert si["flags"] == 0
    assert si["store_mfn"] == b.store_mfn == b.p2m[(dom.seg["xenstore"].vstart - dom.vbase) >> 12]
    assert si["console_mfn"] == b.console_mfn == \
        b.p2m[(dom.seg["console"].vstart - dom.vbase) >> 12]
    assert si["store_evtchn"] == 1 and si["console_evtchn"] == 2
    assert si["pt_base"] == dom.seg["page tables"].vstart
    assert si["mfn_list"] == dom.seg["phys2mach"].vstart
    assert (si["mod_start"], si["mod_len"]) == (0, 0)
    assert si["cmd_line"].split(b"\0", 1)[0] == dom.cmdline.encode()
    assert si["cmd_line"][len(dom.cmdline):] == bytes(1024 - len(dom.cmdline))
    assert si["first_p2m_pfn"] == (dom.seg["phys2mach"].vstart - dom.vbase) >> 12
    assert si["nr_p2m_frames"] == dom.seg["phys2mach"].pages
    assert b.start_info_mfn == b.p2m[(b.start_info_va - dom.vbase) >> 12]


def test_p2m_list_in_guest_memory(dom):
    s = dom.seg["phys2mach"]
    raw = dom.read_va(s.vstart, dom.b.nr_pages * 4)
    assert raw == dom.b.p2m.tobytes()
    assert len(dom.b.p2m) == dom.b.nr_pages


def test_m2p_inverts_p2m(dom):
    mmu = dom.b.mmu
    m2p_pa = dom.b.mem.m2p_pa
    for pfn, mfn in enumerate(dom.b.p2m):
        assert mmu.m2p(mfn) == pfn
        assert dom.ram.r32(m2p_pa + mfn * 4) == pfn
    # frames that are not the guest's are invalid in the M2P
    assert mmu.m2p(dom.b.shared_info_mfn) == abi.INVALID_M2P_ENTRY
    assert mmu.m2p(0) == abi.INVALID_M2P_ENTRY


def test_p2m_frames_are_the_domains(dom):
    ft = dom.b.mem.frames
    p2m = dom.b.p2m
    assert len(set(p2m)) == len(p2m), "a machine frame appears twice in the p2m"
    for mfn in p2m:
        assert ft.owner[mfn] == DOMID
    assert ft.owner[dom.b.shared_info_mfn] == DOMID
    assert dom.b.shared_info_mfn not in set(p2m)
    assert dom.b.grant_mfns[0] not in set(p2m)


def test_bootstrap_mappings(dom):
    pt = dom.seg["page tables"]
    for va in range(dom.vbase, dom.b.virt_pgtab_end, PAGE):
        e, e2 = dom.l1e(va)
        assert e & PTE_P, hex(va)
        assert not e2 & PTE_PSE
        assert (e & 0xFFFFFFFFF000) >> 12 == dom.b.p2m[(va - dom.vbase) >> 12], hex(va)
        if pt.vstart <= va < pt.vend:
            assert not e & PTE_RW, f"page-table page {va:#x} mapped writable"
        else:
            assert e & PTE_RW, f"{va:#x} mapped read-only"
    # nothing mapped past the end of the initial mapping in the last L1
    e, _ = dom.l1e(dom.b.virt_pgtab_end)
    assert e == 0


def test_page_table_frames_typed_and_pinned(dom):
    ft = dom.b.mem.frames
    b = dom.b
    assert ft.type[b.l3_mfn] == PGT_l3 and ft.flags[b.l3_mfn] & F_PINNED
    pt = dom.seg["page tables"]
    pfn0 = (pt.vstart - dom.vbase) >> 12
    types = [ft.type[b.p2m[pfn0 + i]] for i in range(pt.pages)]
    assert types == [PGT_l3, PGT_l2, PGT_l2, PGT_l2, PGT_l2, PGT_l1, PGT_l1]
    for i in range(pt.pages):
        assert ft.type_count[b.p2m[pfn0 + i]] >= 1
    # a kernel page is writable-typed (mapped RW once)
    kmfn = b.p2m[(dom.seg["kernel"].vstart - dom.vbase) >> 12]
    assert ft.type[kmfn] == PGT_writable and ft.type_count[kmfn] == 1


def test_hypervisor_slots_in_l3_3(dom):
    top = dom.b.l3_mfn << 12
    e3 = dom.ram.r64(top + 3 * 8)
    assert e3 & PTE_P
    l2 = (e3 & 0xFFFFFFFFF000) >> 12
    assert dom.b.mem.frames.flags[l2] & F_PAE_XEN_L2
    hole = dom.b.mem.hole_l2
    assert hole, "the hypervisor hole has no L2 entries"
    first = (abi.HYPERVISOR_VIRT_START_PAE >> 21) & 511
    for slot in range(first, 512):
        assert dom.ram.r64((l2 << 12) + slot * 8) == hole.get(slot, 0), slot
    # the M2P's first slot and the shim's public region are there
    assert hole[first] & PTE_P
    assert hole[(0xFF000000 >> 21) & 511] & PTE_P
    # L3 entries of a PAE guest carry only P (and software bits)
    for i in range(4):
        assert dom.ram.r64(top + i * 8) & PTE_P


def test_grant_entries_prefilled(dom):
    gt = dom.b.grant_mfns[0] << 12
    e0 = abi.grant_entry_v1.unpack(dom.ram.read(gt, 8))
    e1 = abi.grant_entry_v1.unpack(dom.ram.read(gt + 8, 8))
    assert e0 == {"flags": abi.GTF_permit_access, "domid": 0, "frame": dom.b.console_mfn}
    assert e1 == {"flags": abi.GTF_permit_access, "domid": 0, "frame": dom.b.store_mfn}
    assert dom.ram.read(gt + 16, PAGE - 16) == bytes(PAGE - 16)


def test_shared_info_initial_state(dom):
    si = dom.b.shared_info_mfn << 12
    assert dom.ram.r8(si + abi.VI_UPCALL_MASK) == 1        # events masked at start of day
    assert dom.ram.r8(si + abi.VI_UPCALL_PENDING) == 0
    assert dom.ram.r32(si + abi.SI_MAX_PFN) == dom.b.nr_pages
    assert dom.ram.read(si + abi.SI_EVTCHN_PENDING, 256) == bytes(256)


def test_kernel_and_hypercall_page_loaded(dom):
    k = dom.kernel
    hp = k.hypercall_page
    for s in k.segments:
        got = bytearray(dom.read_va(s.vaddr, len(s.data)))
        want = bytearray(s.data)
        if s.vaddr <= hp < s.vaddr + len(s.data):       # the page is written over the image
            lo = hp - s.vaddr
            got[lo:lo + PAGE] = want[lo:lo + PAGE] = b""
        assert got == want
        if s.memsz > len(s.data):                        # bss zeroed
            assert dom.read_va(s.vaddr + len(s.data), s.memsz - len(s.data)) == \
                bytes(s.memsz - len(s.data))
    assert dom.read_va(k.hypercall_page, PAGE) == hypercall_page_bytes()


def test_special_pages_zeroed(dom):
    for name in ("xenstore", "console", "boot stack"):
        assert dom.read_va(dom.seg[name].vstart, PAGE) == bytes(PAGE), name


# ---- scrambling ------------------------------------------------------------------
def test_scramble_is_a_deterministic_permutation(kernel, shim_image):
    maps = {}
    for key, kw in (("plain", {}), ("s1", {"scramble_p2m": True}),
                    ("s1b", {"scramble_p2m": True}),
                    ("s2", {"scramble_p2m": True, "seed": 1234})):
        ram, built = _build(kernel, shim_image, **kw)
        maps[key] = list(built.p2m)
        ram.close()
    assert maps["plain"] == sorted(maps["plain"])
    assert maps["plain"] == list(range(maps["plain"][0], maps["plain"][0] + len(maps["plain"])))
    assert maps["s1"] != maps["plain"]
    assert sorted(maps["s1"]) == maps["plain"]
    assert maps["s1"] == maps["s1b"]                 # same seed, same map
    assert maps["s2"] != maps["s1"] and sorted(maps["s2"]) == maps["plain"]


# ---- non-PAE ---------------------------------------------------------------------
def test_non_pae_build(kernel, shim_image):
    k = dataclasses.replace(kernel, pae="no")
    ram, built = _build(k, shim_image)
    try:
        d = Built(ram, built, k, "")
        si = d.start_info()
        assert si["magic"].rstrip(b"\0") == b"xen-3.0-x86_32"
        assert si["nr_pt_frames"] == 2                  # one L2 + one L1 for 4 MiB
        ft = built.mem.frames
        assert ft.type[built.l3_mfn] == PGT_l2 and ft.flags[built.l3_mfn] & F_PINNED
        pt = d.seg["page tables"]
        for va in range(d.vbase, built.virt_pgtab_end, PAGE):
            e, _ = d.l1e(va)
            assert e & PTE_P and (e >> 12) == built.p2m[(va - d.vbase) >> 12]
            assert bool(e & PTE_RW) == (not pt.vstart <= va < pt.vend), hex(va)
        first = abi.HYPERVISOR_VIRT_START_NONPAE >> 22
        top = built.l3_mfn << 12
        for slot in range(first, 1024):
            assert ram.r32(top + slot * 4) == built.mem.hole_l2.get(slot, 0), slot
        assert built.mem.hole_l2[first] & PTE_P
        assert built.mmu.m2p(built.p2m[5]) == 5
    finally:
        ram.close()


# ---- errors ----------------------------------------------------------------------
def test_memory_too_small(kernel, shim_image):
    made = []

    def factory(size):
        made.append(size)
        return GuestRAM(size)
    for mb in (1, 2, 3):
        with pytest.raises(ConfigError, match="memory"):
            build_pv(BuildSpec(kernel=kernel, memory_mb=mb), shim_image, DOMID, factory)
    assert made == [], "RAM was allocated before the layout was checked"


def test_smallest_memory_that_fits(kernel, shim_image):
    ram, built = _build(kernel, shim_image, memory_mb=4)
    try:
        assert built.nr_pages == 1024
        assert built.virt_pgtab_end == 4 * MB
    finally:
        ram.close()


@pytest.mark.parametrize("feature", [abi.XENFEAT_auto_translated_physmap,
                                     abi.XENFEAT_supervisor_mode_kernel,
                                     abi.XENFEAT_hvm_callback_vector, abi.XENFEAT_dom0])
def test_unsupported_required_feature(kernel, shim_image, feature):
    k = dataclasses.replace(kernel, features_required=1 << feature)
    with pytest.raises(ImageError, match=abi.XENFEAT_NAMES[feature]):
        _build(k, shim_image)


def test_supported_required_feature_builds(kernel, shim_image):
    k = dataclasses.replace(kernel, features_required=1 << abi.XENFEAT_writable_page_tables)
    ram, built = _build(k, shim_image)
    ram.close()
    assert built.nr_pages == 32 * 256


def test_ramdisk_placed_after_kernel(kernel, shim_image):
    rd = bytes(range(256)) * 40                     # 10 KiB, 3 pages
    ram, built = _build(kernel, shim_image, ramdisk=rd)
    try:
        d = Built(ram, built, kernel, "")
        names = [s.name for s in built.segments]
        assert names == ORDER[:1] + ["ramdisk"] + ORDER[1:]
        seg = d.seg["ramdisk"]
        assert seg.vstart == d.seg["kernel"].vend and seg.pages == 3
        si = d.start_info()
        assert (si["mod_start"], si["mod_len"]) == (seg.vstart, len(rd))
        assert d.read_va(seg.vstart, len(rd)) == rd
    finally:
        ram.close()


def test_long_cmdline_truncated_and_terminated(kernel, shim_image):
    ram, built = _build(kernel, shim_image, cmdline="x" * 2000)
    try:
        si = Built(ram, built, kernel, "").start_info()
        assert si["cmd_line"] == b"x" * 1023 + b"\0"
    finally:
        ram.close()


@pytest.mark.parametrize("pae", ["extended-cr3", "no"])
@pytest.mark.parametrize("kend", [0x2F0000, 0x370000, 0x3FF000, 0x7C0000, 0xBFF000])
def test_layout_grows_past_4mib(kernel, shim_image, pae, kend):
    """A bigger kernel (larger bss): the mapping grows to the next 4 MiB
    boundary that still leaves 512 KiB, with enough L1s to map itself."""
    k = dataclasses.replace(kernel, kend=kend, pae=pae)
    ram, built = _build(k, shim_image, memory_mb=64)
    try:
        d = Built(ram, built, k, "")
        assert [s.name for s in built.segments] == ORDER
        stack_end = d.seg["boot stack"].vend
        end = built.virt_pgtab_end
        assert end % (4 * MB) == 0
        assert end - stack_end >= 512 * 1024 and end - 4 * MB <= stack_end + 512 * 1024
        si = d.start_info()
        if k.is_pae:
            n_l1 = ((end - 1) >> 21) - (k.virt_base >> 21) + 1
            assert si["nr_pt_frames"] == 1 + 4 + n_l1
        else:
            n_l1 = ((end - 1) >> 22) - (k.virt_base >> 22) + 1
            assert si["nr_pt_frames"] == 1 + n_l1
        pt = d.seg["page tables"]
        assert si["nr_pt_frames"] == pt.pages
        for va in range(k.virt_base, end, PAGE):
            e, _ = d.l1e(va)
            assert e & PTE_P and (e & 0xFFFFFFFFF000) >> 12 == built.p2m[(va - k.virt_base) >> 12]
            assert bool(e & PTE_RW) == (not pt.vstart <= va < pt.vend), hex(va)
    finally:
        ram.close()
