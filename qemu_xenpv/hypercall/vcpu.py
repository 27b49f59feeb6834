"""vcpu_op: per-vCPU timers, vcpu_info placement, runstate."""

from .. import abi
from ..abi import EINVAL, ENOENT, ENOSYS, EFAULT, EEXIST
from ..shim import K
from . import hypercall

ETIME = 62
VCPU_GUEST_CONTEXT_SIZE = 2800
VCPU_SSHOTTMR_future = 1
VCPUOP_NAMES = dict(abi.VCPUOP)


@hypercall("vcpu_op", 3, VCPUOP_NAMES)
def vcpu_op(call, cmd, vcpuid, arg):
    dom = call.dom
    if vcpuid >= len(dom.vcpus):
        return -ENOENT
    v = dom.vcpus[vcpuid]
    if cmd == 3:                            # is_up
        return 1 if v.online else 0
    if cmd == 4:                            # get_runstate_info
        call.write_struct(abi.vcpu_runstate_info, arg, v.runstate())
        return 0
    if cmd == 5:                            # register_runstate_memory_area
        v.runstate_area = call.read_u32(arg)
        if v.runstate_area:
            call.write_struct(abi.vcpu_runstate_info, v.runstate_area, v.runstate())
        return 0
    if cmd == 6:                            # set_periodic_timer
        period = call.read_struct(abi.vcpu_set_periodic_timer, arg)["period_ns"]
        if period < 1_000_000:
            return -EINVAL
        v.set_periodic(period, call)
        return 0
    if cmd == 7:                            # stop_periodic_timer
        v.set_periodic(0, call)
        return 0
    if cmd == 8:                            # set_singleshot_timer
        t = call.read_struct(abi.vcpu_set_singleshot_timer, arg)
        if t["flags"] & VCPU_SSHOTTMR_future and t["timeout_abs_ns"] < v.now():
            return -ETIME
        v.mbox.set64("timer_deadline", t["timeout_abs_ns"])
        call.action |= K.ACT_TIMER
        return 0
    if cmd == 9:                            # stop_singleshot_timer
        v.mbox.set64("timer_deadline", 0)
        call.action |= K.ACT_TIMER
        return 0
    if cmd == 10:                           # register_vcpu_info
        r = call.read_struct(abi.vcpu_register_vcpu_info, arg)
        return v.register_vcpu_info(r["mfn"], r["offset"], call.vcpu)
    if cmd == 0:                            # initialise
        if v.online or v.initialised:
            return -EEXIST
        return v.initialise(call.read(arg, VCPU_GUEST_CONTEXT_SIZE))
    if cmd == 1:                            # up
        if not v.initialised:
            return -EINVAL
        return v.bring_up(call)
    if cmd == 2:                            # down
        rc = v.bring_down()
        if v is call.vcpu:
            call.action |= K.ACT_EVENTS     # leave by the slow exit: it parks
        return rc
    return -ENOSYS
