"""What Xen does with a guest's exception (pv/traps.c, traps.c): emulate,
reflect it through the guest's trap table, or crash the domain.  The shim
brings the exception here and builds the bounce frame we ask for."""

from __future__ import annotations

from . import abi
from .hypercall import DomainCrash
from .shim import K

VECTOR_NAMES = {0: "divide error", 1: "debug", 2: "NMI", 3: "int3", 4: "overflow",
                5: "bounds", 6: "invalid opcode", 7: "device not available",
                8: "double fault", 9: "coprocessor segment overrun", 10: "invalid TSS",
                11: "segment not present", 12: "stack segment", 13: "general protection",
                14: "page fault", 16: "x87 FPU error", 17: "alignment check",
                18: "machine check", 19: "SIMD error"}
HAS_ERRCODE = {8, 10, 11, 12, 13, 14, 17, 21, 29, 30}
XEC_EXT, XEC_IDT = 1, 2
DR6_DEFAULT = 0xFFFF0FF0
PFEC_user = 4
TI_IF = 4


def inject(vcpu, vector: int, errcode=None, cr2=None, soft: bool = False) -> int:
    """pv_inject_event: bounce `vector` through the guest's trap table."""
    flags, cs, eip = vcpu.traps.get(vector, (0, 0, 0))
    if (cs & ~3) == 0:
        raise DomainCrash(f"unhandled {VECTOR_NAMES.get(vector, f'vector {vector}')} "
                          f"(no trap handler for vector {vector})")
    if vector == 14 and cr2 is not None:
        vcpu.dom.ram.w32(vcpu.vcpu_info_pa + abi.VI_CR2, cr2)
    bflags = 0
    if errcode is not None and not soft:
        bflags |= K.TBF_ERRCODE
    if flags & TI_IF:
        bflags |= K.TBF_INTERRUPT
    mb = vcpu.mbox
    mb.set("bounce_vector", vector)
    mb.set("bounce_errcode", errcode or 0)
    mb.set("bounce_flags", bflags)
    return K.ACT_BOUNCE


def handle_trap(vcpu, regs: dict, vector: int, errcode: int, cr2: int) -> int:
    """An exception from the guest: return the shim actions."""
    if vector == 13:
        return general_protection(vcpu, regs, errcode)
    if vector == 14:
        fixed = vcpu.dom.fixup_page_fault(vcpu, regs, cr2, errcode)
        if fixed is not None:
            return fixed
        return inject(vcpu, 14, errcode, cr2)
    if vector == 6:
        fixed = vcpu.dom.emulate_invalid_op(vcpu, regs)
        if fixed is not None:
            return fixed
        return inject(vcpu, 6)
    if vector == 7:
        # Xen: the guest's virtual CR0.TS is cleared as the #NM is delivered
        was_set = vcpu.mbox.get("fpu_ts")
        vcpu.mbox.set("fpu_ts", 0)
        if was_set:
            return K.ACT_FPU | inject(vcpu, 7)
        return K.ACT_FPU
    if vector == 1:
        # the shim read and reset the hardware DR6: merge it into the
        # guest's virtual DR6 as do_debug() does (bits that differ from
        # X86_DR6_DEFAULT -- B0-3, BD, BS, BT -- accumulate; default-1 bits
        # the CPU cleared, such as RTM, follow it) and deliver the #DB
        dr6 = vcpu.mbox.get("trap_cr2")
        not_default = ~DR6_DEFAULT & 0xFFFFFFFF
        vcpu.dr[6] = (vcpu.dr[6] | (dr6 & not_default)) & (dr6 | not_default)
        return inject(vcpu, 1)
    if vector in (2, 8, 18):
        raise DomainCrash(f"{VECTOR_NAMES[vector]} in guest context")
    return inject(vcpu, vector, errcode if vector in HAS_ERRCODE else None)


def general_protection(vcpu, regs: dict, errcode: int) -> int:
    if errcode & XEC_EXT:
        raise DomainCrash("external #GP")
    if errcode & XEC_IDT:
        # `int N` through a DPL-0 gate: permitted if the guest's own gate allows it
        vector = (errcode >> 3) & 0xFF
        flags, cs, eip = vcpu.traps.get(vector, (0, 0, 0))
        # permit_softint(): DPL 1 suffices in guest kernel mode (ring 1),
        # anything else (ring 3, and ring 2) needs DPL 3
        if (flags & 3) >= (1 if (regs["cs"] & 3) == 1 else 3) and (cs & ~3):
            regs["eip"] = (regs["eip"] + 2) & 0xFFFFFFFF
            return inject(vcpu, vector, soft=True)
    elif errcode == 0:
        act = vcpu.dom.emulate_privileged_op(vcpu, regs)
        if act is not None:
            return act
    return inject(vcpu, 13, errcode)
