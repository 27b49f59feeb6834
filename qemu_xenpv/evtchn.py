"""Event channels, 2-level ABI (1024 ports on i386), per Xen's
common/event_channel.c and event_2l.c.

Each domain has a port table.  Domain 0 is this Python process: its ports
have no shared_info; "delivering" to one calls the back end registered on
it (in the hypervisor's event loop).  For a guest, delivery sets bits in
its shared_info with atomic operations (the guest changes the same words
with locked instructions) and kicks the vCPU when Xen would.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from . import abi
from .abi import EINVAL, EEXIST, ENOENT, EPERM, ENOSPC, ESRCH, EBUSY

log = logging.getLogger("qemu_xenpv.evtchn")

ECS_FREE, ECS_RESERVED, ECS_UNBOUND, ECS_INTERDOMAIN = 0, 1, 2, 3
ECS_PIRQ, ECS_VIRQ, ECS_IPI = 4, 5, 6
NR_PORTS = abi.EVTCHN_2L_NR_CHANNELS
# VIRQs bound per vCPU (the others are global: vCPU 0, may be re-bound)
PERCPU_VIRQS = {abi.VIRQ_TIMER, abi.VIRQ_DEBUG, 4, 7, 13}


@dataclass
class Port:
    state: int = ECS_FREE
    notify_vcpu: int = 0
    remote_dom: int = 0             # UNBOUND: who may bind; INTERDOMAIN: peer
    remote_port: int = 0
    virq: int = 0
    consumer: Optional[Callable[[int], None]] = None   # domain 0 back ends
    inline: bool = False            # consumer runs in the sender's thread (hv.lock held)


class EventChannels:
    """The port table of one domain."""

    def __init__(self, hv, dom):
        self.hv = hv
        self.dom = dom
        self.ports: List[Port] = [Port() for _ in range(NR_PORTS)]
        self.ports[0].state = ECS_RESERVED
        self.virq: Dict[tuple, int] = {}    # (vcpu, virq) -> port

    # ---- allocation ----
    def _free_port(self) -> int:
        for p in range(1, NR_PORTS):
            if self.ports[p].state == ECS_FREE:
                return p
        return -ENOSPC

    def _valid(self, port: int) -> bool:
        return 0 <= port < NR_PORTS

    def alloc_unbound(self, remote_dom: int) -> int:
        p = self._free_port()
        if p < 0:
            return p
        self.ports[p] = Port(state=ECS_UNBOUND, remote_dom=remote_dom)
        return p

    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int:
        rd = self.hv.domain_by_id(remote_domid)
        if rd is None:
            return -ESRCH
        rev = rd.evtchn
        if not rev._valid(remote_port):
            return -EINVAL
        rp = rev.ports[remote_port]
        if rp.state != ECS_UNBOUND or rp.remote_dom not in (self.dom.domid, abi.DOMID_ANY):
            return -EINVAL
        p = self._free_port()
        if p < 0:
            return p
        self.ports[p] = Port(state=ECS_INTERDOMAIN, remote_dom=rd.domid, remote_port=remote_port)
        rp.state = ECS_INTERDOMAIN
        rp.remote_dom = self.dom.domid
        rp.remote_port = p
        # Xen sets the local end pending so that no event is lost in a race
        self.set_pending(p)
        return p

    def bind_virq(self, virq: int, vcpu: int) -> int:
        if not 0 <= virq < abi.NR_VIRQS:
            return -EINVAL
        if virq not in PERCPU_VIRQS and vcpu != 0:
            return -EINVAL
        if not 0 <= vcpu < len(self.dom.vcpus):
            return -ENOENT
        if (vcpu, virq) in self.virq:
            return -EEXIST
        p = self._free_port()
        if p < 0:
            return p
        self.ports[p] = Port(state=ECS_VIRQ, virq=virq, notify_vcpu=vcpu)
        self.virq[(vcpu, virq)] = p
        self.dom.on_virq_bound(vcpu, virq, p)
        return p

    def bind_ipi(self, vcpu: int) -> int:
        if not 0 <= vcpu < len(self.dom.vcpus):
            return -ENOENT
        p = self._free_port()
        if p < 0:
            return p
        self.ports[p] = Port(state=ECS_IPI, notify_vcpu=vcpu)
        return p

    def close(self, port: int) -> int:
        if not self._valid(port):
            return -EINVAL
        ch = self.ports[port]
        if ch.state == ECS_FREE:
            return -EINVAL
        if ch.state == ECS_RESERVED:
            return -EINVAL
        if ch.state == ECS_VIRQ:
            self.virq.pop((ch.notify_vcpu, ch.virq), None)
            self.dom.on_virq_bound(ch.notify_vcpu, ch.virq, None)
        elif ch.state == ECS_INTERDOMAIN:
            rd = self.hv.domain_by_id(ch.remote_dom)
            if rd is not None:
                rp = rd.evtchn.ports[ch.remote_port]
                if rp.state == ECS_INTERDOMAIN and rp.remote_port == port:
                    rp.state = ECS_UNBOUND
                    rp.remote_dom = self.dom.domid
                    rp.remote_port = 0
        self.ports[port] = Port()
        if self.dom.domid != 0:
            # clear the pending bit so a re-used port starts clean (evtchn_2l_clear_pending)
            self.dom.ram.test_and_clear_bit(self.dom.shared_info_pa + abi.SI_EVTCHN_PENDING, port)
        return 0

    def send(self, port: int) -> int:
        if not self._valid(port):
            return -EINVAL
        ch = self.ports[port]
        if ch.state == ECS_INTERDOMAIN:
            rd = self.hv.domain_by_id(ch.remote_dom)
            if rd is not None:
                rd.evtchn.set_pending(ch.remote_port)
            return 0
        if ch.state == ECS_IPI:
            self.set_pending(port)
            return 0
        if ch.state == ECS_UNBOUND:
            return 0                    # silently dropped, as Xen does
        return -EINVAL

    def status(self, port: int) -> dict:
        ch = self.ports[port]
        st = {ECS_FREE: abi.EVTCHNSTAT_closed, ECS_RESERVED: abi.EVTCHNSTAT_closed,
              ECS_UNBOUND: abi.EVTCHNSTAT_unbound, ECS_INTERDOMAIN: abi.EVTCHNSTAT_interdomain,
              ECS_PIRQ: abi.EVTCHNSTAT_pirq, ECS_VIRQ: abi.EVTCHNSTAT_virq,
              ECS_IPI: abi.EVTCHNSTAT_ipi}[ch.state]
        u0 = u1 = 0
        if ch.state == ECS_UNBOUND:
            u0 = ch.remote_dom
        elif ch.state == ECS_INTERDOMAIN:
            u0, u1 = ch.remote_dom, ch.remote_port
        elif ch.state == ECS_VIRQ:
            u0 = ch.virq
        return {"status": st, "vcpu": ch.notify_vcpu, "u0": u0, "u1": u1}

    def bind_vcpu(self, port: int, vcpu: int) -> int:
        if not self._valid(port):
            return -EINVAL
        if not 0 <= vcpu < len(self.dom.vcpus):
            return -ENOENT
        ch = self.ports[port]
        if ch.state in (ECS_UNBOUND, ECS_INTERDOMAIN, ECS_PIRQ) or \
                (ch.state == ECS_VIRQ and ch.virq not in PERCPU_VIRQS):
            if ch.state == ECS_VIRQ:
                self.virq.pop((ch.notify_vcpu, ch.virq), None)
                self.virq[(vcpu, ch.virq)] = port
            ch.notify_vcpu = vcpu
            return 0
        return -EINVAL

    def reset(self) -> None:
        for p in range(1, NR_PORTS):
            if self.ports[p].state not in (ECS_FREE, ECS_RESERVED):
                self.close(p)

    # ---- delivery ----
    def set_pending(self, port: int) -> None:
        """evtchn_2l_set_pending: the 0->1 edge of an unmasked port sets its
        selector bit and the vCPU's upcall_pending, and kicks the vCPU."""
        ch = self.ports[port]
        if self.dom.domid == 0:
            if ch.consumer is not None:
                if ch.inline:
                    with self.hv.lock:
                        ch.consumer(port)
                else:
                    self.hv.call_soon(ch.consumer, port)
            return
        ram, si = self.dom.ram, self.dom.shared_info_pa
        vcpu = self.dom.vcpus[ch.notify_vcpu]
        if not ram.test_and_set_bit(si + abi.SI_EVTCHN_PENDING, port):
            if not ram.test_bit(si + abi.SI_EVTCHN_MASK, port) and \
                    not ram.test_and_set_bit(vcpu.vcpu_info_pa + abi.VI_PENDING_SEL, port // 32):
                vcpu.mark_events_pending()
        vcpu.check_poller(port)

    def unmask(self, port: int) -> int:
        if not self._valid(port):
            return -EINVAL
        ram, si = self.dom.ram, self.dom.shared_info_pa
        vcpu = self.dom.vcpus[self.ports[port].notify_vcpu]
        if ram.test_and_clear_bit(si + abi.SI_EVTCHN_MASK, port) and \
                ram.test_bit(si + abi.SI_EVTCHN_PENDING, port) and \
                not ram.test_and_set_bit(vcpu.vcpu_info_pa + abi.VI_PENDING_SEL, port // 32):
            vcpu.mark_events_pending()
        return 0

    def is_pending(self, port: int) -> bool:
        return self.dom.ram.test_bit(self.dom.shared_info_pa + abi.SI_EVTCHN_PENDING, port)

    def send_virq(self, vcpu: int, virq: int) -> None:
        p = self.virq.get((vcpu, virq))
        if p is not None:
            self.set_pending(p)

    # ---- domain 0 side ----
    def dom0_alloc(self, remote_dom: int, consumer: Callable[[int], None]) -> int:
        p = self.alloc_unbound(remote_dom)
        if p > 0:
            self.ports[p].consumer = consumer
        return p

    def dom0_bind(self, remote_dom: int, remote_port: int, consumer: Callable[[int], None],
                  inline: bool = False) -> int:
        """Bind a back end's port; `inline` consumers run in the thread that
        sent the event (a guest's vCPU, hv.lock held) instead of the loop."""
        p = self.bind_interdomain(remote_dom, remote_port)
        if p > 0:
            self.ports[p].consumer = consumer
            self.ports[p].inline = inline
        return p
