"""Hypercall dispatch: one table keyed by the ABI number.

Each family lives in its own module and registers its handler (and, where
it has them, its sub-operations) here.  The same table drives
``--trace-hypercalls`` and the documentation's support matrix.  Anything
not registered answers -ENOSYS and is logged once per domain.
"""

from __future__ import annotations

import json
import logging
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

from .. import abi
from ..abi import ENOSYS, EFAULT
from ..shim import REGS as REGS_OFF

log = logging.getLogger("qemu_xenpv.hypercall")


class GuestFault(Exception):
    """A guest address could not be accessed: the hypercall answers -EFAULT."""


class DomainCrash(Exception):
    """The guest did something Xen answers with domain_crash()."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Family:
    nr: int
    name: str
    fn: Callable
    nargs: int
    subops: Dict[int, str] = field(default_factory=dict)
    status: str = "implemented"
    note: str = ""


TABLE: Dict[int, Family] = {}


def hypercall(name: str, nargs: int, subops: Optional[Dict[int, str]] = None,
              status: str = "implemented", note: str = ""):
    """Register a handler ``fn(call, *args) -> int`` for hypercall `name`."""
    nr = abi.HYPERCALL_NR[name]

    def deco(fn):
        TABLE[nr] = Family(nr, name, fn, nargs, dict(subops or {}), status, note)
        return fn
    return deco


_ARGS = struct.Struct("<7I")         # ebx ecx edx esi edi ebp eax: regs offsets 0..24

# A batch hypercall (mmu_update, mmuext_op, multicall, grant_table_op) that
# has run this long stops at an entry boundary and continues later from
# there, as Xen's hypercall_preempt_check() + continuations do: hv.lock is
# let go in between, so one guest's huge batch cannot stall the others.
PREEMPT_NS = 2_000_000
PREEMPT_PAUSE = 0.0001      # ... and the vCPU's thread lets the lock go this long (s)


class Call:
    """One hypercall in flight: the arguments, the guest frame (read from
    the mailbox only if a handler asks for it), the actions the shim must
    apply on the way out."""

    __slots__ = ("vcpu", "dom", "_regs", "args", "action", "nr", "no_retval", "trace_extra",
                 "t0", "again")

    def __init__(self, vcpu, regs: Optional[dict] = None, args: Optional[tuple] = None,
                 t0: Optional[int] = None):
        self.vcpu = vcpu
        self.t0 = time.monotonic_ns() if t0 is None else t0     # a multicall's entries: its own
        self.again: Optional[tuple] = None
        self.dom = vcpu.dom
        self._regs = regs
        if args is None:
            args = (regs["ebx"], regs["ecx"], regs["edx"], regs["esi"], regs["edi"],
                    regs["ebp"], regs["eax"])
        self.args = args[:6]
        self.nr = args[6]
        self.action = 0
        self.no_retval = False
        self.trace_extra = None

    # ---- preemption (hypercall_preempt_check, hypercall_create_continuation) ----
    def preempt_due(self) -> bool:
        """This call has run PREEMPT_NS: a batch should stop at the next
        entry boundary and continue_with() the rest."""
        return time.monotonic_ns() - self.t0 > PREEMPT_NS

    def continue_with(self, *args: int) -> int:
        """Run the same hypercall again later with these arguments (what is
        done so far stays done); the value returned now is not the guest's."""
        self.again = tuple(a & 0xFFFFFFFF for a in args) + self.args[len(args):]
        return 0

    @classmethod
    def from_mailbox(cls, vcpu) -> "Call":
        mb = vcpu.mbox
        return cls(vcpu, None, _ARGS.unpack_from(mb.ram.mm, mb.base + REGS_OFF))

    @property
    def regs(self) -> dict:
        """The full guest frame; a handler that changes it gets it written back."""
        if self._regs is None:
            self._regs = self.vcpu.mbox.read_regs()
        return self._regs

    @property
    def regs_loaded(self) -> bool:
        return self._regs is not None

    # ---- guest memory (copy_from_guest / copy_to_guest) ----
    def read(self, va: int, n: int) -> bytes:
        data = self.dom.copy_from_guest(self.vcpu, va, n)
        if data is None:
            raise GuestFault(va)
        return data

    def write(self, va: int, data: bytes) -> None:
        if not self.dom.copy_to_guest(self.vcpu, va, data):
            raise GuestFault(va)

    def read_struct(self, layout, va: int) -> dict:
        return layout.unpack(self.read(va, layout.size))

    def write_struct(self, layout, va: int, values: dict) -> None:
        self.write(va, layout.pack(values))

    def array_ok(self, va: int, count: int, size: int) -> bool:
        """compat_handle_okay() (x86_64/uaccess.h compat_array_access_ok):
        an array of `count` elements of `size` bytes lies wholly below the
        hypervisor hole (the guest's address-space limit).  Checked up
        front, before any element is read or acted on; False is -EFAULT.

        mmu_update, mmuext_op and multicall use it too (for a non-zero
        count), as 32-bit Xen's access_ok() did.  (64-bit Xen checks their
        handles with the native guest_handle_okay(), whose access_ok()
        passes any 32-bit pointer: there, a huge count runs the entries
        that can be read before the copy faults with -EFAULT.)"""
        if count >= 0xFFFFFFFF // size:
            return False
        return va + (count * size - 1 if count else 0) < self.dom.mode.hole_start

    def read_u32(self, va: int) -> int:
        return int.from_bytes(self.read(va, 4), "little")

    def write_u32(self, va: int, val: int) -> None:
        self.write(va, (val & 0xFFFFFFFF).to_bytes(4, "little"))


def _load_families() -> None:
    # importing a family registers it
    from . import (console, version, sched, traps, desc, mmu, memory, physdev,  # noqa: F401
                   misc, multicall, vcpu, evtchn, grant, debugreg)


def dispatch(call: Call) -> int:
    if not TABLE:
        _load_families()
    fam = TABLE.get(call.nr)
    if fam is None:
        call.dom.log_once(f"nosys:{call.nr}",
                          f"unimplemented hypercall {call.nr} "
                          f"({abi.HYPERCALLS.get(call.nr, 'unknown')}): -ENOSYS")
        ret = -ENOSYS
    else:
        try:
            ret = fam.fn(call, *call.args[:fam.nargs])
        except GuestFault:
            ret = -EFAULT
    tracer = call.dom.tracer
    if tracer is not None:
        tracer.record(call, fam, ret)
    return ret


class Tracer:
    """--trace-hypercalls: one JSON object per line."""

    def __init__(self, path: str):
        self.f = open(path, "a", buffering=1)
        self.t0 = time.monotonic()

    def record(self, call: Call, fam: Optional[Family], ret: int) -> None:
        name = fam.name if fam else abi.HYPERCALLS.get(call.nr, str(call.nr))
        n = fam.nargs if fam else 6
        rec = {"t": round(time.monotonic() - self.t0, 6), "domain": call.dom.domid,
               "name": call.dom.name, "vcpu": call.vcpu.vid, "hypercall": name, "nr": call.nr,
               "args": [f"{a:#x}" for a in call.args[:n]], "result": ret}
        if call.trace_extra:
            rec.update(call.trace_extra)
        self.f.write(json.dumps(rec) + "\n")

    def close(self) -> None:
        self.f.close()
