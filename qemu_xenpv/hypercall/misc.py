"""vm_assist and set_timer_op."""

from .. import abi
from ..abi import EINVAL, ENOSYS
from ..shim import K
from . import hypercall

# COMPAT_VM_ASSIST_VALID
VM_ASSIST_VALID = ((1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5))


@hypercall("vm_assist", 2, {abi.VMASST_CMD_enable: "enable", abi.VMASST_CMD_disable: "disable"})
def vm_assist(call, cmd, vtype):
    if vtype >= 32 or not (VM_ASSIST_VALID >> vtype) & 1:
        return -EINVAL
    if cmd == abi.VMASST_CMD_enable:
        call.dom.vm_assist |= 1 << vtype
        call.dom.sync_fast_paths()
        return 0
    if cmd == abi.VMASST_CMD_disable:
        call.dom.vm_assist &= ~(1 << vtype)
        call.dom.sync_fast_paths()
        return 0
    return -ENOSYS


def set_singleshot(call, deadline: int) -> None:
    call.vcpu.mbox.set64("timer_deadline", deadline)
    call.action |= K.ACT_TIMER


@hypercall("set_timer_op", 2)
def set_timer_op(call, lo, hi):
    timeout = (hi << 32) | lo
    if timeout == 0:
        set_singleshot(call, 0)
    elif timeout >> 63 or timeout >> 50:
        # Xen: wrapped or absurd timeouts fire in 100 ms instead
        set_singleshot(call, call.vcpu.now() + 100_000_000)
    else:
        set_singleshot(call, timeout)
    return 0
