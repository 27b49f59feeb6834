"""Event channels, 2-level ABI (qemu_xenpv.evtchn.EventChannels), between
fake guest domains whose shared_info lives in real GuestRAM, real VCPU
objects and the real domain 0 (callbacks instead of shared_info)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from qemu_xenpv import abi
from qemu_xenpv.abi import EEXIST, EINVAL, ENOENT, ENOSPC, ESRCH
from qemu_xenpv.evtchn import NR_PORTS, EventChannels
from qemu_xenpv.hypervisor import Dom0
from qemu_xenpv.vcpu import VCPU

SI_PA = 0x1000              # shared_info page in each fake domain's RAM


class FakeHV:
    def __init__(self):
        self.domains = {}
        self.dom0 = Dom0(self)
        self.soon = []

    def domain_by_id(self, domid):
        if domid == 0:
            return self.dom0
        return self.domains.get(domid)

    def call_soon(self, fn, *args):
        self.soon.append((fn, args))

    def run_soon(self):
        todo, self.soon = self.soon, []
        for fn, args in todo:
            fn(*args)
        return len(todo)


class FakeDomain:
    """What EventChannels and VCPU touch of a guest domain."""

    def __init__(self, hv, domid, ram, nr_vcpus=1):
        self.hv, self.domid, self.ram = hv, domid, ram
        self.shared_info_pa = SI_PA
        self.kicks = []
        self.virq_events = []
        self.vcpus = [VCPU(self, i, SimpleNamespace(estack=0x10000 + i * 0x2000,
                                                    priv=0x11000 + i * 0x2000))
                      for i in range(nr_vcpus)]
        self.evtchn = EventChannels(hv, self)
        hv.domains[domid] = self

    def kick(self, vid):
        self.kicks.append(vid)

    def on_virq_bound(self, vcpu, virq, port):
        self.virq_events.append((vcpu, virq, port))

    # views of shared_info
    def pending(self, port):
        return self.ram.test_bit(SI_PA + abi.SI_EVTCHN_PENDING, port)

    def masked(self, port):
        return self.ram.test_bit(SI_PA + abi.SI_EVTCHN_MASK, port)

    def mask(self, port):
        self.ram.test_and_set_bit(SI_PA + abi.SI_EVTCHN_MASK, port)

    def sel(self, vid=0):
        return self.ram.r32(SI_PA + vid * 64 + abi.VI_PENDING_SEL)

    def upcall_pending(self, vid=0):
        return self.ram.r8(SI_PA + vid * 64 + abi.VI_UPCALL_PENDING)

    def guest_ack(self, port, vid=0):
        """What a guest's upcall handler does: clear upcall_pending, the
        selector and the port's pending bit."""
        self.ram.w8(SI_PA + vid * 64 + abi.VI_UPCALL_PENDING, 0)
        self.ram.w32(SI_PA + vid * 64 + abi.VI_PENDING_SEL, 0)
        self.ram.test_and_clear_bit(SI_PA + abi.SI_EVTCHN_PENDING, port)


@pytest.fixture
def hv():
    return FakeHV()


@pytest.fixture
def d1(hv, make_ram):
    return FakeDomain(hv, 1, make_ram(2 << 20), nr_vcpus=2)


@pytest.fixture
def d2(hv, make_ram):
    return FakeDomain(hv, 2, make_ram(2 << 20))


def _connect(d1, d2):
    """d1 offers a port to d2, d2 binds it: (port in d1, port in d2)."""
    p1 = d1.evtchn.alloc_unbound(d2.domid)
    p2 = d2.evtchn.bind_interdomain(d1.domid, p1)
    assert p1 > 0 and p2 > 0
    d2.guest_ack(p2)            # bind sets the local end pending: start clean
    d2.kicks.clear()
    return p1, p2


# ---- allocation and binding ------------------------------------------------------
def test_alloc_unbound(d1, d2):
    p = d1.evtchn.alloc_unbound(2)
    assert p == 1                               # port 0 is reserved
    assert d1.evtchn.status(p) == {"status": abi.EVTCHNSTAT_unbound, "vcpu": 0, "u0": 2, "u1": 0}
    assert d1.evtchn.alloc_unbound(2) == 2
    assert d1.evtchn.status(0)["status"] == abi.EVTCHNSTAT_closed


def test_bind_interdomain(d1, d2):
    p1 = d1.evtchn.alloc_unbound(2)
    p2 = d2.evtchn.bind_interdomain(1, p1)
    assert p2 == 1
    assert d1.evtchn.status(p1) == {"status": abi.EVTCHNSTAT_interdomain, "vcpu": 0,
                                    "u0": 2, "u1": p2}
    assert d2.evtchn.status(p2) == {"status": abi.EVTCHNSTAT_interdomain, "vcpu": 0,
                                    "u0": 1, "u1": p1}
    # Xen marks the binding end pending so that no event is lost in the race
    assert d2.pending(p2) and d2.upcall_pending() == 1
    assert not d1.pending(p1)


def test_bind_interdomain_errors(hv, d1, d2, make_ram):
    d3 = FakeDomain(hv, 3, make_ram(2 << 20))
    p1 = d1.evtchn.alloc_unbound(2)
    assert d3.evtchn.bind_interdomain(1, p1) == -EINVAL       # offered to d2, not d3
    assert d2.evtchn.bind_interdomain(9, 1) == -ESRCH         # no such domain
    assert d2.evtchn.bind_interdomain(1, 0) == -EINVAL        # reserved port
    assert d2.evtchn.bind_interdomain(1, 77) == -EINVAL       # free port
    assert d2.evtchn.bind_interdomain(1, NR_PORTS) == -EINVAL
    assert d2.evtchn.bind_interdomain(1, -1) == -EINVAL
    assert d2.evtchn.bind_interdomain(1, p1) > 0
    assert d3.evtchn.bind_interdomain(1, p1) == -EINVAL       # already bound
    assert d2.evtchn.bind_interdomain(1, p1) == -EINVAL


def test_bind_interdomain_domid_any(hv, d1, d2):
    p1 = d1.evtchn.alloc_unbound(abi.DOMID_ANY)
    assert d2.evtchn.bind_interdomain(1, p1) > 0
    assert d1.evtchn.status(p1)["u0"] == 2


# ---- delivery ---------------------------------------------------------------------
def test_send_sets_pending_selector_and_upcall_on_edge(d1, d2):
    p1, p2 = _connect(d1, d2)
    assert d1.evtchn.send(p1) == 0
    assert d2.pending(p2)
    assert d2.sel() == 1 << (p2 // 32)
    assert d2.upcall_pending() == 1
    assert d2.kicks == [0]
    # already pending: no new edge, no new kick
    assert d1.evtchn.send(p1) == 0
    assert d2.kicks == [0]
    # the guest handles it; the next send is a new edge
    d2.guest_ack(p2)
    assert d1.evtchn.send(p1) == 0
    assert d2.pending(p2) and d2.upcall_pending() == 1 and d2.kicks == [0, 0]


def test_selector_bit_for_high_port(d1, d2):
    for _ in range(70):
        d2.evtchn.alloc_unbound(0)              # push d2's next port past 64
    p1, p2 = _connect(d1, d2)
    assert p2 >= 64
    d1.evtchn.send(p1)
    assert d2.sel() == 1 << (p2 // 32)
    word = d2.ram.r32(SI_PA + abi.SI_EVTCHN_PENDING + (p2 // 32) * 4)
    assert word == 1 << (p2 % 32)


def test_upcall_pending_only_once(d1, d2):
    """A second port firing while upcall_pending is still set adds its
    selector bit but does not kick again."""
    pa1, pa2 = _connect(d1, d2)
    for _ in range(40):
        d2.evtchn.alloc_unbound(0)
    pb1, pb2 = _connect(d1, d2)
    assert pa2 // 32 != pb2 // 32
    d1.evtchn.send(pa1)
    d1.evtchn.send(pb1)
    assert d2.sel() == (1 << (pa2 // 32)) | (1 << (pb2 // 32))
    assert d2.kicks == [0]


def test_masked_port_only_pending(d1, d2):
    p1, p2 = _connect(d1, d2)
    d2.mask(p2)
    assert d1.evtchn.send(p1) == 0
    assert d2.pending(p2)
    assert d2.sel() == 0 and d2.upcall_pending() == 0 and d2.kicks == []
    # unmask re-raises the pending event
    assert d2.evtchn.unmask(p2) == 0
    assert not d2.masked(p2)
    assert d2.sel() == 1 << (p2 // 32) and d2.upcall_pending() == 1 and d2.kicks == [0]


def test_unmask_without_pending(d1, d2):
    p1, p2 = _connect(d1, d2)
    d2.mask(p2)
    assert d2.evtchn.unmask(p2) == 0
    assert d2.sel() == 0 and d2.upcall_pending() == 0 and d2.kicks == []
    assert d2.evtchn.unmask(NR_PORTS) == -EINVAL


def test_upcall_masked_vcpu_still_marks_pending(d1, d2):
    """evtchn_upcall_mask only stops the upcall itself, not the bits."""
    p1, p2 = _connect(d1, d2)
    d2.ram.w8(SI_PA + abi.VI_UPCALL_MASK, 1)
    d1.evtchn.send(p1)
    assert d2.upcall_pending() == 1 and d2.sel() == 1 << (p2 // 32)


def test_send_errors(d1, d2):
    assert d1.evtchn.send(NR_PORTS) == -EINVAL
    assert d1.evtchn.send(-1) == -EINVAL
    assert d1.evtchn.send(0) == -EINVAL           # reserved
    assert d1.evtchn.send(50) == -EINVAL          # free
    p = d1.evtchn.alloc_unbound(2)
    assert d1.evtchn.send(p) == 0                 # unbound: dropped silently
    assert not d1.pending(p) and not d2.pending(p)


# ---- close -------------------------------------------------------------------------------
def test_close_returns_peer_to_unbound(d1, d2):
    p1, p2 = _connect(d1, d2)
    assert d2.evtchn.close(p2) == 0
    assert d2.evtchn.status(p2)["status"] == abi.EVTCHNSTAT_closed
    st = d1.evtchn.status(p1)
    assert st["status"] == abi.EVTCHNSTAT_unbound and st["u0"] == 2
    # d2 can bind again, and gets the port back
    assert d2.evtchn.bind_interdomain(1, p1) == p2
    assert d1.evtchn.close(p1) == 0
    assert d2.evtchn.status(p2)["status"] == abi.EVTCHNSTAT_unbound
    assert d2.evtchn.status(p2)["u0"] == 1


def test_close_clears_pending(d1, d2):
    p1, p2 = _connect(d1, d2)
    d1.evtchn.send(p1)
    assert d2.pending(p2)
    d2.evtchn.close(p2)
    assert not d2.pending(p2)


def test_close_errors(d1):
    assert d1.evtchn.close(0) == -EINVAL
    assert d1.evtchn.close(5) == -EINVAL
    assert d1.evtchn.close(NR_PORTS) == -EINVAL
    p = d1.evtchn.alloc_unbound(0)
    assert d1.evtchn.close(p) == 0
    assert d1.evtchn.close(p) == -EINVAL
    assert d1.evtchn.alloc_unbound(0) == p        # the port is reused


def test_reset_closes_everything(d1, d2):
    p1, p2 = _connect(d1, d2)
    d1.evtchn.bind_virq(abi.VIRQ_TIMER, 0)
    d1.evtchn.reset()
    assert all(d1.evtchn.status(p)["status"] == abi.EVTCHNSTAT_closed for p in range(20))
    assert d2.evtchn.status(p2)["status"] == abi.EVTCHNSTAT_unbound
    assert d1.evtchn.virq == {}


# ---- VIRQs and IPIs --------------------------------------------------------------------
def test_bind_virq(d1):
    p = d1.evtchn.bind_virq(abi.VIRQ_TIMER, 0)
    assert p > 0
    assert d1.virq_events == [(0, abi.VIRQ_TIMER, p)]
    assert d1.evtchn.status(p) == {"status": abi.EVTCHNSTAT_virq, "vcpu": 0,
                                   "u0": abi.VIRQ_TIMER, "u1": 0}
    assert d1.evtchn.bind_virq(abi.VIRQ_TIMER, 0) == -EEXIST
    # per-vCPU VIRQ on the second vCPU is a different binding
    p_v1 = d1.evtchn.bind_virq(abi.VIRQ_TIMER, 1)
    assert p_v1 > 0 and p_v1 != p
    d1.evtchn.send_virq(1, abi.VIRQ_TIMER)
    assert d1.pending(p_v1) and not d1.pending(p)
    assert d1.sel(1) == 1 << (p_v1 // 32) and d1.sel(0) == 0
    assert d1.upcall_pending(1) == 1 and d1.kicks == [1]
    # closing unbinds it
    assert d1.evtchn.close(p) == 0
    assert d1.virq_events[-1] == (0, abi.VIRQ_TIMER, None)
    assert d1.evtchn.bind_virq(abi.VIRQ_TIMER, 0) > 0


def test_bind_virq_errors(d1):
    assert d1.evtchn.bind_virq(abi.NR_VIRQS, 0) == -EINVAL
    assert d1.evtchn.bind_virq(-1, 0) == -EINVAL
    assert d1.evtchn.bind_virq(abi.VIRQ_CONSOLE, 1) == -EINVAL     # global VIRQ: vCPU 0
    assert d1.evtchn.bind_virq(abi.VIRQ_TIMER, 2) == -ENOENT       # no such vCPU
    assert d1.evtchn.bind_virq(abi.VIRQ_CONSOLE, 0) > 0
    assert d1.evtchn.bind_virq(abi.VIRQ_CONSOLE, 0) == -EEXIST


def test_send_virq_unbound_is_noop(d1):
    d1.evtchn.send_virq(0, abi.VIRQ_DEBUG)
    assert d1.ram.read(SI_PA + abi.SI_EVTCHN_PENDING, 128) == bytes(128)


def test_virq_port_cannot_be_sent(d1):
    p = d1.evtchn.bind_virq(abi.VIRQ_TIMER, 0)
    assert d1.evtchn.send(p) == -EINVAL


def test_ipi(d1):
    p = d1.evtchn.bind_ipi(1)
    assert d1.evtchn.status(p) == {"status": abi.EVTCHNSTAT_ipi, "vcpu": 1, "u0": 0, "u1": 0}
    assert d1.evtchn.send(p) == 0
    assert d1.pending(p) and d1.upcall_pending(1) == 1 and d1.upcall_pending(0) == 0
    assert d1.evtchn.bind_ipi(5) == -ENOENT


def test_bind_vcpu(d1, d2):
    p1, p2 = _connect(d1, d2)
    assert d1.evtchn.bind_vcpu(p1, 1) == 0
    assert d1.evtchn.status(p1)["vcpu"] == 1
    d2.evtchn.send(p2)
    assert d1.upcall_pending(1) == 1 and d1.upcall_pending(0) == 0
    assert d1.evtchn.bind_vcpu(p1, 2) == -ENOENT
    pt = d1.evtchn.bind_virq(abi.VIRQ_TIMER, 0)
    assert d1.evtchn.bind_vcpu(pt, 1) == -EINVAL               # per-vCPU VIRQ
    pc = d1.evtchn.bind_virq(abi.VIRQ_CONSOLE, 0)
    assert d1.evtchn.bind_vcpu(pc, 1) == 0                      # a global one may move
    d1.evtchn.send_virq(1, abi.VIRQ_CONSOLE)
    assert d1.pending(pc)


def test_port_exhaustion(d1):
    ports = [d1.evtchn.alloc_unbound(0) for _ in range(NR_PORTS - 1)]
    assert ports == list(range(1, NR_PORTS))
    assert d1.evtchn.alloc_unbound(0) == -ENOSPC
    assert d1.evtchn.bind_virq(abi.VIRQ_TIMER, 0) == -ENOSPC
    assert d1.evtchn.bind_ipi(0) == -ENOSPC


def test_status_values(d1, d2):
    ev = d1.evtchn
    pu = ev.alloc_unbound(2)
    p1, _ = _connect(d1, d2)
    pv = ev.bind_virq(abi.VIRQ_TIMER, 0)
    pi = ev.bind_ipi(0)
    assert [ev.status(p)["status"] for p in (0, 600, pu, p1, pv, pi)] == [
        abi.EVTCHNSTAT_closed, abi.EVTCHNSTAT_closed, abi.EVTCHNSTAT_unbound,
        abi.EVTCHNSTAT_interdomain, abi.EVTCHNSTAT_virq, abi.EVTCHNSTAT_ipi]


# ---- domain 0 -------------------------------------------------------------------------------
def test_dom0_bind_and_consumer(hv, d1):
    got = []
    p1 = d1.evtchn.alloc_unbound(0)
    p0 = hv.dom0.evtchn.dom0_bind(1, p1, got.append)
    assert p0 > 0
    # binding in dom0 "sets pending" there: the consumer runs (in the loop)
    hv.run_soon()
    got.clear()
    assert d1.evtchn.send(p1) == 0
    assert got == [] and len(hv.soon) == 1          # delivered on the loop, not inline
    assert hv.run_soon() == 1
    assert got == [p0]
    # dom0 -> guest
    d1.guest_ack(p1)
    assert hv.dom0.evtchn.send(p0) == 0
    assert d1.pending(p1) and d1.upcall_pending() == 1


def test_dom0_alloc_and_guest_bind(hv, d1):
    got = []
    p0 = hv.dom0.evtchn.dom0_alloc(1, got.append)
    assert p0 > 0
    assert hv.dom0.evtchn.status(p0)["status"] == abi.EVTCHNSTAT_unbound
    p1 = d1.evtchn.bind_interdomain(0, p0)
    assert p1 > 0
    assert d1.pending(p1)                           # the guest's end is set pending
    assert hv.dom0.evtchn.status(p0) == {"status": abi.EVTCHNSTAT_interdomain, "vcpu": 0,
                                         "u0": 1, "u1": p1}
    d1.evtchn.send(p1)
    d1.evtchn.send(p1)
    hv.run_soon()
    assert got == [p0, p0]                          # every send reaches the back end


def test_dom0_port_without_consumer(hv, d1):
    p1 = d1.evtchn.alloc_unbound(0)
    p0 = hv.dom0.evtchn.bind_interdomain(1, p1)
    hv.run_soon()
    assert d1.evtchn.send(p1) == 0
    assert hv.soon == []


def test_guest_closes_dom0_connection(hv, d1):
    got = []
    p0 = hv.dom0.evtchn.dom0_alloc(1, got.append)
    p1 = d1.evtchn.bind_interdomain(0, p0)
    assert d1.evtchn.close(p1) == 0
    st = hv.dom0.evtchn.status(p0)
    assert st["status"] == abi.EVTCHNSTAT_unbound and st["u0"] == 1
    assert hv.dom0.evtchn.ports[p0].consumer == got.append      # still its back end
