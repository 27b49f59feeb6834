"""The supported-ABI matrix (docs/abi-matrix.md), generated from the code:

* every hypercall number of the ABI (``abi.HYPERCALLS``) against the PV
  dispatch table (``qemu_xenpv.hypercall.TABLE``: registered families, their
  declared status and note; unregistered numbers answer -ENOSYS);
* every sub-operation a family declares, with its status found by **asking
  the handler**: it is called with that sub-op on a stub vCPU whose guest
  memory is unreadable.  A handler that answers -ENOSYS does not implement
  it; -EOPNOTSUPP / -EPERM are Xen-compatible refusals; anything else (it
  read its argument, validated it, acted) means the sub-op is handled;
* the HVM domain's hypercall table (``qemu_xenpv.hvm.pv``).

    python -m qemu_xenpv.abimatrix            # print the page
    python -m qemu_xenpv.abimatrix --write    # rewrite docs/abi-matrix.md
    python -m qemu_xenpv.abimatrix --check    # exit 1 if the page is stale

tests/unit/test_abimatrix.py fails when docs/abi-matrix.md differs from
what this module generates: regenerate it with ``--write``.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple
from unittest import mock

from . import abi

DOC = Path(__file__).resolve().parent.parent / "docs" / "abi-matrix.md"
PTR = 0xF5400000                    # a guest pointer nothing maps (stub memory faults)

# Families whose sub-op is their first argument, and the other arguments
# to probe with (PTR: a pointer; small numbers: counts and ids that pass
# the range checks made before the sub-op is looked at).
PROBE_ARGS: Dict[str, Callable[[int], tuple]] = {
    "console_io": lambda op: (op, 1, PTR),
    "sched_op_compat": lambda op: (op, 0),
    "sched_op": lambda op: (op, PTR),
    "memory_op": lambda op: (op, PTR),
    "xen_version": lambda op: (op, PTR),
    "grant_table_op": lambda op: (op, PTR, 1),
    "vm_assist": lambda op: (op, 2),
    "vcpu_op": lambda op: (op, 0, PTR),
    "callback_op": lambda op: (op, PTR),
    "event_channel_op": lambda op: (op, PTR),
    "physdev_op": lambda op: (op, PTR),
}
# Families whose sub-op is read from guest memory: the sub-op status is the
# one of the family they share their handler with, or is not probed.
SAME_AS = {"event_channel_op_compat": "event_channel_op"}
PER_REQUEST = {"mmu_update": "the sub-op is each request's low bits",
               "mmuext_op": "the sub-op is each op's cmd field"}

IMPLEMENTED, REFUSED, MISSING = "implemented", "refused", "not implemented"


class _StubCall:
    """What a handler sees of a hypercall, with guest memory unreadable."""

    def __init__(self):
        self.vcpu = mock.MagicMock(name="vcpu")
        self.dom = self.vcpu.dom
        self.action = 0
        self.no_retval = False
        self.trace_extra = None
        self.regs = mock.MagicMock(name="regs")
        self.regs_loaded = True
        self.nr = 0
        self.args = ()

    def _fault(self, va, *a):
        from .hypercall import GuestFault
        raise GuestFault(va)

    read = write = read_struct = write_struct = read_u32 = write_u32 = \
        lambda self, *a: self._fault(a[-1] if len(a) == 1 else a[0])

    def array_ok(self, va, count, size) -> bool:
        return True


def _status_of(ret) -> Tuple[str, str]:
    if isinstance(ret, int) and not isinstance(ret, bool):
        if ret == -abi.ENOSYS:
            return MISSING, "-ENOSYS"
        if ret == -abi.EOPNOTSUPP:
            return REFUSED, "-EOPNOTSUPP"
        if ret == -abi.EPERM:
            return REFUSED, "-EPERM"
    return IMPLEMENTED, ""


def probe(fn: Callable, args: tuple, timeout: float = 2.0) -> Tuple[str, str]:
    """(status, answer) of one handler call on the stub."""
    from .hypercall import GuestFault
    out: List = [None]

    def run():
        try:
            out[0] = fn(_StubCall(), *args)
        except GuestFault:
            out[0] = -abi.EFAULT
        except Exception:               # it got as far as acting on domain state
            out[0] = "acted"
    t = threading.Thread(target=run, daemon=True, name="abimatrix-probe")
    t.start()
    t.join(timeout)
    if t.is_alive():
        return IMPLEMENTED, ""          # it waited: it is a real blocking operation
    return _status_of(out[0])


def pv_rows():
    """[(nr, name, status, note, [(subnr, subname, status, answer)])] for
    every hypercall number of the ABI."""
    from . import hypercall
    if not hypercall.TABLE:
        hypercall._load_families()
    table = hypercall.TABLE
    probed: Dict[str, List] = {}
    rows = []
    for nr in sorted(set(abi.HYPERCALLS) | set(table)):
        fam = table.get(nr)
        name = fam.name if fam else abi.HYPERCALLS.get(nr, f"hypercall {nr}")
        if fam is None:
            rows.append((nr, name, MISSING, "-ENOSYS", []))
            continue
        status = {"implemented": IMPLEMENTED}.get(fam.status, fam.status)
        subs = []
        for sub, subname in sorted(fam.subops.items()):
            if status != IMPLEMENTED:
                subs.append((sub, subname, status, ""))
            elif name in PROBE_ARGS:
                subs.append((sub, subname) + probe(fam.fn, PROBE_ARGS[name](sub)))
            elif name in SAME_AS and SAME_AS[name] in probed:
                subs.append(next(s for s in probed[SAME_AS[name]] if s[0] == sub))
            else:
                subs.append((sub, subname, IMPLEMENTED, PER_REQUEST.get(name, "")))
        probed[name] = subs
        rows.append((nr, name, status, fam.note, subs))
    # a compat family listed before its modern twin: fill it in now
    for i, (nr, name, status, note, subs) in enumerate(rows):
        if name in SAME_AS and subs and all(s[3] == "" for s in subs) and SAME_AS[name] in probed:
            twin = {s[0]: s for s in probed[SAME_AS[name]]}
            rows[i] = (nr, name, status, note, [twin.get(s[0], s) for s in subs])
    return rows


def hvm_rows():
    """[(nr, name, how)] for the hypercalls an HVM domain's PV drivers reach;
    for its own handlers, the sub-ops they handle (probed as for PV)."""
    from . import hypercall
    from .hvm import pv
    if not hypercall.TABLE:
        hypercall._load_families()
    names = {nr: dict(f.subops) for nr, f in hypercall.TABLE.items()}
    names[abi.HYPERCALL_NR["hvm_op"]] = {getattr(pv, "HVMOP_set_param", 0): "set_param",
                                         getattr(pv, "HVMOP_get_param", 1): "get_param"}
    stub_pv = mock.MagicMock(name="pv")
    rows = []
    for nr in sorted(abi.HYPERCALLS):
        name = abi.HYPERCALLS[nr]
        if nr in pv.HVM_HYPERCALLS:
            own, nargs = pv.HVM_HYPERCALLS[nr]
            handled = [sname for sub, sname in sorted(names.get(nr, {}).items())
                       if probe(lambda call, *a: own(stub_pv, call, *a),
                                (sub, PTR, 1)[:nargs])[0] != MISSING]
            rows.append((nr, name, "its own HVM handler" +
                         (f": {', '.join(handled)}" if handled else "")))
        elif nr in pv.REUSED:
            rows.append((nr, name, "the PV family, unchanged"))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def generate() -> str:
    rows = pv_rows()
    n_impl = sum(1 for r in rows if r[2] == IMPLEMENTED)
    n_ref = sum(1 for r in rows if r[2] == REFUSED)
    subs = [s for r in rows for s in r[4]]
    s_impl = sum(1 for s in subs if s[2] == IMPLEMENTED)
    out = [
        "# Supported ABI matrix",
        "",
        "<!-- Generated by `python -m qemu_xenpv.abimatrix --write` from the dispatch tables;",
        "     do not edit by hand. tests/unit/test_abimatrix.py fails when it is stale. -->",
        "",
        "What a 32-bit PV guest (`xen-3.0-x86_32p`, `xen-3.0-x86_32`) gets from each",
        "hypercall of the Xen ABI, generated from `qemu_xenpv.hypercall.TABLE` (the one",
        "table that dispatches hypercalls and drives `--trace-hypercalls`). A sub-op's",
        "status comes from its handler: it is called with that sub-op on a stub vCPU and",
        "answers -ENOSYS when it does not implement it. *refused* is a Xen-compatible",
        "refusal (-EPERM for a domain-0-only operation, -EOPNOTSUPP). An unregistered",
        "hypercall answers -ENOSYS and is logged once per domain in `qemu-xenpv dmesg`.",
        "",
        f"**{n_impl}** of {len(rows)} hypercalls implemented, {n_ref} refused as Xen refuses "
        f"a domU, {len(rows) - n_impl - n_ref} not implemented; {s_impl} of {len(subs)} "
        "declared sub-ops handled.",
        "",
        "## Hypercalls",
        "",
        "| nr | hypercall | status | notes |",
        "|---:|---|---|---|",
    ]
    for nr, name, status, note, sub in rows:
        out.append(f"| {nr} | `{name}` | {status} | {_cell(note)} |")
    out += ["", "## Sub-operations", ""]
    for nr, name, status, note, sub in rows:
        if not sub:
            continue
        out += [f"### `{name}` ({nr})", "", "| sub-op | name | status | answer / note |",
                "|---:|---|---|---|"]
        for snr, sname, sstatus, answer in sub:
            out.append(f"| {snr} | `{sname}` | {sstatus} | {_cell(answer)} |")
        out.append("")
    out += ["## HVM domains", "",
            "An HVM guest with PV drivers reaches these through the hypercall area the",
            "builder writes (`qemu_xenpv/hvm/pv.py`, see [hvm.md](hvm.md)); every other",
            "number answers -ENOSYS.", "",
            "| nr | hypercall | handled by |", "|---:|---|---|"]
    for nr, name, how in hvm_rows():
        out.append(f"| {nr} | `{name}` | {_cell(how)} |")
    out.append("")
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    text = generate()
    if "--write" in argv:
        DOC.write_text(text)
        print(f"wrote {DOC}")
        return 0
    if "--check" in argv:
        current = DOC.read_text() if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is stale: run 'python -m qemu_xenpv.abimatrix --write'",
                  file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
