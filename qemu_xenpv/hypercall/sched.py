"""sched_op and sched_op_compat: yield, block, shutdown, poll."""

from .. import abi
from ..abi import EINVAL, EFAULT, ENOSYS, EPERM
from ..shim import K
from . import hypercall

SCHEDOPS = {abi.SCHEDOP_yield: "yield", abi.SCHEDOP_block: "block",
            abi.SCHEDOP_shutdown: "shutdown", abi.SCHEDOP_poll: "poll",
            abi.SCHEDOP_remote_shutdown: "remote_shutdown",
            abi.SCHEDOP_shutdown_code: "shutdown_code", abi.SCHEDOP_watchdog: "watchdog"}


def do_block(call) -> int:
    """Enable event delivery, then sleep unless an event is already pending."""
    v = call.vcpu
    ram = call.dom.ram
    ram.w8(v.vcpu_info_pa + abi.VI_UPCALL_MASK, 0)
    ram.fence()
    if ram.r8(v.vcpu_info_pa + abi.VI_UPCALL_PENDING):
        return 0
    v.mbox.set64("wake_deadline", 0)
    call.action |= K.ACT_BLOCK
    return 0


def do_shutdown(call, reason: int) -> int:
    call.dom.shutdown(reason, vcpu=call.vcpu)
    call.action |= K.ACT_HALT
    return 0


def do_poll(call, arg) -> int:
    p = call.read_struct(abi.sched_poll, arg)
    n = p["nr_ports"]
    if n > 128:
        return -EINVAL
    ports = [call.read_u32(p["ports"] + 4 * i) for i in range(n)]
    ev = call.dom.evtchn
    for port in ports:
        if port >= len(ev.ports):
            return -EINVAL
        if ev.is_pending(port):
            call.vcpu.poll_ports = None
            return 0
    now = call.vcpu.now()
    if p["timeout"] and p["timeout"] <= now:
        call.vcpu.poll_ports = None
        return 0
    # sleep until a polled port fires, the timeout passes or anything wakes
    # us; the shim then asks again and we look again
    call.vcpu.poll_ports = set(ports)
    call.vcpu.mbox.set64("wake_deadline", p["timeout"])
    call.action |= K.ACT_RETRY
    return 0


@hypercall("sched_op", 2, SCHEDOPS)
def sched_op(call, cmd, arg):
    if cmd == abi.SCHEDOP_yield:
        return 0
    if cmd == abi.SCHEDOP_block:
        return do_block(call)
    if cmd == abi.SCHEDOP_shutdown:
        return do_shutdown(call, call.read_struct(abi.sched_shutdown, arg)["reason"])
    if cmd == abi.SCHEDOP_poll:
        return do_poll(call, arg)
    if cmd == abi.SCHEDOP_shutdown_code:
        call.dom.shutdown_code = call.read_struct(abi.sched_shutdown, arg)["reason"]
        return 0
    if cmd == abi.SCHEDOP_remote_shutdown:
        return -EPERM
    if cmd == abi.SCHEDOP_watchdog:
        return -ENOSYS
    return -ENOSYS


@hypercall("sched_op_compat", 2, {0: "yield", 1: "block", 2: "shutdown"})
def sched_op_compat(call, cmd, arg):
    if cmd == abi.SCHEDOP_yield:
        return 0
    if cmd == abi.SCHEDOP_block:
        return do_block(call)
    if cmd == abi.SCHEDOP_shutdown:
        return do_shutdown(call, arg)
    return -ENOSYS
