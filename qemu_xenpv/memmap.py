"""The machine of one domain: where the shim, the hypervisor's own frames
and the guest's frames live in QEMU's RAM, and the tables that make the
hypervisor hole.

    0x00000-0x0ffff   unused
    0x10000-...       the shim image (private code/data, .entry, .pub)
    0xa0000-0xfffff   never RAM for a guest (VGA/ROM window)
    0x100000-...      the guest pool (domain frames, then extras)
    ...-top           hypervisor frames: M2P, page tables, per-vCPU pages

The hypervisor hole is the same in every address space of the domain:
L2 slots from HYPERVISOR_VIRT_START up hold the read-only M2P and the
shim's public region (.entry code, .pub data read-only, per-vCPU entry
stacks, GDT/LDT windows).  The shim's own address space additionally
identity-maps all RAM and the local APIC/HPET/ivshmem MMIO windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

from . import abi
from .abi import PTE_P, PTE_RW, PTE_A, PTE_D, PTE_PSE, PTE_PCD, PTE_PWT
from .errors import ConfigError
from .mm import FrameTable, OWNER_NONE
from .shim import K, ShimImage

MB = 1 << 20
POOL_BASE = 0x100000
IVSHMEM_BAR0 = 0xFE000000
IVSHMEM_BAR1 = 0xFE001000
IVSHMEM_BAR2 = 0xFE100000
IVSHMEM_SHM_SIZE = 4096
MMIO_WINDOWS = (0xFE000000, 0xFEC00000, 0xFEE00000)
PUB_L1_BASE = 0xFF000000
MAX_RAM = 2048 * MB

RO = PTE_P | PTE_A
RW = PTE_P | PTE_RW | PTE_A | PTE_D


def align_up(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


@dataclass
class VcpuFrames:
    priv: int           # struct shim_vcpu (private to the shim)
    pstack: int         # 8 KiB, 8 KiB aligned (top = pstack + 8192)
    estack: int         # entry stack page (guest-writable)
    gdt_reserved: int   # Xen's reserved GDT page for this vCPU
    shadow_l3: int      # PAE: the 4 PDPTEs the CPU loads
    shadow_top: int     # this vCPU's copy of the guest table holding the hole
                        # (PAE: the L2 under L3[3]; non-PAE: the page directory)
    pub_view: int       # this vCPU's view of the first public L1: only its
                        # own entry stack is mapped there


@dataclass
class MachineMemory:
    """RAM plan and hypervisor tables for one domain."""

    shim: ShimImage
    pae: bool
    guest_pages: int
    extra_pages: int
    nr_vcpus: int
    ram_size: int = 0
    pool_end: int = 0
    frames: FrameTable = None
    vcpus: List[VcpuFrames] = field(default_factory=list)
    hole_l2: Dict[int, int] = field(default_factory=dict)
    shim_cr3: int = 0
    m2p_pa: int = 0
    zero_page: int = 0
    guest_pub_l1: Dict[int, int] = field(default_factory=dict)     # va -> L1 mfn
    shim_pub_l1: Dict[int, int] = field(default_factory=dict)

    def __post_init__(self):
        if self.nr_vcpus < 1 or self.nr_vcpus > K.MAX_VCPUS:
            raise ConfigError(f"vcpus must be between 1 and {K.MAX_VCPUS}")
        self.entry_size = 8 if self.pae else 4
        self.l1_span = (2 if self.pae else 4) * MB
        pool_frames = self.guest_pages + self.extra_pages
        self.pool_end = POOL_BASE + pool_frames * 4096
        # hypervisor frames after the pool: estimate, then size RAM exactly
        est_ram = align_up(self.pool_end + 64 * MB, 2 * MB)
        for _ in range(3):
            hyp = self._hyp_pages(est_ram // 4096) * 4096
            ram = align_up(self.pool_end + hyp, 2 * MB)
            if ram == est_ram:
                break
            est_ram = ram
        self.ram_size = est_ram
        if self.ram_size > MAX_RAM:
            raise ConfigError(f"memory too large: at most {MAX_RAM // MB - 64} MiB per domain here")
        self._next = self.pool_end

    def _hyp_pages(self, nr_frames: int) -> int:
        m2p_pages = align_up(nr_frames * 4, 4096) // 4096
        m2p_l1 = align_up(m2p_pages, 512 if self.pae else 1024) // (512 if self.pae else 1024)
        shim_as = 5 if self.pae else 1
        pub = 2 * (3 if self.pae else 2)
        per_vcpu = 9 * self.nr_vcpus + 2      # priv, pstack (2 + alignment), estack,
                                               # gdt_reserved, shadow_top, pub_view
        return m2p_pages + m2p_l1 + shim_as + pub + per_vcpu + 4

    # ---- allocation of hypervisor frames ----
    def alloc(self, n: int = 1, align: int = 4096) -> int:
        addr = align_up(self._next, align)
        end = addr + n * 4096
        if end > self.ram_size:
            raise AssertionError("hypervisor frame budget exceeded")
        self._next = end
        return addr

    # ---- tables ----
    def _put(self, ram, table: int, idx: int, val: int) -> None:
        if self.pae:
            ram.w64(table + idx * 8, val)
        else:
            ram.w32(table + idx * 4, val)

    def _l2_slot(self, va: int) -> int:
        return (va >> 21) & 511 if self.pae else va >> 22

    def build(self, ram) -> None:
        """Allocate and fill every hypervisor-owned table and page."""
        nr_frames = self.ram_size // 4096
        self.frames = ft = FrameTable(nr_frames)
        self.shim.load(ram)

        # M2P: every entry invalid until a frame is given to a domain
        m2p_pages = align_up(nr_frames * 4, 4096) // 4096
        self.m2p_pa = self.alloc(m2p_pages)
        ram.write(self.m2p_pa, b"\xff" * (m2p_pages * 4096))
        per_l1 = 512 if self.pae else 1024
        m2p_start = abi.MACH2PHYS_VIRT_START_PAE if self.pae else abi.MACH2PHYS_VIRT_START_NONPAE
        for k in range(0, m2p_pages, per_l1):
            l1 = self.alloc()
            ram.zero(l1, 4096)
            for j in range(min(per_l1, m2p_pages - k)):
                self._put(ram, l1, j, (self.m2p_pa + (k + j) * 4096) | RO)
            va = m2p_start + k * 4096
            self.hole_l2[self._l2_slot(va)] = l1 | RW

        self.zero_page = self.alloc()
        ram.zero(self.zero_page, 4096)
        shadow_page = self.alloc() if self.pae else 0
        if shadow_page:
            ram.zero(shadow_page, 4096)

        # public region L1s (guest view read-only, shim view as linked)
        for va in range(PUB_L1_BASE, K.PUB_END, self.l1_span):
            g, s = self.alloc(), self.alloc()
            ram.zero(g, 4096)
            ram.zero(s, 4096)
            self.guest_pub_l1[va] = g
            self.shim_pub_l1[va] = s
            self.hole_l2[self._l2_slot(va)] = g | RW

        # the ivshmem doorbell register, for the hypercall fast path
        self.map_pub(ram, K.DOORBELL_VA, IVSHMEM_BAR0, guest_rw=True, shim_rw=True,
                     extra=PTE_PCD | PTE_PWT)
        for vaddr, paddr, memsz, writable in self.shim.pub_segments():
            for off in range(0, align_up(memsz, 4096), 4096):
                self.map_pub(ram, vaddr + off, paddr + off, guest_rw=False, shim_rw=writable)

        for i in range(self.nr_vcpus):
            v = VcpuFrames(priv=self.alloc(), pstack=self.alloc(2, align=8192),
                           estack=self.alloc(), gdt_reserved=self.alloc(),
                           shadow_l3=shadow_page + 32 * i if shadow_page else 0,
                           shadow_top=self.alloc(), pub_view=self.alloc())
            for a in (v.priv, v.estack, v.gdt_reserved, v.shadow_top):
                ram.zero(a, 4096)
            ram.zero(v.pstack, 8192)
            ram.w32(v.pstack, v.priv)               # this_vcpu() looks here
            # the per-vCPU view starts as the shared guest view of that L1
            ram.write(v.pub_view, ram.read(self.guest_pub_l1[PUB_L1_BASE], 4096))
            self.vcpus.append(v)
            # An entry stack is writable by the guest: map it only in its own
            # vCPU's view, so no other vCPU can touch a frame the shim checks.
            est = K.ESTACK_BASE + i * K.ESTACK_STRIDE
            self._put(ram, v.pub_view, (est - PUB_L1_BASE) >> 12, v.estack | RW)
            # its struct shim_vcpu, read-only, for the guest-view fast paths
            self._put(ram, v.pub_view, (est + K.GV_VCPU_OFF - PUB_L1_BASE) >> 12, v.priv | RO)
            base = est & ~(self.l1_span - 1)
            self._put(ram, self.shim_pub_l1[base], (est - base) >> 12, v.estack | RW)
            gdt = K.GDT_BASE + i * K.GDT_STRIDE
            for p in range(14):
                self.map_pub(ram, gdt + p * 4096, self.zero_page, guest_rw=False, shim_rw=False)
            self.map_pub(ram, gdt + 14 * 4096, v.gdt_reserved, guest_rw=False, shim_rw=True)

        self._build_shim_as(ram)

        # ownership: the pool is the domain's (assigned by the builder), the
        # rest belongs to the hypervisor, the VGA/ROM window to nobody.
        for mfn in range(nr_frames):
            ft.owner[mfn] = abi.DOMID_XEN
        for mfn in range(0xA0, 0x100):
            ft.owner[mfn] = OWNER_NONE
        for mfn in range(POOL_BASE >> 12, self.pool_end >> 12):
            ft.owner[mfn] = OWNER_NONE

    def map_pub(self, ram, va: int, pa: int, guest_rw: bool, shim_rw: bool,
                extra: int = 0) -> None:
        base = va & ~(self.l1_span - 1)
        idx = (va - base) >> 12
        e = pa | (RW if guest_rw else RO) | extra
        self._put(ram, self.guest_pub_l1[base], idx, e)
        self._put(ram, self.shim_pub_l1[base], idx, pa | (RW if shim_rw else RO) | extra)
        if base == PUB_L1_BASE:
            for v in self.vcpus:
                self._put(ram, v.pub_view, idx, e)

    def unmap_pub(self, ram, va: int) -> None:
        self.map_pub(ram, va, 0, False, False)
        base = va & ~(self.l1_span - 1)
        idx = (va - base) >> 12
        self._put(ram, self.guest_pub_l1[base], idx, 0)
        self._put(ram, self.shim_pub_l1[base], idx, 0)
        if base == PUB_L1_BASE:
            for v in self.vcpus:
                self._put(ram, v.pub_view, idx, 0)

    def map_vinfo(self, ram, i: int, pa: int) -> int:
        """Map the page holding vCPU i's vcpu_info in its own view of the
        hole (the guest's own page: read-write); return its address there."""
        va = K.VINFO_BASE + i * 4096
        self._put(ram, self.vcpus[i].pub_view, (va - PUB_L1_BASE) >> 12, (pa & ~0xFFF) | RW)
        return va + (pa & 0xFFF)

    def vcpu_hole_l2(self, i: int) -> Dict[int, int]:
        """The hole's L2 slots as vCPU i sees them."""
        slots = dict(self.hole_l2)
        slots[self._l2_slot(PUB_L1_BASE)] = self.vcpus[i].pub_view | RW
        return slots

    def _build_shim_as(self, ram) -> None:
        big = PTE_P | PTE_RW | PTE_A | PTE_D | PTE_PSE
        mmio = big | PTE_PCD | PTE_PWT
        if self.pae:
            l3 = self.alloc()
            ram.zero(l3, 4096)
            l2s = [self.alloc() for _ in range(4)]
            for i, l2 in enumerate(l2s):
                ram.zero(l2, 4096)
                ram.w64(l3 + i * 8, l2 | PTE_P)
            for pa in range(0, min(self.ram_size, 0xC0000000), 2 * MB):
                ram.w64(l2s[pa >> 30] + ((pa >> 21) & 511) * 8, pa | big)
            top_l2 = l2s[3]
            for slot, e in self.hole_l2.items():
                ram.w64(top_l2 + slot * 8, e)
            for va, l1 in self.shim_pub_l1.items():
                ram.w64(top_l2 + self._l2_slot(va) * 8, l1 | RW)
            for pa in MMIO_WINDOWS:
                ram.w64(top_l2 + self._l2_slot(pa) * 8, (pa & ~(2 * MB - 1)) | mmio)
            self.shim_cr3 = l3
        else:
            pd = self.alloc()
            ram.zero(pd, 4096)
            for pa in range(0, min(self.ram_size, 0xC0000000), 4 * MB):
                ram.w32(pd + (pa >> 22) * 4, pa | big)
            for slot, e in self.hole_l2.items():
                ram.w32(pd + slot * 4, e)
            for va, l1 in self.shim_pub_l1.items():
                ram.w32(pd + self._l2_slot(va) * 4, l1 | RW)
            for pa in MMIO_WINDOWS:
                ram.w32(pd + self._l2_slot(pa) * 4, (pa & ~(4 * MB - 1)) | mmio)
            self.shim_cr3 = pd

    def pool_mfns(self) -> range:
        return range(POOL_BASE >> 12, self.pool_end >> 12)
