"""A small x86 (32-bit protected mode) instruction decoder and emulator:
the subset Xen's x86_emulate is asked to handle for PV guests.

* memory writes that fault on a read-only page-table page (writable page
  tables): mov, xchg, cmpxchg, cmpxchg8b, ALU read-modify-write, bit ops,
  inc/dec/not/neg — the write goes through a hook that validates it;
* privileged instructions that #GP in ring 1/3: port I/O, cli/sti, clts,
  mov to/from control and debug registers, rdmsr/wrmsr, rdtsc, wbinvd ...

Guest memory and side effects are reached through an `Ops` object, so this
module is pure and unit-tested without a guest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

REG32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
SEGS = ("es", "cs", "ss", "ds", "fs", "gs")
SEG_PREFIX = {0x26: "es", 0x2E: "cs", 0x36: "ss", 0x3E: "ds", 0x64: "fs", 0x65: "gs"}

CF, PF, AF, ZF, SF, TF, IF, DF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800
ARITH_FLAGS = CF | PF | AF | ZF | SF | OF


class Unhandled(Exception):
    """An instruction we do not emulate (the caller reflects the fault)."""


class Fault(Exception):
    """An exception to deliver to the guest instead of completing the
    instruction: vector, error code, and CR2 for #PF."""

    def __init__(self, vector: int, errcode: Optional[int] = None, cr2: Optional[int] = None):
        super().__init__(vector)
        self.vector, self.errcode, self.cr2 = vector, errcode, cr2


class Ops:
    """What the emulator needs from the world (overridden by the caller)."""

    def fetch(self, addr: int, n: int) -> bytes:                   # instruction bytes
        """Up to n bytes at CS:addr; fewer if the rest cannot be read."""
        raise Unhandled("fetch")

    def fetch_failed(self, addr: int) -> None:
        """The decoder needs the byte at CS:addr, which fetch() did not
        return: raise the fault that reading it takes (#PF)."""
        raise Unhandled("instruction bytes unavailable")

    def read(self, seg: str, addr: int, n: int) -> int:            # data read
        raise Unhandled("read")

    def write(self, seg: str, addr: int, n: int, val: int) -> None:
        raise Unhandled("write")

    def cmpxchg(self, seg: str, addr: int, n: int, old: int, new: int) -> int:
        """Atomically: if mem == old, mem = new. Returns what was in memory."""
        raise Unhandled("cmpxchg")

    def seg_base(self, seg: str) -> int:
        return 0

    def cpl(self) -> int:
        """The privilege level x86_emulate's mode_ring0() sees (0 or 3)."""
        return 0

    def io_in(self, port: int, n: int) -> int:
        raise Unhandled("in")

    def io_out(self, port: int, n: int, val: int) -> None:
        raise Unhandled("out")

    def io_ok(self, port: int = None, n: int = 1) -> bool:
        return False

    def cli_sti(self, enable: bool) -> None:
        raise Unhandled("cli/sti")

    def read_cr(self, n: int) -> int:
        raise Unhandled("mov from cr")

    def write_cr(self, n: int, val: int) -> None:
        raise Unhandled("mov to cr")

    def read_dr(self, n: int) -> int:
        raise Unhandled("mov from dr")

    def write_dr(self, n: int, val: int) -> None:
        raise Unhandled("mov to dr")

    def rdmsr(self, idx: int) -> int:
        raise Unhandled("rdmsr")

    def wrmsr(self, idx: int, val: int) -> None:
        raise Unhandled("wrmsr")

    def rdtsc(self) -> int:
        raise Unhandled("rdtsc")

    def clts(self) -> None:
        raise Unhandled("clts")

    def wbinvd(self) -> None:
        pass


@dataclass
class Insn:
    length: int = 0
    opsize: int = 4
    lock: bool = False
    rep: Optional[int] = None
    seg: Optional[str] = None
    opcode: int = 0                 # 0x0fXX for two-byte opcodes
    modrm: Optional[int] = None
    mod: int = 0
    reg: int = 0
    rm: int = 0
    ea: Optional[int] = None        # effective address (offset within seg)
    ea_seg: str = "ds"
    imm: int = 0
    text: str = ""


@dataclass
class Cpu:
    regs: dict
    ops: Ops
    decoded: Insn = field(default_factory=Insn)

    # ---- registers ----
    def get(self, idx: int, size: int) -> int:
        if size == 1:
            r = self.regs[REG32[idx & 3]]
            return (r >> 8) & 0xFF if idx >= 4 else r & 0xFF
        v = self.regs[REG32[idx]]
        return v & (0xFFFF if size == 2 else 0xFFFFFFFF)

    def set(self, idx: int, size: int, val: int) -> None:
        if size == 1:
            name = REG32[idx & 3]
            r = self.regs[name]
            if idx >= 4:
                self.regs[name] = (r & ~0xFF00) | ((val & 0xFF) << 8)
            else:
                self.regs[name] = (r & ~0xFF) | (val & 0xFF)
        elif size == 2:
            name = REG32[idx]
            self.regs[name] = (self.regs[name] & ~0xFFFF) | (val & 0xFFFF)
        else:
            self.regs[REG32[idx]] = val & 0xFFFFFFFF

    # ---- decoding ----
    def decode(self) -> Insn:
        eip = self.regs["eip"]
        code = self.ops.fetch(eip, 15)
        i = Insn()
        p = 0

        def byte() -> int:
            nonlocal p, code
            if p >= len(code):
                if len(code) >= 15:
                    raise Unhandled("instruction too long")
                # fetch() stopped short (an unreadable page): the byte the
                # decoder needs is the fault
                self.ops.fetch_failed((eip + len(code)) & 0xFFFFFFFF)
                raise Unhandled("instruction bytes unavailable")
            b = code[p]
            p += 1
            return b

        def take(n: int) -> int:
            v = 0
            for k in range(n):
                v |= byte() << (8 * k)
            return v

        while True:
            b = byte()
            if b == 0x66:
                i.opsize = 2
            elif b == 0x67:
                raise Unhandled("16-bit addressing")
            elif b == 0xF0:
                i.lock = True
            elif b in (0xF2, 0xF3):
                i.rep = b
            elif b in SEG_PREFIX:
                i.seg = SEG_PREFIX[b]
            else:
                break
        op = b
        if op == 0x0F:
            op = 0x0F00 | byte()
        i.opcode = op

        def modrm() -> None:
            m = byte()
            i.modrm, i.mod, i.reg, i.rm = m, m >> 6, (m >> 3) & 7, m & 7
            if op in (0x0F20, 0x0F21, 0x0F22, 0x0F23):
                i.mod = 3                   # mov CR/DR: mod is ignored, always a register
            if i.mod == 3:
                return
            seg = "ds"
            if i.rm == 4:
                sib = byte()
                scale, index, base = sib >> 6, (sib >> 3) & 7, sib & 7
                ea = 0
                if base == 5 and i.mod == 0:
                    ea = take(4)
                else:
                    ea = self.regs[REG32[base]]
                    if base in (4, 5):
                        seg = "ss"
                if index != 4:
                    ea += self.regs[REG32[index]] << scale
            elif i.rm == 5 and i.mod == 0:
                ea = take(4)
            else:
                ea = self.regs[REG32[i.rm]]
                if i.rm == 5:
                    seg = "ss"
            if i.mod == 1:
                d = byte()
                ea += d - 256 if d & 0x80 else d
            elif i.mod == 2:
                ea += take(4)
            i.ea = ea & 0xFFFFFFFF
            i.ea_seg = i.seg or seg

        imm_size = {1: 1, 2: 2, 4: 4}
        if op in MODRM_OPS:
            modrm()
            kind = MODRM_OPS[op]
            if kind == "ib":
                i.imm = take(1)
            elif kind == "iz":
                i.imm = take(imm_size[i.opsize])
        elif op in (0xE4, 0xE5, 0xE6, 0xE7):
            i.imm = take(1)
        elif op in NO_OPERAND_OPS:
            pass
        else:
            raise Unhandled(f"opcode {op:#x}")
        i.length = p
        self.decoded = i
        return i

    # ---- memory operand helpers ----
    def _size(self, op: int) -> int:
        return 1 if op & 1 == 0 and op < 0x100 and op not in (0x0FB1,) else self.decoded.opsize

    def mem_read(self, size: int) -> int:
        i = self.decoded
        return self.ops.read(i.ea_seg, i.ea, size)

    def mem_write(self, size: int, val: int) -> None:
        i = self.decoded
        self.ops.write(i.ea_seg, i.ea, size, val & ((1 << (8 * size)) - 1))

    def rm_get(self, size: int) -> int:
        i = self.decoded
        return self.get(i.rm, size) if i.mod == 3 else self.mem_read(size)

    def rm_set(self, size: int, val: int) -> None:
        i = self.decoded
        if i.mod == 3:
            self.set(i.rm, size, val)
        else:
            self.mem_write(size, val)

    # ---- flags ----
    def set_flags(self, mask: int, values: int) -> None:
        self.regs["eflags"] = (self.regs["eflags"] & ~mask) | (values & mask)

    def alu_flags(self, kind: str, a: int, b: int, r: int, size: int) -> None:
        bits = 8 * size
        m = (1 << bits) - 1
        res = r & m
        f = 0
        if res == 0:
            f |= ZF
        if res >> (bits - 1) & 1:
            f |= SF
        if bin(res & 0xFF).count("1") % 2 == 0:
            f |= PF
        if kind in ("add", "adc"):
            if r > m:
                f |= CF
            if (~(a ^ b) & (a ^ res)) >> (bits - 1) & 1:
                f |= OF
            if (a ^ b ^ res) & 0x10:
                f |= AF
        elif kind in ("sub", "sbb", "cmp"):
            if r < 0:
                f |= CF
            if ((a ^ b) & (a ^ res)) >> (bits - 1) & 1:
                f |= OF
            if (a ^ b ^ res) & 0x10:
                f |= AF
        self.set_flags(ARITH_FLAGS, f)

    # ---- execution ----
    def step(self, decoded: Optional[Insn] = None) -> None:
        """Execute the instruction at EIP (decoded already, or now),
        advancing EIP, or raise."""
        i = decoded or self.decode()
        op = i.opcode
        handler = EXEC.get(op)
        if handler is None:
            raise Unhandled(f"opcode {op:#x}")
        handler(self, i)
        self.regs["eip"] = (self.regs["eip"] + i.length) & 0xFFFFFFFF
        self.regs["eflags"] &= ~0x10000                      # RF


# opcodes that take a ModRM byte, and their immediate
MODRM_OPS = {}
for _b in range(0x00, 0x40):
    if _b & 7 < 4 and _b not in (0x0F,):
        MODRM_OPS[_b] = None                                 # ALU r/m forms
for _op, _imm in {0x80: "ib", 0x81: "iz", 0x83: "ib", 0x86: None, 0x87: None, 0x88: None,
                  0x89: None, 0x8A: None, 0x8B: None, 0xC6: "ib", 0xC7: "iz", 0xF6: None,
                  0xF7: None, 0xFE: None, 0xFF: None,
                  0x0F20: None, 0x0F21: None, 0x0F22: None, 0x0F23: None,
                  0x0FAB: None, 0x0FB3: None, 0x0FBB: None, 0x0FA3: None, 0x0FBA: "ib",
                  0x0FB0: None, 0x0FB1: None, 0x0FC7: None, 0x0FC0: None, 0x0FC1: None,
                  0x0F00: None, 0x0F01: None}.items():
    MODRM_OPS[_op] = _imm
NO_OPERAND_OPS = {0xEC, 0xED, 0xEE, 0xEF, 0x6C, 0x6D, 0x6E, 0x6F, 0xFA, 0xFB, 0xF4,
                  0x0F06, 0x0F08, 0x0F09, 0x0F30, 0x0F31, 0x0F32, 0x0F33}

ALU = ("add", "or", "adc", "sbb", "and", "sub", "xor", "cmp")


def _alu(cpu: Cpu, kind: str, a: int, b: int, size: int) -> Optional[int]:
    m = (1 << (8 * size)) - 1
    cf = cpu.regs["eflags"] & CF
    if kind == "add":
        r = a + b
    elif kind == "adc":
        r = a + b + cf
    elif kind == "sub" or kind == "cmp":
        r = a - b
    elif kind == "sbb":
        r = a - b - cf
    elif kind == "and":
        r = a & b
    elif kind == "or":
        r = a | b
    else:
        r = a ^ b
    cpu.alu_flags(kind, a, b, r, size)
    return None if kind == "cmp" else r & m


def _exec_alu_rm(cpu: Cpu, i: Insn) -> None:
    op = i.opcode
    kind = ALU[op >> 3]
    size = 1 if op & 1 == 0 else i.opsize
    if op & 2:                                              # reg <- reg op r/m
        r = _alu(cpu, kind, cpu.get(i.reg, size), cpu.rm_get(size), size)
        if r is not None:
            cpu.set(i.reg, size, r)
    else:                                                   # r/m <- r/m op reg
        _rmw(cpu, size, lambda old: _alu(cpu, kind, old, cpu.get(i.reg, size), size))


def _rmw(cpu: Cpu, size: int, fn) -> None:
    """Read-modify-write of the r/m operand; locked forms use cmpxchg."""
    i = cpu.decoded
    if i.mod == 3:
        r = fn(cpu.get(i.rm, size))
        if r is not None:
            cpu.set(i.rm, size, r)
        return
    for _ in range(16):
        old = cpu.mem_read(size)
        saved = cpu.regs["eflags"]
        new = fn(old)
        if new is None:
            return
        if not i.lock:
            cpu.mem_write(size, new)
            return
        got = cpu.ops.cmpxchg(i.ea_seg, i.ea, size, old, new)
        if got == old:
            return
        cpu.regs["eflags"] = saved
    raise Unhandled("locked update kept racing")


def _exec_grp1(cpu: Cpu, i: Insn) -> None:
    op = i.opcode
    size = 1 if op == 0x80 else i.opsize
    imm = i.imm
    if op == 0x83 and imm & 0x80:
        imm = (imm - 0x100) & ((1 << (8 * size)) - 1)
    kind = ALU[i.reg]
    _rmw(cpu, size, lambda old: _alu(cpu, kind, old, imm, size))


def _exec_mov_store(cpu: Cpu, i: Insn) -> None:
    size = 1 if i.opcode == 0x88 else i.opsize
    cpu.rm_set(size, cpu.get(i.reg, size))


def _exec_mov_load(cpu: Cpu, i: Insn) -> None:
    size = 1 if i.opcode == 0x8A else i.opsize
    cpu.set(i.reg, size, cpu.rm_get(size))


def _exec_mov_imm(cpu: Cpu, i: Insn) -> None:
    if i.reg != 0:
        raise Unhandled("c6/c7 with reg != 0")
    size = 1 if i.opcode == 0xC6 else i.opsize
    cpu.rm_set(size, i.imm)


def _exec_xchg(cpu: Cpu, i: Insn) -> None:
    size = 1 if i.opcode == 0x86 else i.opsize
    reg = cpu.get(i.reg, size)
    if i.mod == 3:
        cpu.set(i.reg, size, cpu.get(i.rm, size))
        cpu.set(i.rm, size, reg)
        return
    i.lock = True                                           # xchg with memory is locked
    old = [0]

    def fn(o):
        old[0] = o
        return reg
    _rmw(cpu, size, fn)
    cpu.set(i.reg, size, old[0])


def _exec_cmpxchg(cpu: Cpu, i: Insn) -> None:
    size = 1 if i.opcode == 0x0FB0 else i.opsize
    acc = cpu.get(0, size)
    new = cpu.get(i.reg, size)
    if i.mod == 3:
        cur = cpu.get(i.rm, size)
        _alu(cpu, "cmp", acc, cur, size)
        if cur == acc:
            cpu.set(i.rm, size, new)
        else:
            cpu.set(0, size, cur)
        return
    got = cpu.ops.cmpxchg(i.ea_seg, i.ea, size, acc, new)
    _alu(cpu, "cmp", acc, got, size)
    if got != acc:
        cpu.set(0, size, got)


def _exec_grp9(cpu: Cpu, i: Insn) -> None:
    if i.reg != 1 or i.mod == 3:
        raise Unhandled("0f c7 other than cmpxchg8b")
    old = (cpu.regs["edx"] << 32) | cpu.regs["eax"]
    new = (cpu.regs["ecx"] << 32) | cpu.regs["ebx"]
    got = cpu.ops.cmpxchg(i.ea_seg, i.ea, 8, old, new)
    if got == old:
        cpu.set_flags(ZF, ZF)
    else:
        cpu.set_flags(ZF, 0)
        cpu.regs["eax"], cpu.regs["edx"] = got & 0xFFFFFFFF, got >> 32


def _exec_xadd(cpu: Cpu, i: Insn) -> None:
    size = 1 if i.opcode == 0x0FC0 else i.opsize
    src = cpu.get(i.reg, size)
    old = [0]

    def fn(o):
        old[0] = o
        return _alu(cpu, "add", o, src, size)
    _rmw(cpu, size, fn)
    cpu.set(i.reg, size, old[0])


def _exec_bt(cpu: Cpu, i: Insn) -> None:
    size = i.opsize
    bits = 8 * size
    if i.opcode == 0x0FBA:
        kind = {4: "bt", 5: "bts", 6: "btr", 7: "btc"}.get(i.reg)
        if kind is None:
            raise Unhandled("0f ba /0-3")
        bit = i.imm % bits
    else:
        kind = {0x0FA3: "bt", 0x0FAB: "bts", 0x0FB3: "btr", 0x0FBB: "btc"}[i.opcode]
        bit = cpu.get(i.reg, size)
        if i.mod != 3:
            # a register bit offset addresses memory beyond the operand
            off = bit if bit < 0x80000000 else bit - 0x100000000
            i.ea = (i.ea + (off >> 5) * 4) & 0xFFFFFFFF if size == 4 else \
                (i.ea + (off >> 4) * 2) & 0xFFFFFFFF
            bit &= bits - 1
        else:
            bit %= bits

    def fn(o):
        cpu.set_flags(CF, CF if (o >> bit) & 1 else 0)
        if kind == "bt":
            return None
        if kind == "bts":
            return o | (1 << bit)
        if kind == "btr":
            return o & ~(1 << bit)
        return o ^ (1 << bit)
    _rmw(cpu, size, fn)


def _exec_grp3(cpu: Cpu, i: Insn) -> None:
    size = 1 if i.opcode == 0xF6 else i.opsize
    m = (1 << (8 * size)) - 1
    if i.reg == 2:                                          # not
        _rmw(cpu, size, lambda o: ~o & m)
    elif i.reg == 3:                                        # neg
        def fn(o):
            r = _alu(cpu, "sub", 0, o, size)
            cpu.set_flags(CF, CF if o else 0)
            return r
        _rmw(cpu, size, fn)
    else:
        raise Unhandled("f6/f7 other than not/neg")


def _exec_grp45(cpu: Cpu, i: Insn) -> None:
    size = 1 if i.opcode == 0xFE else i.opsize
    if i.reg not in (0, 1):
        raise Unhandled("fe/ff other than inc/dec")
    kind = "add" if i.reg == 0 else "sub"

    def fn(o):
        cf = cpu.regs["eflags"] & CF
        r = _alu(cpu, kind, o, 1, size)
        cpu.set_flags(CF, cf)                               # inc/dec keep CF
        return r
    _rmw(cpu, size, fn)


# ---- privileged instructions ----
def _io_size(op: int, opsize: int) -> int:
    return 1 if op in (0xE4, 0xE6, 0xEC, 0xEE, 0x6C, 0x6E) else opsize


def _exec_in(cpu: Cpu, i: Insn) -> None:
    size = _io_size(i.opcode, i.opsize)
    port = i.imm if i.opcode in (0xE4, 0xE5) else cpu.regs["edx"] & 0xFFFF
    if not cpu.ops.io_ok(port, size):
        raise Fault(13, 0)
    cpu.set(0, size, cpu.ops.io_in(port, size))


def _exec_out(cpu: Cpu, i: Insn) -> None:
    size = _io_size(i.opcode, i.opsize)
    port = i.imm if i.opcode in (0xE6, 0xE7) else cpu.regs["edx"] & 0xFFFF
    if not cpu.ops.io_ok(port, size):
        raise Fault(13, 0)
    cpu.ops.io_out(port, size, cpu.get(0, size))


def _exec_ins_outs(cpu: Cpu, i: Insn) -> None:
    size = _io_size(i.opcode, i.opsize)
    port = cpu.regs["edx"] & 0xFFFF
    if not cpu.ops.io_ok(port, size):
        raise Fault(13, 0)
    step = -size if cpu.regs["eflags"] & DF else size
    count = cpu.regs["ecx"] if i.rep else 1
    for _ in range(min(count, 0x10000)):
        if i.opcode in (0x6C, 0x6D):                        # ins: es:edi
            cpu.ops.write("es", cpu.regs["edi"], size, cpu.ops.io_in(port, size))
            cpu.regs["edi"] = (cpu.regs["edi"] + step) & 0xFFFFFFFF
        else:                                               # outs: ds:esi
            cpu.ops.io_out(port, size, cpu.ops.read(i.seg or "ds", cpu.regs["esi"], size))
            cpu.regs["esi"] = (cpu.regs["esi"] + step) & 0xFFFFFFFF
        if i.rep:
            cpu.regs["ecx"] = (cpu.regs["ecx"] - 1) & 0xFFFFFFFF
            if cpu.regs["ecx"] == 0:
                break


def _exec_cli(cpu: Cpu, i: Insn) -> None:
    if not cpu.ops.io_ok():
        raise Fault(13, 0)
    cpu.ops.cli_sti(i.opcode == 0xFB)


def _ring0(cpu: Cpu) -> None:
    """generate_exception_if(!mode_ring0(), EXC_GP, 0)"""
    if cpu.ops.cpl() != 0:
        raise Fault(13, 0)


def _exec_mov_cr(cpu: Cpu, i: Insn) -> None:
    _ring0(cpu)
    if i.opcode == 0x0F20:
        cpu.set(i.rm, 4, cpu.ops.read_cr(i.reg))
    else:
        cpu.ops.write_cr(i.reg, cpu.get(i.rm, 4))


def _exec_mov_dr(cpu: Cpu, i: Insn) -> None:
    _ring0(cpu)
    if i.opcode == 0x0F21:
        cpu.set(i.rm, 4, cpu.ops.read_dr(i.reg))
    else:
        cpu.ops.write_dr(i.reg, cpu.get(i.rm, 4))


def _exec_rdmsr(cpu: Cpu, i: Insn) -> None:
    _ring0(cpu)
    v = cpu.ops.rdmsr(cpu.regs["ecx"])
    cpu.regs["eax"], cpu.regs["edx"] = v & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF


def _exec_wrmsr(cpu: Cpu, i: Insn) -> None:
    _ring0(cpu)
    cpu.ops.wrmsr(cpu.regs["ecx"], (cpu.regs["edx"] << 32) | cpu.regs["eax"])


def _exec_rdtsc(cpu: Cpu, i: Insn) -> None:
    v = cpu.ops.rdtsc()
    cpu.regs["eax"], cpu.regs["edx"] = v & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF


def _exec_clts(cpu: Cpu, i: Insn) -> None:
    _ring0(cpu)
    cpu.ops.clts()


def _exec_wbinvd(cpu: Cpu, i: Insn) -> None:
    _ring0(cpu)
    cpu.ops.wbinvd()


def _exec_privileged_only(cpu: Cpu, i: Insn) -> None:
    raise Fault(13, 0)


EXEC = {}
for _b in MODRM_OPS:
    if _b < 0x40:
        EXEC[_b] = _exec_alu_rm
EXEC.update({
    0x80: _exec_grp1, 0x81: _exec_grp1, 0x83: _exec_grp1,
    0x88: _exec_mov_store, 0x89: _exec_mov_store, 0x8A: _exec_mov_load, 0x8B: _exec_mov_load,
    0xC6: _exec_mov_imm, 0xC7: _exec_mov_imm, 0x86: _exec_xchg, 0x87: _exec_xchg,
    0x0FB0: _exec_cmpxchg, 0x0FB1: _exec_cmpxchg, 0x0FC7: _exec_grp9,
    0x0FC0: _exec_xadd, 0x0FC1: _exec_xadd,
    0x0FA3: _exec_bt, 0x0FAB: _exec_bt, 0x0FB3: _exec_bt, 0x0FBB: _exec_bt, 0x0FBA: _exec_bt,
    0xF6: _exec_grp3, 0xF7: _exec_grp3, 0xFE: _exec_grp45, 0xFF: _exec_grp45,
    0xE4: _exec_in, 0xE5: _exec_in, 0xEC: _exec_in, 0xED: _exec_in,
    0xE6: _exec_out, 0xE7: _exec_out, 0xEE: _exec_out, 0xEF: _exec_out,
    0x6C: _exec_ins_outs, 0x6D: _exec_ins_outs, 0x6E: _exec_ins_outs, 0x6F: _exec_ins_outs,
    0xFA: _exec_cli, 0xFB: _exec_cli,
    0x0F20: _exec_mov_cr, 0x0F22: _exec_mov_cr, 0x0F21: _exec_mov_dr, 0x0F23: _exec_mov_dr,
    0x0F32: _exec_rdmsr, 0x0F30: _exec_wrmsr, 0x0F31: _exec_rdtsc, 0x0F06: _exec_clts,
    0x0F09: _exec_wbinvd, 0x0F08: _exec_privileged_only,               # invd: never emulated
    0xF4: _exec_privileged_only, 0x0F00: _exec_privileged_only, 0x0F01: _exec_privileged_only,
    0x0F33: _exec_privileged_only,
})

# instructions the page-table write path may complete (they write memory)
MEM_WRITERS = {op for op in EXEC if op < 0x40 and not op & 2} | {
    0x80, 0x81, 0x83, 0x88, 0x89, 0xC6, 0xC7, 0x86, 0x87, 0x0FB0, 0x0FB1, 0x0FC7, 0x0FC0,
    0x0FC1, 0x0FAB, 0x0FB3, 0x0FBB, 0x0FBA, 0xF6, 0xF7, 0xFE, 0xFF}
