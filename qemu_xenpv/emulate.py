"""What Xen emulates for a PV guest (pv/emul-priv-op.c, emul-inv-op.c,
ro-page-fault.c): the forced-emulation CPUID, privileged instructions
(port I/O under the virtual IOPL, cli/sti, control and debug registers,
MSRs), and writes to read-only page-table pages (writable page tables).
The instruction decoder is x86emu; this module is the policy."""

from __future__ import annotations

import logging
import struct
from typing import Optional

from . import abi
from .abi import ENODEV
from .descriptors import GUEST_KERNEL_RPL
from .hypercall.debugreg import (DR_STATUS_RESERVED_ONE, get_debugreg, io_breakpoint_match,
                                 set_debugreg)
from .mm import PGT_l1, PGT_seg_desc
from .shim import K
from .x86emu import Cpu, Fault, Ops, Unhandled, MEM_WRITERS, TF, IF

log = logging.getLogger("qemu_xenpv.emulate")

FEP = abi.XEN_EMULATE_PREFIX
CPUID_OP = b"\x0f\xa2"
XEN_CPUID_BASE = 0x40000000
XEN_CPUID_MAX_LEAVES = 5
EFLAGS_IOPL = 3 << 12
SUBLEAF_LEAVES = {4, 7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18}

# PV-visible CPUID feature bits: those cpufeatureset.h marks 'A' (all guests)
LEAF1_EDX = sum(1 << b for b in (0, 2, 4, 5, 6, 7, 8, 9, 11, 14, 15, 16, 19, 22, 23, 24, 25,
                                 26, 27, 28))
LEAF1_ECX = sum(1 << b for b in (0, 1, 9, 12, 13, 19, 20, 22, 23, 25, 26, 28, 29, 30))
X86_FEATURE_HYPERVISOR = 1 << 31
EXT1_EDX = sum(1 << b for b in (11, 20, 22, 25, 27, 29, 30, 31))
EXT1_ECX = sum(1 << b for b in (0, 1, 5, 6, 7, 8))

DR_STEP = 0x4000
CR4_DE, CR4_PAE, CR4_PSE = 1 << 3, 1 << 5, 1 << 4
CR0_GUEST = 0x80050033          # PG AM WP NE ET MP PE as the guest sees it; TS is virtual

MSR_DEBUGCTL, MSR_EFER, MSR_PAT = 0x1D9, 0xC0000080, 0x277
MSR_PLATFORM_INFO, MSR_MISC_FEATURES_ENABLES = 0xCE, 0x140
MSR_TSC, MSR_UCODE_REV, MSR_MISC_ENABLE = 0x10, 0x8B, 0x1A0
MSR_APIC_BASE, MSR_PERF_CAPABILITIES = 0x1B, 0x345
# Xen's PAT for PV guests, "an ABI with PV guests" (asm/processor.h):
# WB WT UC- UC WC WP UC UC; guests cannot change it.
XEN_MSR_PAT = 0x0000050100070406
APIC_BASE_ENABLE, APIC_BASE_BSP, APIC_DEFAULT_PHYS_BASE = 0x800, 0x100, 0xFEE00000
PAT_DEFAULT = 0x0007040600070406

# What pv_emulate_privileged_op lets x86_emulate run (emul-priv-op.c validate()):
# port I/O, clts, wbinvd, mov to/from CR/DR, wrmsr, rdtsc, rdmsr, cpuid, and
# cli/sti (which it completes as a no-op).  A #GP(0) from anything else --
# hlt, lgdt, invd, a plain memory access -- is the guest's.
PRIV_OPCODES = frozenset({0x6C, 0x6D, 0x6E, 0x6F, 0xE4, 0xE5, 0xE6, 0xE7, 0xEC, 0xED, 0xEE, 0xEF,
                          0x0F06, 0x0F09, 0x0F20, 0x0F21, 0x0F22, 0x0F23, 0x0F30, 0x0F31, 0x0F32,
                          0x0FA2, 0xFA, 0xFB})


def guest_kernel_mode(regs: dict) -> bool:
    return (regs["cs"] & 3) == GUEST_KERNEL_RPL


def iopl_ok(vcpu, regs: dict) -> bool:
    """Xen's iopl_ok(): the virtual IOPL against the virtual CPL."""
    if guest_kernel_mode(regs):
        cpl = 0 if vcpu.dom.vm_assist & (1 << 4) else 1        # architectural_iopl
    else:
        cpl = 3
    return (cpl << 12) <= vcpu.iopl


class PVOps(Ops):
    """Guest memory and privileged state for one vCPU."""

    def __init__(self, vcpu, regs: dict):
        self.vcpu = vcpu
        self.dom = vcpu.dom
        self.regs = regs
        self.action = 0
        self.bpmatch = 0                    # DR6 B0-3 of I/O breakpoints hit

    def cpl(self) -> int:
        """x86_emulate's CPL (priv_op read_segment): the guest kernel is
        ring 0 to the emulator (mov CR/DR, MSRs, clts, wbinvd need it), user
        mode is ring 3."""
        return 0 if guest_kernel_mode(self.regs) else 3

    # ---- memory ----
    def seg_base(self, seg: str) -> int:
        sel = self.regs.get(seg, 0) & 0xFFFF
        if (sel & ~3) in (0, abi.FLAT_RING1_CS & ~3, abi.FLAT_RING1_DS & ~3,
                          abi.FLAT_RING3_CS & ~3, abi.FLAT_RING3_DS & ~3):
            return 0
        desc = self.vcpu.read_descriptor(sel)
        if desc is None:
            raise Fault(13, sel & ~3)
        lo, hi = desc
        return ((lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)) & 0xFFFFFFFF

    def fetch(self, addr: int, n: int) -> bytes:
        lin = (self.seg_base("cs") + addr) & 0xFFFFFFFF
        first = min(n, 0x1000 - (lin & 0xFFF))
        out = self.dom.copy_from_guest(self.vcpu, lin, first)
        if out is None:
            # insn_fetch(): x86_emul_pagefault(0, ...), no PFEC_insn_fetch;
            # pv_inject_event sets the user bit
            raise Fault(14, self._user(), lin)
        if first < n:                           # the rest, if the next page is there
            more = self.dom.copy_from_guest(self.vcpu, lin + first, n - first)
            if more is not None:
                out += more
        return out

    def fetch_failed(self, addr: int) -> None:
        raise Fault(14, self._user(), (self.seg_base("cs") + addr) & 0xFFFFFFFF)

    def _lin(self, seg: str, addr: int) -> int:
        return (self.seg_base(seg) + addr) & 0xFFFFFFFF

    def read(self, seg: str, addr: int, n: int) -> int:
        lin = self._lin(seg, addr)
        data = self.dom.copy_from_guest(self.vcpu, lin, n)
        if data is None:
            raise Fault(14, 0 | self._user(), lin)
        return int.from_bytes(data, "little")

    def write(self, seg: str, addr: int, n: int, val: int) -> None:
        lin = self._lin(seg, addr)
        if not self.dom.copy_to_guest(self.vcpu, lin, val.to_bytes(n, "little")):
            raise Fault(14, 0x3 | self._user(), lin)

    def cmpxchg(self, seg: str, addr: int, n: int, old: int, new: int) -> int:
        cur = self.read(seg, addr, n)
        if cur == old:
            self.write(seg, addr, n, new)
        return cur

    def _user(self) -> int:
        return 0 if guest_kernel_mode(self.regs) else 4

    # ---- I/O: a domU has no ports; reads float high, writes vanish ----
    def io_ok(self, port: int = None, n: int = 1) -> bool:
        """guest_io_okay(): the virtual IOPL, else the guest's I/O bitmap
        (a clear bit allows the port, as in a TSS)."""
        if iopl_ok(self.vcpu, self.regs):
            return True
        bitmap, nr = self.vcpu.iobmp
        if port is None or not bitmap or port + n > nr:
            return False
        data = self.dom.copy_from_guest(self.vcpu, bitmap + (port >> 3), 2)
        if data is None:
            return False
        bits = int.from_bytes(data, "little") >> (port & 7)
        return bits & ((1 << n) - 1) == 0

    def io_in(self, port: int, n: int) -> int:
        self.bpmatch |= io_breakpoint_match(self.vcpu, port, n)
        return (1 << (8 * n)) - 1

    def io_out(self, port: int, n: int, val: int) -> None:
        self.bpmatch |= io_breakpoint_match(self.vcpu, port, n)
        self.dom.log_once(f"ioport:{port:#x}", f"write to I/O port {port:#x} ignored")

    def cli_sti(self, enable: bool) -> None:
        """With the virtual IOPL allowing it, Xen completes cli/sti as a
        no-op (validate() returns X86EMUL_DONE; the upcall-mask update is
        commented out there as "too dangerous"): events stay as they were."""

    # ---- control registers ----
    def read_cr(self, n: int) -> int:
        v = self.vcpu
        if n == 0:
            return CR0_GUEST | (8 if v.mbox.get("fpu_ts") else 0)
        if n == 2:
            return self.dom.ram.r32(v.vcpu_info_pa + abi.VI_CR2)
        if n == 3:
            return abi.xen_pfn_to_cr3(v.guest_table or 0)
        if n == 4:
            return v.cr4
        raise Unhandled(f"mov from %cr{n}")     # Xen's read_cr: a #GP(0) for the guest

    def write_cr(self, n: int, val: int) -> None:
        v = self.vcpu
        if n == 0:
            if (val ^ CR0_GUEST) & ~8:
                raise Fault(13, 0)                  # only TS may change
            v.mbox.set("fpu_ts", 1 if val & 8 else 0)
            self.action |= K.ACT_FPU
        elif n == 2:
            self.dom.ram.w32(v.vcpu_info_pa + abi.VI_CR2, val)
        elif n == 3:
            if v.new_baseptr(abi.xen_cr3_to_pfn(val)):
                raise Fault(13, 0)
            self.action |= K.ACT_CR3
        elif n == 4:
            v.cr4 = (val & CR4_DE) | (CR4_PAE if self.dom.pae else 0) | 0x600
        else:
            raise Unhandled(f"mov to %cr{n}")       # Xen's write_cr: a #GP(0) for the guest

    def clts(self) -> None:
        self.vcpu.mbox.set("fpu_ts", 0)
        self.action |= K.ACT_FPU

    # ---- debug registers: x86emul_read_dr / x86emul_write_dr ----
    def read_dr(self, n: int) -> int:
        val = get_debugreg(self.vcpu, n)
        if val is None:
            raise Fault(6)
        return val

    def write_dr(self, n: int, val: int) -> None:
        rc = set_debugreg(self.vcpu, n, val)
        if rc == -ENODEV:
            raise Fault(6)
        if rc:
            raise Fault(13, 0)                  # -EINVAL, -EPERM
        self.action |= K.ACT_DR

    # ---- MSRs: what a PV domU may see (guest_rdmsr) ----
    # what rdmsr can read: the shim answers the constant ones itself, asks
    # for the others (DYNAMIC_MSRS) and reflects #GP for every other index
    READABLE_MSRS = (MSR_EFER, MSR_PAT, MSR_DEBUGCTL, MSR_PLATFORM_INFO,
                     MSR_MISC_FEATURES_ENABLES, MSR_UCODE_REV, MSR_APIC_BASE,
                     MSR_PERF_CAPABILITIES, MSR_TSC)
    DYNAMIC_MSRS = (MSR_TSC,)

    def rdmsr(self, idx: int) -> int:
        """guest_rdmsr() then pv/emul-priv-op.c read_msr() for a 32-bit domU."""
        v = self.vcpu
        if idx == MSR_EFER:
            return 0                        # no NX, LME/LMA hidden from 32-bit guests
        if idx == MSR_PAT:
            return XEN_MSR_PAT
        if idx == MSR_APIC_BASE:            # "Linux PV guests will attempt to read APIC_BASE"
            return APIC_BASE_ENABLE | APIC_DEFAULT_PHYS_BASE | (APIC_BASE_BSP if v.vid == 0 else 0)
        if idx == MSR_TSC:
            return v.mbox.req_tsc()         # the TSC when the shim posted the #GP
        if idx == MSR_PERF_CAPABILITIES:
            return 0
        if idx == MSR_DEBUGCTL:
            return 0
        if idx == MSR_PLATFORM_INFO:
            return 0                        # no CPUID faulting offered
        if idx == MSR_MISC_FEATURES_ENABLES:
            return 0
        if idx == MSR_UCODE_REV:
            return 0
        raise Fault(13, 0)

    def wrmsr(self, idx: int, val: int) -> None:
        """write_msr(): PAT is fixed (#GP); EFER may only be written back unchanged."""
        if idx == MSR_EFER and val == self.rdmsr(MSR_EFER):
            return
        if idx == MSR_DEBUGCTL and val == 0:
            return
        if idx == MSR_MISC_FEATURES_ENABLES and val == 0:
            return
        raise Fault(13, 0)


def fast_msr_table(vcpu):
    """[(index, value)] of every MSR rdmsr may read, for the shim to answer
    alone; every other index is a #GP there as here."""
    ops = PVOps(vcpu, {})
    return [(i, None if i in PVOps.DYNAMIC_MSRS else ops.rdmsr(i)) for i in PVOps.READABLE_MSRS]


def cpuid(vcpu, leaf: int, subleaf: int):
    """guest_cpuid() for a 32-bit PV guest: the virtual CPU's leaves filtered
    to what Xen offers PV guests, plus Xen's hypervisor leaves."""
    dom = vcpu.dom
    if XEN_CPUID_BASE <= leaf <= XEN_CPUID_BASE + 0xFF:
        idx = leaf - XEN_CPUID_BASE
        a = b = c = d = 0
        if idx == 0:
            a = XEN_CPUID_BASE + XEN_CPUID_MAX_LEAVES
            b, c, d = 0x566E6558, 0x65584D4D, 0x4D4D566E     # "XenVMMXenVMM"
        elif idx == 1:
            from .hypercall.version import XEN_MAJOR, XEN_MINOR
            a = (XEN_MAJOR << 16) | XEN_MINOR
        elif idx == 2:
            a, b, c = 1, 0x40000000, 1                       # pages, MSR, PRESERVE_AD
        elif idx == 3 and subleaf == 0:
            c = getattr(dom, "tsc_khz", 0)
        elif idx == 3 and subleaf == 2:
            a = getattr(dom, "tsc_khz", 0)
        elif idx == 5 and subleaf == 0:
            b = (dom.ram.size >> 12).bit_length() + 12
        return a, b, c, d
    table = dom.cpuid_table()
    # leaves with subleaves answer zeros past the last one; others ignore ECX
    res = table.get((leaf, subleaf if leaf in SUBLEAF_LEAVES else 0))
    if res is None and leaf in SUBLEAF_LEAVES and (leaf, 0) in table:
        return 0, 0, 0, 0
    basic_max = table.get((0, 0), (0, 0, 0, 0))[0]
    ext_max = table.get((0x80000000, 0), (0x80000000, 0, 0, 0))[0]
    if res is None or (leaf < 0x80000000 and leaf > basic_max) or \
            (leaf >= 0x80000000 and leaf > ext_max):
        return 0, 0, 0, 0
    a, b, c, d = res
    if leaf == 1:
        b &= 0x00FFFFFF
        c = (c & LEAF1_ECX) | X86_FEATURE_HYPERVISOR
        d &= LEAF1_EDX
    elif leaf == 0x80000001:
        c &= EXT1_ECX
        d &= EXT1_EDX
    return a, b, c, d


def _copy_or_fault(vcpu, va: int, n: int):
    """copy_from_guest_pv(): (bytes, None), or (None, the address of the
    first byte that could not be read)."""
    data = vcpu.dom.copy_from_guest(vcpu, va, n)
    if data is not None:
        return data, None
    first = min(n, 0x1000 - (va & 0xFFF))
    if first < n and vcpu.dom.copy_from_guest(vcpu, va, first) is not None:
        return None, (va + first) & 0xFFFFFFFF
    return None, va


def emulate_invalid_op(vcpu, regs: dict):
    """#UD: the forced-emulation prefix `ud2a; 'xen'; cpuid` (emul-inv-op.c).
    An unreadable signature is pv_inject_page_fault(0, first unread byte),
    the user bit set by pv_inject_event for ring 3."""
    from .traps import inject
    eip = regs["eip"]
    pfec = 0 if guest_kernel_mode(regs) else 4
    sig, bad = _copy_or_fault(vcpu, eip, 5)
    if sig is None:
        return inject(vcpu, 14, pfec, bad)
    if sig != FEP:
        return None
    ins, bad = _copy_or_fault(vcpu, (eip + 5) & 0xFFFFFFFF, 2)
    if ins is None:
        return inject(vcpu, 14, pfec, bad)
    if ins != CPUID_OP:
        return None
    a, b, c, d = cpuid(vcpu, regs["eax"], regs["ecx"])
    regs.update(eax=a, ebx=b, ecx=c, edx=d, eip=(eip + 7) & 0xFFFFFFFF)
    return _instruction_done(vcpu, regs, 0)


def _instruction_done(vcpu, regs: dict, action: int, bpmatch: int = 0) -> int:
    """pv_emul_instruction_done / the end of pv_emulate_privileged_op: RF
    cleared; single-stepping (DR6.BS) and I/O breakpoints hit (B0-3) raise
    #DB after the instruction."""
    regs["eflags"] &= ~0x10000
    if regs["eflags"] & TF:
        bpmatch |= DR_STEP
    if bpmatch:
        from .traps import inject
        vcpu.dr[6] |= bpmatch | DR_STATUS_RESERVED_ONE
        return action | inject(vcpu, 1)
    return action


def emulate_privileged_op(vcpu, regs: dict):
    """#GP(0) from the guest: emulate what Xen emulates, or None to reflect.

    As pv_emulate_privileged_op + x86_emulate: only the instructions of
    PRIV_OPCODES; mov CR/DR, rdmsr/wrmsr, clts and wbinvd need the guest
    kernel (CPL 0 to the emulator, PVOps.cpl), else #GP(0); port I/O and
    cli/sti follow the virtual IOPL (and I/O bitmap) in either mode."""
    ops = PVOps(vcpu, regs)
    cpu = Cpu(regs, ops)
    try:
        ins = cpu.decode()
        if ins.opcode not in PRIV_OPCODES:
            return None                         # not for the emulator: the guest's #GP
        cpu.step(ins)
    except Unhandled as e:
        log.debug("d%d: not emulated: %s", vcpu.dom.domid, e)
        return None
    except Fault as f:
        from .traps import inject
        return ops.action | inject(vcpu, f.vector, f.errcode, f.cr2)
    return _instruction_done(vcpu, regs, ops.action, ops.bpmatch)


class PtwrOps(PVOps):
    """Writes to the faulting page go through Xen's ptwr_emulated_update:
    validated like mmu_update, as full PTEs."""

    def __init__(self, vcpu, regs: dict, cr2: int, l1_mfn: int):
        super().__init__(vcpu, regs)
        self.cr2 = cr2
        self.l1_mfn = l1_mfn

    def _update(self, lin: int, n: int, val: int, old: Optional[int]) -> Optional[int]:
        mmu = self.dom.mmu
        esize = mmu.mode.entry_size
        if (lin ^ self.cr2) & ~0xFFF or lin & (n - 1) or n > esize:
            raise Unhandled("ptwr: bad access")
        pte_addr = (self.l1_mfn << 12) | (lin & 0xFFF & ~(esize - 1))
        full = mmu.ram.r64(pte_addr) if esize == 8 else mmu.ram.r32(pte_addr)
        if n != esize:
            shift = (lin & (esize - 1)) * 8
            mask = ((1 << (8 * n)) - 1) << shift
            val = (full & ~mask) | ((val << shift) & mask)
            if old is not None:
                old = (full & ~mask) | ((old << shift) & mask)
        if old is not None and full != old:
            return full                                     # cmpxchg lost
        rc = mmu.mod_entry(pte_addr, val)
        if rc:
            if mmu.mode.pae and n == 4 and lin & 4 and old is None and val & abi.PTE_P:
                # an upper-half write first: zap PRESENT, the low half follows
                rc = mmu.mod_entry(pte_addr, val & ~abi.PTE_P)
            if rc:
                raise Unhandled(f"ptwr: PTE {val:#x} refused ({rc})")
        return None

    def write(self, seg: str, addr: int, n: int, val: int) -> None:
        lin = self._lin(seg, addr)
        if (lin >> 12) == (self.cr2 >> 12):
            self._update(lin, n, val, None)
        else:
            super().write(seg, addr, n, val)

    def cmpxchg(self, seg: str, addr: int, n: int, old: int, new: int) -> int:
        lin = self._lin(seg, addr)
        if (lin >> 12) != (self.cr2 >> 12):
            return super().cmpxchg(seg, addr, n, old, new)
        cur = self.read(seg, addr, n)
        if cur != old:
            return cur
        lost = self._update(lin, n, new, old)
        return cur if lost is None else self.read(seg, addr, n)


def ldt_fault(vcpu, cr2: int, errcode: int):
    """handle_gdt_ldt_mapping_fault(): the CPU touched a page of this vCPU's
    LDT window that is not mapped yet: map the guest's LDT page there (typed
    as a descriptor page) and retry, or reflect a #PF at the LDT's address."""
    base = K.LDT_BASE + vcpu.vid * K.LDT_STRIDE
    if not base <= cr2 < base + K.LDT_STRIDE or errcode & 4:
        return None
    ldt_base, ents = vcpu.ldt
    off = (cr2 - base) & ~0xFFF
    if off >= ents * 8:
        return None
    dom = vcpu.dom
    pa = dom.mmu.translate(vcpu.guest_table, ldt_base + off, write=False)
    if pa is None:
        from .traps import inject
        return inject(vcpu, 14, errcode & ~1, ldt_base + off + (cr2 & 0xFFF))
    mfn = pa >> 12
    if dom.mmu.get_page_and_type(mfn, PGT_seg_desc):
        from .traps import inject
        return inject(vcpu, 13, 0)
    vcpu.ldt_frames.append(mfn)
    dom.mem.map_pub(dom.ram, base + off, mfn << 12, guest_rw=False, shim_rw=False)
    return 0


def fixup_page_fault(vcpu, regs: dict, cr2: int, errcode: int):
    """fixup_page_fault(): the LDT window, writable page tables."""
    dom = vcpu.dom
    if cr2 >= dom.mode.hole_start:
        return ldt_fault(vcpu, cr2, errcode)
    if not (dom.vm_assist & (1 << 2)):                      # writable_pagetables
        return None
    if not guest_kernel_mode(regs) or errcode & 0x18 or (errcode & 3) != 3:
        return None
    if cr2 >= dom.mode.hole_start:
        return None
    pl1e = dom.mmu.l1e_addr(vcpu.guest_table, cr2)
    if pl1e is None:
        return None
    pte = dom.ram.r64(pl1e) if dom.pae else dom.ram.r32(pl1e)
    if (pte & (abi.PTE_P | abi.PTE_RW)) != abi.PTE_P:
        return None
    mfn = dom.mmu.mode.addr(pte) >> 12
    ft = dom.mmu.ft
    if not dom.mmu.owns(mfn) or not ft.type_count[mfn] or ft.type[mfn] != PGT_l1:
        return None
    ops = PtwrOps(vcpu, regs, cr2, mfn)
    cpu = Cpu(regs, ops)
    try:
        ins = cpu.decode()
        if ins.opcode not in MEM_WRITERS:
            return None
        cpu.step(ins)
    except Unhandled as e:
        log.debug("d%d: ptwr not emulated: %s", dom.domid, e)
        return None
    except Fault as f:
        if f.vector == 14:
            from .traps import inject
            return inject(vcpu, 14, f.errcode, f.cr2)
        return None
    return _instruction_done(vcpu, regs, ops.action)
