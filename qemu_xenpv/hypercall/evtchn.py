"""event_channel_op and its pre-3.0 compat form (hypercall 16)."""

from .. import abi
from ..abi import EINVAL, EPERM, ENOSYS, ESRCH, EFAULT
from . import hypercall


def _self_dom(call, domid: int) -> bool:
    return domid in (abi.DOMID_SELF, call.dom.domid)


def evtchn_do(call, cmd: int, arg: int) -> int:
    ev = call.dom.evtchn
    if cmd == 6:                                            # alloc_unbound
        a = call.read_struct(abi.evtchn_alloc_unbound, arg)
        if not _self_dom(call, a["dom"]):
            return -EPERM
        remote = call.dom.domid if a["remote_dom"] == abi.DOMID_SELF else a["remote_dom"]
        p = ev.alloc_unbound(remote)
        if p < 0:
            return p
        a["port"] = p
        call.write_struct(abi.evtchn_alloc_unbound, arg, a)
        return 0
    if cmd == 0:                                            # bind_interdomain
        a = call.read_struct(abi.evtchn_bind_interdomain, arg)
        remote = call.dom.domid if a["remote_dom"] == abi.DOMID_SELF else a["remote_dom"]
        p = ev.bind_interdomain(remote, a["remote_port"])
        if p < 0:
            return p
        a["local_port"] = p
        call.write_struct(abi.evtchn_bind_interdomain, arg, a)
        return 0
    if cmd == 1:                                            # bind_virq
        a = call.read_struct(abi.evtchn_bind_virq, arg)
        p = ev.bind_virq(a["virq"], a["vcpu"])
        if p < 0:
            return p
        a["port"] = p
        call.write_struct(abi.evtchn_bind_virq, arg, a)
        return 0
    if cmd == 7:                                            # bind_ipi
        a = call.read_struct(abi.evtchn_bind_ipi, arg)
        p = ev.bind_ipi(a["vcpu"])
        if p < 0:
            return p
        a["port"] = p
        call.write_struct(abi.evtchn_bind_ipi, arg, a)
        return 0
    if cmd == 2:                                            # bind_pirq
        return -EPERM
    if cmd == 3:                                            # close
        return ev.close(call.read_struct(abi.evtchn_port_op, arg)["port"])
    if cmd == 4:                                            # send
        return ev.send(call.read_struct(abi.evtchn_port_op, arg)["port"])
    if cmd == 5:                                            # status
        a = call.read_struct(abi.evtchn_status, arg)
        if not _self_dom(call, a["dom"]):
            return -EPERM
        if a["port"] >= len(ev.ports):
            return -EINVAL
        a.update(ev.status(a["port"]))
        call.write_struct(abi.evtchn_status, arg, a)
        return 0
    if cmd == 8:                                            # bind_vcpu
        a = call.read_struct(abi.evtchn_bind_vcpu, arg)
        return ev.bind_vcpu(a["port"], a["vcpu"])
    if cmd == 9:                                            # unmask
        return ev.unmask(call.read_struct(abi.evtchn_port_op, arg)["port"])
    if cmd == 10:                                           # reset
        a = call.read_struct(abi.evtchn_reset, arg)
        if not _self_dom(call, a["dom"]):
            return -EPERM
        ev.reset()
        return 0
    if cmd == 11:                                           # init_control
        # The FIFO ABI is not offered; arguments are checked first as
        # Xen does (evtchn_fifo_init_control), so a bad one is -EINVAL.
        gfn = int.from_bytes(call.read(arg, 8), "little")
        offset = call.read_u32(arg + 8)
        vcpu = call.read_u32(arg + 12)
        if vcpu >= len(call.dom.vcpus) or offset > 4096 - 64 or offset & 7 or \
                gfn >> 32 or not call.dom.mmu.owns(gfn):
            return -EINVAL
        return -ENOSYS
    if cmd in (12, 13, 14):                                 # expand_array, set_priority, reset_cont
        return -ENOSYS
    return -ENOSYS


@hypercall("event_channel_op", 2, dict(abi.EVTCHNOP))
def event_channel_op(call, cmd, arg):
    return evtchn_do(call, cmd, arg)


@hypercall("event_channel_op_compat", 1, dict(abi.EVTCHNOP))
def event_channel_op_compat(call, op_ptr):
    """The pre-3.0.2 form: struct evtchn_op {cmd; union u} in guest memory."""
    cmd = call.read_u32(op_ptr)
    return evtchn_do(call, cmd, op_ptr + 4)
