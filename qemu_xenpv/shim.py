"""The shim as Python sees it: its ELF image, its ABI (constants read from
firmware/shim/shim_abi.h, the single source; structure layouts declared
here and checked against the shim's DWARF by tests/unit/test_shim_abi.py),
and the per-vCPU mailbox accessors."""

from __future__ import annotations

import re
import struct
from functools import lru_cache
from typing import Dict

import construct as c
from elftools.elf.elffile import ELFFile

from . import paths
from .errors import XenPVError
from .layout import Layout

U8, U16, U32, U64 = c.Int8ul, c.Int16ul, c.Int32ul, c.Int64ul


@lru_cache(maxsize=None)
def constants() -> Dict[str, int]:
    """Every ``#define SHIM_X <integer>`` of shim_abi.h."""
    text = paths.shim_abi_header().read_text()
    out: Dict[str, int] = {}
    for name, expr in re.findall(r"^#define[ \t]+(SHIM_\w+)[ \t]+(.+?)[ \t]*(?:/\*.*)?$", text, re.M):
        expr = expr.strip()
        expr = re.sub(r"(0x[0-9a-fA-F]+|\d+)u\b", r"\1", expr)
        expr = re.sub(r"\b(SHIM_\w+)\b", lambda m: str(out[m.group(1)]), expr)
        try:
            out[name] = int(eval(expr, {"__builtins__": {}}))    # arithmetic on literals only
        except Exception:
            continue
    return out


class _K:
    def __getattr__(self, name):
        try:
            return constants()["SHIM_" + name]
        except KeyError:
            raise AttributeError(name) from None


K = _K()        # K.ACT_CR3, K.REQ_HYPERCALL, ...

MAX_VCPUS = 32

shim_trap = Layout("shim_trap", ("cs", U16), ("flags", U8), ("vector", U8), ("eip", U32))

xen_regs_fields = (
    ("ebx", U32), ("ecx", U32), ("edx", U32), ("esi", U32), ("edi", U32),
    ("ebp", U32), ("eax", U32), ("error_code", U16), ("entry_vector", U16),
    ("eip", U32), ("cs", U16), ("saved_upcall_mask", U8), ("_pad0", U8),
    ("eflags", U32), ("esp", U32), ("ss", U32), ("es", U32), ("ds", U32),
    ("fs", U32), ("gs", U32),
)
xen_regs = Layout("xen_regs", *xen_regs_fields)

shim_mbox = Layout(
    "shim_mbox",
    ("req_seq", U32), ("req_kind", U32), ("resp_seq", U32), ("resp_action", U32),
    ("host_polling", U32), ("guest_waiting", U32), ("trap_vector", U32),
    ("trap_errcode", U32), ("trap_cr2", U32), ("fault_eip", U32), ("fault_vector", U32),
    ("req_tsc_lo", U32), ("req_tsc_hi", U32), ("stat_gv_fast", U32),
    ("last_trap_vector", U32), ("last_trap_errcode", U32), ("last_trap_eip", U32),
    ("last_trap_cs", U32), ("last_trap_cr2", U32),
)

shim_vcpu = Layout(
    "shim_vcpu",
    ("vcpu_id", U32), ("mbox", U32),
    ("guest_cr3", U32), ("gdt_limit", U32), ("ldt_sel", U32), ("kernel_ss", U32),
    ("kernel_sp", U32), ("event_cs", U32), ("event_eip", U32), ("failsafe_cs", U32),
    ("failsafe_eip", U32), ("vcpu_info_pa", U32), ("evtchn_pending_pa", U32),
    ("virq_timer_port", U32), ("bounce_vector", U32), ("bounce_errcode", U32),
    ("bounce_flags", U32), ("fpu_ts", U32), ("dr", c.Array(8, U32)), ("start_ap", U32), ("park", U32),
    ("hole_start", U32),
    ("timer_deadline", U64), ("wake_deadline", U64), ("periodic_ns", U64),
    ("periodic_next", U64),
    ("stat_entries", U32), ("stat_doorbells", U32), ("stat_upcalls", U32),
    ("stat_timer_irqs", U32), ("stat_kicks", U32), ("stat_blocks", U32),
    ("in_request", U32), ("deferred_timer", U32), ("kicks_at_post", U32),
    ("stat_fast", U32), ("fast_flags", U32), ("gv_vinfo", U32), ("nr_fast_msrs", U32),
    ("fast_msrs", c.Array(12 * 4, U32)),         # {idx, lo, hi}[SHIM_MAX_FAST_MSRS]
    ("traps", c.Bytes(256 * shim_trap.size)),
)

shim_boot = Layout(
    "shim_boot",
    ("magic", U32), ("abi_version", U32), ("flags", U32), ("cr3", U32), ("nr_vcpus", U32),
    ("doorbell", U32), ("doorbell_port", U32), ("ivshmem_bar0", U32), ("ivshmem_bar1", U32),
    ("ivshmem_bar2", U32), ("ivshmem_peer", U32), ("spin_loops", U32), ("mem_top", U32),
    ("vcpu", c.Array(MAX_VCPUS, U32)), ("pstack", c.Array(MAX_VCPUS, U32)),
    ("status", U32), ("tsc_khz", U32), ("lapic_khz", U32), ("tsc_mul", U32),
    ("tsc_shift", c.Int32sl), ("ivshmem_bdf", U32), ("boot_tsc", U64), ("boot_ns", U64),
    ("nr_cpuid", U32), ("cpuid", c.Bytes(24 * 48)),
    ("time_version", U32), ("_pad", U32), ("anchor_tsc", U64), ("anchor_ns", U64),
    ("panic", c.Bytes(160)),
)

_U32x4 = struct.Struct("<IIII")

V = shim_vcpu.offsets           # private per-vCPU state
M = shim_mbox.offsets           # the mailbox at the bottom of the entry-stack page
REGS = 4096 - 68                # the frame at the top of the entry-stack page
R = {name: REGS + off for name, off in xen_regs.offsets.items()}   # in the entry-stack page


class ShimImage:
    """shim.elf: loadable segments and the symbols Python needs."""

    def __init__(self, path=None):
        self.path = path or paths.shim_elf()
        if not self.path.exists():
            raise XenPVError(f"shim firmware {self.path} is not built: run 'make' in the source tree")
        with open(self.path, "rb") as f:
            elf = ELFFile(f)
            self.segments = []          # (vaddr, paddr, data, memsz, flags)
            for seg in elf.iter_segments():
                if seg["p_type"] != "PT_LOAD":
                    continue
                self.segments.append((seg["p_vaddr"], seg["p_paddr"], seg.data(),
                                      seg["p_memsz"], seg["p_flags"]))
            self.symbols: Dict[str, int] = {}
            symtab = elf.get_section_by_name(".symtab")
            for sym in symtab.iter_symbols():
                if sym.name:
                    self.symbols[sym.name] = sym["st_value"]
            self.entry = elf.header["e_entry"]
        self.paddr_end = max(p + m for _, p, _, m, _ in self.segments)

    def phys(self, symbol: str) -> int:
        """Physical (load) address of a symbol."""
        va = self.symbols[symbol]
        for vaddr, paddr, _, memsz, _ in self.segments:
            if vaddr <= va < vaddr + memsz:
                return va - vaddr + paddr
        raise KeyError(symbol)

    def load(self, ram) -> None:
        for vaddr, paddr, data, memsz, _ in self.segments:
            ram.write(paddr, data)
            if memsz > len(data):
                ram.zero(paddr + len(data), memsz - len(data))

    def pub_segments(self):
        """(vaddr, paddr, memsz, writable) of segments in the hypervisor hole."""
        for vaddr, paddr, _, memsz, flags in self.segments:
            if vaddr >= K.PUB_BASE:
                yield vaddr, paddr, memsz, bool(flags & 2)


class Mailbox:
    """One vCPU's shim interface: the mailbox and frame in its entry-stack
    page (guest-writable, read only while the vCPU is inside the shim) and
    its private struct shim_vcpu."""

    __slots__ = ("ram", "base", "priv", "addr_native")

    def __init__(self, ram, estack: int, priv: int):
        self.ram = ram
        self.base = estack
        self.priv = priv
        self.addr_native = ram.base + estack

    def _addr(self, field: str) -> int:
        off = M.get(field)
        return self.base + off if off is not None else self.priv + V[field]

    def get(self, field: str) -> int:
        return self.ram.r32(self._addr(field))

    def set(self, field: str, val: int) -> None:
        self.ram.w32(self._addr(field), val)

    def get64(self, field: str) -> int:
        return self.ram.r64(self._addr(field))

    def set64(self, field: str, val: int) -> None:
        self.ram.w64(self._addr(field), val)

    def set_eax(self, val: int) -> None:
        self.ram.w32(self.base + R["eax"], val)

    def read_regs(self) -> dict:
        return xen_regs.unpack(self.ram.mm, self.base + REGS)

    def write_regs(self, regs: dict) -> None:
        self.ram.write(self.base + REGS, xen_regs.pack(regs))

    def req_tsc(self) -> int:
        return self.ram.r64(self.base + M["req_tsc_lo"])

    def set_fast_msrs(self, table) -> None:
        """[(index, value)]: the readable MSRs; the shim answers a rdmsr of
        these (value None: left to Python) and reflects #GP for the rest."""
        if len(table) > K.MAX_FAST_MSRS:
            raise ValueError("too many fast MSRs")
        data = b"".join(_U32x4.pack(i, (v or 0) & 0xFFFFFFFF, (v or 0) >> 32, v is None)
                        for i, v in table)
        self.ram.write(self.priv + V["fast_msrs"], data)
        self.ram.w32(self.priv + V["nr_fast_msrs"], len(table))

    def set_trap(self, vector: int, cs: int, flags: int, eip: int) -> None:
        self.ram.write(self.priv + V["traps"] + vector * shim_trap.size,
                       shim_trap.pack({"cs": cs, "flags": flags, "vector": vector, "eip": eip}))
