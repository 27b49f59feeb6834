"""Hypercall dispatch (qemu_xenpv.hypercall): the family table, -ENOSYS for
what is not there (logged once per domain), -EFAULT for guest faults, the
multicall driver and the --trace-hypercalls JSON lines."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from qemu_xenpv import abi
from qemu_xenpv.abi import EFAULT, EINVAL, ENOSYS
from qemu_xenpv.builder import SUPPORTED_FEATURES
from qemu_xenpv.domain import Domain
from qemu_xenpv.hypercall import (TABLE, Call, DomainCrash, Family, GuestFault, Tracer,
                                  _load_families, dispatch)

# the families issue 2 requires
REQUIRED = ["console_io", "xen_version", "sched_op", "sched_op_compat", "set_trap_table",
            "set_callbacks", "callback_op", "stack_switch", "fpu_taskswitch",
            "update_va_mapping", "mmu_update", "mmuext_op", "memory_op", "vm_assist",
            "multicall", "set_timer_op", "vcpu_op", "event_channel_op", "iret", "set_gdt"]

MEM_BASE, MEM_SIZE = 0x10000, 0x10000
TRACE_KEYS = {"t", "domain", "name", "vcpu", "hypercall", "nr", "args", "result"}


class FakeHV:
    def __init__(self):
        self.lines = []
        self.console = []

    def dmesg(self, line):
        self.lines.append(line)

    def guest_console_io(self, dom, data):
        self.console.append((dom.domid, data))

    def domain_by_id(self, domid):
        return None


class FakeDomain:
    """What dispatch(), Call, the Tracer and the simple families touch of a
    domain, with a flat fake guest memory at MEM_BASE.  Logging is the real
    Domain's code."""

    log_once = Domain.log_once
    guest_console_write = Domain.guest_console_write
    def sync_fast_paths(self):          # no shim behind these vCPUs
        pass

    def __init__(self, hv, domid, name, trace_path=None):
        self.hv, self.domid, self.name = hv, domid, name
        self.tracer = Tracer(trace_path) if trace_path else None
        self._logged_once = set()
        self.vm_assist = 0
        self.features = SUPPORTED_FEATURES
        self.mode = SimpleNamespace(pae=True, hole_start=abi.HYPERVISOR_VIRT_START_PAE)
        self.pae = True
        self.fake_mem = bytearray(MEM_SIZE)
        self.vcpus = []

    def copy_from_guest(self, vcpu, va, n):
        if va < MEM_BASE or va + n > MEM_BASE + MEM_SIZE:
            return None
        return bytes(self.fake_mem[va - MEM_BASE:va - MEM_BASE + n])

    def copy_to_guest(self, vcpu, va, data):
        if va < MEM_BASE or va + len(data) > MEM_BASE + MEM_SIZE:
            return False
        self.fake_mem[va - MEM_BASE:va - MEM_BASE + len(data)] = data
        return True


def make_domain(hv, domid=3, name="unit", trace_path=None):
    dom = FakeDomain(hv, domid, name, trace_path)
    vcpu = SimpleNamespace(dom=dom, vid=0)
    dom.vcpus = [vcpu]
    return dom, vcpu


def call(vcpu, nr, *args):
    args = tuple(args) + (0,) * (6 - len(args))
    return Call(vcpu, None, args + (nr,))


@pytest.fixture
def hv():
    return FakeHV()


@pytest.fixture
def dv(hv):
    dom, vcpu = make_domain(hv)
    yield dom, vcpu
    if dom.tracer is not None:
        dom.tracer.close()


# ---- the table ---------------------------------------------------------------------
def test_required_families_registered():
    _load_families()
    missing = [n for n in REQUIRED if abi.HYPERCALL_NR[n] not in TABLE]
    assert missing == []
    for name in REQUIRED:
        fam = TABLE[abi.HYPERCALL_NR[name]]
        assert fam.name == name and fam.nr == abi.HYPERCALL_NR[name]
        assert 0 <= fam.nargs <= 6
        assert callable(fam.fn)


def test_table_consistent_with_abi():
    _load_families()
    for nr, fam in TABLE.items():
        assert abi.HYPERCALLS[nr] == fam.name
        assert fam.status
        assert all(isinstance(k, int) and isinstance(v, str) for k, v in fam.subops.items())
    # the families' sub-operation tables name what the ABI names
    assert TABLE[abi.HYPERCALL_NR["event_channel_op"]].subops == abi.EVTCHNOP
    assert TABLE[abi.HYPERCALL_NR["mmuext_op"]].subops == abi.MMUEXT
    assert TABLE[abi.HYPERCALL_NR["iret"]].nargs == 0
    assert TABLE[abi.HYPERCALL_NR["update_va_mapping"]].nargs == 4


# ---- Call ------------------------------------------------------------------------------
def test_call_from_regs(dv):
    dom, vcpu = dv
    regs = {"ebx": 1, "ecx": 2, "edx": 3, "esi": 4, "edi": 5, "ebp": 6, "eax": 17, "eip": 9}
    c = Call(vcpu, regs)
    assert c.args == (1, 2, 3, 4, 5, 6) and c.nr == 17
    assert c.regs_loaded and c.regs is regs
    assert c.dom is dom and c.action == 0


def test_call_from_mailbox(make_ram):
    from qemu_xenpv.shim import Mailbox, REGS
    ram = make_ram(2 << 20)
    mb = Mailbox(ram, 0x10000, 0x20000)
    regs = {"ebx": 0x11, "ecx": 0x22, "edx": 0x33, "esi": 0x44, "edi": 0x55, "ebp": 0x66,
            "eax": 24, "eip": 0xC0001000, "cs": 0xE019, "eflags": 0x202, "esp": 0x1234,
            "ss": 0xE021}
    mb.write_regs(regs)
    vcpu = SimpleNamespace(dom=SimpleNamespace(), mbox=mb, vid=0)
    c = Call.from_mailbox(vcpu)
    assert c.args == (0x11, 0x22, 0x33, 0x44, 0x55, 0x66) and c.nr == 24
    assert not c.regs_loaded
    full = c.regs                           # read lazily from the frame
    assert c.regs_loaded
    assert (full["eip"], full["cs"], full["esp"]) == (0xC0001000, 0xE019, 0x1234)
    assert ram.r32(0x10000 + REGS + 24) == 24


def test_call_guest_memory_helpers(dv):
    dom, vcpu = dv
    c = call(vcpu, 17)
    c.write_u32(MEM_BASE + 8, 0xDEADBEEF)
    assert c.read_u32(MEM_BASE + 8) == 0xDEADBEEF
    c.write_struct(abi.trap_info, MEM_BASE + 16, {"vector": 3, "flags": 3, "cs": 0xE019,
                                                  "address": 0x1000})
    assert c.read_struct(abi.trap_info, MEM_BASE + 16)["cs"] == 0xE019
    with pytest.raises(GuestFault):
        c.read(0x100, 4)
    with pytest.raises(GuestFault):
        c.write(MEM_BASE + MEM_SIZE - 2, b"1234")


# ---- dispatch -------------------------------------------------------------------------
@pytest.mark.parametrize("nr", [11, 42, 99, 0xFFFF])
def test_unknown_hypercall_is_enosys(dv, nr):
    dom, vcpu = dv
    assert dispatch(call(vcpu, nr)) == -ENOSYS


def test_unknown_hypercall_logged_once(hv):
    dom, vcpu = make_domain(hv, domid=5)
    other, ovcpu = make_domain(hv, domid=6, name="other")
    _load_families()
    nosys = max(nr for nr in abi.HYPERCALLS if nr not in TABLE)    # a named, absent one
    for _ in range(3):
        assert dispatch(call(vcpu, nosys)) == -ENOSYS
    mine = [l for l in hv.lines if "d5" in l and "unimplemented hypercall" in l]
    assert len(mine) == 1
    assert f"{nosys}" in mine[0] and abi.HYPERCALLS[nosys] in mine[0] and "ENOSYS" in mine[0]
    # another number logs once more, another domain logs for itself
    assert dispatch(call(vcpu, 11)) == -ENOSYS
    assert dispatch(call(vcpu, 11)) == -ENOSYS
    assert dispatch(call(ovcpu, nosys)) == -ENOSYS
    assert len([l for l in hv.lines if "unimplemented hypercall" in l]) == 3
    assert len([l for l in hv.lines if "d6" in l and "unimplemented" in l]) == 1


def test_guest_fault_becomes_efault(dv, hv):
    dom, vcpu = dv
    # console_io(write) from an unmapped buffer
    nr = abi.HYPERCALL_NR["console_io"]
    assert dispatch(call(vcpu, nr, abi.CONSOLEIO_write, 16, 0x100)) == -EFAULT
    assert hv.console == []
    # the same from mapped memory works
    dom.fake_mem[0:6] = b"hello\n"
    assert dispatch(call(vcpu, nr, abi.CONSOLEIO_write, 6, MEM_BASE)) == 0
    assert hv.console == [(dom.domid, b"hello\n")]


def test_handler_raising_guest_fault(dv, monkeypatch):
    dom, vcpu = dv
    _load_families()
    seen = []

    def handler(c, a, b):
        seen.append((a, b))
        raise GuestFault(a)
    monkeypatch.setitem(TABLE, 9, Family(9, "get_debugreg", handler, 2))
    assert dispatch(call(vcpu, 9, 0x1234, 7, 99)) == -EFAULT
    assert seen == [(0x1234, 7)]                     # only nargs arguments passed


def test_domain_crash_propagates(dv):
    dom, vcpu = dv
    # iret with an unreadable frame: Xen crashes the domain
    regs = {"ebx": 0, "ecx": 0, "edx": 0, "esi": 0, "edi": 0, "ebp": 0,
            "eax": abi.HYPERCALL_NR["iret"], "esp": 0x100}
    with pytest.raises(DomainCrash):
        dispatch(Call(vcpu, regs))


def test_handlers_results(dv):
    dom, vcpu = dv
    xv = abi.HYPERCALL_NR["xen_version"]
    assert dispatch(call(vcpu, xv, abi.XENVER_version, 0)) == (4 << 16) | 17
    assert dispatch(call(vcpu, xv, abi.XENVER_pagesize, 0)) == 4096
    dom.fake_mem[0:8] = bytes(8)
    assert dispatch(call(vcpu, xv, abi.XENVER_get_features, MEM_BASE)) == 0
    fi = abi.xen_feature_info.unpack(dom.fake_mem, 0)
    assert fi == {"submap_idx": 0, "submap": dom.features}
    assert dispatch(call(vcpu, xv, abi.XENVER_capabilities, MEM_BASE + 64)) == 0
    assert bytes(dom.fake_mem[64:80]) == b"xen-3.0-x86_32p\0"
    va = abi.HYPERCALL_NR["vm_assist"]
    assert dispatch(call(vcpu, va, abi.VMASST_CMD_enable, 2)) == 0
    assert dom.vm_assist == 1 << 2
    assert dispatch(call(vcpu, va, abi.VMASST_CMD_disable, 2)) == 0
    assert dom.vm_assist == 0
    assert dispatch(call(vcpu, va, abi.VMASST_CMD_enable, 32)) == -EINVAL


def test_multicall(dv):
    dom, vcpu = dv
    nr = abi.HYPERCALL_NR
    entries = [
        (nr["xen_version"], [abi.XENVER_version, 0]),
        (nr["multicall"], [MEM_BASE, 1]),                # no nesting
        (11, []),                                        # nothing there
        (nr["console_io"], [abi.CONSOLEIO_write, 4, 0x40]),   # bad buffer: -EFAULT
    ]
    for i, (op, args) in enumerate(entries):
        dom.fake_mem[i * 32:(i + 1) * 32] = abi.multicall_entry.pack(
            {"op": op, "result": 0xAAAAAAAA, "args": args})
    assert dispatch(call(vcpu, nr["multicall"], MEM_BASE, len(entries))) == 0
    results = [abi.multicall_entry.unpack(dom.fake_mem, i * 32)["result"]
               for i in range(len(entries))]
    as_int = [r - (1 << 32) if r & 0x80000000 else r for r in results]
    assert as_int == [(4 << 16) | 17, -EINVAL, -ENOSYS, -EFAULT]


def test_multicall_iret_ends_it(dv):
    """XSA-213: an iret entry pops its frame and ends the multicall; the
    entries after it never run."""
    import struct
    dom, vcpu = dv
    nr = abi.HYPERCALL_NR
    dom.fake_mem[0:64] = abi.multicall_entry.pack({"op": nr["iret"], "result": 0xAAAAAAAA}) + \
        abi.multicall_entry.pack({"op": nr["xen_version"], "result": 0xAAAAAAAA,
                                  "args": [abi.XENVER_version]})
    frame = MEM_BASE + 0x800                 # eax, eip, cs, eflags, esp, ss (ring 3)
    dom.fake_mem[0x800:0x818] = struct.pack("<6I", 0xDEAD, 0x401000, 0xE02B, 0x202, 0x9000,
                                            0xE033)
    regs = {k: 0 for k in ("ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "eip", "cs",
                           "eflags", "esp", "ss")}
    regs.update(eax=nr["multicall"], ebx=MEM_BASE, ecx=2, esp=frame, cs=0xE019, ss=0xE021)
    vcpu.vcpu_info_pa = 0
    dom.ram = SimpleNamespace(w8=lambda addr, val: None)     # the upcall mask write
    c = Call(vcpu, regs)
    assert dispatch(c) == 0xDEAD
    assert (regs["eip"], regs["cs"], regs["esp"], regs["ss"]) == (0x401000, 0xE02B, 0x9000, 0xE033)
    assert abi.multicall_entry.unpack(dom.fake_mem, 32)["result"] == 0xAAAAAAAA


def test_multicall_block_sleeps_then_runs_the_rest(dv):
    """SCHEDOP_block before the last entry: Xen preempts the multicall and
    runs the rest after the wake-up.  We sleep (RETRY) with the multicall
    continued from the block entry; asked again with an event pending, the
    block returns and the entries after it run."""
    from qemu_xenpv.shim import K
    dom, vcpu = dv
    nr = abi.HYPERCALL_NR
    entries = [(nr["xen_version"], [abi.XENVER_version]),
               (nr["sched_op"], [abi.SCHEDOP_block, 0]),
               (nr["xen_version"], [abi.XENVER_pagesize])]
    for i, (op, args) in enumerate(entries):
        dom.fake_mem[i * 32:(i + 1) * 32] = abi.multicall_entry.pack(
            {"op": op, "result": 0xAAAAAAAA, "args": args})
    vinfo = bytearray(64)
    vinfo[abi.VI_UPCALL_MASK] = 1
    dom.ram = SimpleNamespace(w8=lambda a, v: vinfo.__setitem__(a, v), r8=lambda a: vinfo[a],
                              fence=lambda: None)
    vcpu.vcpu_info_pa = 0
    vcpu.mbox = SimpleNamespace(set64=lambda k, v: None)

    def run(ebx, ecx):
        regs = dict.fromkeys(("ebx", "ecx", "edx", "esi", "edi", "ebp", "eax"), 0)
        regs.update(eax=nr["multicall"], ebx=ebx, ecx=ecx)
        c = Call(vcpu, regs)
        assert dispatch(c) == 0
        return c, regs

    def result(i):
        return abi.multicall_entry.unpack(dom.fake_mem, i * 32)["result"]

    c, regs = run(MEM_BASE, 3)                      # nothing pending: sleep
    assert c.action & K.ACT_RETRY and not c.action & K.ACT_BLOCK
    assert (regs["ebx"], regs["ecx"]) == (MEM_BASE + 32, 2)
    assert result(0) == (4 << 16) | 17 and result(2) == 0xAAAAAAAA
    assert vinfo[abi.VI_UPCALL_MASK] == 0           # block enabled event delivery
    vinfo[abi.VI_UPCALL_PENDING] = 1                # an event: the shim asks again
    c, regs = run(regs["ebx"], regs["ecx"])
    assert not c.action & (K.ACT_RETRY | K.ACT_BLOCK)
    assert result(1) == 0 and result(2) == 4096
    # a block as the last entry is the ordinary block
    vinfo[abi.VI_UPCALL_PENDING] = 0
    c, regs = run(MEM_BASE + 32, 1)
    assert c.action & K.ACT_BLOCK and not c.action & K.ACT_RETRY


def test_preempted_batches_continue_where_they_stopped(dv, monkeypatch):
    """hypercall_preempt_check(): with every check due, a multicall runs one
    entry per round and continues with the rest; an entry that is itself
    preempted gets its continuation written back into the entry, and the
    multicall continues from that entry (Xen's MCSF_call_preempted)."""
    from qemu_xenpv import hypercall as hc
    dom, vcpu = dv
    nr = abi.HYPERCALL_NR
    monkeypatch.setattr(hc, "PREEMPT_NS", -1)
    FAKE = 60                                        # an unused hypercall number

    def countdown(call, n):                          # preempts itself until n == 1
        if n > 1 and call.preempt_due():
            return call.continue_with(n - 1)
        return 100 + n
    monkeypatch.setitem(TABLE, FAKE, hc.Family(FAKE, "countdown", countdown, 1))
    entries = [(nr["xen_version"], [abi.XENVER_version]), (FAKE, [3]),
               (nr["xen_version"], [abi.XENVER_pagesize])]
    for i, (op, args) in enumerate(entries):
        dom.fake_mem[i * 32:(i + 1) * 32] = abi.multicall_entry.pack(
            {"op": op, "result": 0xAAAAAAAA, "args": args})
    args, rounds = (MEM_BASE, 3), 0
    while True:
        c = call(vcpu, nr["multicall"], *args)
        assert dispatch(c) == 0
        rounds += 1
        if c.again is None:
            break
        args = c.again[:2]
    results = [abi.multicall_entry.unpack(dom.fake_mem, i * 32)["result"] for i in range(3)]
    assert results == [(4 << 16) | 17, 101, 4096]
    assert abi.multicall_entry.unpack(dom.fake_mem, 32)["args"][0] == 1    # the continuation
    assert rounds == 5      # entry 0 | countdown 3 -> 2 | 2 -> 1 | 1, preempt | entry 2


def test_multicall_bad_list_is_efault(dv):
    dom, vcpu = dv
    assert dispatch(call(vcpu, abi.HYPERCALL_NR["multicall"], 0x100, 2)) == -EFAULT


# ---- tracing --------------------------------------------------------------------------
def test_tracer_json_lines(hv, tmp_path):
    path = tmp_path / "trace.jsonl"
    dom, vcpu = make_domain(hv, domid=4, name="traced", trace_path=str(path))
    try:
        xv = abi.HYPERCALL_NR["xen_version"]
        assert dispatch(call(vcpu, xv, abi.XENVER_version, 0x1234)) == 0x40011
        assert dispatch(call(vcpu, 11, 1, 2, 3, 4, 5, 6)) == -ENOSYS
        nrm = abi.HYPERCALL_NR["multicall"]
        dom.fake_mem[0:32] = abi.multicall_entry.pack({"op": xv, "args": [abi.XENVER_pagesize]})
        assert dispatch(call(vcpu, nrm, MEM_BASE, 1)) == 0
    finally:
        dom.tracer.close()
    lines = path.read_text().splitlines()
    recs = [json.loads(l) for l in lines]
    assert len(recs) == 4                    # the multicall entry, then the multicall
    for r in recs:
        assert set(r) == TRACE_KEYS
        assert r["domain"] == 4 and r["name"] == "traced" and r["vcpu"] == 0
        assert isinstance(r["t"], (int, float)) and r["t"] >= 0
        assert all(isinstance(a, str) and a.startswith("0x") for a in r["args"])
    assert [r["t"] for r in recs] == sorted(r["t"] for r in recs)
    first, nosys, sub, multi = recs
    assert first == {**first, "hypercall": "xen_version", "nr": 17, "args": ["0x0", "0x1234"],
                     "result": 0x40011}
    assert nosys["hypercall"] == "11" and nosys["nr"] == 11
    assert nosys["args"] == ["0x1", "0x2", "0x3", "0x4", "0x5", "0x6"]
    assert nosys["result"] == -ENOSYS
    assert (sub["hypercall"], sub["result"]) == ("xen_version", 4096)
    assert (multi["hypercall"], multi["nr"], multi["result"]) == ("multicall", nrm, 0)


def test_tracer_appends(hv, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"old": 1}\n')
    t = Tracer(str(path))
    dom, vcpu = make_domain(hv)
    fam = Family(17, "xen_version", lambda *a: 0, 2)
    c = call(vcpu, 17, 5, 6, 7)
    c.trace_extra = {"detail": "x"}
    t.record(c, fam, -22)
    t.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"old": 1}
    rec = json.loads(lines[1])
    assert rec["args"] == ["0x5", "0x6"] and rec["result"] == -22 and rec["detail"] == "x"
