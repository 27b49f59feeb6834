"""qemu_xenpv/emulate.py against Xen's pv/emul-priv-op.c + x86_emulate:
which #GP(0)s are emulated (only validate()'s instructions), the CPL rules
(mov CR/DR, MSRs, clts, wbinvd need the guest kernel; port I/O and cli/sti
follow the virtual IOPL), cli/sti as no-ops, instruction-fetch #PF error
codes, mov to/from %drN through set_debugreg, I/O breakpoints and single
step; and descriptors.py's call-gate selector check (check_descriptor).

The world is a real VCPU (mailbox in GuestRAM) over a fake domain whose
guest addresses are its RAM addresses, page by page where mapped."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from qemu_xenpv import abi, emulate
from qemu_xenpv.descriptors import check_descriptor, guest_gate_selector_okay
from qemu_xenpv.shim import K
from qemu_xenpv.vcpu import VCPU

CODE = 0x40000                     # guest code page (VA == RAM address)
DATA = 0x41000
SI_PA = 0x2000
KERNEL_CS, USER_CS = abi.FLAT_RING1_CS, abi.FLAT_RING3_CS
TRAP_EIP = 0xC0DE0000


class FakeDom:
    def __init__(self, ram, pae=True):
        self.ram, self.domid, self.name = ram, 7, "emu"
        self.pae = pae
        hole = abi.HYPERVISOR_VIRT_START_PAE if pae else abi.HYPERVISOR_VIRT_START_NONPAE
        self.mode = SimpleNamespace(pae=pae, hole_start=hole)
        self.vm_assist = 0
        self.shared_info_pa = SI_PA
        self.tracer = None
        self.mapped = {CODE >> 12, DATA >> 12}
        self.logged = []

    def _ok(self, va, n):
        return n >= 0 and all(p in self.mapped for p in range(va >> 12, ((va + n - 1) >> 12) + 1))

    def copy_from_guest(self, vcpu, va, n):
        return self.ram.read(va, n) if self._ok(va, n) else None

    def copy_to_guest(self, vcpu, va, data):
        if not self._ok(va, len(data)):
            return False
        self.ram.write(va, data)
        return True

    def log_once(self, key, msg):
        self.logged.append(msg)

    def fixup_page_fault(self, *a):
        return None

    emulate_privileged_op = staticmethod(emulate.emulate_privileged_op)
    emulate_invalid_op = staticmethod(emulate.emulate_invalid_op)


def make_world(ram, pae=True):
    dom = FakeDom(ram, pae)
    vcpu = VCPU(dom, 0, SimpleNamespace(estack=0x10000, priv=0x11000))
    for vec in range(32):
        vcpu.set_trap(vec, 0, KERNEL_CS, TRAP_EIP + vec)
    return dom, vcpu


@pytest.fixture
def world(make_ram):
    return make_world(make_ram(4 << 20))


def regs_at(code: bytes, world, cs=KERNEL_CS, eip=CODE, **kw):
    dom, vcpu = world
    dom.ram.write(eip, code)
    r = dict(eax=0, ecx=0, edx=0, ebx=0, esp=0x8000, ebp=0, esi=0, edi=0, eip=eip, cs=cs,
             ss=abi.FLAT_RING1_DS if cs == KERNEL_CS else abi.FLAT_RING3_DS,
             ds=abi.FLAT_RING1_DS, es=abi.FLAT_RING1_DS, fs=0, gs=0, eflags=0x202)
    r.update(kw)
    return r


def bounced(vcpu):
    """(vector, errcode) of the exception the shim was asked to deliver."""
    mb = vcpu.mbox
    return mb.get("bounce_vector"), mb.get("bounce_errcode")


def gp(code: bytes, world, **kw):
    """Emulate the #GP(0) of `code`: (action, regs)."""
    dom, vcpu = world
    r = regs_at(code, world, **kw)
    return emulate.emulate_privileged_op(vcpu, r), r


# ---- CPL: what ring 3 may not do (x86_emulate's mode_ring0) ------------------------
RING0_ONLY = [
    b"\x0f\x21\xf8",        # mov %dr7,%eax
    b"\x0f\x23\xc0",        # mov %eax,%dr0
    b"\x0f\x20\xc0",        # mov %cr0,%eax
    b"\x0f\x22\xd8",        # mov %eax,%cr3
    b"\x0f\x32",            # rdmsr
    b"\x0f\x30",            # wrmsr
    b"\x0f\x06",            # clts
    b"\x0f\x09",            # wbinvd
]


@pytest.mark.parametrize("code", RING0_ONLY, ids=lambda c: c.hex())
def test_ring3_privileged_instructions_gp0(world, code):
    dom, vcpu = world
    vcpu.iopl = 3 << 12                     # IOPL does not matter for these
    act, r = gp(code, world, cs=USER_CS, ecx=emulate.MSR_PAT)
    assert act == K.ACT_BOUNCE and bounced(vcpu) == (13, 0)
    assert r["eip"] == CODE                 # at the instruction, not after it
    assert vcpu.dr[7] == 0x400 and vcpu.mbox.get("fpu_ts") == 0


def test_ring3_mov_dr7_leaves_registers_alone(world):
    dom, vcpu = world
    vcpu.dr[7] = 0x401
    act, r = gp(b"\x0f\x21\xf8", world, cs=USER_CS, eax=0x1234)
    assert bounced(vcpu) == (13, 0) and r["eax"] == 0x1234


def test_ring1_privileged_instructions_emulated(world):
    dom, vcpu = world
    vcpu.dr[7] = 0x401
    act, r = gp(b"\x0f\x21\xf8", world)                        # mov %dr7,%eax
    assert act == 0 and r["eax"] == 0x401 and r["eip"] == CODE + 3
    act, r = gp(b"\x0f\x32", world, ecx=emulate.MSR_EFER)      # rdmsr EFER
    assert act == 0 and (r["eax"], r["edx"]) == (0, 0) and r["eip"] == CODE + 2
    vcpu.mbox.set("fpu_ts", 1)
    act, r = gp(b"\x0f\x06", world)                            # clts
    assert act == K.ACT_FPU and vcpu.mbox.get("fpu_ts") == 0


def test_ring3_port_io_follows_iopl(world):
    dom, vcpu = world
    act, r = gp(b"\xe4\x80", world, cs=USER_CS)                # inb $0x80, IOPL 0
    assert bounced(vcpu) == (13, 0) and r["eip"] == CODE
    vcpu.iopl = 1 << 12                                        # kernel only
    gp(b"\xe4\x80", world, cs=USER_CS)
    assert bounced(vcpu) == (13, 0)
    vcpu.iopl = 3 << 12
    act, r = gp(b"\xe4\x80", world, cs=USER_CS)
    assert act == 0 and r["eax"] & 0xFF == 0xFF and r["eip"] == CODE + 2
    vcpu.iopl = 0
    act, r = gp(b"\xfa", world, cs=USER_CS)                    # cli, IOPL 0
    assert bounced(vcpu) == (13, 0)


def test_cli_sti_are_noops(world):
    """validate() completes cli/sti with X86EMUL_DONE: no effect on events."""
    dom, vcpu = world
    mask = vcpu.vcpu_info_pa + abi.VI_UPCALL_MASK
    act, r = gp(b"\xfa", world)
    assert act == K.ACT_BOUNCE and bounced(vcpu) == (13, 0)    # IOPL 0: #GP
    vcpu.iopl = 1 << 12
    dom.ram.w8(mask, 0)
    act, r = gp(b"\xfa", world)                                # cli
    assert act == 0 and r["eip"] == CODE + 1 and dom.ram.r8(mask) == 0
    dom.ram.w8(mask, 1)
    act, r = gp(b"\xfb", world)                                # sti
    assert act == 0 and r["eip"] == CODE + 1 and dom.ram.r8(mask) == 1


@pytest.mark.parametrize("code", [
    b"\xf4",                # hlt
    b"\x0f\x08",            # invd
    b"\x0f\x01\x15\x00\x10\x00\x00",    # lgdt
    b"\x03\x05\x00\x10\x04\x00",        # add (mem),%eax: a #GP(0) of a memory access
    b"\x89\x05\x00\x10\x04\x00",        # mov %eax,(mem)
    b"\x0f\x20\xe8",        # mov %cr5,%eax: Xen's read_cr refuses -> the guest's #GP
    b"\x0f\x22\xf8",        # mov %eax,%cr7
], ids=lambda c: c.hex())
def test_not_emulated_is_reflected(world, code):
    dom, vcpu = world
    act, r = gp(code, world)
    assert act is None and r["eip"] == CODE


def test_mov_dr_ignores_mod(world):
    """0f 21 07 is `mov %dr0,%edi` (mod is ignored): three bytes, no memory."""
    dom, vcpu = world
    vcpu.dr[0] = 0x1234
    act, r = gp(b"\x0f\x21\x07", world)
    assert act == 0 and r["edi"] == 0x1234 and r["eip"] == CODE + 3


# ---- instruction fetch: #PF as insn_fetch reports it --------------------------------
def test_fetch_fault_at_page_end(world):
    """An instruction that runs off the end of the mapped page: #PF at the
    first unreadable byte, error code 0 (4 in ring 3), no insn-fetch bit."""
    dom, vcpu = world
    eip = DATA + 0xFFE                       # 0f 21 | (next page unmapped)
    for cs, pfec in ((KERNEL_CS, 0), (USER_CS, 4)):
        act, r = gp(b"\x0f\x21", world, cs=cs, eip=eip)
        assert act == K.ACT_BOUNCE and bounced(vcpu) == (14, pfec)
        assert dom.ram.r32(vcpu.vcpu_info_pa + abi.VI_CR2) == DATA + 0x1000
        assert r["eip"] == eip


def test_forced_emulation_prefix_fault(world):
    dom, vcpu = world
    eip = DATA + 0xFFD                       # ud2 'x' | 'en' unmapped
    r = regs_at(b"\x0f\x0bx", world, eip=eip)
    assert emulate.emulate_invalid_op(vcpu, r) == K.ACT_BOUNCE
    assert bounced(vcpu) == (14, 0)
    assert dom.ram.r32(vcpu.vcpu_info_pa + abi.VI_CR2) == DATA + 0x1000


# ---- debug registers through mov ----------------------------------------------------
def test_mov_to_dr7_reserved_bits_are_masked_not_refused(world):
    dom, vcpu = world
    act, r = gp(b"\x0f\x23\xf8", world, eax=0xD801)            # bits 11/12/14/15 + L0
    assert act == K.ACT_DR and vcpu.dr[7] == 0x401
    gp(b"\x0f\x23\xf8", world, eax=0x2001)                     # GD: #GP(0)
    assert bounced(vcpu) == (13, 0) and vcpu.dr[7] == 0x401


def test_mov_dr_to_the_hole_and_dr4_with_de(world):
    dom, vcpu = world
    gp(b"\x0f\x23\xc0", world, eax=dom.mode.hole_start)        # mov %eax,%dr0
    assert bounced(vcpu) == (13, 0) and vcpu.dr[0] == 0
    vcpu.cr4 |= emulate.CR4_DE
    gp(b"\x0f\x21\xe0", world)                                 # mov %dr4,%eax: #UD
    assert bounced(vcpu)[0] == 6
    vcpu.cr4 &= ~emulate.CR4_DE
    act, r = gp(b"\x0f\x21\xe0", world)                        # DR4 aliases DR6
    assert act == 0 and r["eax"] == 0xFFFF0FF0


def test_io_breakpoint_raises_db_after_the_instruction(world):
    dom, vcpu = world
    vcpu.iopl = 1 << 12
    vcpu.cr4 |= emulate.CR4_DE
    gp(b"\x0f\x23\xc0", world, eax=0x80)                       # DR0 = port 0x80
    act, r = gp(b"\x0f\x23\xf8", world, eax=1 | (2 << 16))     # L0, RW0 = I/O, LEN0 = 1
    assert act == K.ACT_DR
    assert vcpu.dr[7] == 0x400 | (2 << 16)                     # the CPU never sees L0
    act, r = gp(b"\x0f\x21\xf8", world)
    assert r["eax"] == 0x401 | (2 << 16)                       # the guest does
    act, r = gp(b"\xe4\x81", world)                            # another port: nothing
    assert act == 0
    act, r = gp(b"\xe4\x80", world)
    assert act == K.ACT_BOUNCE and bounced(vcpu)[0] == 1 and r["eip"] == CODE + 2
    assert vcpu.dr[6] & 1


def test_single_step_after_emulation(world):
    dom, vcpu = world
    act, r = gp(b"\x0f\x21\xf8", world, eflags=0x302)          # TF
    assert act == K.ACT_BOUNCE and bounced(vcpu)[0] == 1 and r["eip"] == CODE + 3
    assert vcpu.dr[6] & 0x4000


# ---- call gates: guest_gate_selector_okay (desc.h) -------------------------------
def gate(sel: int, dpl: int = 3) -> tuple:
    return (sel << 16) | 0x1000, 0x8000 | (dpl << 13) | 0x0C00


@pytest.mark.parametrize("sel,ok", [
    (0xE019, True),                 # FLAT_RING1_CS exactly
    (0xE018, False), (0xE01A, False), (0xE01B, False),     # its other RPLs
    (0xE008, False), (0xE010, False), (0xE02B, False),     # Xen's and the ring-3 flat CS
    (0x0008, True), (0xDFF9, True),  # guest GDT entries
    (0x0000, True),                  # null: a use faults
    (0xE01C, True), (0xFFFF, True),  # LDT selectors
])
def test_call_gate_target_selector(sel, ok):
    assert guest_gate_selector_okay(sel) is ok
    assert (check_descriptor(*gate(sel)) is not None) is ok


def test_call_gate_fixup():
    a, b = check_descriptor(*gate(abi.FLAT_RING1_CS, 3))
    assert (a >> 16) == (abi.FLAT_RING1_CS & ~3) | 3 and not b & (3 << 13)


def test_flat_segment_limit_reaching_the_hole_is_extended():
    lo, hi = 0x67FF, 0x00CFB300 | 0x000F0000                  # base 0, limit 0xF67FF, G
    a, b = check_descriptor(lo, hi)
    assert a & 0xFFFF == 0xFFFF and b & 0xF0000 == 0xF0000
    a, b = check_descriptor(0x10000000 | 0x67FF, hi)           # base != 0: untouched
    assert a & 0xFFFF == 0x67FF
    a, b = check_descriptor(0x3FFF, 0x00C3B300)               # well below the hole
    assert a & 0xFFFF == 0x3FFF


# ---- #DB from the CPU: DR6 merged as do_debug() does --------------------------------
def test_hardware_db_merges_dr6(world):
    from qemu_xenpv.traps import handle_trap
    dom, vcpu = world
    r = regs_at(b"\x90", world)
    vcpu.mbox.set("trap_cr2", 0xFFFF0FF1)                     # B0
    assert handle_trap(vcpu, r, 1, 0, 0) == K.ACT_BOUNCE and bounced(vcpu)[0] == 1
    vcpu.mbox.set("trap_cr2", 0xFFFF4FF0)                     # BS: B0 stays (sticky)
    handle_trap(vcpu, r, 1, 0, 0)
    assert vcpu.dr[6] == 0xFFFF4FF1
    vcpu.mbox.set("trap_cr2", 0xFFFE0FF0)                     # RTM (bit 16) cleared by the CPU
    handle_trap(vcpu, r, 1, 0, 0)
    assert vcpu.dr[6] == 0xFFFE4FF1


@pytest.mark.parametrize("cs,dpl,soft", [(KERNEL_CS, 1, True), (KERNEL_CS, 0, False),
                                         (USER_CS, 1, False), (USER_CS, 3, True),
                                         (0xE01A, 2, False), (0xE01A, 3, True)])
def test_int_n_permit_softint(world, cs, dpl, soft):
    """`int $0x80` through Xen's DPL-0 IDT gate: #GP(0x80*8+2), reflected as
    the software interrupt if the guest's trap-table DPL permits it
    (DPL >= 1 in kernel mode, 3 otherwise)."""
    from qemu_xenpv.traps import handle_trap
    dom, vcpu = world
    vcpu.set_trap(0x80, dpl, KERNEL_CS, TRAP_EIP + 0x80)
    r = regs_at(b"\xcd\x80", world, cs=cs)
    assert handle_trap(vcpu, r, 13, (0x80 << 3) | 2, 0) == K.ACT_BOUNCE
    if soft:
        assert bounced(vcpu)[0] == 0x80 and r["eip"] == CODE + 2
    else:
        assert bounced(vcpu) == (13, (0x80 << 3) | 2) and r["eip"] == CODE
