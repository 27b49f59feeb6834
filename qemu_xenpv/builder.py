"""The PV domain builder: Xen's start-of-day protocol, laid out as libxc's
xc_dom_x86 does it for a 32-bit guest (../shared/guest-requirements.md):

    kernel | [ramdisk] | p2m list | start_info | xenstore | console |
    bootstrap page tables (read-only) | boot stack | padding to 4 MiB

all mapped 1:1 from virt_base, then the page tables are pinned and
validated by the same MMU code every later update goes through.
"""

from __future__ import annotations

import logging
import random
from array import array
from dataclasses import dataclass, field
from typing import List, Optional

from . import abi
from .abi import PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D
from .errors import ConfigError, ImageError
from .image import KernelImage
from .memmap import MachineMemory
from .mm import MMU, PagingMode, PGT_l2, PGT_l3, F_PINNED
from .shim import K, ShimImage

log = logging.getLogger("qemu_xenpv.builder")

PAGE = 4096
MB = 1 << 20
# Features the hypervisor offers (XENVER_get_features, FEATURES note check)
SUPPORTED_FEATURES = ((1 << abi.XENFEAT_writable_page_tables) |
                      (1 << abi.XENFEAT_writable_descriptor_tables) |
                      (1 << abi.XENFEAT_pae_pgdir_above_4gb) |
                      (1 << abi.XENFEAT_mmu_pt_update_preserve_ad) |
                      (1 << abi.XENFEAT_highmem_assist) |
                      (1 << abi.XENFEAT_gnttab_map_avail_bits))
EXTRA_PAGES = 16        # shared_info, grant frames, headroom


@dataclass
class Segment:
    name: str
    vstart: int
    pages: int

    @property
    def vend(self) -> int:
        return self.vstart + self.pages * PAGE


@dataclass
class BuildSpec:
    kernel: KernelImage
    memory_mb: int
    vcpus: int = 1
    cmdline: str = ""
    ramdisk: Optional[bytes] = None
    scramble_p2m: bool = False
    seed: int = 0x5EED
    store_evtchn: int = 1
    console_evtchn: int = 2
    maxmem_mb: Optional[int] = None     # room to balloon up to (increase_reservation)


@dataclass
class BuiltDomain:
    mem: MachineMemory
    mmu: MMU
    p2m: array
    nr_pages: int
    segments: List[Segment]
    start_info_va: int
    start_info_mfn: int
    shared_info_mfn: int
    store_mfn: int
    console_mfn: int
    grant_mfns: List[int]
    pt_base_va: int
    l3_mfn: int
    stack_top: int
    entry: int
    virt_pgtab_end: int
    extra_mfns: List[int] = field(default_factory=list)
    free_mfns: List[int] = field(default_factory=list)     # balloon room, owned by nobody


def _count_pgtables(pae: bool, vfrom: int, vto: int) -> List[int]:
    """Tables per level (top first) to map [vfrom, vto], as count_pgtables()."""
    counts = [1]
    if pae:
        f2, t2 = vfrom & ~((1 << 30) - 1), vto | ((1 << 30) - 1)
        if vto < 0xC0000000:
            t2 = 0xFFFFFFFF                 # PAE: extra l2 for l3#3
        counts.append(((t2 - f2) >> 30) + 1)
        f1, t1 = vfrom & ~((1 << 21) - 1), vto | ((1 << 21) - 1)
        counts.append(((t1 - f1) >> 21) + 1)
    else:
        f1, t1 = vfrom & ~((1 << 22) - 1), vto | ((1 << 22) - 1)
        counts.append(((t1 - f1) >> 22) + 1)
    return counts


def build_pv(spec: BuildSpec, shim: ShimImage, domid: int, ram_factory) -> tuple:
    """Lay out the machine and the guest; returns (ram, BuiltDomain)."""
    img = spec.kernel
    pae = img.is_pae
    if img.features_required & ~SUPPORTED_FEATURES:
        missing = [abi.XENFEAT_NAMES[b] for b in range(32)
                   if (img.features_required & ~SUPPORTED_FEATURES) >> b & 1]
        raise ImageError(f"kernel '{img.path}' requires Xen feature(s) {', '.join(missing)}, "
                         "which qemu-xenpv does not provide")
    nr_pages = spec.memory_mb * 256
    mode = PagingMode(pae)

    # ---- virtual layout (xc_dom_build_image order) ----
    vbase = img.virt_base
    segs: List[Segment] = []
    kstart = img.kstart & ~(PAGE - 1)
    kpages = (((img.kend + PAGE - 1) & ~(PAGE - 1)) - kstart) // PAGE
    segs.append(Segment("kernel", kstart, kpages))
    alloc_end = kstart + kpages * PAGE

    def alloc(name: str, nbytes: int) -> Segment:
        nonlocal alloc_end
        s = Segment(name, alloc_end, (nbytes + PAGE - 1) // PAGE)
        alloc_end = s.vend
        segs.append(s)
        return s

    rd = alloc("ramdisk", len(spec.ramdisk)) if spec.ramdisk else None
    p2m_seg = alloc("phys2mach", nr_pages * 4)
    si_seg = alloc("start info", PAGE)
    xs_seg = alloc("xenstore", PAGE)
    con_seg = alloc("console", PAGE)

    # page tables: grow the mapped area until it covers itself + 512 KiB
    extra = 1 + (512 * 1024) // PAGE
    pages = extra
    while True:
        try_end = ((alloc_end + pages * PAGE) | ((4 << 20) - 1))
        counts = _count_pgtables(pae, vbase, try_end)
        pages = sum(counts) + extra
        if alloc_end + pages * PAGE <= try_end + 1:
            break
    pt_seg = alloc("page tables", sum(counts) * PAGE)
    stack_seg = alloc("boot stack", PAGE)
    virt_pgtab_end = try_end + 1

    need_pages = (virt_pgtab_end - vbase) // PAGE
    if need_pages > nr_pages:
        raise ConfigError(f"memory = {spec.memory_mb} MiB is too small for this kernel: "
                          f"its start-of-day layout needs {(need_pages + 255) // 256} MiB")
    hole = mode.hole_start
    if virt_pgtab_end > hole:
        raise ImageError(f"kernel '{img.path}': initial mapping reaches the hypervisor hole")

    # ---- the machine ----
    balloon = max(0, (spec.maxmem_mb or 0) * 256 - nr_pages)
    mem = MachineMemory(shim=shim, pae=pae, guest_pages=nr_pages + balloon,
                        extra_pages=EXTRA_PAGES, nr_vcpus=spec.vcpus)
    ram = ram_factory(mem.ram_size)
    try:
        mem.build(ram)
        pool = list(mem.pool_mfns())
        guest_mfns = pool[:nr_pages]
        extra_mfns = pool[nr_pages:nr_pages + EXTRA_PAGES]
        free_mfns = pool[nr_pages + EXTRA_PAGES:]
        if spec.scramble_p2m:
            random.Random(spec.seed).shuffle(guest_mfns)
        p2m = array("I", guest_mfns)
        ft = mem.frames
        mmu = MMU(ram, ft, domid, mode, mem.hole_l2, mem.m2p_pa)
        mmu.p2m = p2m
        mmu.max_pages = nr_pages
        for pfn, mfn in enumerate(p2m):
            ft.owner[mfn] = domid
            mmu.set_m2p(mfn, pfn)
        for mfn in extra_mfns:
            ft.owner[mfn] = domid      # shared with the guest, not in its p2m

        def va2mfn(va: int) -> int:
            return p2m[(va - vbase) >> 12]

        def va2pa(va: int) -> int:
            return (va2mfn(va) << 12) | (va & 0xFFF)

        # zero the whole initial area, then load
        for va in range(vbase, virt_pgtab_end, PAGE):
            ram.zero(va2mfn(va) << 12, PAGE)
        for s in img.segments:
            _copy_in(ram, va2pa, s.vaddr, s.data)
        if rd:
            _copy_in(ram, va2pa, rd.vstart, spec.ramdisk)
        if img.hypercall_page is not None:
            ram.write(va2pa(img.hypercall_page), hypercall_page_bytes())
        _copy_in(ram, va2pa, p2m_seg.vstart, p2m.tobytes())

        # ---- bootstrap page tables (setup_pgtables_pv) ----
        pt_pfn0 = (pt_seg.vstart - vbase) >> 12
        pt_pfn_end = pt_pfn0 + pt_seg.pages
        if pae:
            l1_prot = PTE_P | PTE_RW | PTE_A
            up_prot = PTE_P | PTE_RW | PTE_A | PTE_D | PTE_US
        else:
            l1_prot = PTE_P | PTE_RW | PTE_A
            up_prot = PTE_P | PTE_RW | PTE_A | PTE_D | PTE_US
        pfn_cursor = pt_pfn0
        top_pfn = pfn_cursor
        pfn_cursor += 1
        if pae:
            n_l2 = counts[1]
            l2_from = vbase & ~((1 << 30) - 1)
            l2_pfns = list(range(pfn_cursor, pfn_cursor + n_l2))
            pfn_cursor += n_l2
            n_l1 = counts[2]
            l1_from = vbase & ~((1 << 21) - 1)
            l1_pfns = list(range(pfn_cursor, pfn_cursor + n_l1))
            for i, pfn in enumerate(l2_pfns):
                slot = (l2_from >> 30) + i
                ram.w64((p2m[top_pfn] << 12) + slot * 8, (p2m[pfn] << 12) | up_prot)
            for i, pfn in enumerate(l1_pfns):
                va = l1_from + i * (2 << 20)
                l2 = p2m[l2_pfns[(va >> 30) - (l2_from >> 30)]]
                ram.w64((l2 << 12) + ((va >> 21) & 511) * 8, (p2m[pfn] << 12) | up_prot)
            for va in range(vbase, virt_pgtab_end, PAGE):
                pfn = (va - vbase) >> 12
                l1 = p2m[l1_pfns[(va - l1_from) >> 21]]
                prot = l1_prot & ~PTE_RW if pt_pfn0 <= pfn < pt_pfn_end else l1_prot
                ram.w64((l1 << 12) + ((va >> 12) & 511) * 8, (p2m[pfn] << 12) | prot)
        else:
            n_l1 = counts[1]
            l1_from = vbase & ~((1 << 22) - 1)
            l1_pfns = list(range(pfn_cursor, pfn_cursor + n_l1))
            for i, pfn in enumerate(l1_pfns):
                va = l1_from + i * (4 << 20)
                ram.w32((p2m[top_pfn] << 12) + (va >> 22) * 4, (p2m[pfn] << 12) | up_prot)
            for va in range(vbase, virt_pgtab_end, PAGE):
                pfn = (va - vbase) >> 12
                l1 = p2m[l1_pfns[(va - l1_from) >> 22]]
                prot = l1_prot & ~PTE_RW if pt_pfn0 <= pfn < pt_pfn_end else l1_prot
                ram.w32((l1 << 12) + ((va >> 12) & 1023) * 4, (p2m[pfn] << 12) | prot)

        top_mfn = p2m[top_pfn]
        if pae and top_mfn >= 0x100000:
            raise ImageError("the guest's L3 table is above 4 GiB")
        # pin and validate, as libxc's xc_dom_boot does with MMUEXT_PIN_L3_TABLE
        rc = mmu.pin(top_mfn, PGT_l3 if pae else PGT_l2)
        if rc:
            raise AssertionError(f"builder made page tables the MMU refuses ({rc})")

        # ---- special pages ----
        shared_info_mfn = extra_mfns[0]
        grant_mfns = [extra_mfns[1]]
        ram.zero(shared_info_mfn << 12, PAGE)
        ram.zero(grant_mfns[0] << 12, PAGE)
        for vi in range(spec.vcpus):
            ram.w8((shared_info_mfn << 12) + vi * 64 + abi.VI_UPCALL_MASK, 1)
        ram.w32((shared_info_mfn << 12) + abi.SI_MAX_PFN, nr_pages)
        store_mfn, console_mfn = va2mfn(xs_seg.vstart), va2mfn(con_seg.vstart)
        # grant entries 0/1 for the console and xenstore back ends in dom0
        gt = grant_mfns[0] << 12
        ram.write(gt + abi.GNTTAB_RESERVED_CONSOLE * 8,
                  abi.grant_entry_v1.pack({"flags": abi.GTF_permit_access, "domid": 0,
                                           "frame": console_mfn}))
        ram.write(gt + abi.GNTTAB_RESERVED_XENSTORE * 8,
                  abi.grant_entry_v1.pack({"flags": abi.GTF_permit_access, "domid": 0,
                                           "frame": store_mfn}))

        si = {
            "magic": img.guest_type.encode(), "nr_pages": nr_pages,
            "shared_info": shared_info_mfn << 12, "flags": 0,
            "store_mfn": store_mfn, "store_evtchn": spec.store_evtchn,
            "console_mfn": console_mfn, "console_evtchn": spec.console_evtchn,
            "pt_base": pt_seg.vstart, "nr_pt_frames": pt_seg.pages,
            "mfn_list": p2m_seg.vstart,
            "mod_start": rd.vstart if rd else 0, "mod_len": len(spec.ramdisk) if rd else 0,
            "cmd_line": spec.cmdline.encode()[:abi.MAX_GUEST_CMDLINE - 1],
            "first_p2m_pfn": (p2m_seg.vstart - vbase) >> 12, "nr_p2m_frames": p2m_seg.pages,
        }
        _copy_in(ram, va2pa, si_seg.vstart, abi.start_info.pack(si))
        built = BuiltDomain(
            mem=mem, mmu=mmu, p2m=p2m, nr_pages=nr_pages, segments=segs,
            start_info_va=si_seg.vstart, start_info_mfn=va2mfn(si_seg.vstart),
            shared_info_mfn=shared_info_mfn, store_mfn=store_mfn, console_mfn=console_mfn,
            grant_mfns=grant_mfns, pt_base_va=pt_seg.vstart, l3_mfn=top_mfn,
            stack_top=stack_seg.vend, entry=img.entry, virt_pgtab_end=virt_pgtab_end,
            extra_mfns=extra_mfns[2:], free_mfns=free_mfns)
        for s in segs:
            log.debug("%-12s %#010x-%#010x", s.name, s.vstart, s.vend)
        return ram, built
    except BaseException:
        ram.close()
        raise


def _copy_in(ram, va2pa, va: int, data: bytes) -> None:
    off = 0
    while off < len(data):
        chunk = min(PAGE - ((va + off) & 0xFFF), len(data) - off)
        ram.write(va2pa(va + off), data[off:off + chunk])
        off += chunk


def hypercall_page_bytes() -> bytes:
    """Xen's 32-bit PV hypercall page: 128 slots of 32 bytes over 0xcc;
    slot i is `mov $i,%eax; int $0x82; ret`, slot 23 (iret) is
    `push %eax; mov $23,%eax; int $0x82` with no ret."""
    page = bytearray(b"\xcc" * PAGE)
    for i in range(128):
        if i == 23:
            stub = b"\x50\xb8" + i.to_bytes(4, "little") + b"\xcd\x82"
        else:
            stub = b"\xb8" + i.to_bytes(4, "little") + b"\xcd\x82\xc3"
        page[i * 32:i * 32 + len(stub)] = stub
    return bytes(page)
