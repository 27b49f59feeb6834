"""qemu_xenpv/hypercall/debugreg.py: set_debugreg (8) and get_debugreg (9)
as Xen's pv/misc-hypercalls.c set_debugreg() and x86emul_read_dr(): DR0-3
below the hole, DR6/DR7 reserved bits forced, DR7.GD and I/O breakpoints
without CR4.DE refused (-EPERM), DR4/DR5 aliasing DR6/DR7 unless CR4.DE
(-ENODEV), other registers -ENODEV; a successful set hands dr0-3/dr7 to
the shim (ACT_DR)."""

from __future__ import annotations

import pytest

from qemu_xenpv import abi
from qemu_xenpv.abi import ENODEV, EPERM
from qemu_xenpv.hypercall import TABLE, Call, _load_families, dispatch
from qemu_xenpv.hypercall.debugreg import CR4_DE, get_debugreg, set_debugreg
from qemu_xenpv.shim import K, V

from test_emulate import make_world

SET, GET = abi.HYPERCALL_NR["set_debugreg"], abi.HYPERCALL_NR["get_debugreg"]


@pytest.fixture(params=[True, False], ids=["pae", "nonpae"])
def world(request, make_ram):
    return make_world(make_ram(4 << 20), pae=request.param)


def hc(vcpu, nr, *args):
    """dispatch() a hypercall: (result as the guest's signed long, actions)."""
    args = tuple(args) + (0,) * (6 - len(args))
    call = Call(vcpu, None, args + (nr,))
    ret = dispatch(call)
    return ret, call.action


def shim_dr(vcpu, i):
    return vcpu.dom.ram.r32(vcpu.mbox.priv + V["dr"] + 4 * i)


def test_registered():
    _load_families()
    assert TABLE[8].name == "set_debugreg" and TABLE[8].nargs == 2
    assert TABLE[9].name == "get_debugreg" and TABLE[9].nargs == 1


def test_set_get_dr0_3_and_shim_copy(world):
    dom, vcpu = world
    for i in range(4):
        assert hc(vcpu, SET, i, 0x1000 * (i + 1)) == (0, K.ACT_DR)
        assert hc(vcpu, GET, i)[0] == 0x1000 * (i + 1)
        assert shim_dr(vcpu, i) == 0x1000 * (i + 1)


def test_breakpoint_address_below_the_hole(world):
    dom, vcpu = world
    hole = dom.mode.hole_start
    assert hc(vcpu, SET, 0, hole - 4) == (0, K.ACT_DR)
    for bad in (hole - 3, hole, 0xFFFFFFFC, 0xFFFFFFFF):
        assert hc(vcpu, SET, 1, bad) == (-EPERM, 0)
    assert vcpu.dr[1] == 0


def test_dr6_reserved_bits(world):
    dom, vcpu = world
    assert hc(vcpu, SET, 6, 0)[0] == 0
    assert vcpu.dr[6] == 0xFFFF0FF0
    assert hc(vcpu, SET, 6, 0xFFFFFFFF)[0] == 0
    assert vcpu.dr[6] == 0xFFFFEFFF                     # bit 12 reads as 0
    assert hc(vcpu, GET, 6)[0] & 0xFFFFFFFF == 0xFFFFEFFF


def test_dr7_reserved_bits_and_gd(world):
    dom, vcpu = world
    assert hc(vcpu, SET, 7, 0xD801) == (0, K.ACT_DR)     # 11, 12, 14, 15 forced to 0
    assert vcpu.dr[7] == 0x401 and shim_dr(vcpu, 7) == 0x401
    assert hc(vcpu, SET, 7, 0) == (0, K.ACT_DR)
    assert vcpu.dr[7] == 0x400                           # bit 10 forced to 1
    assert hc(vcpu, SET, 7, 0x2001) == (-EPERM, 0)       # GD
    assert hc(vcpu, SET, 7, 0x2000) == (-EPERM, 0)       # GD even with nothing enabled
    assert vcpu.dr[7] == 0x400


def test_dr7_io_breakpoints_need_cr4_de(world):
    dom, vcpu = world
    io_l0 = 1 | (2 << 16)
    assert hc(vcpu, SET, 7, io_l0) == (-EPERM, 0)
    assert hc(vcpu, SET, 7, 1 | (2 << 20)) == (-EPERM, 0)   # RW1 = I/O, only L0 on
    assert hc(vcpu, SET, 7, 2 << 16)[0] == 0              # nothing enabled: not checked
    vcpu.cr4 |= CR4_DE
    assert hc(vcpu, SET, 7, io_l0 | 4 | (1 << 20))[0] == 0   # L0 I/O + L1 write
    assert vcpu.dr[7] == 0x400 | 4 | (2 << 16) | (1 << 20)   # the CPU gets L1 only
    assert vcpu.dr7_emul == 1
    assert hc(vcpu, GET, 7)[0] == 0x400 | 5 | (2 << 16) | (1 << 20)
    assert hc(vcpu, SET, 7, 0)[0] == 0 and vcpu.dr7_emul == 0


def test_dr4_dr5_alias_unless_de(world):
    dom, vcpu = world
    assert hc(vcpu, SET, 4, 1)[0] == 0 and vcpu.dr[6] == 0xFFFF0FF1
    assert hc(vcpu, SET, 5, 1)[0] == 0 and vcpu.dr[7] == 0x401
    assert hc(vcpu, GET, 4)[0] & 0xFFFFFFFF == 0xFFFF0FF1
    assert hc(vcpu, GET, 5)[0] == 0x401
    vcpu.cr4 |= CR4_DE
    assert hc(vcpu, SET, 4, 0) == (-ENODEV, 0)
    assert hc(vcpu, SET, 5, 0) == (-ENODEV, 0)
    assert hc(vcpu, GET, 4)[0] == -ENODEV
    assert hc(vcpu, GET, 5)[0] == -ENODEV


@pytest.mark.parametrize("reg", [8, 15, 0x7FFFFFFF, 0xFFFFFFFF])
def test_other_registers_enodev(world, reg):
    dom, vcpu = world
    assert hc(vcpu, SET, reg, 0) == (-ENODEV, 0)
    assert hc(vcpu, GET, reg)[0] == -ENODEV


def test_one_implementation_for_mov_and_hypercall(world):
    """The emulation of mov to/from %drN goes through the same functions."""
    from qemu_xenpv import emulate
    assert emulate.set_debugreg is set_debugreg and emulate.get_debugreg is get_debugreg
    dom, vcpu = world
    assert set_debugreg(vcpu, 7, 0x2000) == -EPERM
    assert set_debugreg(vcpu, 0, dom.mode.hole_start) == -EPERM
    assert get_debugreg(vcpu, 9) is None
