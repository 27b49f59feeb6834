"""qemu_xenpv/x86emu.py: the decoder (prefixes, ModRM/SIB/displacement
forms, immediates, lengths), execution of every memory-writing class
(locked forms through cmpxchg, cmpxchg/cmpxchg8b, bt* with register bit
offsets, ALU flags against known values) and the privileged instructions
through a fake Ops."""

from __future__ import annotations

import pytest

from qemu_xenpv.x86emu import (Cpu, Fault, Ops, Unhandled, CF, PF, AF, ZF, SF, OF, DF,
                               MEM_WRITERS)

CODE = 0x1000
DATA = 0x4000


class FakeOps(Ops):
    """A flat 64 KiB memory; every access and privileged effect is recorded."""

    def __init__(self):
        self.mem = bytearray(0x10000)
        self.reads, self.writes, self.cmpxchgs = [], [], []
        self.io_allowed = False
        self.ins, self.outs = [], []
        self.cli = []
        self.crs, self.drs, self.msrs = {0: 0x80050033, 3: 0x1000, 4: 0x20}, {7: 0x400}, {}
        self.clts_called = self.wbinvd_called = False

    def fetch(self, addr, n):
        return bytes(self.mem[addr:addr + n])

    def read(self, seg, addr, n):
        self.reads.append((seg, addr, n))
        return int.from_bytes(self.mem[addr:addr + n], "little")

    def write(self, seg, addr, n, val):
        self.writes.append((seg, addr, n, val))
        self.mem[addr:addr + n] = val.to_bytes(n, "little")

    def cmpxchg(self, seg, addr, n, old, new):
        self.cmpxchgs.append((seg, addr, n, old, new))
        cur = int.from_bytes(self.mem[addr:addr + n], "little")
        if cur == old:
            self.mem[addr:addr + n] = new.to_bytes(n, "little")
        return cur

    def io_ok(self, port=None, n=1):
        return self.io_allowed

    def io_in(self, port, n):
        self.ins.append((port, n))
        return (1 << (8 * n)) - 1

    def io_out(self, port, n, val):
        self.outs.append((port, n, val))

    def cli_sti(self, enable):
        self.cli.append(enable)

    def read_cr(self, n):
        return self.crs[n]

    def write_cr(self, n, val):
        self.crs[n] = val

    def read_dr(self, n):
        return self.drs.get(n, 0)

    def write_dr(self, n, val):
        self.drs[n] = val

    def rdmsr(self, idx):
        if idx not in self.msrs:
            raise Fault(13, 0)
        return self.msrs[idx]

    def wrmsr(self, idx, val):
        self.msrs[idx] = val

    def rdtsc(self):
        return 0x1122334455667788

    def clts(self):
        self.clts_called = True

    def wbinvd(self):
        self.wbinvd_called = True


def cpu_with(code: bytes, **regs) -> Cpu:
    ops = FakeOps()
    ops.mem[CODE:CODE + len(code)] = code
    r = dict(eax=0, ecx=0, edx=0, ebx=0, esp=0x8000, ebp=0x9000, esi=0, edi=0,
             eip=CODE, eflags=0x202)
    r.update(regs)
    return Cpu(r, ops)


def mem32(cpu: Cpu, addr: int) -> int:
    return int.from_bytes(cpu.ops.mem[addr:addr + 4], "little")


def set32(cpu: Cpu, addr: int, val: int) -> None:
    cpu.ops.mem[addr:addr + 4] = val.to_bytes(4, "little")


# ---- decoder ------------------------------------------------------------------------
@pytest.mark.parametrize("code,regs,length,ea,seg", [
    (b"\x89\x18", dict(eax=DATA), 2, DATA, "ds"),                          # (%eax)
    (b"\x89\x04\x8b", dict(ebx=DATA, ecx=3), 3, DATA + 12, "ds"),          # (%ebx,%ecx,4)
    (b"\x89\x04\x8d\x00\x10\x00\x00", dict(ecx=2), 7, 0x1008, "ds"),       # 0x1000(,%ecx,4)
    (b"\x89\x43\xfc", dict(ebx=DATA), 3, DATA - 4, "ds"),                  # -4(%ebx)
    (b"\x89\x83\x00\x01\x00\x00", dict(ebx=DATA), 6, DATA + 0x100, "ds"),  # 0x100(%ebx)
    (b"\x89\x05\x78\x56\x34\x12", {}, 6, 0x12345678, "ds"),                # absolute
    (b"\x89\x45\x08", dict(ebp=DATA), 3, DATA + 8, "ss"),                  # 8(%ebp): ss
    (b"\x89\x04\x24", dict(esp=DATA), 3, DATA, "ss"),                      # (%esp): ss
    (b"\x89\x44\x24\x10", dict(esp=DATA), 4, DATA + 0x10, "ss"),           # 0x10(%esp)
    (b"\x89\x04\x20", dict(eax=DATA), 3, DATA, "ds"),                      # SIB, no index
    (b"\x64\x89\x03", dict(ebx=DATA), 3, DATA, "fs"),                      # fs override
    (b"\x36\x89\x03", dict(ebx=DATA), 3, DATA, "ss"),                      # ss override
    (b"\x26\x89\x45\x00", dict(ebp=DATA), 4, DATA, "es"),                  # override beats ebp
    (b"\x89\x04\x18", dict(eax=0xFFFFFFF0, ebx=0x20), 3, 0x10, "ds"),      # wraps at 4 GiB
])
def test_modrm_sib_disp(code, regs, length, ea, seg):
    i = cpu_with(code, **regs).decode()
    assert (i.length, i.ea, i.ea_seg) == (length, ea, seg)


@pytest.mark.parametrize("code,length,opsize,imm", [
    (b"\xc7\x00\x78\x56\x34\x12", 6, 4, 0x12345678),
    (b"\x66\xc7\x00\x34\x12", 5, 2, 0x1234),
    (b"\xc6\x00\x7f", 3, 4, 0x7F),
    (b"\x83\x00\xff", 3, 4, 0xFF),
    (b"\x81\x00\x01\x00\x00\x80", 6, 4, 0x80000001),
    (b"\x66\x81\x00\x01\x80", 5, 2, 0x8001),
    (b"\x80\x00\x05", 3, 4, 5),
    (b"\x0f\xba\x28\x05", 4, 4, 5),
    (b"\xe4\x80", 2, 4, 0x80),
    (b"\xe7\x71", 2, 4, 0x71),
    (b"\xec", 1, 4, 0),
])
def test_immediates_and_lengths(code, length, opsize, imm):
    i = cpu_with(code, eax=DATA).decode()
    assert (i.length, i.opsize, i.imm) == (length, opsize, imm)


def test_prefixes():
    i = cpu_with(b"\xf0\x0f\xb1\x0a", edx=DATA).decode()           # lock cmpxchg %ecx,(%edx)
    assert i.lock and i.opcode == 0x0FB1 and i.length == 4 and i.reg == 1
    i = cpu_with(b"\xf3\x6c").decode()                               # rep insb
    assert i.rep == 0xF3 and i.opcode == 0x6C and i.length == 2
    i = cpu_with(b"\x66\xf0\x64\x0f\xab\x08", eax=DATA).decode()     # prefixes in any order
    assert (i.opsize, i.lock, i.seg, i.opcode, i.length) == (2, True, "fs", 0x0FAB, 6)
    i = cpu_with(b"\x0f\x22\xd8").decode()                           # mov %eax,%cr3
    assert (i.opcode, i.mod, i.reg, i.rm, i.ea) == (0x0F22, 3, 3, 0, None)


@pytest.mark.parametrize("code", [
    b"\x67\x89\x00",            # 16-bit addressing
    b"\x0f\x0b",                # ud2: not ours
    b"\x90",                    # nop: not something that faults
    b"\x66" * 15,               # prefixes only: too long
    b"\xc7",                    # truncated ModRM
])
def test_decode_refuses(code):
    cpu = cpu_with(code)
    cpu.ops.fetch = lambda addr, n: code[:n]               # nothing follows
    with pytest.raises(Unhandled):
        cpu.decode()


# ---- memory-writing instructions -------------------------------------------------
def run(code: bytes, **regs) -> Cpu:
    cpu = cpu_with(code, **regs)
    cpu.step()
    assert cpu.regs["eip"] == CODE + cpu.decoded.length
    return cpu


def test_mov_store_sizes():
    cpu = run(b"\x89\x18", eax=DATA, ebx=0xDEADBEEF)
    assert mem32(cpu, DATA) == 0xDEADBEEF
    cpu = run(b"\x66\x89\x18", eax=DATA, ebx=0x1234ABCD)
    assert cpu.ops.writes == [("ds", DATA, 2, 0xABCD)]
    cpu = run(b"\x88\x38", eax=DATA, ebx=0x1234)
    assert cpu.ops.writes == [("ds", DATA, 1, 0x12)]              # %bh
    cpu = run(b"\xc7\x00\x78\x56\x34\x12", eax=DATA)
    assert mem32(cpu, DATA) == 0x12345678
    cpu = run(b"\xc6\x00\xab", eax=DATA)
    assert cpu.ops.writes == [("ds", DATA, 1, 0xAB)]


def test_mov_load():
    cpu = cpu_with(b"\x8b\x08", eax=DATA)
    set32(cpu, DATA, 0xCAFEF00D)
    cpu.step()
    assert cpu.regs["ecx"] == 0xCAFEF00D


def test_xchg_memory_is_locked():
    cpu = cpu_with(b"\x87\x18", eax=DATA, ebx=0x11111111)
    set32(cpu, DATA, 0x22222222)
    cpu.step()
    assert mem32(cpu, DATA) == 0x11111111 and cpu.regs["ebx"] == 0x22222222
    assert cpu.ops.cmpxchgs and not cpu.ops.writes


def test_locked_add_uses_cmpxchg_and_plain_add_writes():
    cpu = cpu_with(b"\xf0\x01\x18", eax=DATA, ebx=5)
    set32(cpu, DATA, 10)
    cpu.step()
    assert mem32(cpu, DATA) == 15 and cpu.ops.cmpxchgs == [("ds", DATA, 4, 10, 15)]
    cpu = cpu_with(b"\x01\x18", eax=DATA, ebx=5)
    set32(cpu, DATA, 10)
    cpu.step()
    assert mem32(cpu, DATA) == 15 and cpu.ops.writes and not cpu.ops.cmpxchgs


def test_locked_update_retries_when_memory_changes():
    cpu = cpu_with(b"\xf0\x83\x00\x01", eax=DATA)          # lock addl $1,(%eax)
    set32(cpu, DATA, 7)
    real = cpu.ops.cmpxchg
    calls = []

    def racing(seg, addr, n, old, new):
        calls.append(old)
        if len(calls) == 1:                                  # another CPU got there first
            set32(cpu, DATA, 100)
            return 100
        return real(seg, addr, n, old, new)
    cpu.ops.cmpxchg = racing
    cpu.step()
    assert calls == [7, 100] and mem32(cpu, DATA) == 101


def test_cmpxchg_success_and_failure():
    cpu = cpu_with(b"\xf0\x0f\xb1\x0a", edx=DATA, eax=5, ecx=9)
    set32(cpu, DATA, 5)
    cpu.step()
    assert mem32(cpu, DATA) == 9 and cpu.regs["eflags"] & ZF
    cpu = cpu_with(b"\xf0\x0f\xb1\x0a", edx=DATA, eax=5, ecx=9)
    set32(cpu, DATA, 6)
    cpu.step()
    assert mem32(cpu, DATA) == 6 and not cpu.regs["eflags"] & ZF and cpu.regs["eax"] == 6
    cpu = cpu_with(b"\x0f\xb0\x0a", edx=DATA, eax=0x1234, ecx=0xAB)   # byte form
    cpu.ops.mem[DATA] = 0x34
    cpu.step()
    assert cpu.ops.mem[DATA] == 0xAB


def test_cmpxchg8b():
    cpu = cpu_with(b"\xf0\x0f\xc7\x0e", esi=DATA, eax=0x33334444, edx=0x11112222,
                   ebx=0x77778888, ecx=0x55556666)
    cpu.ops.mem[DATA:DATA + 8] = (0x1111222233334444).to_bytes(8, "little")
    cpu.step()
    assert int.from_bytes(cpu.ops.mem[DATA:DATA + 8], "little") == 0x5555666677778888
    assert cpu.regs["eflags"] & ZF
    cpu = cpu_with(b"\x0f\xc7\x0e", esi=DATA, eax=0, edx=0, ebx=1, ecx=2)
    cpu.ops.mem[DATA:DATA + 8] = (0xAAAABBBBCCCCDDDD).to_bytes(8, "little")
    cpu.step()
    assert not cpu.regs["eflags"] & ZF
    assert (cpu.regs["eax"], cpu.regs["edx"]) == (0xCCCCDDDD, 0xAAAABBBB)
    with pytest.raises(Unhandled):
        run(b"\x0f\xc7\xc8")                                  # register form


def test_xadd():
    cpu = cpu_with(b"\xf0\x0f\xc1\x18", eax=DATA, ebx=3)
    set32(cpu, DATA, 4)
    cpu.step()
    assert mem32(cpu, DATA) == 7 and cpu.regs["ebx"] == 4


@pytest.mark.parametrize("code,bit,word_off,kind", [
    (b"\x0f\xab\x08", 5, 0, "bts"),            # bts %ecx,(%eax)
    (b"\x0f\xab\x08", 37, 4, "bts"),           # offset past the dword: next dword
    (b"\x0f\xab\x08", -1, -4, "bts"),          # negative: the dword before
    (b"\x0f\xb3\x08", 3, 0, "btr"),
    (b"\x0f\xbb\x08", 64 + 2, 8, "btc"),
])
def test_bit_ops_register_offset(code, bit, word_off, kind):
    cpu = cpu_with(code, eax=DATA, ecx=bit & 0xFFFFFFFF)
    target = DATA + word_off
    set32(cpu, target, 0xF0F0F0F0)
    cpu.step()
    b = bit & 31
    old = 0xF0F0F0F0
    want = {"bts": old | (1 << b), "btr": old & ~(1 << b), "btc": old ^ (1 << b)}[kind]
    assert mem32(cpu, target) == want
    assert bool(cpu.regs["eflags"] & CF) == bool(old >> b & 1)


def test_bit_ops_immediate_and_register_operand():
    cpu = run(b"\x0f\xba\x28\x24", eax=DATA)                  # bts $36 -> bit 4 of (%eax)
    assert mem32(cpu, DATA) == 0x10
    cpu = run(b"\x0f\xab\xc8", eax=0, ecx=33)                  # bts %ecx,%eax: mod 32
    assert cpu.regs["eax"] == 2
    cpu = cpu_with(b"\x0f\xa3\x08", eax=DATA, ecx=1)           # bt: reads only
    set32(cpu, DATA, 2)
    cpu.step()
    assert cpu.regs["eflags"] & CF and not cpu.ops.writes


def flags_of(cpu):
    return cpu.regs["eflags"] & (CF | PF | ZF | SF | OF)


@pytest.mark.parametrize("code,mem,reg,cf_in,result,flags", [
    (b"\x01\x18", 0xFFFFFFFF, 1, 0, 0, CF | PF | ZF),                        # add
    (b"\x01\x18", 0x7FFFFFFF, 1, 0, 0x80000000, PF | SF | OF),
    (b"\x11\x18", 1, 1, CF, 3, PF),                                          # adc
    (b"\x29\x18", 0, 1, 0, 0xFFFFFFFF, CF | PF | SF),                        # sub
    (b"\x29\x18", 0x80000000, 1, 0, 0x7FFFFFFF, PF | OF),
    (b"\x19\x18", 5, 2, CF, 2, 0),                                           # sbb
    (b"\x21\x18", 0xF0, 0x0F, CF, 0, PF | ZF),                               # and clears CF
    (b"\x09\x18", 0x80000000, 1, 0, 0x80000001, SF),                         # or
    (b"\x31\x18", 0xFF, 0xFF, 0, 0, PF | ZF),                                # xor
    (b"\x00\x18", 0x80, 0x80, 0, 0x00, CF | PF | ZF | OF),                   # byte add
])
def test_alu_flags(code, mem, reg, cf_in, result, flags):
    cpu = cpu_with(code, eax=DATA, ebx=reg, eflags=0x202 | cf_in)
    set32(cpu, DATA, mem)
    cpu.step()
    size = 1 if code[0] & 1 == 0 else 4
    assert int.from_bytes(cpu.ops.mem[DATA:DATA + size], "little") == result
    assert flags_of(cpu) == flags


def test_alu_af_and_cmp_does_not_write():
    cpu = cpu_with(b"\x39\x18", eax=DATA, ebx=1)               # cmp %ebx,(%eax)
    set32(cpu, DATA, 0x10)
    cpu.step()
    assert not cpu.ops.writes and cpu.regs["eflags"] & AF and not cpu.regs["eflags"] & CF


def test_group1_sign_extends_imm8():
    cpu = cpu_with(b"\x83\x00\xff", eax=DATA)                  # addl $-1,(%eax)
    set32(cpu, DATA, 5)
    cpu.step()
    assert mem32(cpu, DATA) == 4 and cpu.regs["eflags"] & CF


def test_not_neg_inc_dec():
    cpu = cpu_with(b"\xf7\x10", eax=DATA, eflags=0x202 | CF)   # not: flags untouched
    set32(cpu, DATA, 0x0F0F0F0F)
    cpu.step()
    assert mem32(cpu, DATA) == 0xF0F0F0F0 and cpu.regs["eflags"] & CF
    cpu = cpu_with(b"\xf7\x18", eax=DATA)                      # neg 5
    set32(cpu, DATA, 5)
    cpu.step()
    assert mem32(cpu, DATA) == 0xFFFFFFFB and cpu.regs["eflags"] & CF
    cpu = cpu_with(b"\xf7\x18", eax=DATA)                      # neg 0: CF clear
    cpu.step()
    assert mem32(cpu, DATA) == 0 and not cpu.regs["eflags"] & CF and cpu.regs["eflags"] & ZF
    cpu = cpu_with(b"\xff\x00", eax=DATA, eflags=0x202 | CF)   # inc keeps CF
    set32(cpu, DATA, 0xFFFFFFFF)
    cpu.step()
    assert mem32(cpu, DATA) == 0 and cpu.regs["eflags"] & CF and cpu.regs["eflags"] & ZF
    cpu = cpu_with(b"\xfe\x08", eax=DATA)                      # decb, CF stays clear
    cpu.step()
    assert cpu.ops.mem[DATA] == 0xFF and not cpu.regs["eflags"] & CF and cpu.regs["eflags"] & SF
    with pytest.raises(Unhandled):
        run(b"\xff\x10", eax=DATA)                             # call *(%eax): not a writer


def test_mem_writers_table_covers_the_writers():
    for op in (0x01, 0x09, 0x11, 0x19, 0x21, 0x29, 0x31, 0x88, 0x89, 0xC6, 0xC7, 0x86, 0x87,
               0x80, 0x81, 0x83, 0xF6, 0xF7, 0xFE, 0xFF, 0x0FB0, 0x0FB1, 0x0FC7, 0x0FC0,
               0x0FC1, 0x0FAB, 0x0FB3, 0x0FBB, 0x0FBA):
        assert op in MEM_WRITERS, hex(op)
    for op in (0x3B, 0x8B, 0x0F20, 0xEC):
        assert op not in MEM_WRITERS, hex(op)


def test_step_clears_rf():
    cpu = run(b"\x89\x18", eax=DATA, eflags=0x10202)
    assert not cpu.regs["eflags"] & 0x10000


# ---- privileged instructions -----------------------------------------------------
def test_port_io_needs_iopl():
    for code in (b"\xe4\x80", b"\xec", b"\xe6\x80", b"\xee", b"\x6c", b"\x6e"):
        cpu = cpu_with(code, edx=0x80, edi=DATA, esi=DATA)
        with pytest.raises(Fault) as e:
            cpu.step()
        assert (e.value.vector, e.value.errcode) == (13, 0)
        assert cpu.regs["eip"] == CODE                      # not completed


def test_port_io_allowed():
    cpu = cpu_with(b"\xe4\x80", eax=0x12345600)
    cpu.ops.io_allowed = True
    cpu.step()
    assert cpu.regs["eax"] == 0x123456FF and cpu.ops.ins == [(0x80, 1)]
    cpu = cpu_with(b"\x66\xed", edx=0x1F0)
    cpu.ops.io_allowed = True
    cpu.step()
    assert cpu.regs["eax"] & 0xFFFF == 0xFFFF and cpu.ops.ins == [(0x1F0, 2)]
    cpu = cpu_with(b"\xef", edx=0xCF8, eax=0x80000000)
    cpu.ops.io_allowed = True
    cpu.step()
    assert cpu.ops.outs == [(0xCF8, 4, 0x80000000)]


def test_rep_ins_outs():
    cpu = cpu_with(b"\xf3\x6c", edx=0x80, edi=DATA, ecx=3)
    cpu.ops.io_allowed = True
    cpu.step()
    assert cpu.ops.mem[DATA:DATA + 3] == b"\xff\xff\xff" and cpu.regs["ecx"] == 0
    assert cpu.regs["edi"] == DATA + 3
    cpu = cpu_with(b"\xf3\x6e", edx=0x80, esi=DATA + 2, ecx=2, eflags=0x202 | DF)
    cpu.ops.io_allowed = True
    cpu.ops.mem[DATA + 1:DATA + 3] = b"\x01\x02"
    cpu.step()
    assert cpu.ops.outs == [(0x80, 1, 2), (0x80, 1, 1)] and cpu.regs["esi"] == DATA


def test_cli_sti():
    cpu = cpu_with(b"\xfa")
    with pytest.raises(Fault):
        cpu.step()
    cpu = cpu_with(b"\xfa")
    cpu.ops.io_allowed = True
    cpu.step()
    cpu.regs["eip"] = CODE
    cpu.ops.mem[CODE] = 0xFB
    cpu.step()
    assert cpu.ops.cli == [False, True]


def test_control_and_debug_registers():
    cpu = run(b"\x0f\x20\xd9")                                 # mov %cr3,%ecx
    assert cpu.regs["ecx"] == 0x1000
    cpu = run(b"\x0f\x22\xc0", eax=0x8005003B)                 # mov %eax,%cr0
    assert cpu.ops.crs[0] == 0x8005003B
    cpu = run(b"\x0f\x23\xf8", eax=0x401)                      # mov %eax,%dr7
    assert cpu.ops.drs[7] == 0x401
    cpu = run(b"\x0f\x21\xfa")                                 # mov %dr7,%edx
    assert cpu.regs["edx"] == 0x400


def test_msrs_tsc_clts_wbinvd():
    cpu = cpu_with(b"\x0f\x32", ecx=0x277)
    cpu.ops.msrs[0x277] = 0x0007040600070406
    cpu.step()
    assert (cpu.regs["eax"], cpu.regs["edx"]) == (0x00070406, 0x00070406)
    cpu = cpu_with(b"\x0f\x32", ecx=0x1234)
    with pytest.raises(Fault):
        cpu.step()
    cpu = run(b"\x0f\x30", ecx=0x10, eax=1, edx=2)
    assert cpu.ops.msrs[0x10] == (2 << 32) | 1
    cpu = run(b"\x0f\x31")
    assert (cpu.regs["eax"], cpu.regs["edx"]) == (0x55667788, 0x11223344)
    assert run(b"\x0f\x06").ops.clts_called
    assert run(b"\x0f\x09").ops.wbinvd_called


@pytest.mark.parametrize("code", [b"\xf4", b"\x0f\x01\x10", b"\x0f\x00\xd0", b"\x0f\x33"])
def test_other_privileged_instructions_gp(code):
    cpu = cpu_with(code, eax=DATA)
    with pytest.raises(Fault) as e:
        cpu.step()
    assert (e.value.vector, e.value.errcode) == (13, 0)


# ---- CPL (x86_emulate's mode_ring0) and decoding details ----------------------------
class Ring3Ops(FakeOps):
    def cpl(self):
        return 3


@pytest.mark.parametrize("code", [b"\x0f\x20\xc0", b"\x0f\x22\xc0", b"\x0f\x21\xf8",
                                  b"\x0f\x23\xf8", b"\x0f\x32", b"\x0f\x30", b"\x0f\x06",
                                  b"\x0f\x09"], ids=lambda c: c.hex())
def test_ring0_only_instructions_gp_in_ring3(code):
    cpu = cpu_with(code, ecx=0x277)
    cpu.ops.__class__ = Ring3Ops
    cpu.ops.msrs[0x277] = 1
    with pytest.raises(Fault) as e:
        cpu.step()
    assert (e.value.vector, e.value.errcode) == (13, 0) and cpu.regs["eip"] == CODE
    assert cpu.ops.crs[0] == 0x80050033 and cpu.ops.drs == {7: 0x400}
    assert not cpu.ops.clts_called and not cpu.ops.wbinvd_called


def test_ring3_port_io_and_cli_follow_io_ok():
    cpu = cpu_with(b"\xe4\x80")
    cpu.ops.__class__ = Ring3Ops
    cpu.ops.io_allowed = True
    cpu.step()
    assert cpu.ops.ins == [(0x80, 1)]


def test_invd_is_not_emulated():
    with pytest.raises(Fault) as e:
        run(b"\x0f\x08")
    assert (e.value.vector, e.value.errcode) == (13, 0)


@pytest.mark.parametrize("code,reg", [(b"\x0f\x21\x07", "edi"), (b"\x0f\x21\x44", "esp"),
                                      (b"\x0f\x20\x83", "ebx")], ids=lambda c: str(c))
def test_mov_cr_dr_mod_is_ignored(code, reg):
    """mov CR/DR always names a register: no SIB, no displacement."""
    cpu = cpu_with(code + b"\xcc" * 8)
    cpu.ops.drs[0] = 0x1234
    cpu.ops.crs[0] = 0x80050033
    i = cpu.decode()
    assert i.length == 3
    cpu.step(i)
    assert cpu.regs[reg] in (0x1234, 0x80050033) and cpu.regs["eip"] == CODE + 3
    assert not cpu.ops.reads


def test_short_fetch_asks_for_the_fault():
    """fetch() returned fewer bytes than the instruction needs (the next page
    is unreadable): the decoder asks fetch_failed() for the missing byte."""
    asked = []
    cpu = cpu_with(b"")
    cpu.ops.fetch = lambda addr, n: b"\x0f\x21"

    def failed(addr):
        asked.append(addr)
        raise Fault(14, 0, addr)
    cpu.ops.fetch_failed = failed
    with pytest.raises(Fault) as e:
        cpu.decode()
    assert e.value.vector == 14 and asked == [CODE + 2]
